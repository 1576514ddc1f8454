"""layerplan against accelerate, side by side, under one accounting.

For each strategy, both tools place the same meta model on the same caps at the same workload:
layerplan solves (:func:`layerplan.planner.api.plan_graph`); accelerate fills greedily as
``from_pretrained(device_map=strategy, max_memory=...)`` does (:mod:`layerplan.planner.baselines.accelerate`). Both
maps are then measured by :func:`layerplan.planner.api.evaluate_map`: bytes per device with KV cache,
activations, streaming and reserve (:mod:`layerplan.solver.accounting`), offloaded bytes, cuts and the cost
model's time per token (:mod:`layerplan.solver.cost`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from layerplan.planner.output.adapter import Plan
from layerplan.planner.graph import LayerGraph
from layerplan.planner.api import evaluate_map, plan_graph, resolve_max_memory, trace
from layerplan.planner.baselines.accelerate import accelerate_device_map
from layerplan.planner.spec.strategies import Strategy
from layerplan.planner.spec.sizes import parse_dtype, parse_max_memory
from layerplan.solver import InfeasiblePlanError, LayerplanError

__all__ = ["Entry", "Comparison", "compare", "compare_strategy"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One tool's plan for one strategy.

    Attributes:
        tool: ``"layerplan"`` or ``"accelerate"``.
        strategy: ``"auto"``, ``"balanced"``, ``"balanced_low_0"`` or ``"sequential"``.
        plan: the plan measured under layerplan's accounting (None when refused).
        error: why the tool gave no plan (layerplan: infeasible; accelerate: raised).
        planning_s: seconds the tool took to produce its device_map (tracing excluded).
    """

    tool: str
    strategy: str
    plan: Plan | None
    error: str | None
    planning_s: float

    @property
    def overflow_bytes(self) -> int:
        """Bytes over the caps, summed over devices (0 when it fits or there is no plan)."""
        return 0 if self.plan is None else sum(max(0, -u.free_bytes) for u in self.plan.usage)


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """Every entry, plus what they were planned for."""

    model: str
    max_memory: dict[int | str, int]
    workload: Mapping[str, Any]
    trace_s: float
    entries: tuple[Entry, ...]


def compare_strategy(
    graph: LayerGraph,
    meta_model: nn.Module,
    *,
    strategy: Strategy | str,
    max_memory: Mapping[int | str, int | str],
    objective: str | None = None,
    time_limit_s: float = 30.0,
    **declared: Any,
) -> tuple[Entry, Entry]:
    """layerplan's and accelerate's entries for one strategy on an already traced model.

    Args:
        graph, meta_model: from :func:`layerplan.planner.api.trace` (traced once, reused for any caps).
        strategy: one of :class:`~layerplan.planner.spec.strategies.Strategy`.
        max_memory: the caps both tools get.
        objective, time_limit_s: layerplan's (see :func:`layerplan.planner.api.plan_graph`).
        **declared: ``device_types``, ``hardware``, ``offload_folder``, ``reserve``
            (see :func:`layerplan.planner.api.plan_graph`), used for both plans' measurement.

    Returns:
        ``(layerplan entry, accelerate entry)``; a tool that gives no plan has ``plan=None`` and
        its ``error``.
    """
    strategy = Strategy.parse(strategy)
    shared = dict(max_memory=max_memory, **declared)
    began = time.perf_counter()
    try:
        ours: Plan | None = plan_graph(graph, strategy=strategy, objective=objective,
                                       time_limit_s=time_limit_s, **shared)
        error = None
    except InfeasiblePlanError as exc:
        ours, error = None, str(exc)
    mine = Entry(tool="layerplan", strategy=strategy.value, plan=ours, error=error,
                 planning_s=time.perf_counter() - began)
    began = time.perf_counter()
    try:
        theirs = accelerate_device_map(
            meta_model, max_memory=parse_max_memory(max_memory), strategy=strategy.value,
            dtype=parse_dtype(graph.dtype), no_split_module_classes=tuple(graph.no_split_module_classes),
        )
        planning_s = time.perf_counter() - began
        measured: Plan | None = evaluate_map(graph, theirs, solver_name="accelerate", **shared)
        error = None
    except LayerplanError as exc:
        planning_s, measured, error = time.perf_counter() - began, None, str(exc)
    return mine, Entry(tool="accelerate", strategy=strategy.value, plan=measured, error=error,
                       planning_s=planning_s)


def compare(
    model: Any,
    *,
    max_memory: Mapping[int | str, int | str] | None = None,
    strategies: Sequence[Strategy | str] = tuple(Strategy),
    objective: str | None = None,
    device_types: Mapping[int | str, str] | None = None,
    hardware: Mapping[str, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    reserve: Mapping[int | str, int | str] | int | str | None = None,
    time_limit_s: float = 30.0,
    **workload: Any,
) -> Comparison:
    """Plan ``model`` with layerplan and with accelerate for each strategy (see the module docstring).

    Args:
        model: catalog name, model directory, ``config.json`` path, Hub id (local cache) or
            ``nn.Module`` (a graph JSON is not enough: accelerate needs the module tree).
        max_memory, objective, device_types, hardware, offload_folder, reserve, time_limit_s:
            see :func:`layerplan.planner.api.plan_graph` (the same caps go to accelerate).
        strategies: which strategies to compare.
        **workload: see :func:`layerplan.planner.api.trace`.

    Raises:
        InvalidSpecError, TraceError: bad input, or the model cannot be built on meta.
    """
    chosen = [Strategy.parse(s) for s in strategies]
    started = time.perf_counter()
    graph, meta_model = trace(model, **workload)
    trace_s = time.perf_counter() - started
    caps = resolve_max_memory(max_memory, device_types=device_types, offload_folder=offload_folder)
    shared = dict(max_memory=caps, device_types=device_types, hardware=hardware,
                  offload_folder=offload_folder, reserve=reserve)
    entries = [
        entry
        for strategy in chosen
        for entry in compare_strategy(graph, meta_model, strategy=strategy, objective=objective,
                                      time_limit_s=time_limit_s, **shared)
    ]
    return Comparison(
        model=graph.model,
        max_memory=parse_max_memory(caps),
        workload=dict(graph.workload),
        trace_s=trace_s,
        entries=tuple(entries),
    )
