"""A fast feasible placement for any problem, as CP-SAT's hint: the chain DP with few labels per
state on a chain relaxation of the problem, with a greedy fill as the fallback (see :func:`chain_hint`).
Heuristic: exactness lives in :mod:`layerplan.solver.dp`."""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

from layerplan.solver._symmetry import canonical_assignment
from layerplan.solver.accounting import device_loads
from layerplan.solver.dp import QUICK_MAX_LABELS, OutOfTime, _chain_dp
from layerplan.solver.problem import Device, Edge, Node, PlacementProblem, violations

__all__ = ["chain_hint"]

#: Labels kept per state by :func:`chain_hint`.
_HINT_MAX_LABELS = QUICK_MAX_LABELS
#: Wall-clock budget of the DP inside :func:`chain_hint`, in seconds; the greedy fill follows.
_HINT_DP_BUDGET_S = 0.5
#: Rounds of cap shrinking :func:`chain_hint` tries on a problem with runtime memory.
_HINT_RUNTIME_ROUNDS = 4


def _repair_execution_device(
    problem: PlacementProblem, relaxed: _RelaxedChain, deadline: float
) -> tuple[int, ...] | None:
    """A hint that keeps the execution-device rule (see :func:`_with_execution_device_used`): the
    relaxed chain solved without offload devices, then with each node pinned to the execution
    device, under the hint's label cap and deadline; the first valid expansion wins."""
    chain = relaxed.problem
    accs = len(problem.accelerators)
    execution = relaxed.device_of.index(problem.execution_device)
    variants = []
    if all(d < accs for _, d in chain.pins):
        variants.append(dataclasses.replace(chain, devices=chain.devices[:accs]))
    pinned = dict(chain.pins)
    variants += [
        dataclasses.replace(chain, pins=tuple(sorted({*chain.pins, (j, execution)})))
        for j in range(len(chain.nodes))
        if pinned.get(j, execution) == execution
    ]
    for variant in variants:
        found = _chain_dp(variant, max_labels=_HINT_MAX_LABELS, deadline=deadline)
        if found is not None:
            hint = relaxed.expand(found)
            if not violations(problem, hint):
                return hint
    return None


def chain_hint(problem: PlacementProblem) -> tuple[int, ...] | None:
    """A fast feasible placement for any problem, meant as a CP-SAT hint; None if none is found.

    The problem is relaxed to a chain: tied-group followers are dropped and their bytes added to
    their anchor (they later join the anchor's device, which keeps caps and tied groups exact);
    the edge between consecutive kept nodes ``u < v`` weighs the bytes of every tensor produced at
    or before ``u`` and read after it (what crosses a cut there); pins on followers move to their
    anchor. The DP then runs on this chain keeping at most a few labels per state and for at most
    about half a second (accelerators in listed order, and for ``ordered=False`` also by
    decreasing cap), falling back to a greedy fill (accelerators in order, overflow to the
    cheapest offload device with room).

    A problem with runtime memory is first made weights-only: each node weighs its weights plus
    its KV cache, and each computing device's cap shrinks by its reserve, the largest working set,
    the largest tensor and (execution device) the largest node. A working set that peaks before
    any KV cache exists (``before_kv_cache``) needs, beside the KV cache charged in the node
    weights, only its excess over that cache: the cap shrinks by it less the whole KV cache when
    that is the larger (exact with one computing device; elsewhere the rounds below repair it).
    When the hint still overflows a device under the full accounting, that device's cap shrinks
    by the overflow and the hint is searched again (a few rounds).

    Args:
        problem: any placement problem (DAG edges, tied groups, pins, ``ordered`` either way).

    Returns:
        A device index per node with ``violations(problem, hint) == []``, interchangeable
        accelerators used lowest index first (:func:`layerplan.solver._symmetry.canonical_assignment`),
        or None when neither the relaxed DP nor the greedy fill finds one. Never raises for a
        valid problem.
    """
    hint = _any_hint(problem)
    # Interchangeable GPUs used lowest index first, the order the CP-SAT model asks for.
    return None if hint is None else canonical_assignment(problem, hint)


def _any_hint(problem: PlacementProblem) -> tuple[int, ...] | None:
    """:func:`chain_hint` before relabelling."""
    if not problem.nodes:
        return ()
    if not problem.has_runtime_memory:
        return _weights_hint(problem)
    shrink = [0] * len(problem.devices)
    for _ in range(_HINT_RUNTIME_ROUNDS):
        hint = _weights_hint(_weights_only(problem, shrink))
        if hint is None:
            return None
        if not violations(problem, hint):
            return hint
        over = [
            max(0, load.total - device.cap_bytes)
            for load, device in zip(device_loads(problem, hint), problem.devices)
        ]
        if not any(over):
            return None
        shrink = [s + o for s, o in zip(shrink, over)]
    return None


def _weights_only(problem: PlacementProblem, shrink: list[int]) -> PlacementProblem:
    """The weights-only surrogate of a problem with runtime memory (see :func:`chain_hint`)."""
    nodes = problem.nodes
    beside = max((x.work_bytes for x in nodes if not x.before_kv_cache), default=0)
    before = max((x.work_bytes for x in nodes if x.before_kv_cache), default=0)
    work = max(beside, before - problem.total_kv_bytes)
    edge = max((e.size_bytes for e in problem.edges), default=0)
    largest = max((x.size_bytes for x in nodes), default=0)
    devices = []
    for d, device in enumerate(problem.devices):
        cap = device.cap_bytes - shrink[d]
        if d in problem.computing_devices:
            cap -= device.reserve_bytes + work + edge
            if d == problem.execution_device:
                cap -= largest
        devices.append(
            Device(name=device.name, kind=device.kind, cap_bytes=max(0, cap), offload_cost=device.offload_cost)
        )
    return PlacementProblem(
        nodes=tuple(Node(name=x.name, size_bytes=x.size_bytes + x.kv_bytes) for x in nodes),
        edges=problem.edges,
        devices=tuple(devices),
        tied_groups=problem.tied_groups,
        pins=problem.pins,
        ordered=problem.ordered,
    )


def _weights_hint(problem: PlacementProblem) -> tuple[int, ...] | None:
    """:func:`chain_hint` for a weights-only problem."""
    deadline = time.perf_counter() + _HINT_DP_BUDGET_S
    orders = [problem.accelerators]
    if not problem.ordered:
        by_cap = tuple(sorted(problem.accelerators, key=lambda d: -problem.devices[d].cap_bytes))
        if by_cap != orders[0]:
            orders.append(by_cap)
    kept = [i for i in range(len(problem.nodes)) if not problem.is_follower(i)]
    for order in orders:
        relaxed = _chain_relaxation(problem, kept, order)
        try:
            found = _chain_dp(relaxed.problem, max_labels=_HINT_MAX_LABELS, deadline=deadline)
        except OutOfTime:
            break
        if found is not None:
            hint = relaxed.expand(found)
            if not violations(problem, hint):
                return hint
            try:
                hint = _repair_execution_device(problem, relaxed, deadline)
            except OutOfTime:
                break
            if hint is not None:
                return hint
    hint = _greedy_fill(problem, kept)
    return hint if hint is not None and not violations(problem, hint) else None


class _RelaxedChain(NamedTuple):
    """A chain problem over the non-follower nodes, and how to map its answer back."""

    problem: PlacementProblem
    kept: list[int]
    device_of: tuple[int, ...]  # relaxed device index -> original device index
    anchors: tuple[int, ...]  # original node -> its anchor

    def expand(self, relaxed: tuple[int, ...]) -> tuple[int, ...]:
        """The original assignment: kept nodes as solved, followers on their anchor's device."""
        placed = {node: self.device_of[d] for node, d in zip(self.kept, relaxed)}
        return tuple(placed[anchor] for anchor in self.anchors)


def _chain_relaxation(
    problem: PlacementProblem, kept: list[int], accelerator_order: tuple[int, ...]
) -> _RelaxedChain:
    """See :func:`chain_hint`: followers folded into anchors, live tensors as chain edges."""
    n = len(problem.nodes)
    position = {node: p for p, node in enumerate(kept)}
    size = [0] * len(kept)
    for node in range(n):
        size[position[problem.anchor_of(node)]] += problem.nodes[node].size_bytes
    # live[x]: bytes of tensors produced at or before node x and read after it.
    live = [0] * (n + 1)
    for edge in problem.edges:
        if problem.is_follower(edge.producer):
            continue
        readers = [c for c in edge.consumers if not problem.is_follower(c)]
        if readers:
            live[edge.producer] += edge.size_bytes
            live[readers[-1]] -= edge.size_bytes
    for x in range(1, n + 1):
        live[x] += live[x - 1]
    edges = tuple(
        Edge(producer=p, consumers=(p + 1,), size_bytes=live[kept[p]])
        for p in range(len(kept) - 1)
        if live[kept[p]] > 0
    )
    others = tuple(d for d in range(len(problem.devices)) if d not in set(accelerator_order))
    device_of = tuple(accelerator_order) + others
    new_index = {d: r for r, d in enumerate(device_of)}
    pins = {(position[problem.anchor_of(node)], new_index[d]) for node, d in problem.pins}
    relaxed = PlacementProblem(
        nodes=tuple(Node(name=problem.nodes[k].name, size_bytes=s) for k, s in zip(kept, size)),
        edges=edges,
        devices=tuple(problem.devices[d] for d in device_of),
        pins=tuple(pins),
        ordered=True,
    )
    anchors = tuple(problem.anchor_of(node) for node in range(n))
    return _RelaxedChain(problem=relaxed, kept=kept, device_of=device_of, anchors=anchors)


def _greedy_fill(problem: PlacementProblem, kept: list[int]) -> tuple[int, ...] | None:
    """Fill accelerators in order with whole nodes (groups), overflow to the cheapest offload device.

    Followers join their anchor. Returns None when a node fits nowhere the rules allow.
    """
    devices = problem.devices
    group_bytes = {node: 0 for node in kept}
    for node in range(len(problem.nodes)):
        group_bytes[problem.anchor_of(node)] += problem.nodes[node].size_bytes
    pin = {problem.anchor_of(node): d for node, d in problem.pins}
    accs = list(problem.accelerators)
    offs = sorted(
        (d for d, dev in enumerate(devices) if not dev.is_accelerator),
        key=lambda d: (devices[d].offload_cost, d),
    )
    load = [0] * len(devices)
    placed: dict[int, int] = {}
    current = 0  # index into accs of the open block
    for node in kept:
        need = group_bytes[node]
        target: int | None = None
        if node in pin:
            target = pin[node]
            if devices[target].is_accelerator:
                position = accs.index(target)
                if position < current:
                    return None
                current = position
        else:
            while current < len(accs) and load[accs[current]] + need > devices[accs[current]].cap_bytes:
                current += 1
            if current < len(accs):
                target = accs[current]
            else:
                target = next((o for o in offs if load[o] + need <= devices[o].cap_bytes), None)
        if target is None or load[target] + need > devices[target].cap_bytes:
            return None
        if not devices[target].is_accelerator and current < len(accs) and load[accs[current]] > 0:
            current += 1  # An offloaded node closes the open block.
        load[target] += need
        placed[node] = target
    return tuple(placed[problem.anchor_of(node)] for node in range(len(problem.nodes)))
