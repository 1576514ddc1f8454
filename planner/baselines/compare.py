"""layerplan against accelerate, side by side, under one accounting.

For each strategy, both tools place the same meta model on the same caps at the same workload:
layerplan solves (:func:`layerplan.planner.api.plan_graph`); accelerate fills greedily as
``from_pretrained(device_map=strategy, max_memory=...)`` does (:mod:`layerplan.planner.baselines.accelerate`). Both
maps are then measured by :func:`layerplan.planner.api.evaluate_map`: bytes per device with KV cache,
activations, streaming and reserve (:mod:`layerplan.solver.accounting`), offloaded bytes, cuts and the cost
model's time per token (:mod:`layerplan.solver.cost`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from layerplan.planner.output.adapter import Plan
from layerplan.planner.graph import LayerGraph, TracedWorkload
from layerplan.planner.api import as_spec, evaluate_map, plan_graph, resolve_max_memory, trace
from layerplan.planner.baselines.accelerate import accelerate_device_map
from layerplan.planner.spec.strategies import Strategy
from layerplan.planner.spec import PlanSpec, parse_dtype
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
    workload: TracedWorkload
    trace_s: float
    entries: tuple[Entry, ...]


def compare_strategy(
    graph: LayerGraph,
    meta_model: nn.Module,
    spec: PlanSpec,
    *,
    strategy: Strategy | str,
) -> tuple[Entry, Entry]:
    """layerplan's and accelerate's entries for one strategy on an already traced model.

    Args:
        graph, meta_model: from :func:`layerplan.planner.api.trace` (traced once, reused for any caps).
        spec: the devices (caps, hardware) both plans get and are measured on, and layerplan's
            solve options (its objective; the strategy is replaced by ``strategy``).
        strategy: one of :class:`~layerplan.planner.spec.strategies.Strategy`.

    Returns:
        ``(layerplan entry, accelerate entry)``; a tool that gives no plan has ``plan=None`` and
        its ``error``.
    """
    strategy = Strategy.parse(strategy)
    spec = spec.replace(solve=dataclasses.replace(spec.solve, strategy=strategy))
    began = time.perf_counter()
    try:
        ours: Plan | None = plan_graph(graph, spec)
        error = None
    except InfeasiblePlanError as exc:
        ours, error = None, str(exc)
    mine = Entry(tool="layerplan", strategy=strategy.value, plan=ours, error=error,
                 planning_s=time.perf_counter() - began)
    began = time.perf_counter()
    try:
        theirs = accelerate_device_map(
            meta_model, max_memory=resolve_max_memory(spec.devices), strategy=strategy.value,
            dtype=parse_dtype(graph.dtype), no_split_module_classes=tuple(graph.no_split_module_classes),
        )
        planning_s = time.perf_counter() - began
        measured: Plan | None = evaluate_map(graph, theirs, spec, solver_name="accelerate")
        error = None
    except LayerplanError as exc:
        planning_s, measured, error = time.perf_counter() - began, None, str(exc)
    return mine, Entry(tool="accelerate", strategy=strategy.value, plan=measured, error=error,
                       planning_s=planning_s)


def compare(model: Any, *, strategies: Sequence[Strategy | str] = tuple(Strategy), **options: Any) -> Comparison:
    """Plan a model with layerplan and with accelerate for each strategy (see the module docstring).

    Args:
        model: a :class:`PlanSpec`, or a catalog name, model directory, config file, Hub id
            (local cache) or ``nn.Module`` (a graph JSON is not enough: accelerate needs the
            module tree), with ``**options`` as for :func:`layerplan.planner.api.plan`.
        strategies: which strategies to compare.

    Raises:
        InvalidSpecError, TraceError: bad input, or the model cannot be built on meta.
    """
    chosen = [Strategy.parse(s) for s in strategies]
    spec = as_spec(model, **options)
    started = time.perf_counter()
    graph, meta_model = trace(spec)
    trace_s = time.perf_counter() - started
    caps = resolve_max_memory(spec.devices)
    spec = spec.replace(devices=dataclasses.replace(spec.devices, max_memory=caps))  # detect once for both tools
    entries = [entry for strategy in chosen for entry in compare_strategy(graph, meta_model, spec, strategy=strategy)]
    return Comparison(
        model=graph.model,
        max_memory=caps,
        workload=graph.workload,
        trace_s=trace_s,
        entries=tuple(entries),
    )
