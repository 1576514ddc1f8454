"""One step of a capacity search: does the model fit this setup at this workload, proven either way?

Every capacity answer is a sequence of these probes. A probe solves one plan
(:func:`layerplan.planner.api.solve_graph`, without the solver's infeasibility explanation,
which costs two more solves and says nothing a capacity answer needs) and keeps the verdict:

* ``fits``: a plan was found (the solver's own placement; its status says whether it is optimal);
* ``infeasible``: the solver *proved* no placement exists (its pre-checks or an exhaustive search);
* ``bound``: no solve was needed: the GPUs' memory together is less than the weights and KV cache
  they must hold (:func:`memory_bound`);
* ``unknown``: the solver ran out of time before deciding. An answer that rests on one says so;
* ``slow`` (a latency or throughput target only): no solve was needed: even with every node on its
  fastest GPU and nothing moved, the time per token misses the target
  (:func:`layerplan.planner.api.least_ms_per_token`). Whether it would fit is not decided.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerplan.planner.capacity.setups import Setup
from layerplan.planner.spec import PlanSpec, build_devices
from layerplan.planner.quiet import quiet
from layerplan.solver import InfeasiblePlanError, LayerplanError, format_bytes

if TYPE_CHECKING:
    from layerplan.planner.graph import LayerGraph
    from layerplan.planner.output.adapter import Plan

__all__ = [
    "FITS", "INFEASIBLE", "BOUND", "UNKNOWN", "SLOW", "Probe", "fewest_for", "gpu_bytes_needed", "memory_bound",
    "probe", "usable_gpu_bytes",
]

FITS, INFEASIBLE, BOUND, UNKNOWN, SLOW = "fits", "infeasible", "bound", "unknown", "slow"


@dataclass(frozen=True, slots=True)
class Probe:
    """The verdict on one (setup, workload) point.

    Attributes:
        setup: the hardware probed.
        verdict: ``"fits"``, ``"infeasible"``, ``"bound"``, ``"unknown"`` or ``"slow"`` (module docstring).
        reason: for a plan, its solver status; otherwise the proof (or why there is none), one line.
        plan: the plan when it fits, else None.
        seconds: wall time of the probe (solve only; tracing is not counted).
        value: what was varied to reach this point (a GPU count, batch size, context), if anything.
        unit: for ``infeasible``, the node that fits on none of the setup's devices by itself (its
            weights, KV cache and working set against one cap), when that is the proof: then more
            devices of the same kinds cannot help either.
    """

    setup: Setup
    verdict: str
    reason: str
    plan: Plan | None = None
    seconds: float = 0.0
    value: int | None = None
    unit: str | None = None

    @property
    def fits(self) -> bool:
        return self.verdict == FITS

    @property
    def proven_not(self) -> bool:
        """Proven not to fit (by the solver or by the memory bound)."""
        return self.verdict in (INFEASIBLE, BOUND)

    @property
    def ms_per_token(self) -> float | None:
        timing = self.plan.timing if self.plan is not None else None
        return timing.per_token_s * 1e3 if timing is not None else None

    def to_dict(self) -> dict[str, object]:
        return {"setup": self.setup.name, "value": self.value, "verdict": self.verdict, "reason": self.reason,
                "ms_per_token": self.ms_per_token, "seconds": round(self.seconds, 4)}


def usable_gpu_bytes(setup: Setup, spec: PlanSpec) -> int:
    """The bytes the setup's GPUs can give to weights and KV cache together: each GPU's memory
    less its reserve (:func:`layerplan.planner.spec.build_devices`), summed."""
    devices = setup.devices(spec.devices)
    caps = build_devices(devices.max_memory or {}, devices.reserve)
    return sum(max(d.cap_bytes - d.reserve_bytes, 0) for d in caps if d.key not in ("cpu", "disk"))


def gpu_bytes_needed(graph: LayerGraph, setup: Setup) -> int:
    """What ``setup``'s GPUs must hold beyond their reserves (see :func:`memory_bound`): the KV
    cache, and without cpu/disk offload the weights too, bytes."""
    return graph.total_kv_bytes + (0 if setup.offload else sum(n.size_bytes for n in graph.nodes))


def memory_bound(graph: LayerGraph, setup: Setup, spec: PlanSpec) -> str | None:
    """Why ``setup`` cannot hold ``graph``, from its memory alone; None when the bound allows it.

    Every node's KV cache lives on a GPU (an offloaded node computes on the execution device and
    keeps its cache there: :mod:`layerplan.solver.accounting`), and without cpu/disk so do all
    weights; a GPU that holds anything also keeps its reserve. So the GPUs need at least
    ``KV (+ weights)`` bytes beyond their reserves."""
    need = gpu_bytes_needed(graph, setup)
    have = usable_gpu_bytes(setup, spec)
    if need <= have:
        return None
    what = "KV cache" if setup.offload else "weights and KV cache"
    return (f"{setup.name} holds at most {format_bytes(have)} beyond its reserves, less than the "
            f"{format_bytes(need)} of {what}")


def probe(graph: LayerGraph, setup: Setup, spec: PlanSpec, *, value: int | None = None) -> Probe:
    """Solve ``graph`` on ``setup`` under ``spec``'s reserve, links and solve options.

    Never raises for an infeasible or undecided point: the verdict says it.

    Raises:
        InvalidSpecError: the spec or setup is invalid for this graph (e.g. a pin on a device the
            setup lacks).
    """
    from layerplan.planner.api import solve_graph

    bound = memory_bound(graph, setup, spec)
    if bound is not None:
        return Probe(setup, BOUND, bound, value=value)
    started = time.perf_counter()
    trial = spec.replace(devices=setup.devices(spec.devices))
    try:
        with quiet():
            plan = solve_graph(graph, trial, explain=False, check_disk=False)
    except InfeasiblePlanError as exc:
        return Probe(setup, INFEASIBLE, _first_clause(exc), seconds=time.perf_counter() - started, value=value,
                     unit=exc.node)
    except LayerplanError as exc:
        if type(exc) is not LayerplanError:
            raise
        return Probe(setup, UNKNOWN, str(exc), seconds=time.perf_counter() - started, value=value)
    return Probe(setup, FITS, plan.status, plan=plan, seconds=time.perf_counter() - started, value=value)


def _first_clause(exc: Exception) -> str:
    """An infeasibility message without its advice (what to raise or add): the proof only."""
    text = str(exc)
    return text.split("; ")[0] if len(text) > 160 else text


def fewest_for(need_bytes: int, per_gpu_bytes: int) -> int:
    """The fewest GPUs of ``per_gpu_bytes`` usable bytes each that hold ``need_bytes`` (at least 1)."""
    return max(1, math.ceil(need_bytes / per_gpu_bytes)) if per_gpu_bytes > 0 else 1
