"""Sweeps declared in the spec file (layerplan.planner.capacity.sweep): the grid and its one-line
errors, the tidy table (CSV and JSON round trips), resuming an interrupted run, worker processes,
the sweep plots' numbers, and `layerplan sweep`."""

from __future__ import annotations

import importlib
import json

import pytest

from layerplan.planner.api import load_graph
from layerplan.planner.capacity import SweepGrid, SweepRow, parse_setup, read_csv, sweep
from layerplan.planner.capacity.probe import probe
from layerplan.planner.capacity.sweep_grid import point_spec
from layerplan.planner.spec import PlanSpec, WorkloadSpec
from layerplan.solver import InvalidSpecError

from cli_helpers import one_line, run

sweep_module = importlib.import_module("layerplan.planner.capacity.sweep")  # the package exports the function

#: The tiny Llama on GPUs of 3 MiB: batch 1 and 4 fit at contexts 32 and 128, batch 64 does not
#: (the solver proves it at 32, the memory bound at 128); 256 is past its 128 positions (an error).
SETUPS = ["a100-80gb@3MiB*2", "a100-80gb@3MiB*1"]


def _tables(model: str, grid: dict) -> dict:
    return {"model": {"source": model, "dtype": "float32"}, "devices": {"reserve": 0},
            "workload": {"max_new_tokens": 4}, "sweep": grid}


@pytest.fixture(scope="module")
def tiny_grid(tiny_llama_dir) -> dict:  # noqa: ANN001
    return _tables(tiny_llama_dir, {"batch_size": [1, 4, 64], "seq_len": [32, 128, 256], "setup": SETUPS})


@pytest.fixture(scope="module")
def full(tiny_grid, tmp_path_factory):  # noqa: ANN001, ANN201 - the uninterrupted run, written to disk
    return sweep(tiny_grid, out_dir=tmp_path_factory.mktemp("full"))


# -- the grid --------------------------------------------------------------------------------------
def test_the_grid_is_the_product_of_the_axes_in_axis_order() -> None:
    grid = SweepGrid.from_dict({"setup": ["h100-sxm*8", " l4*2 "], "dtype": ["bf16"], "batch_size": [1, 4, 16]})
    assert grid.names == ("dtype", "batch_size", "setup")  # model and workload outermost, setup innermost
    assert len(grid) == 6 and grid.to_dict() == {"dtype": ["bfloat16"], "batch_size": [1, 4, 16],
                                                 "setup": ["h100-sxm*8", "l4*2"]}
    points = grid.points()
    assert [p.index for p in points] == list(range(6))
    assert points[1].label == "dtype=bfloat16 batch_size=1 setup=l4*2"
    base = PlanSpec.from_dict({"model": {"source": "llama-2-7b"}})
    assert len({p.key(base) for p in points}) == 6
    assert points[0].key(base) == grid.points()[0].key(base)  # stable
    assert points[0].key(base) != points[0].key(base.replace(workload=WorkloadSpec(max_new_tokens=8)))


BAD_GRIDS = [
    ({"batch": [1]}, ["unknown [sweep] axis 'batch'", "did you mean 'batch_size'"]),
    ({"batch_size": 4}, ["[sweep] batch_size=4", "non-empty list"]),
    ({"batch_size": []}, ["non-empty list"]),
    ({}, ["[sweep] must list values per axis"]),
    ({"batch_size": [1, 0]}, ["batch_size value 0", "batch_size=0"]),
    ({"batch_size": [1, 1]}, ["gives 1 twice"]),
    ({"seq_len": ["long"]}, ["seq_len value 'long'"]),
    ({"dtype": ["bf16", "fp9"]}, ["dtype value 'fp9'", "unknown dtype 'fp9'"]),
    ({"quantization": ["nf5"]}, ["quantization value 'nf5'", "nf4"]),
    ({"setup": ["h100*2"]}, ["setup value 'h100*2'"]),
    ({"setup": [8]}, ["setup value 8", "setup string"]),
    ({"strategy": ["fast"]}, ["strategy value 'fast'", "unknown strategy"]),
]


@pytest.mark.parametrize(("grid", "expected"), BAD_GRIDS)
def test_a_bad_axis_or_value_is_one_line_before_any_tracing(grid, expected, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("layerplan.planner.api.load_graph", _no_tracing)
    with pytest.raises(InvalidSpecError) as caught:
        sweep({"model": {"source": "llama-2-7b"}, "sweep": grid})
    message = str(caught.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message


def _no_tracing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise AssertionError("traced before the spec was checked")


def test_spec_level_mistakes_are_found_before_tracing(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("layerplan.planner.api.load_graph", _no_tracing)
    with pytest.raises(InvalidSpecError, match=r"no \[sweep\] table"):
        sweep({"model": {"source": "llama-2-7b"}})
    with pytest.raises(InvalidSpecError, match="the sweep needs devices"):
        sweep({"model": {"source": "llama-2-7b"}, "sweep": {"batch_size": [1]}})
    with pytest.raises(InvalidSpecError, match="jobs=0"):
        sweep({"model": {"source": "llama-2-7b"}, "sweep": {"setup": ["l4"]}}, jobs=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidSpecError, match="is a file"):
        sweep({"model": {"source": "llama-2-7b"}, "sweep": {"setup": ["l4"]}}, out_dir=tmp_path / "file")
    with pytest.raises(InvalidSpecError, match=r"unknown section \[devicez\]"):
        sweep({"model": {"source": "llama-2-7b"}, "devicez": {}, "sweep": {"setup": ["l4"]}})


def test_a_plan_spec_refuses_sweep_and_points_to_the_command() -> None:
    with pytest.raises(InvalidSpecError, match=r"\[sweep\] is read by `layerplan sweep spec.toml`"):
        PlanSpec.from_dict({"model": {"source": "llama-2-7b"}, "sweep": {"batch_size": [1]}})


def test_a_swept_length_frees_the_base_length_it_would_contradict() -> None:
    base = PlanSpec.from_dict({"model": {"source": "x"}, "devices": {"max_memory": {"0": "1GiB"}},
                               "workload": {"prompt_len": 1000, "max_new_tokens": 24}})

    def lengths(grid: dict) -> tuple:
        spec, _ = point_spec(base, SweepGrid.from_dict(grid).points()[0])
        return spec.workload.seq_len, spec.workload.prompt_len, spec.workload.max_new_tokens

    assert lengths({"seq_len": [512]}) == (512, None, 24)  # the prompt takes what the new tokens leave
    assert lengths({"max_new_tokens": [100]}) == (None, 1000, 100)  # nothing contradicted: kept
    context = base.replace(workload=WorkloadSpec(seq_len=2048, max_new_tokens=48))
    spec, setup = point_spec(context, SweepGrid.from_dict({"prompt_len": [1024]}).points()[0])
    assert (spec.workload.seq_len, spec.workload.prompt_len, spec.workload.max_new_tokens) == (None, 1024, 48)
    assert setup.name == "the declared devices"
    with pytest.raises(InvalidSpecError, match="prompt_len=100 leaves no room in seq_len=64"):
        point_spec(base, SweepGrid.from_dict({"seq_len": [64], "prompt_len": [100]}).points()[0])


# -- one run ----------------------------------------------------------------------------------------
def test_each_point_is_its_own_plan_and_a_bad_point_is_a_row(full, tiny_llama_dir) -> None:  # noqa: ANN001
    rows = full.rows
    assert [r.index for r in rows] == list(range(18)) and full.resumed == 0
    assert [(r.batch_size, r.seq_len, r.setup) for r in rows[:3]] == [(1, 32, SETUPS[0]), (1, 32, SETUPS[1]),
                                                                       (1, 128, SETUPS[0])]
    status = {(r.batch_size, r.seq_len): r.status for r in rows if r.setup == SETUPS[0]}
    assert status == {(1, 32): "fits", (1, 128): "fits", (4, 32): "fits", (4, 128): "fits",
                      (64, 32): "infeasible", (64, 128): "bound", (1, 256): "error", (4, 256): "error",
                      (64, 256): "error"}
    assert all("128 positions" in r.message for r in full.errors)
    for row in rows:
        assert row.fits == (row.status == "fits")
        assert len(row.devices) == len(row.used_bytes) == len(row.cap_bytes) == (len(row.devices) if row.fits else 0)
        assert all(u <= c for u, c in zip(row.used_bytes, row.cap_bytes))
        assert (row.ms_per_token is not None) == row.fits == (row.offloaded_bytes is not None)
    # the row of batch 4 at context 128 on one GPU is the probe of that workload on that setup
    row = next(r for r in rows if (r.batch_size, r.seq_len, r.setup) == (4, 128, SETUPS[1]))
    spec = PlanSpec.from_dict({"model": {"source": tiny_llama_dir, "dtype": "float32"}, "devices": {"reserve": 0},
                               "workload": {"batch_size": 4, "seq_len": 128, "max_new_tokens": 4}})
    found = probe(load_graph(spec)[0], parse_setup(SETUPS[1]), spec)
    assert row.used_bytes == tuple(u.used_bytes for u in found.plan.usage) and row.devices == ("0",)
    assert row.ms_per_token == found.ms_per_token and row.prompt_len == 124 and row.kv_dtype == "float32"


def test_the_csv_and_json_tables_round_trip(full) -> None:  # noqa: ANN001
    csv_path, json_path = full.files
    assert [p.name for p in full.files] == ["sweep.csv", "sweep.json"]
    assert read_csv(csv_path) == list(full.rows)  # every column, floats included
    written = json.loads(json_path.read_text())
    assert [SweepRow.from_dict(r) for r in written["rows"]] == list(full.rows)
    assert written["axes"] == {"batch_size": [1, 4, 64], "seq_len": [32, 128, 256], "setup": SETUPS}
    assert (written["points"], written["fits"], written["errors"]) == (18, 8, 6)


# -- resuming --------------------------------------------------------------------------------------
def test_an_interrupted_sweep_resumes_to_the_same_table(full, tiny_grid, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    calls = []

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(args[1].name)
        return probe(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "probe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(tiny_grid, out_dir=tmp_path)
    journal = (tmp_path / "points.jsonl").read_text().splitlines()
    assert len(journal) == 5 + 2  # five probed points, and the two errors among them (context 256)
    assert not (tmp_path / "sweep.csv").exists()
    with open(tmp_path / "points.jsonl", "a") as file:
        file.write('{"index": 7, "key": "cut sho')  # a line torn by the interruption

    calls.clear()
    monkeypatch.setattr(sweep_module, "probe", lambda *a, **k: calls.append(a[1].name) or probe(*a, **k))
    resumed = sweep(tiny_grid, out_dir=tmp_path)
    assert resumed.resumed == 7
    assert len(calls) == 18 - 6 - 5  # only the points not journaled are planned (errors never reach probe)
    assert len(resumed.rows) == len(full.rows)
    assert all(a.same_answer(b) for a, b in zip(resumed.rows, full.rows))
    assert read_csv(tmp_path / "sweep.csv") == list(resumed.rows)

    calls.clear()
    again = sweep(tiny_grid, out_dir=tmp_path)
    assert again.resumed == 18 and calls == [] and again.rows == resumed.rows


def test_worker_processes_give_the_same_table_in_grid_order(tiny_llama_dir) -> None:  # noqa: ANN001
    grid = _tables(tiny_llama_dir, {"batch_size": [1, 64], "setup": SETUPS})
    seen = []
    alone = sweep(grid)
    pooled = sweep(grid, jobs=2, progress=lambda done, total, label: seen.append((done, total)))
    assert [r.index for r in pooled.rows] == [0, 1, 2, 3]
    assert all(a.same_answer(b) for a, b in zip(pooled.rows, alone.rows))
    assert seen[-1] == (4, 4) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_dtype_and_quantization_axes_on_a_catalog_model() -> None:
    # llama-2-7b: 6.7e9 parameters, ~12.6 GiB in fp16, ~3.6 GiB in nf4 (4 bits + fp16 embeddings/head);
    # an 8 GiB GPU holds only the nf4 weights, and with 64 GiB of host RAM fp16 fits by offloading.
    result = sweep({"model": {"source": "llama-2-7b"}, "workload": {"batch_size": 1, "seq_len": 1024},
                    "sweep": {"quantization": ["none", "nf4"],
                              "setup": ["rtx-4090@8GiB*1", "rtx-4090@8GiB*1+cpu=64GiB"]}})
    verdicts = [(r.quantization, r.setup.endswith("cpu=64GiB"), r.status) for r in result.rows]
    assert verdicts == [("none", False, "bound"), ("none", True, "fits"), ("nf4", False, "fits"),
                        ("nf4", True, "fits")]
    offload, nf4 = result.rows[1], result.rows[2]
    assert offload.offloaded_bytes > 4 * 2**30 and offload.devices == ("0", "cpu")
    assert nf4.offloaded_bytes == 0 and nf4.dtype == "float16"


# -- plots -----------------------------------------------------------------------------------------
def test_the_sweep_plots_draw_the_numbers_of_the_table(full, tmp_path) -> None:  # noqa: ANN001
    from layerplan.planner.output.plots import plot_sweep_fits, plot_sweep_latency, sweep_fits_data, sweep_latency_data

    by_point = {(r.setup, r.batch_size, r.seq_len): r for r in full.rows}
    panels = sweep_fits_data(full)
    assert [p["title"] for p in panels] == SETUPS
    for panel in panels:
        assert panel["batch_sizes"] == [1, 4, 64] and panel["contexts"] == [32, 128, 256]
        for i, context in enumerate(panel["contexts"]):
            for j, batch in enumerate(panel["batch_sizes"]):
                row = by_point[(panel["title"], batch, context)]
                assert panel["fits"][i][j] == (None if row.status == "error" else row.fits)
    lines = sweep_latency_data(full)
    assert [line["label"] for line in lines] == [f"{s} seq_len={c}" for c in (32, 128) for s in SETUPS]
    for line in lines:
        setup, context = line["label"].split(" seq_len=")
        fitting = sorted((r.batch_size, r.ms_per_token) for r in full.rows
                         if r.setup == setup and r.seq_len == int(context) and r.fits)
        assert list(zip(line["batch_sizes"], line["ms_per_token"])) == fitting
    paths = plot_sweep_fits(full, tmp_path) + plot_sweep_latency(full, tmp_path)
    assert sorted(p.name for p in paths) == ["sweep_fits.png", "sweep_fits.svg", "sweep_latency.png",
                                             "sweep_latency.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


# -- CLI -------------------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch):  # noqa: ANN001, ANN201
    """`layerplan ...` with `sweep` registered (through build_parser itself once it is wired there)."""
    from layerplan.planner import cli as cli_module
    from layerplan.planner.cli_sweep import add_sweep_parser

    build = cli_module.build_parser
    sub = next(a for a in build()._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    if "sweep" not in sub.choices:
        def with_sweep():  # noqa: ANN202
            parser = build()
            add_sweep_parser(next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)))
            return parser

        monkeypatch.setattr(cli_module, "build_parser", with_sweep)
    return run


def _spec_file(path, tables: dict) -> str:  # noqa: ANN001
    from layerplan.planner.spec.toml_writer import dumps

    path.write_text(dumps(tables))
    return str(path)


def test_cli_sweep_writes_the_table_and_exits_by_what_fits(cli, tiny_llama_dir, tmp_path, capsys) -> None:  # noqa: ANN001
    spec = _spec_file(tmp_path / "tiny.toml", _tables(tiny_llama_dir, {"batch_size": [1, 64], "setup": SETUPS}))
    code, out, _ = cli(["sweep", spec, "--format", "json", "--plot", str(tmp_path / "plots")], capsys)
    assert code == 0
    answer = json.loads(out)
    assert answer["points"] == 4 and [r["status"] for r in answer["rows"]] == ["fits", "fits", "bound", "bound"]
    assert read_csv(tmp_path / "tiny-sweep" / "sweep.csv") == [SweepRow.from_dict(r) for r in answer["rows"]]
    assert len(list((tmp_path / "plots").iterdir())) == 4
    code, out, _ = cli(["sweep", spec, "--out", str(tmp_path / "tiny-sweep")], capsys)
    assert code == 0 and "4 read from the journal" in out and "too small" in out

    nothing = _spec_file(tmp_path / "small.toml", _tables(tiny_llama_dir, {"setup": ["a100-80gb@64KiB*1"]}))
    code, _, _ = cli(["sweep", nothing, "--format", "json"], capsys)
    assert code == 3
    broken = _spec_file(tmp_path / "long.toml", _tables(tiny_llama_dir, {"seq_len": [512], "setup": SETUPS}))
    code, out, _ = cli(["sweep", broken], capsys)
    assert code == 1 and "error at #0, #1" in out


def test_cli_bad_input_is_one_line_and_exit_2(cli, tiny_llama_dir, tmp_path, capsys) -> None:  # noqa: ANN001
    spec = _spec_file(tmp_path / "s.toml", _tables(tiny_llama_dir, {"batch": [1], "setup": SETUPS}))
    code, _, err = cli(["sweep", spec], capsys)
    assert code == 2 and "unknown [sweep] axis 'batch'" in one_line(err) and "s.toml" in one_line(err)
    good = _spec_file(tmp_path / "g.toml", _tables(tiny_llama_dir, {"setup": SETUPS}))
    code, _, err = cli(["plan", good], capsys)
    assert code == 2 and "layerplan sweep" in one_line(err)
    for argv, expected in ((["sweep", tiny_llama_dir], "spec file with a [sweep] table"),
                           (["sweep", good, "--jobs", "0"], "jobs=0"),
                           (["sweep", str(tmp_path / "missing.toml")], "does not exist"),
                           (["sweep", good, "--out", good], "is a file")):
        code, _, err = cli(argv, capsys)
        assert code == 2 and expected in one_line(err), argv


def test_cli_interrupt_keeps_the_finished_points(cli, tiny_llama_dir, tmp_path, capsys, monkeypatch) -> None:  # noqa: ANN001
    spec = _spec_file(tmp_path / "t.toml", _tables(tiny_llama_dir, {"batch_size": [1, 4], "setup": SETUPS}))
    calls = []

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return probe(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "probe", interrupted)
    code, _, err = cli(["sweep", spec], capsys)
    assert code == 130 and "2 finished points kept" in err and "resume" in err
    monkeypatch.setattr(sweep_module, "probe", probe)
    code, out, _ = cli(["sweep", spec], capsys)
    assert code == 0 and "2 read from the journal" in out


def test_a_journal_written_by_another_layerplan_is_not_reused(tiny_grid, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The point key carries layerplan's code and library versions (planner_digest): a journal
    from another build is planned again, not read back."""
    grid_module = importlib.import_module("layerplan.planner.capacity.sweep_grid")
    first = sweep(tiny_grid, out_dir=tmp_path)
    again = sweep(tiny_grid, out_dir=tmp_path)
    monkeypatch.setattr(grid_module, "planner_digest", lambda: "another layerplan")
    other = sweep(tiny_grid, out_dir=tmp_path)
    assert first.resumed == 0 and again.resumed == len(again.rows) > 0 and other.resumed == 0
