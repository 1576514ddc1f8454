"""Strategies, manual maps, pins, determinism and comparison on real (tiny) models.

Oracles: accelerate's ``check_device_map``; the strategy rules checked directly on the plan;
accelerate's own device_map (:mod:`layerplan.planner.baselines.accelerate`) evaluated under the same cost model.
"""

from __future__ import annotations

import copy
import json

import pytest
from accelerate.utils import check_device_map, compute_module_sizes
from layerplan import planner
from layerplan.planner.api import evaluate_map
from layerplan.planner.baselines.accelerate import accelerate_device_map
from layerplan.planner.baselines.compare import compare
from layerplan.planner.cli import main
from layerplan.solver import InfeasiblePlanError

TYPES = {0: "a100-80gb", 1: "a100-40gb", 2: "l4"}


@pytest.fixture(scope="module")
def traced(tiny_llama_dir):  # noqa: ANN001, ANN201
    return planner.trace(tiny_llama_dir, batch_size=2, seq_len=64)


def _runtime(graph) -> int:  # noqa: ANN001
    """Room for the whole KV cache, two working sets and every tensor received."""
    return graph.total_kv_bytes + 2 * max(n.work_bytes for n in graph.nodes) + sum(e.size_bytes for e in graph.edges)


def _one_pass(graph) -> int:  # noqa: ANN001
    """The least a device running every node needs besides weights: the KV cache, the largest
    working set (live bytes at its entry included) and every tensor received."""
    return graph.total_kv_bytes + max(n.work_bytes for n in graph.nodes) + sum(e.size_bytes for e in graph.edges)


def _caps(graph, share: float, gpus: int = 3) -> dict:  # noqa: ANN001
    """Each GPU: ``share`` of the weights plus room for the runtime memory."""
    each = int(graph.total_bytes * share) + _runtime(graph)
    return {**{g: each for g in range(gpus)}, "cpu": 10 * graph.total_bytes}


def _first_appearance(plan) -> list:  # noqa: ANN001
    seen: list = []
    for node, d in zip(plan.graph.nodes, plan.solution.assignment):
        name = plan.problem.devices[d].name
        if plan.problem.devices[d].is_accelerator and name not in seen:
            seen.append(name)
    return seen


@pytest.mark.parametrize("strategy", ["auto", "balanced", "balanced_low_0", "sequential"])
def test_each_strategy_gives_a_map_accelerate_accepts(traced, strategy) -> None:  # noqa: ANN001
    graph, meta = traced
    result = planner.plan(graph, max_memory=_caps(graph, 0.5), strategy=strategy, device_types=TYPES, reserve=0)
    check_device_map(meta, result.device_map)
    assert result.fits and result.strategy == strategy


def test_sequential_uses_the_gpus_in_order(traced) -> None:  # noqa: ANN001
    graph, _ = traced
    # GPU 2 (an L4) is much slower: the latency objective alone would not put it first anyway,
    # so give GPU 0 little room to make the order matter.
    room = _runtime(graph)
    caps = {0: graph.total_bytes // 5 + room, 1: graph.total_bytes // 2 + room, 2: graph.total_bytes + room,
            "cpu": 10 * graph.total_bytes}
    result = planner.plan(graph, max_memory=caps, strategy="sequential", device_types=TYPES, reserve=0)
    order = _first_appearance(result)
    assert order == sorted(order, key=int)


def test_balanced_low_0_keeps_gpu_0_no_heavier_than_the_others(traced) -> None:  # noqa: ANN001
    graph, _ = traced
    result = planner.plan(graph, max_memory=_caps(graph, 0.6), strategy="balanced_low_0", reserve=0)
    weights = {u.device: u.weights_bytes for u in result.usage}
    assert all(weights[0] <= weights[g] for g in (1, 2))


def test_partial_map_and_prefix_pins_hold(traced) -> None:  # noqa: ANN001
    graph, meta = traced
    result = planner.plan(graph, max_memory=_caps(graph, 0.6), device_map={"lm_head": 2},
                          pins={"model.layers": 1}, device_types=TYPES, reserve=0)
    placed = dict(zip((n.name for n in graph.nodes), result.solution.assignment))
    device = {n.name: result.problem.devices[d].name for n, d in zip(graph.nodes, result.solution.assignment)}
    assert device["lm_head"] == "2"
    assert {device[n] for n in placed if n.startswith("model.layers.")} == {"1"}
    check_device_map(meta, result.device_map)


@pytest.mark.parametrize("given", [{"": 0}, {"": "cpu"}])
def test_single_device_maps_are_returned_unchanged(traced, given) -> None:  # noqa: ANN001
    graph, _ = traced
    before = copy.deepcopy(given)
    result = planner.plan(graph, max_memory={0: 10 * graph.total_bytes, "cpu": 10 * graph.total_bytes},
                          device_map=given, reserve=0)
    assert result.device_map == before and given == before
    assert result.status == "given"


def test_accelerate_full_map_is_returned_unchanged_and_measured(traced) -> None:  # noqa: ANN001
    graph, meta = traced
    caps = _caps(graph, 0.6)
    theirs = accelerate_device_map(meta, max_memory=caps, strategy="sequential", dtype=meta.dtype)
    result = planner.plan(graph, max_memory=caps, device_map=dict(theirs), reserve=0)
    assert result.device_map == theirs and list(result.device_map) == list(theirs)
    # Weights per device as accelerate's own size table sees them.
    sizes = compute_module_sizes(meta, dtype=meta.dtype)
    for u in result.usage:
        expected = sum(sizes[k] for k, v in theirs.items() if str(v) == str(u.device))
        assert u.weights_bytes == expected


def test_a_full_map_that_does_not_fit_is_refused_by_plan_and_measured_by_evaluate(traced) -> None:  # noqa: ANN001
    graph, _ = traced
    caps = {0: graph.total_bytes // 2 + _one_pass(graph), "cpu": 10 * graph.total_bytes}
    with pytest.raises(InfeasiblePlanError, match="does not fit"):
        planner.plan(graph, max_memory=caps, device_map={"": 0}, reserve=0)
    measured = evaluate_map(graph, {"": 0}, max_memory=caps, reserve=0)
    assert not measured.fits
    assert measured.usage[0].weights_bytes == graph.total_bytes
    assert measured.usage[0].free_bytes < 0


def test_the_same_spec_planned_twice_gives_the_identical_device_map(traced) -> None:  # noqa: ANN001
    graph, _ = traced
    kwargs = dict(max_memory=_caps(graph, 0.45), device_types=TYPES, reserve=0)
    first = planner.plan(graph, **kwargs)
    assert planner.plan(graph, **kwargs).device_map == first.device_map
    assert list(planner.plan(graph, **kwargs).device_map.items()) == list(first.device_map.items())


@pytest.mark.parametrize("strategy", ["auto", "sequential", "balanced", "balanced_low_0"])
def test_latency_is_never_slower_than_accelerate_when_accelerate_fits(traced, strategy) -> None:  # noqa: ANN001
    graph, meta = traced
    caps = _caps(graph, 0.7)
    # accelerate counts weights only: give it the caps minus the runtime room, as a careful user
    # would, and measure its map on the full caps.
    weights_only = {k: (v - _runtime(graph) if k != "cpu" else v) for k, v in caps.items()}
    theirs_map = accelerate_device_map(meta, max_memory=weights_only, strategy=strategy, dtype=meta.dtype)
    theirs = evaluate_map(graph, theirs_map, max_memory=caps, device_types=TYPES, reserve=0)
    ours = planner.plan(graph, max_memory=caps, device_types=TYPES, reserve=0, objective="latency")
    assert theirs.fits  # roomy caps: accelerate's weights-only fill fits here too
    assert ours.timing.total_ns <= theirs.timing.total_ns


def test_heterogeneous_gpus_put_the_work_on_the_fast_one(traced) -> None:  # noqa: ANN001
    graph, _ = traced
    # GPU 1 is an H100 and GPU 0 an L4 (about 8x slower FLOP/s and 11x slower memory): with room on
    # both, latency puts everything on the H100 although it is listed second.
    caps = {0: 10 * graph.total_bytes, 1: 10 * graph.total_bytes}
    result = planner.plan(graph, max_memory=caps, device_types={0: "l4", 1: "h100-sxm"}, reserve=0)
    assert result.device_map == {"": 1}


def test_infeasible_says_the_least_extra_memory_and_the_offload_option(traced) -> None:  # noqa: ANN001
    graph, _ = traced
    with pytest.raises(InfeasiblePlanError) as caught:
        planner.plan(graph, max_memory={0: graph.total_bytes // 2 + _one_pass(graph)}, reserve=0)
    message = str(caught.value)
    assert "least extra memory that makes it fit" in message
    assert "offloading" in message and "ms per token" in message
    assert sum(caught.value.extra_bytes.values()) > 0


def test_compare_measures_both_tools_under_one_accounting(tiny_llama_dir) -> None:
    graph, _ = planner.trace(tiny_llama_dir, batch_size=2, seq_len=64)
    caps = _caps(graph, 0.6, gpus=2)
    result = compare(tiny_llama_dir, max_memory=caps, strategies=["auto", "sequential"], batch_size=2, seq_len=64,
                     reserve=0)
    assert [(e.strategy, e.tool) for e in result.entries] == [
        ("auto", "layerplan"), ("auto", "accelerate"), ("sequential", "layerplan"), ("sequential", "accelerate")]
    for e in result.entries:
        assert e.plan is not None
        if e.tool == "layerplan":
            assert e.plan.fits and e.overflow_bytes == 0


def test_cli_compare_and_evaluate(tiny_llama_dir, tmp_path, capsys) -> None:  # noqa: ANN001
    common = ["--batch-size", "2", "--seq-len", "64", "--reserve", "0"]
    code = main(["compare", tiny_llama_dir, "--max-memory", "0=10MB", "1=10MB", "cpu=1GB", "--strategies", "auto",
                 *common])
    out, err = capsys.readouterr()
    assert code == 0 and "layerplan" in out and "accelerate" in out and "ms per token" in out
    fits = tmp_path / "fits.json"
    fits.write_text(json.dumps({"": 0}))
    code = main(["evaluate", tiny_llama_dir, "--device-map", str(fits), "--max-memory", "0=1GB", *common])
    assert code == 0
    capsys.readouterr()
    code = main(["evaluate", tiny_llama_dir, "--device-map", str(fits), "--max-memory", "0=100KB", *common])
    out, _ = capsys.readouterr()
    assert code == 3 and "does not fit" in out
    code = main(["plan", tiny_llama_dir, "--max-memory", "0=10MB", "--device-type", "0=h200x", *common])
    _, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "h200x" in lines[0]
