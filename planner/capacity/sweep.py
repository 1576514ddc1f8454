"""Sweeps declared in the spec file: every point of a ``[sweep]`` grid planned, one tidy table.

:func:`sweep` reads the grid (:mod:`layerplan.planner.capacity.sweep_grid`), and for each point
traces the model at its dtype, quantization and workload (the graph cache, and the last graph
kept in memory, make a repeated workload solve-only) and probes it on its setup
(:func:`~layerplan.planner.capacity.probe.probe`: fits, infeasible, bound or unknown). A point
that cannot be planned -- a trace error, lengths that contradict each other -- becomes a row
with status ``"error"`` and its message; the sweep goes on.

With ``out_dir`` each finished point is appended to ``out_dir/points.jsonl`` as it finishes
(:class:`~layerplan.planner.capacity.sweep_table.Journal`); a rerun into the same folder skips
them, so an interrupted sweep resumes where it stopped and ends with the same table. With
``jobs > 1`` points are planned in that many worker processes (spawned, so no torch state is
forked); the parent journals the rows, and the table is in grid order either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerplan.planner.capacity.probe import probe
from layerplan.planner.capacity.sweep_grid import DECLARED, Point, SweepGrid, base_setup, point_spec, read_sweep
from layerplan.planner.capacity.sweep_table import ERROR, Journal, SweepRow, write_csv
from layerplan.planner.spec import PlanSpec
from layerplan.planner.spec.paths import make_folder
from layerplan.solver import InvalidSpecError, LayerplanError

if TYPE_CHECKING:
    from layerplan.planner.capacity.probe import Probe
    from layerplan.planner.graph import LayerGraph

__all__ = ["Progress", "SweepResult", "check_sweep", "plan_point", "sweep"]

#: ``progress(done, total, label)``: points finished so far, points in the grid, and the point in
#: hand (the one starting, or with ``jobs > 1`` the one just finished).
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class SweepResult:
    """:func:`sweep`'s answer.

    Attributes:
        model: the model swept.
        grid: the axes and their values.
        rows: one per point, in grid order.
        resumed: how many rows were read from the journal instead of planned.
        seconds: wall time of this run (tracing included).
        files: the table files written (``sweep.csv``, ``sweep.json``), empty without ``out_dir``.
    """

    model: str
    grid: SweepGrid
    rows: tuple[SweepRow, ...]
    resumed: int
    seconds: float
    files: tuple[Path, ...] = ()

    @property
    def errors(self) -> tuple[SweepRow, ...]:
        return tuple(r for r in self.rows if r.status == ERROR)

    def to_dict(self) -> dict[str, Any]:
        return {"question": "sweep", "model": self.model, "axes": self.grid.to_dict(), "points": len(self.rows),
                "fits": sum(r.fits for r in self.rows), "errors": len(self.errors), "resumed": self.resumed,
                "seconds": round(self.seconds, 3), "rows": [r.to_dict() for r in self.rows]}


def sweep(spec: str | os.PathLike | Mapping[str, Any], *, out_dir: str | os.PathLike | None = None, jobs: int = 1,
          progress: Progress | None = None) -> SweepResult:
    """Plan every point of a spec's ``[sweep]`` grid (module docstring).

    Args:
        spec: a spec file with a ``[sweep]`` table, or its dict form (``{"model": ..., "sweep": ...}``).
        out_dir: folder for the journal and the table (``points.jsonl``, ``sweep.csv``,
            ``sweep.json``), created if missing; points already in its journal are not planned
            again. None: nothing is written and nothing resumed.
        jobs: worker processes (1: plan in this process).
        progress: called as points start and finish (:data:`Progress`).

    Returns:
        A :class:`SweepResult`; per-point failures are rows with status ``"error"``.

    Raises:
        InvalidSpecError: (before any tracing) the spec or its ``[sweep]`` table is invalid, a
            grid without a ``setup`` axis on a spec without GPUs, ``jobs`` below 1, an ``out_dir``
            that is a file or cannot be created.
        KeyboardInterrupt: the run was interrupted; the finished points stay in the journal.
    """
    started = time.perf_counter()
    base, grid = check_sweep(spec, out_dir=out_dir, jobs=jobs)
    journal = Journal(out_dir) if out_dir is not None else None
    points = grid.points()
    keys = [p.key(base) for p in points]
    kept = journal.read() if journal is not None else {}
    done = {k: dataclasses.replace(kept[k], index=p.index) for p, k in zip(points, keys) if k in kept}
    todo = [(p, k) for p, k in zip(points, keys) if k not in done]
    resumed = len(done)

    def finished(row: SweepRow) -> None:
        done[row.key] = row
        if journal is not None:
            journal.append(row)

    def tell(label: str) -> None:
        if progress is not None:
            progress(len(done), len(points), label)

    if jobs == 1 or len(todo) < 2:
        _run_here(base, todo, finished, tell)
    else:
        _run_pool(base, todo, finished, tell, jobs=min(jobs, len(todo)))
    rows = tuple(done[k] for k in keys)
    result = SweepResult(_model(base), grid, rows, resumed, time.perf_counter() - started)
    return _written(result, out_dir) if out_dir is not None else result


def check_sweep(spec: str | os.PathLike | Mapping[str, Any], *, out_dir: str | os.PathLike | None = None,
                jobs: int = 1) -> tuple[PlanSpec, SweepGrid]:
    """The base spec and grid of :func:`sweep`'s arguments, with every mistake that can be found
    without tracing reported (``out_dir`` is created).

    Raises:
        InvalidSpecError: see :func:`sweep`.
    """
    base, grid = read_sweep(spec)
    if "setup" not in grid.names:
        base_setup(base)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InvalidSpecError(f"jobs={jobs!r}; expected an int >= 1")
    if out_dir is not None:
        _out_folder(out_dir)
    return base, grid


# -- one point ---------------------------------------------------------------------------------------
def plan_point(base: PlanSpec, point: Point, key: str,
               graphs: dict[str, LayerGraph | LayerplanError] | None = None) -> SweepRow:
    """The row of one point: its spec built, its graph loaded (from ``graphs``, where the last
    graph, or the error loading it, is kept), probed on its setup. Never raises a
    :class:`LayerplanError`: it is the row's ``"error"``."""
    from layerplan.planner.api import load_graph

    graphs = {} if graphs is None else graphs
    try:
        trial, setup = point_spec(base, point)
    except LayerplanError as exc:
        return _failed(base, point, key, exc)
    which = json.dumps([trial.model.to_dict(), trial.workload.to_dict()], sort_keys=True, default=str)
    if which not in graphs:
        graphs.clear()
        try:
            graphs[which] = load_graph(trial)[0]
        except LayerplanError as exc:
            graphs[which] = exc  # the next point at this workload fails the same way
    graph = graphs[which]
    if isinstance(graph, Exception):
        return _failed(trial, point, key, graph)
    try:
        found = probe(graph, setup, trial)
    except LayerplanError as exc:
        return _failed(trial, point, key, exc)
    return _row(trial, point, key, graph, found)


def _axis_columns(spec: PlanSpec, point: Point) -> dict[str, Any]:
    """The axis columns as declared (a point that failed before tracing)."""
    declared = {"setup": DECLARED, "strategy": spec.solve.strategy.value, "dtype": spec.model.dtype,
                "quantization": spec.model.quantization,
                **{name: getattr(spec.workload, name)
                   for name in ("kv_dtype", "batch_size", "seq_len", "prompt_len", "max_new_tokens")}}
    return {**declared, **dict(point.values)}


def _failed(spec: PlanSpec, point: Point, key: str, exc: Exception) -> SweepRow:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return SweepRow(index=point.index, key=key, status=ERROR, fits=False, message=message, **_axis_columns(spec, point))


def _row(spec: PlanSpec, point: Point, key: str, graph: LayerGraph, found: Probe) -> SweepRow:
    traced = graph.workload
    columns = {**_axis_columns(spec, point), "dtype": graph.dtype, "kv_dtype": traced.kv_dtype or graph.dtype,
               "batch_size": traced.batch_size, "seq_len": traced.context_len, "prompt_len": traced.prompt_len,
               "max_new_tokens": traced.max_new_tokens}
    plan = found.plan
    if plan is None:
        return SweepRow(index=point.index, key=key, status=found.verdict, fits=False, message=found.reason,
                        plan_seconds=found.seconds, **columns)
    usage = plan.usage
    return SweepRow(index=point.index, key=key, status=found.verdict, fits=True, message=found.reason,
                    devices=tuple(str(u.device) for u in usage), used_bytes=tuple(u.used_bytes for u in usage),
                    cap_bytes=tuple(u.cap_bytes for u in usage), offloaded_bytes=plan.offloaded_bytes,
                    ms_per_token=found.ms_per_token, plan_seconds=found.seconds, **columns)


# -- running the points ------------------------------------------------------------------------------
Todo = list[tuple[Point, str]]


def _run_here(base: PlanSpec, todo: Todo, finished: Callable[[SweepRow], None],
              tell: Callable[[str], None]) -> None:
    graphs: dict[str, LayerGraph | LayerplanError] = {}
    for point, key in todo:
        tell(point.label)
        finished(plan_point(base, point, key, graphs))
    tell("done")


_WORKER_GRAPHS: dict[str, LayerGraph | LayerplanError] = {}


def _worker(base: PlanSpec, point: Point, key: str) -> SweepRow:
    """:func:`plan_point` in a worker process, keeping its last graph between points."""
    from layerplan.planner.quiet import quiet

    with quiet():
        return plan_point(base, point, key, _WORKER_GRAPHS)


def _run_pool(base: PlanSpec, todo: Todo, finished: Callable[[SweepRow], None], tell: Callable[[str], None], *,
              jobs: int) -> None:
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_worker, base, point, key): point for point, key in todo}
        tell(f"{len(todo)} points on {jobs} processes")
        for future in as_completed(futures):
            finished(future.result())
            tell(futures[future].label)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- output ------------------------------------------------------------------------------------------
def _out_folder(folder: str | os.PathLike) -> Path:
    return make_folder(folder, what="sweep output", holds="its table and journal")


def _written(result: SweepResult, folder: str | os.PathLike) -> SweepResult:
    csv_path = write_csv(result.rows, Path(folder) / "sweep.csv")
    json_path = Path(folder) / "sweep.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return dataclasses.replace(result, files=(csv_path, json_path))


def _model(spec: PlanSpec) -> str:
    return str(spec.model.source)
