"""Capacity questions (layerplan.planner.capacity) against independent oracles: brute force over
every assignment (tests/strategies.brute_force) for the counts and workloads, an enumeration of
setups written here for the cheapest hardware, and layerplan.testing.check_plan for every plan."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerplan.planner.api import as_spec, load_graph
from layerplan.planner.capacity import (
    DEFAULT_PRICES,
    Setup,
    cheapest,
    compare_setups,
    frontier,
    max_batch,
    max_context,
    min_devices,
    min_devices_on_graph,
    parse_prices,
    parse_setup,
)
from layerplan.planner.capacity.probe import probe
from layerplan.planner.spec import PlanSpec, WorkloadSpec, build_devices
from layerplan.solver import InvalidSpecError
from layerplan.testing import check_plan
from layerplan.testing.graphs import layer_graphs

from cli_helpers import one_line, run
from strategies import brute_force

_SMALL = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _without_last_gpu(problem):  # noqa: ANN001, ANN202
    """The same problem on one GPU fewer (the GPUs are identical, so which one does not matter)."""
    gpus = [d for d in problem.devices if d.name not in ("cpu", "disk")]
    return dataclasses.replace(problem, devices=tuple(gpus[:-1]))


# -- fewest GPUs -----------------------------------------------------------------------------------
@_SMALL
@given(graph=layer_graphs(min_layers=1, max_layers=3), fraction=st.floats(0.3, 1.5))
def test_min_devices_fits_and_one_fewer_does_not_by_brute_force(graph, fraction) -> None:  # noqa: ANN001
    spec = as_spec(graph, reserve=0)
    memory = max(int(graph.total_bytes * fraction), 1)
    answer = min_devices_on_graph(graph, spec, "a100-80gb", gpu_memory=memory, max_devices=4)
    if answer.num_devices is None:
        gpus = Setup((("a100-80gb", 4),), gpu_memory={"a100-80gb": memory}).devices(spec.devices)
        problem = graph.to_problem(devices=[d.to_solver() for d in build_devices(gpus.max_memory, 0)], ordered=False)
        assert brute_force(problem) is None  # 4 GPUs really do not fit
        return
    plan = answer.plan
    assert plan is not None and len(plan.problem.devices) == answer.num_devices
    check_plan(plan.solution, plan.problem)
    assert answer.proven
    if answer.num_devices > 1:
        assert brute_force(_without_last_gpu(plan.problem)) is None


@_SMALL
@given(graph=layer_graphs(min_layers=1, max_layers=6), fraction=st.floats(0.2, 1.0))
def test_more_memory_per_gpu_never_needs_more_gpus(graph, fraction) -> None:  # noqa: ANN001
    spec = as_spec(graph, reserve=0)
    small = max(int(graph.total_bytes * fraction), 1)
    counts = [min_devices_on_graph(graph, spec, "h100-sxm", gpu_memory=m, max_devices=12).num_devices
              for m in (small, 2 * small)]
    if counts[0] is not None:
        assert counts[1] is not None and counts[1] <= counts[0]


@_SMALL
@given(graph=layer_graphs(min_layers=4, max_layers=24), fraction=st.floats(0.02, 0.5))
def test_the_count_search_finds_the_first_count_a_linear_scan_finds(graph, fraction) -> None:  # noqa: ANN001
    spec = as_spec(graph, reserve=0)
    memory = max(int(graph.total_bytes * fraction), 1)
    answer = min_devices_on_graph(graph, spec, "l4", gpu_memory=memory, max_devices=16)
    setup = lambda n: Setup((("l4", n),), gpu_memory={"l4": memory})  # noqa: E731
    linear = next((n for n in range(1, 17) if probe(graph, setup(n), spec).fits), None)
    assert answer.num_devices == linear
    if linear is not None:
        assert answer.proven and answer.plan is not None and len(answer.plan.problem.devices) == linear


@pytest.mark.parametrize("first", [3, 4, 7, 8, 13, 29, 64])
def test_the_count_search_doubles_then_bisects_to_the_first_fitting_count(monkeypatch, first) -> None:  # noqa: ANN001
    import importlib

    from layerplan.planner.capacity.probe import Probe

    search = importlib.import_module("layerplan.planner.capacity.min_devices")  # the module, not the function

    asked = []

    def fake_probe(graph, setup, spec, *, value):  # noqa: ANN001, ANN202 - fits from ``first`` GPUs on
        asked.append(value)
        return Probe(setup, "fits" if value >= first else "infeasible", "fake", value=value)

    monkeypatch.setattr(search, "probe", fake_probe)
    monkeypatch.setattr(search, "_start", lambda graph, one, spec: 3)
    monkeypatch.setattr(search, "memory_bound", lambda graph, setup, spec: "below the bound")
    spec = PlanSpec.from_dict({"model": {"source": "llama-2-7b"}})
    answer = search.min_devices_on_graph(None, spec, "l4", max_devices=64)
    assert answer.num_devices == first and answer.proven
    assert first - 1 in asked or first == 3  # the count below was decided (3 - 1 by the bound)
    assert len(asked) == len(set(asked)) and len(asked) <= 4 + 2 * 6  # linear steps, then logarithmic


def test_min_devices_of_llama_2_70b_starts_at_its_memory_bound() -> None:
    spec = PlanSpec.from_dict({"model": {"source": "llama-2-70b"}, "workload": {"batch_size": 1, "seq_len": 2048}})
    result = min_devices(spec, ["a100-80gb"])
    (answer,) = result.answers
    graph, _ = load_graph(spec)
    weights = sum(n.size_bytes for n in graph.nodes)
    # 1 GPU of 80 GiB less its 1 GiB reserve cannot hold 128 GiB of fp16 weights: no solve needed for it
    assert weights > 79 * 2**30
    assert answer.num_devices == 2 and answer.proven
    assert [p.verdict for p in answer.probes] == ["bound", "fits"]
    assert result.to_dict()["num_devices"] == 2
    check_plan(answer.plan.solution, answer.plan.problem)


# -- largest workload ------------------------------------------------------------------------------
def _tiny_setup(memory: str) -> Setup:
    return Setup((("a100-80gb", 2),), gpu_memory={"a100-80gb": memory})


def _problem_at(spec: PlanSpec, setup: Setup, workload: WorkloadSpec):  # noqa: ANN202
    trial = spec.replace(workload=workload)
    graph, _ = load_graph(trial)
    devices = setup.devices(spec.devices)
    return graph.to_problem(devices=[d.to_solver() for d in build_devices(devices.max_memory, 0)], ordered=False)


def test_max_batch_fits_and_the_next_batch_does_not_by_brute_force(tiny_llama_dir) -> None:  # noqa: ANN001
    spec = PlanSpec.from_dict({"model": {"source": tiny_llama_dir, "dtype": "float32"},
                               "devices": {"reserve": 0}, "workload": {"seq_len": 128}})
    setup = _tiny_setup("3MiB")
    result = max_batch(spec, setup=setup, limit=256)
    assert result.value is not None and 1 < result.value < 256, result.to_dict()
    assert result.proven
    check_plan(result.plan.solution, result.plan.problem)
    nxt = dataclasses.replace(spec.workload, batch_size=result.value + 1)
    assert brute_force(_problem_at(spec, setup, nxt)) is None
    # bisection: every probe below the answer fits, every probe above does not
    assert all(p.fits == (p.value <= result.value) for p in result.probes)


def test_max_context_fits_and_the_next_step_does_not_by_brute_force(tiny_llama_dir) -> None:  # noqa: ANN001
    spec = PlanSpec.from_dict({"model": {"source": tiny_llama_dir, "dtype": "float32"},
                               "devices": {"reserve": 0}, "workload": {"batch_size": 16, "max_new_tokens": 4}})
    setup = _tiny_setup("3MiB")
    result = max_context(spec, setup=setup, step=8)
    assert result.limit == 128  # the tiny model's max_position_embeddings
    assert result.value is not None and 8 <= result.value < 128, result.to_dict()
    assert result.value % 8 == 0 and result.proven
    nxt = WorkloadSpec(batch_size=16, max_new_tokens=4, seq_len=result.value + 8)
    assert brute_force(_problem_at(spec, setup, nxt)) is None


def test_the_frontier_is_monotone_and_each_point_fits(tiny_llama_dir) -> None:  # noqa: ANN001
    spec = PlanSpec.from_dict({"model": {"source": tiny_llama_dir, "dtype": "float32"},
                               "devices": {"reserve": 0}, "workload": {"max_new_tokens": 4}})
    result = frontier(spec, setup=_tiny_setup("3MiB"), batch_sizes=[1, 4, 16, 64, 256], step=8)
    pairs = result.pairs()
    assert len(pairs) >= 3
    contexts = [c for _, c in pairs]
    assert contexts == sorted(contexts, reverse=True) and contexts[0] > contexts[-1]
    for _, point in result.points:
        if point.value is not None:
            check_plan(point.plan.solution, point.plan.problem)
    assert [p["seq_len"] for p in result.to_dict()["frontier"] if p["seq_len"]] == contexts


# -- cheapest hardware -----------------------------------------------------------------------------
def test_cheapest_matches_an_enumeration_of_every_setup() -> None:
    spec = PlanSpec.from_dict({"model": {"source": "llama-2-13b"},
                               "workload": {"batch_size": 4, "seq_len": 2048}})
    types, target = ["rtx-4090", "l40s", "a100-80gb"], 30.0
    result = cheapest(spec, device_types=types, max_ms_per_token=target, max_devices=3, mix=2)
    # the oracle: every setup of one or two of these types with 1..3 GPUs, each planned on its own
    setups = [Setup(tuple(zip(combo, counts))) for size in (1, 2) for combo in itertools.combinations(types, size)
              for counts in itertools.product((1, 2, 3), repeat=size) if sum(counts) <= 3]
    rows = compare_setups(spec, setups).rows
    meets = sorted((r.setup.price_per_hour(DEFAULT_PRICES), r.setup.num_gpus) for r in rows
                   if r.probe.fits and r.probe.ms_per_token <= target)
    assert result.best is not None and result.runner_up is not None and result.proven
    assert (result.best.price_per_hour, result.best.setup.num_gpus) == pytest.approx(meets[0])
    assert result.runner_up.price_per_hour == pytest.approx(meets[1][0])
    assert result.best.probe.ms_per_token <= target
    assert any(r.probe.fits and r.probe.ms_per_token > target for r in rows)  # the target mattered
    # the latency floor only ever rules out setups whose own plan misses the target
    oracle = {r.setup.name: r for r in rows}
    slow = [c.setup.name for c in result.candidates if c.probe.verdict == "slow"]
    assert slow and all(not oracle[n].probe.fits or oracle[n].probe.ms_per_token > target for n in slow)


def test_prices_and_setups_parse_and_refuse_in_one_line() -> None:
    assert parse_prices({"H100 SXM": "$2.49"})["h100-sxm"] == 2.49
    setup = parse_setup("big:a100-80gb*4+l4@20GiB*2+cpu=256GiB")
    assert setup.name == "big" and setup.num_gpus == 6 and setup.host_bytes == 256 * 2**30
    assert setup.gpu_types() == ["a100-80gb"] * 4 + ["l4"] * 2
    assert setup.devices(PlanSpec.from_dict({"model": {"source": "x"}}).devices).max_memory[5] == 20 * 2**30
    for bad in ("h100*2", "a100-80gb*2+ram=1GB", "l4*two", "l4@lots*2"):
        with pytest.raises(InvalidSpecError):
            parse_setup(bad)
    with pytest.raises(InvalidSpecError, match="price"):
        parse_prices({"l4": "cheap"})


# -- plots -----------------------------------------------------------------------------------------
def test_plots_draw_the_numbers_of_the_tables(tiny_llama_dir, tmp_path) -> None:  # noqa: ANN001
    from layerplan import plan
    from layerplan.planner.output.plots import layout_data, memory_data, plot_frontier, plot_layout, plot_memory

    result = plan(tiny_llama_dir, max_memory={0: "1MiB", 1: "1MiB", "cpu": "1GiB"}, reserve=0, dtype="float32",
                  seq_len=64)
    table = json.loads(result.to_json())
    data = memory_data(result)
    assert len(table["devices"]) == len(data["devices"]) >= 2
    for d, row in enumerate(table["devices"]):
        assert data["devices"][d] == str(row["device"]) and data["caps"][d] == row["cap_bytes"]
        for kind in ("weights", "kv", "activation", "streaming", "reserve"):
            assert data[kind][d] == row[f"{kind}_bytes"]
    runs = layout_data(result)
    assert sum(count for _, count, _ in runs) == len(result.graph.nodes)
    assert len(result.graph.nodes) == sum(r["num_nodes"] for r in table["devices"])
    for row in table["devices"]:
        mine = [(start, count) for start, count, device in runs if device == str(row["device"])]
        assert sum(count for _, count in mine) == row["num_nodes"]
        if mine:
            names = [n.name for n in result.graph.nodes]
            assert names[mine[0][0]] == row["first_node"] and names[mine[-1][0] + mine[-1][1] - 1] == row["last_node"]
    paths = plot_memory(result, tmp_path) + plot_layout(result, tmp_path)
    front = frontier(PlanSpec.from_dict({"model": {"source": tiny_llama_dir, "dtype": "float32"},
                                         "devices": {"reserve": 0}, "workload": {"max_new_tokens": 4}}),
                     setup=_tiny_setup("3MiB"), batch_sizes=[1, 16], step=32)
    paths += plot_frontier(front, tmp_path)
    assert sorted(p.suffix for p in paths) == [".png"] * 3 + [".svg"] * 3
    assert all(p.stat().st_size > 1000 for p in paths)


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_min_devices_json_and_exit_codes(capsys) -> None:  # noqa: ANN001
    code, out, _ = run(["capacity", "min-devices", "llama-2-70b", "--device-type", "h100-sxm", "--seq-len", "2048",
                        "--format", "json"], capsys)
    assert code == 0
    answer = json.loads(out)
    assert answer["num_devices"] == 2 and answer["answers"][0]["proven"]
    code, _, err = run(["capacity", "min-devices", "llama-2-70b", "--device-type", "0=h100-sxm"], capsys)
    assert code == 2 and "preset names" in one_line(err)
    code, _, err = run(["capacity", "compare", "llama-2-70b", "--setup", "h100-sxm*two"], capsys)
    assert code == 2 and "TYPE*COUNT" in one_line(err)
    code, _, err = run(["capacity", "min-devices", "llama-2-70b", "--device-type", "rtx-4090", "--max-devices", "2",
                        "--no-offload"], capsys)
    assert code == 3


def test_cli_max_workload_and_compare(tiny_llama_dir, capsys, tmp_path) -> None:  # noqa: ANN001
    code, out, _ = run(["capacity", "max-workload", tiny_llama_dir, "--dtype", "float32", "--reserve", "0",
                        "--setup", "a100-80gb@3MiB*2", "--vary", "batch", "--seq-len", "128", "--limit", "256",
                        "--format", "json"], capsys)
    assert code == 0
    found = json.loads(out)
    assert found["field"] == "batch_size" and found["proven"] and 1 < found["value"] < 256
    code, out, _ = run(["capacity", "compare", tiny_llama_dir, "--dtype", "float32", "--reserve", "0",
                        "--setup", "a100-80gb@3MiB*2", "--setup", "a100-80gb@3MiB*1", "--batch-size",
                        str(found["value"] + 1), "--seq-len", "128", "--format", "json"], capsys)
    assert code == 3  # one more sequence than the largest batch fits neither setup
    assert [s["verdict"] for s in json.loads(out)["setups"]] != ["fits", "fits"]


def test_cli_cheapest_reads_the_spec_files_prices_and_price_flags_override_them(tiny_llama_dir, capsys,
                                                                               tmp_path) -> None:  # noqa: ANN001
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[model]\nsource = "{tiny_llama_dir}"\n\n[prices]\nrtx-4090 = 5.0\nl40s = 0.1\n')
    argv = ["capacity", "cheapest", str(spec), "--device-type", "rtx-4090", "l40s", "--max-devices", "2",
            "--format", "json"]
    code, out, _ = run(argv, capsys)
    best = json.loads(out)["best"]
    assert code == 0 and best["setup"] == "1x l40s" and best["price_per_hour"] == 0.1
    code, out, _ = run([*argv, "--price", "l40s=9"], capsys)
    assert code == 0 and json.loads(out)["best"]["setup"] == "1x rtx-4090"
    code, _, err = run(["plan", str(spec)], capsys)
    assert code == 2 and "prices" in one_line(err)
