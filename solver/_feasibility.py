"""Cheap infeasibility checks shared by the CP-SAT model and the chain DP.

Each check raises :class:`InfeasiblePlanError` with the value, the violated relation and the fix,
before any search starts. What the checks cannot see (contiguity, device order, bin-packing of
whole nodes into caps) is reported by :func:`structural_infeasibility` once a solver has proven it.
"""

from __future__ import annotations

from layerplan.solver.errors import InfeasiblePlanError
from layerplan.solver.problem import PlacementProblem, format_bytes

__all__ = ["check_capacity", "structural_infeasibility", "missing_bytes"]


def missing_bytes(problem: PlacementProblem) -> int:
    """Bytes by which the nodes exceed the summed caps (0 when they fit), a lower bound.

    Weights-only: ``total weights - total caps``. With runtime memory also: the weights and the
    runtime floor (:func:`_runtime_floor`) against all caps, and the runtime floor against the
    caps of the computing devices (offloading moves weights, never the KV cache, off them).
    """
    missing = problem.total_bytes - problem.total_cap_bytes
    if problem.has_runtime_memory:
        runtime = _runtime_floor(problem)
        missing = max(missing, missing + runtime, runtime - _computing_cap(problem))
    return max(0, missing)


def _computing_cap(problem: PlacementProblem) -> int:
    return sum(problem.devices[c].cap_bytes for c in problem.computing_devices)


def _runtime_floor(problem: PlacementProblem) -> int:
    """Runtime bytes every placement needs on its computing devices together:
    ``max(KV cache + largest working set beside it, largest working set before any cache) +
    smallest reserve``. The device that runs the largest working set beside the cache also holds
    its own KV cache, and the others theirs; a before-cache working set needs its bytes on one
    device (:mod:`layerplan.solver.accounting`)."""
    nodes = problem.nodes
    beside = max((x.work_bytes for x in nodes if not x.before_kv_cache), default=0)
    before = max((x.work_bytes for x in nodes if x.before_kv_cache), default=0)
    return max(problem.total_kv_bytes + beside, before) + min(
        problem.devices[c].reserve_bytes for c in problem.computing_devices
    )


def _unit_runtime(problem: PlacementProblem, group: tuple[int, ...]) -> tuple[int, str]:
    """The runtime bytes the nodes of ``group`` need where they compute, and how to say them:
    ``max(largest before-cache working set, KV cache + largest other working set)``."""
    nodes = [problem.nodes[m] for m in group]
    kv = sum(x.kv_bytes for x in nodes)
    beside = max((x.work_bytes for x in nodes if not x.before_kv_cache), default=0)
    before = max((x.work_bytes for x in nodes if x.before_kv_cache), default=0)
    if before > kv + beside:
        return before, f"working set {format_bytes(before)} (before any KV cache exists)"
    return kv + beside, f"KV cache {format_bytes(kv)}, working set {format_bytes(beside)}"


def _units(problem: PlacementProblem) -> list[tuple[tuple[int, ...], int, int | None]]:
    """Nodes that must share a device, as ``(members, bytes, pinned device or None)``.

    A unit is a tied group or a node outside every group; a unit is pinned when any member is.
    """
    pinned = dict(problem.pins)
    grouped = {m for g in problem.tied_groups for m in g}
    members = list(problem.tied_groups) + [(i,) for i in range(len(problem.nodes)) if i not in grouped]
    out = []
    for group in sorted(members):
        size = sum(problem.nodes[m].size_bytes for m in group)
        pins = [pinned[m] for m in group if m in pinned]
        out.append((group, size, pins[0] if pins else None))
    return out


def check_capacity(problem: PlacementProblem) -> None:
    """Raise when a node, a tied group, the pins of one device or the whole model cannot fit.

    Checks, in this order: every unit (node or tied group) fits on some device it may use; the
    summed node bytes fit in the summed caps; the bytes pinned to each device fit in its cap.

    Raises:
        InfeasiblePlanError: with ``missing_bytes = max(0, total bytes - total cap bytes)`` and, for
            a unit that fits nowhere, ``node`` = its (first) node's name.
    """
    missing = missing_bytes(problem)
    devices = problem.devices
    for group, size, pin in _units(problem):
        name = problem.nodes[group[0]].name
        if pin is not None:
            cap = devices[pin].cap_bytes
            if size > cap:
                what = f"node {name!r} needs" if len(group) == 1 else f"{_tied(problem, group)} need"
                raise InfeasiblePlanError(
                    f"{what} {format_bytes(size)} but {'it is' if len(group) == 1 else 'they are'} "
                    f"pinned to device {devices[pin].name!r} whose cap is {format_bytes(cap)}: "
                    f"{format_bytes(size - cap)} missing on {devices[pin].name!r}; "
                    f"raise max_memory for {devices[pin].name!r} or drop the pin",
                    missing_bytes=missing,
                    node=name,
                )
            continue
        largest = max(range(len(devices)), key=lambda d: (devices[d].cap_bytes, -d))
        cap = devices[largest].cap_bytes
        if size > cap:
            if len(group) == 1:
                what = f"node {name!r} needs {format_bytes(size)}"
            else:
                what = (
                    f"{_tied(problem, group)} need {format_bytes(size)} together "
                    "(tied parameters share a device)"
                )
            raise InfeasiblePlanError(
                f"{what} but the largest cap is {format_bytes(cap)} (device "
                f"{devices[largest].name!r}): {format_bytes(size - cap)} missing there; "
                "raise max_memory or add a device",
                missing_bytes=missing,
                node=name,
            )
    if problem.has_runtime_memory:
        _check_runtime(problem, missing)
    if missing:
        if not problem.has_runtime_memory:
            raise InfeasiblePlanError(
                f"the model needs {format_bytes(problem.total_bytes)} but the devices hold "
                f"{format_bytes(problem.total_cap_bytes)} in all: {format_bytes(missing)} missing; "
                "raise max_memory, add a device, or add 'cpu'/'disk'",
                missing_bytes=missing,
            )
        raise InfeasiblePlanError(
            f"the model needs {format_bytes(problem.total_bytes)} of weights + "
            f"{format_bytes(_runtime_floor(problem))} of KV cache, working set and reserve but the "
            f"devices hold {format_bytes(problem.total_cap_bytes)} in all: "
            f"{format_bytes(missing)} missing; raise max_memory, add a device, add 'cpu'/'disk', "
            "or shrink the workload (batch size, context length, kv_dtype)",
            missing_bytes=missing,
        )
    pinned_bytes = [0] * len(devices)
    for _, size, pin in _units(problem):
        if pin is not None:
            pinned_bytes[pin] += size
    for d, dev in enumerate(devices):
        if pinned_bytes[d] > dev.cap_bytes:
            raise InfeasiblePlanError(
                f"the nodes pinned to device {dev.name!r} need {format_bytes(pinned_bytes[d])} but "
                f"its cap is {format_bytes(dev.cap_bytes)}: "
                f"{format_bytes(pinned_bytes[d] - dev.cap_bytes)} over; raise max_memory for "
                f"{dev.name!r} or pin fewer nodes there",
                missing_bytes=missing,
            )


def _check_runtime(problem: PlacementProblem, missing: int) -> None:
    """Raise when some unit cannot run anywhere, or the KV cache cannot fit on the computing devices.

    A unit (node or tied group) computing on ``c`` needs there at least ``c``'s reserve, its KV
    cache and largest working set (:func:`_unit_runtime`) and its weights (stored on ``c``) or,
    offloaded while ``c`` is the execution device, its largest member (streamed in).
    """
    devices = problem.devices
    computing = problem.computing_devices
    exec_device = problem.execution_device
    can_offload = any(not d.is_accelerator and i != exec_device for i, d in enumerate(devices))
    for group, size, pin in _units(problem):
        runtime, said = _unit_runtime(problem, group)
        largest_member = max(problem.nodes[m].size_bytes for m in group)
        if pin is not None and problem.compute_device(pin) != pin:
            options = [(exec_device, largest_member)]
        elif pin is not None:
            options = [(pin, size)]
        else:
            options = [(c, size) for c in computing]
            if can_offload:
                options.append((exec_device, largest_member))
        needs = {c: devices[c].reserve_bytes + runtime + weights for c, weights in options}
        if all(need > devices[c].cap_bytes for c, need in needs.items()):
            c = min(needs, key=lambda c: (needs[c] - devices[c].cap_bytes, c))
            name = problem.nodes[group[0]].name
            raise InfeasiblePlanError(
                f"node {name!r} needs {format_bytes(needs[c])} to run on device "
                f"{devices[c].name!r} (weights {format_bytes(needs[c] - devices[c].reserve_bytes - runtime)}, "
                f"{said}, reserve "
                f"{format_bytes(devices[c].reserve_bytes)}) but its cap is "
                f"{format_bytes(devices[c].cap_bytes)}: {format_bytes(needs[c] - devices[c].cap_bytes)} "
                "missing there; raise max_memory, lower the reserve, or shrink the workload "
                "(batch size, context length, kv_dtype)",
                missing_bytes=max(missing, needs[c] - devices[c].cap_bytes),
                node=name,
            )
    floor = _runtime_floor(problem)
    cap = _computing_cap(problem)
    if floor > cap:
        names = ", ".join(repr(devices[c].name) for c in computing)
        raise InfeasiblePlanError(
            f"the KV cache for this workload needs {format_bytes(problem.total_kv_bytes)} (plus "
            f"{format_bytes(floor - problem.total_kv_bytes)} of working set and reserve) on the "
            f"devices that compute ({names}), which hold {format_bytes(cap)}: "
            f"{format_bytes(floor - cap)} missing; offloading moves weights, not the KV cache: "
            "shrink the workload (batch size, context length, kv_dtype) or add accelerators",
            missing_bytes=missing,
        )


def structural_infeasibility(problem: PlacementProblem) -> InfeasiblePlanError:
    """The error for a problem a solver proved infeasible although :func:`check_capacity` passed.

    The bytes fit in total, so the cause is the shape of the rules: whole nodes must pack into
    caps, each accelerator holds one contiguous block (in device order when ``ordered``), and pins
    and tied groups fix some nodes.
    """
    rules = ["whole nodes packed into caps", "one contiguous block per accelerator"]
    if problem.has_runtime_memory:
        rules[0] = "whole nodes with their KV cache, working sets and reserves packed into caps"
    if problem.ordered and len(problem.accelerators) > 1:
        rules.append("blocks in device order")
    if problem.pins:
        rules.append("the pins")
    if problem.tied_groups:
        rules.append("the tied groups")
    fixes = ["raise max_memory"]
    if all(d.is_accelerator for d in problem.devices):
        fixes.append("add 'cpu'/'disk' to take the overflow")
    if problem.pins:
        fixes.append("drop pins")
    if problem.ordered and len(problem.accelerators) > 1:
        fixes.append("allow any block order (ordered=False)")
    fix = fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + " or " + fixes[-1]
    return InfeasiblePlanError(
        f"no placement fits: the devices hold {format_bytes(problem.total_cap_bytes)} for "
        f"{format_bytes(problem.total_bytes)} of nodes "
        f"({format_bytes(problem.total_cap_bytes - problem.total_bytes)} to spare), too little for "
        f"{', '.join(rules[:-1])} and {rules[-1]} together; {fix}",
        missing_bytes=missing_bytes(problem),
    )


def _tied(problem: PlacementProblem, group: tuple[int, ...]) -> str:
    names = [repr(problem.nodes[m].name) for m in group]
    return "tied nodes " + ", ".join(names[:-1]) + " and " + names[-1]
