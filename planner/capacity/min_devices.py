"""The fewest GPUs of a type that run the model at the workload, proven: N fits, N-1 does not.

The search starts at the memory bound (the fewest GPUs whose memory beyond their reserves holds
the KV cache, and without offload the weights too: :func:`layerplan.planner.capacity.probe.memory_bound`)
and adds one GPU at a time, then doubles, until a plan is found (or a node is shown to fit on no
single GPU of the type, which no count changes); a bisection then finds the first count that fits.
Feasibility is monotone in the count (a plan
for N GPUs is a plan for N+1 that leaves one empty), so the first count that fits is the answer,
and the count before it is proven not to fit: by the solver, or by the bound when the search
started there. With host RAM (``cpu`` in ``max_memory``) the same search runs again with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerplan.planner.capacity.probe import (
    BOUND,
    UNKNOWN,
    Probe,
    fewest_for,
    gpu_bytes_needed,
    memory_bound,
    probe,
    usable_gpu_bytes,
)
from layerplan.planner.capacity.setups import Setup
from layerplan.planner.hardware.presets import lookup_accelerator
from layerplan.planner.spec import PlanSpec
from layerplan.planner.spec.sizes import parse_size
from layerplan.solver import InvalidSpecError

if TYPE_CHECKING:
    from layerplan.planner.graph import LayerGraph
    from layerplan.planner.output.adapter import Plan

__all__ = ["DeviceCount", "MinDevices", "min_devices", "min_devices_on_graph"]


@dataclass(frozen=True, slots=True)
class DeviceCount:
    """The fewest GPUs of one type, with or without offload.

    Attributes:
        device_type: the accelerator preset.
        offload: whether host RAM / disk could take weights.
        num_devices: the answer N, or None when no count up to the search's limit fits.
        proven: N fits and N-1 is proven not to (no undecided probe below N).
        proof: why N-1 does not fit, or why nothing up to the limit does, one line.
        plan: the plan for N GPUs, or None.
        probes: every point the search looked at, in order.
    """

    device_type: str
    offload: bool
    num_devices: int | None
    proven: bool
    proof: str
    plan: Plan | None
    probes: tuple[Probe, ...]

    @property
    def ms_per_token(self) -> float | None:
        timing = self.plan.timing if self.plan is not None else None
        return timing.per_token_s * 1e3 if timing is not None else None

    def to_dict(self) -> dict[str, object]:
        return {
            "device_type": self.device_type, "offload": self.offload, "num_devices": self.num_devices,
            "proven": self.proven, "proof": self.proof, "ms_per_token": self.ms_per_token,
            "device_map": self.plan.device_map if self.plan is not None else None,
            "offloaded_bytes": self.plan.offloaded_bytes if self.plan is not None else None,
            "probes": [p.to_dict() for p in self.probes],
        }


@dataclass(frozen=True, slots=True)
class MinDevices:
    """:func:`min_devices`'s answer for every type asked.

    Attributes:
        model: the model's name.
        answers: one :class:`DeviceCount` per (type, offload), types in the order asked.
        seconds: wall time of the whole question (tracing included).
    """

    model: str
    answers: tuple[DeviceCount, ...]
    seconds: float

    @property
    def num_devices(self) -> int | None:
        """The fewest GPUs over the types asked, without offload when that fits at all, else with."""
        for offload in (False, True):
            counts = [a.num_devices for a in self.answers if a.offload is offload and a.num_devices is not None]
            if counts:
                return min(counts)
        return None

    @property
    def plans_solved(self) -> int:
        return sum(1 for a in self.answers for p in a.probes if p.verdict != BOUND)

    def to_dict(self) -> dict[str, object]:
        return {"question": "min-devices", "model": self.model, "num_devices": self.num_devices,
                "plans_solved": self.plans_solved, "seconds": round(self.seconds, 3),
                "answers": [a.to_dict() for a in self.answers]}


def min_devices_on_graph(
    graph: LayerGraph, spec: PlanSpec, device_type: str, *, offload: bool = False, max_devices: int = 64,
    gpu_memory: int | None = None,
) -> DeviceCount:
    """The fewest GPUs of ``device_type`` that hold ``graph`` under ``spec`` (its reserve, links kind,
    solve options; with ``offload``, its declared ``cpu`` / ``disk`` sizes), each GPU of
    ``gpu_memory`` bytes (default: the preset's memory).

    Raises:
        InvalidSpecError: an unknown type, ``max_devices < 1``, ``offload`` without a declared
            ``cpu`` or ``disk`` size.
    """
    name = lookup_accelerator(device_type).name
    if not isinstance(max_devices, int) or max_devices < 1:
        raise InvalidSpecError(f"max_devices={max_devices!r}; expected an int >= 1")
    host, disk = _offload_sizes(spec) if offload else (None, None)
    if offload and not (host or disk):
        raise InvalidSpecError("offload needs host RAM: declare it, e.g. --max-memory cpu=512GiB")
    memory = {name: gpu_memory} if gpu_memory else {}
    setup = lambda n: Setup(((name, n),), host_bytes=host, disk_bytes=disk, gpu_memory=memory)  # noqa: E731
    start = _start(graph, setup(1), spec)
    probes: list[Probe] = []
    if start > 1:
        below = setup(start - 1)
        probes.append(Probe(below, BOUND, memory_bound(graph, below, spec) or "", value=start - 1))
    if start > max_devices:
        return DeviceCount(name, offload, None, True, f"{max_devices} GPUs do not fit: {probes[-1].reason}", None,
                           tuple(probes))
    failed, fitted = start - 1, _grow(graph, spec, setup, start, max_devices, probes)
    if fitted is None:
        last = probes[-1]
        proof = f"no count fits: {last.reason}" if last.unit else f"{max_devices} GPUs do not fit: {last.reason}"
        return DeviceCount(name, offload, None, last.proven_not, proof, None, tuple(probes))
    failed = max([p.value for p in probes if p.value is not None and p.value < fitted], default=failed)
    while fitted - failed > 1:  # bisection: fitting is monotone in the count
        mid = (failed + fitted) // 2
        probes.append(probe(graph, setup(mid), spec, value=mid))
        failed, fitted = (failed, mid) if probes[-1].fits else (mid, fitted)
    return _answer(name, offload, fitted, probes)


#: Counts tried one by one above the memory bound before the search doubles.
_LINEAR_STEPS = 4


def _grow(graph: LayerGraph, spec: PlanSpec, setup: Callable[[int], Setup], start: int, limit: int,
          probes: list[Probe]) -> int | None:
    """Counts from ``start``: one by one for :data:`_LINEAR_STEPS`, then doubling, up to ``limit``;
    the first that fits (its probe appended with the others), or None. Stops early when one node
    fits on no single GPU of the setup, which no count changes."""
    count, steps = start, 0
    while True:
        probes.append(probe(graph, setup(count), spec, value=count))
        if probes[-1].fits:
            return count
        if (probes[-1].verdict != UNKNOWN and probes[-1].unit is not None) or count >= limit:
            return None
        steps += 1
        count = min(count + 1 if steps < _LINEAR_STEPS else 2 * count, limit)


def _start(graph: LayerGraph, one: Setup, spec: PlanSpec) -> int:
    """The memory bound on the count (module docstring)."""
    return fewest_for(gpu_bytes_needed(graph, one), usable_gpu_bytes(one, spec))


def _answer(name: str, offload: bool, count: int, probes: list[Probe]) -> DeviceCount:
    below = [p for p in probes if p.value is not None and p.value < count]
    previous = next((p for p in below if p.value == count - 1), None)
    if count == 1:
        proof = "one GPU fits"
    elif previous is not None:
        proof = f"{count - 1} GPU(s): {previous.reason}"
    else:  # pragma: no cover - the search always decides count - 1
        proof = "not proven minimal"
    proven = all(p.proven_not for p in below) and (count == 1 or previous is not None)
    plan = next(p.plan for p in probes if p.value == count and p.fits)
    return DeviceCount(name, offload, count, proven, proof, plan, tuple(probes))


def _offload_sizes(spec: PlanSpec) -> tuple[int | None, int | None]:
    caps = spec.devices.max_memory or {}
    return caps.get("cpu") or None, caps.get("disk") or None


def min_devices(
    spec: PlanSpec, device_types: list[str] | tuple[str, ...], *, offload: bool | None = None,
    max_devices: int = 64, gpu_memory: int | str | None = None,
) -> MinDevices:
    """The fewest GPUs of each of ``device_types`` that run ``spec``'s model at its workload.

    Args:
        spec: model, workload, solve options; its ``max_memory`` only gives the ``cpu`` / ``disk``
            sizes for the offload answers (its GPUs are replaced by the ones counted).
        device_types: accelerator presets (``layerplan devices``).
        offload: also (True) or never (False) answer with cpu/disk offload; None: when ``spec``
            declares a ``cpu`` or ``disk`` size.
        max_devices: the largest count tried.
        gpu_memory: memory per GPU (bytes or ``"40GiB"``) instead of each preset's.

    Returns:
        A :class:`MinDevices`: per type (and offload), N with its plan and the proof that N-1
        does not fit (:class:`DeviceCount`).

    Raises:
        InvalidSpecError: no type, an unknown type, a bad limit, offload without host RAM; the
            spec's own errors (see :func:`layerplan.plan`).
        TraceError: the model cannot be traced.
    """
    from layerplan.planner.api import load_graph

    if not device_types:
        raise InvalidSpecError("no device type given; pass --device-type NAME (see `layerplan devices`)")
    names = [lookup_accelerator(t).name for t in device_types]
    modes = [False, True] if offload is None and any(_offload_sizes(spec)) else [bool(offload)]
    memory = parse_size(gpu_memory, what="gpu_memory") if gpu_memory is not None else None
    started = time.perf_counter()
    graph, _ = load_graph(spec)
    answers = [min_devices_on_graph(graph, spec, t, offload=o, max_devices=max_devices, gpu_memory=memory)
               for t in names for o in modes]
    return MinDevices(graph.model, tuple(answers), time.perf_counter() - started)
