"""Exact dynamic program for chain placement problems, and a fast placement hint for any problem.

A chain problem (``problem.is_chain``, ``problem.ordered``, no tied groups) has a placement made of
accelerator *blocks* in device order, possibly skipping accelerators, with offloaded nodes before,
between and after them (never inside a block: that would split it). The DP walks the nodes in
execution order; its states at position ``i`` (nodes ``0..i-1`` placed) are

* ``block[i][m]``: node ``i-1`` is on the ``m``-th accelerator, in a block that may go on;
* ``off[i][j + 1]``: node ``i-1`` is offloaded and the last block so far was on the ``j``-th
  accelerator (``j = -1``: none yet).

Node ``i`` extends the open block, is offloaded to a cpu/disk device, or starts a block on an
accelerator later in the order. Transfer is charged for the edges ``i-1 -> i`` whose two nodes
*compute* on different devices (offloaded nodes compute on ``problem.execution_device``).

The offload devices share their caps along the whole chain and a block's cap along the block, so
one cost per state is not enough: every state keeps a Pareto set of labels. A label has a cost,
``offload_cost * scale + transfer_bytes`` (``scale`` exceeds every possible transfer, so integer
order is the lexicographic order of :class:`solver.problem.Objective`, and a common suffix keeps
it), the bytes ``used`` on each offload device and, in a ``block`` state, the bytes of the open
block. A label is dropped when another label of its state is no worse in all of these. Resource
values are clipped from below at ``cap - bytes still to place``: past that the device can take
every node still to come, so the exact value no longer matters. With roomy devices every state
then holds one label and the DP runs in ``O(n · k²)`` for ``n`` nodes and ``k`` devices.

Tight offload caps make the label sets grow with the distinct subset sums of the node sizes (the
DP stays exact; it is pseudo-polynomial). Branch and bound keeps that in check: a quick pass that
keeps a few labels per state gives an incumbent, and the exact pass drops every label whose cost
plus a lower bound on its completion exceeds the incumbent's.
"""

from __future__ import annotations

import dataclasses

import bisect
import operator
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from solver._feasibility import check_capacity, structural_infeasibility
from solver.errors import InvalidSpecError
from solver.accounting import device_loads
from solver.problem import Device, Edge, Node, PlacementProblem, evaluate, violations
from solver.solution import Solution, Status

__all__ = ["solve_chain_dp", "chain_hint"]

#: Labels kept per state by :func:`chain_hint` (the exact DP keeps them all).
_HINT_MAX_LABELS = 8
#: Wall-clock budget of the DP inside :func:`chain_hint`, in seconds; the greedy fill follows.
_HINT_DP_BUDGET_S = 0.5
#: Rounds of cap shrinking :func:`chain_hint` tries on a problem with runtime memory.
_HINT_RUNTIME_ROUNDS = 4


class _Label(NamedTuple):
    """A Pareto-optimal partial placement: nodes ``first..`` on ``device``, then its successor's.

    A label covers the nodes from ``first`` up to the ``first`` of the label built on it (or the
    last node); ``parent`` covers those before ``first``. An offload label covers one node; a
    block label is shared by the ``block`` states of every node its block takes.
    """

    cost: int
    used: tuple[int, ...]
    parent: _Label | None
    device: int
    first: int


class _OutOfTime(Exception):
    """The DP inside :func:`chain_hint` ran past its budget."""


def solve_chain_dp(problem: PlacementProblem) -> Solution:
    """Exact optimum of a chain placement problem.

    Args:
        problem: a chain (``problem.is_chain``) with ``ordered=True`` and no tied groups; pins,
            offload devices (cpu, disk) and accelerators that stay empty are all allowed.

    Returns:
        An OPTIMAL :class:`Solution` (``solver="dp"``) minimising ``offload_cost`` first, then
        ``transfer_bytes``, both as :func:`solver.problem.evaluate` computes them; ties are broken
        deterministically.

    Raises:
        InvalidSpecError: the problem is not a chain, is unordered, has tied groups or has
            runtime memory (KV, working sets, reserves).
        InfeasiblePlanError: no placement satisfies the caps, pins, contiguity and device order.
    """
    if not problem.is_chain:
        raise InvalidSpecError(
            "solve_chain_dp needs a chain: every edge must go from node i to node i + 1 only; "
            "use solver.solve (CP-SAT) for graphs with skip or multi-consumer edges"
        )
    if problem.low_zero:
        raise InvalidSpecError(
            "solve_chain_dp does not model low_zero (first accelerator no heavier than the others); "
            "use solver.solve"
        )
    if not problem.ordered:
        raise InvalidSpecError(
            "solve_chain_dp needs ordered=True (blocks in device order); use solver.solve for "
            "ordered=False"
        )
    if problem.has_runtime_memory:
        raise InvalidSpecError(
            "solve_chain_dp solves weights-only problems (no kv_bytes, work_bytes or "
            "reserve_bytes); use solver.solve (CP-SAT) for problems with runtime memory"
        )
    if problem.tied_groups:
        raise InvalidSpecError(
            f"solve_chain_dp does not handle tied groups ({len(problem.tied_groups)} given); use "
            "solver.solve for problems with tied parameters"
        )
    started = time.perf_counter()
    check_capacity(problem)
    # A quick truncated pass gives an incumbent whose cost bounds the exact pass.
    incumbent = _chain_dp(problem, max_labels=_HINT_MAX_LABELS, deadline=None)
    upper_bound = None if incumbent is None else _scaled_cost(problem, incumbent)
    assignment = _chain_dp(problem, max_labels=None, deadline=None, upper_bound=upper_bound)
    if assignment is not None and violations(problem, assignment):
        assignment = _with_execution_device_used(problem)
    if assignment is None:
        raise structural_infeasibility(problem)
    assert not violations(problem, assignment), violations(problem, assignment)
    objective = evaluate(problem, assignment)
    return Solution(
        assignment=assignment,
        status=Status.OPTIMAL,
        objective=objective,
        bound=objective.transfer_bytes,
        wall_time_s=time.perf_counter() - started,
        solver="dp",
    )


def _with_execution_device_used(problem: PlacementProblem) -> tuple[int, ...] | None:
    """The exact optimum under the rule the chain DP does not model: when anything is offloaded,
    the execution device stores a node (:mod:`solver.problem`).

    Every valid placement either offloads nothing (solved with the offload devices removed) or
    has some node ``j`` on the execution device (solved with ``j`` pinned there); the best of
    these exact DPs is the optimum. Only run when the unconstrained optimum breaks the rule.
    """
    candidates = []
    accs = problem.accelerators
    pinned = dict(problem.pins)
    if all(problem.devices[d].is_accelerator for d in pinned.values()):
        index = {d: r for r, d in enumerate(accs)}
        alone = dataclasses.replace(
            problem, devices=tuple(problem.devices[d] for d in accs),
            pins=tuple((i, index[d]) for i, d in problem.pins),
        )
        found = _chain_dp(alone, max_labels=None, deadline=None)
        if found is not None:
            candidates.append(tuple(accs[d] for d in found))
    execution = problem.execution_device
    for j in range(len(problem.nodes)):
        if pinned.get(j, execution) != execution:
            continue
        pinned_there = dataclasses.replace(problem, pins=tuple(sorted({*problem.pins, (j, execution)})))
        found = _chain_dp(pinned_there, max_labels=None, deadline=None)
        if found is not None:
            candidates.append(found)
    valid = [c for c in candidates if not violations(problem, c)]
    return min(valid, key=lambda c: (evaluate(problem, c).as_tuple(), c)) if valid else None


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
    the largest tensor and (execution device) the largest node. When the hint still overflows a
    device under the full accounting, that device's cap shrinks by the overflow and the hint is
    searched again (a few rounds).

    Args:
        problem: any placement problem (DAG edges, tied groups, pins, ``ordered`` either way).

    Returns:
        A device index per node with ``violations(problem, hint) == []``, or None when neither the
        relaxed DP nor the greedy fill finds one. Never raises for a valid problem.
    """
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
    work = max((x.work_bytes for x in nodes), default=0)
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
        except _OutOfTime:
            break
        if found is not None:
            hint = relaxed.expand(found)
            if not violations(problem, hint):
                return hint
            try:
                hint = _repair_execution_device(problem, relaxed, deadline)
            except _OutOfTime:
                break
            if hint is not None:
                return hint
    hint = _greedy_fill(problem, kept)
    return hint if hint is not None and not violations(problem, hint) else None


# -- the DP --------------------------------------------------------------------------------------
def _chain_dp(
    problem: PlacementProblem,
    *,
    max_labels: int | None,
    deadline: float | None,
    upper_bound: int | None = None,
) -> tuple[int, ...] | None:
    """Best assignment of a chain problem (see the module docstring), or None when infeasible.

    Args:
        problem: a chain problem; tied groups and ``ordered`` are not looked at.
        max_labels: keep only this many cheapest labels per state (a heuristic); None is exact.
        deadline: ``time.perf_counter()`` value past which :class:`_OutOfTime` is raised.
        upper_bound: the scaled cost (see :func:`_scaled_cost`) of a known placement. Labels whose
            cost plus a lower bound on their completion exceeds it are dropped, which keeps the
            result exact while cutting the label sets. The lower bound: the bytes still to place
            that the accelerators cannot hold any more must be offloaded, at best into the
            cheapest offload room left (a fractional knapsack).
    """
    # Data.
    devices = problem.devices
    n = len(problem.nodes)
    accs = problem.accelerators
    num_accs = len(accs)
    acc_caps = [devices[d].cap_bytes for d in accs]
    offs = tuple(d for d, dev in enumerate(devices) if not dev.is_accelerator)
    off_caps = tuple(devices[o].cap_bytes for o in offs)
    exec_device = problem.execution_device
    size = [node.size_bytes for node in problem.nodes]
    cut = _cut_bytes(problem)
    scale = sum(cut) + 1
    pin: list[int | None] = [None] * n
    for node, device in problem.pins:
        pin[node] = device
    before = [0] * (n + 1)  # before[i]: bytes of nodes 0..i-1
    for i in range(n):
        before[i + 1] = before[i] + size[i]
    remaining = [before[n] - before[i] for i in range(n + 1)]  # bytes of nodes i..n-1
    # floor[i][s]: at position i, bytes used on the s-th offload device matter only above this.
    floor = [tuple(cap - remaining[i] for cap in off_caps) for i in range(n + 1)]
    # room_after[m]: bytes the accelerators accs[m:] hold, for the lower bound.
    room_after = [0] * (num_accs + 1)
    for m in range(num_accs - 1, -1, -1):
        room_after[m] = room_after[m + 1] + acc_caps[m]
    by_cost = sorted(range(len(offs)), key=lambda s: devices[offs[s]].offload_cost)
    unit_costs = [devices[offs[s]].offload_cost * scale for s in by_cost]

    def in_bound(label: _Label, overflow: int) -> bool:
        """Whether ``overflow`` more bytes fit the label's offload room, at a cost within bound.

        The cost: each byte at the per-byte cost of the cheapest offload room left (a fractional
        knapsack), never more than what any completion pays.
        """
        cost = label.cost
        for s, unit_cost in zip(by_cost, unit_costs):
            if overflow <= 0:
                break
            take = min(overflow, off_caps[s] - label.used[s])
            cost += take * unit_cost
            overflow -= take
        return overflow <= 0 and (upper_bound is None or cost <= upper_bound)

    def settle(labels: list[_Label], i: int, open_acc: int | None, next_acc: int) -> list[_Label]:
        """A state's Pareto set, from its candidates; pruned by bound and truncated if asked.

        ``open_acc``: the accelerator of the open block (``block`` states), else None;
        ``next_acc``: the first accelerator a new block may use. The bytes still to place beyond
        what the open block and the later accelerators can take must go to the offload devices.
        """
        overflow = remaining[i] - room_after[next_acc]
        if open_acc is None:
            labels = [label for label in labels if in_bound(label, overflow)]
            at = floor[i]
            return _truncated(_pareto(labels, lambda label: _clip(label.used, at)), max_labels)
        room = acc_caps[open_acc] - before[i]  # plus before[label.first]: what the block can add
        labels = [label for label in labels if in_bound(label, overflow - room - before[label.first])]
        slack = acc_caps[open_acc] - remaining[i]  # Block loads below this do not matter.
        return _truncated(
            _pareto(
                labels,
                lambda label: (*_clip(label.used, floor[i]), max(before[i] - before[label.first], slack)),
            ),
            max_labels,
        )

    # Variables: the states, each a list of candidate labels until it is settled.
    block: list[list[list[_Label]]] = [[[] for _ in range(num_accs)] for _ in range(n + 1)]
    off: list[list[list[_Label]]] = [[[] for _ in range(num_accs + 1)] for _ in range(n + 1)]
    # Nothing placed yet: behaves like an offloaded predecessor (cut[0] = 0, so no transfer).
    off[0][0].append(_Label(0, _clip((0,) * len(offs), floor[0]), None, -1, 0))

    for i in range(n + 1):
        if deadline is not None and time.perf_counter() > deadline:
            raise _OutOfTime
        for m in range(num_accs):
            block[i][m] = settle(block[i][m], i, m, m + 1)
        for j1 in range(num_accs + 1):
            off[i][j1] = settle(off[i][j1], i, None, j1)
        if i == n:
            break

        # Node i extends the open block on accelerator m (same label: no cost, no offload bytes).
        for m in range(num_accs):
            if pin[i] is None or pin[i] == accs[m]:
                limit = acc_caps[m] - before[i + 1]
                block[i + 1][m].extend(
                    label for label in block[i][m] if -before[label.first] <= limit
                )

        # Node i is offloaded to a cpu/disk device it may use.
        sources = [(block[i][m], m + 1, cut[i] if accs[m] != exec_device else 0) for m in range(num_accs)]
        sources += [(off[i][j1], j1, 0) for j1 in range(num_accs + 1)]
        for slot, o in enumerate(offs):
            if pin[i] is not None and pin[i] != o:
                continue
            offload = size[i] * devices[o].offload_cost * scale
            for labels, j1, transfer in sources:
                target = off[i + 1][j1]
                for label in labels:
                    bytes_after = label.used[slot] + size[i]
                    if bytes_after <= off_caps[slot]:
                        used = label.used[:slot] + (bytes_after,) + label.used[slot + 1 :]
                        target.append(
                            _Label(label.cost + offload + transfer, _clip(used, floor[i + 1]), label, o, i)
                        )

        # Node i starts a block on accelerator m, after any state whose last block is before m.
        ready = off[i][0]
        for m in range(num_accs):
            if m > 0:
                ready = _pareto(
                    [*ready, *block[i][m - 1], *off[i][m]], lambda label: _clip(label.used, floor[i])
                )
                ready = _truncated(ready, max_labels)
            device = accs[m]
            if pin[i] is not None and pin[i] != device or size[i] > acc_caps[m]:
                continue
            transfer = cut[i] if m > 0 else 0  # accs[0] is where offloaded nodes compute.
            block[i + 1][m].extend(
                _Label(label.cost + transfer, label.used, label, device, i) for label in ready
            )

    # Extract.
    finals = [label for labels in (*block[n], *off[n]) for label in labels]
    if not finals:
        return None
    best: _Label | None = min(finals, key=_cost_and_used)
    assignment = [-1] * n
    end = n
    while best is not None and best.parent is not None:
        assignment[best.first : end] = [best.device] * (end - best.first)
        end = best.first
        best = best.parent
    assert end == 0 and -1 not in assignment
    return tuple(assignment)


_cost_and_used = operator.itemgetter(0, 1)


def _cut_bytes(problem: PlacementProblem) -> list[int]:
    """``cut[i]``: bytes of the chain edges ``i - 1 -> i`` (``cut[0] = 0``), length ``n + 1``."""
    cut = [0] * (len(problem.nodes) + 1)
    for edge in problem.edges:
        cut[edge.consumers[0]] += edge.size_bytes
    return cut


def _scaled_cost(problem: PlacementProblem, assignment: tuple[int, ...]) -> int:
    """The DP's integer cost of an assignment: ``offload_cost * scale + transfer_bytes``."""
    objective = evaluate(problem, assignment)
    return objective.offload_cost * (sum(_cut_bytes(problem)) + 1) + objective.transfer_bytes


def _truncated(front: list[_Label], count: int | None) -> list[_Label]:
    """At most ``count`` labels of a Pareto front (cheapest first; None keeps all): the cheapest
    half, then labels spread evenly over the rest down to the one that needs the least resources."""
    if count is None or len(front) <= count:
        return front
    head = count // 2
    tail = front[head:]
    picks = {round(k * (len(tail) - 1) / (count - head - 1)) for k in range(count - head)}
    return front[:head] + [tail[k] for k in sorted(picks)]


def _clip(used: tuple[int, ...], floor: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(map(max, used, floor))


def _pareto(labels: list[_Label], resources: Callable[[_Label], tuple[int, ...]]) -> list[_Label]:
    """Labels no other label dominates (no larger cost, no larger resources), cheapest first.

    Of equal labels the first to arrive stays, so results are deterministic.
    """
    if len(labels) <= 1:
        return list(labels)
    entries = sorted(((label.cost, resources(label), label) for label in labels), key=_cost_and_used)
    first = entries[0][1]
    varying = [s for s in range(len(first)) if any(entry[1][s] != first[s] for entry in entries)]
    if not varying:
        return [entries[0][2]]
    kept: list[tuple[int, tuple[int, ...], _Label]] = []
    if len(varying) == 1:  # A staircase: keep a label when it needs less than every cheaper one.
        (s,) = varying
        least = None
        for entry in entries:
            if least is None or entry[1][s] < least:
                kept.append(entry)
                least = entry[1][s]
    elif len(varying) == 2:  # Keep the 2-D front of what cheaper labels need, sorted by x.
        sx, sy = varying
        front_x: list[int] = []
        front_y: list[int] = []  # strictly decreasing
        for entry in entries:
            x, y = entry[1][sx], entry[1][sy]
            at = bisect.bisect_right(front_x, x)
            if at and front_y[at - 1] <= y:
                continue  # A cheaper label needs no more of both.
            kept.append(entry)
            stop = at
            while stop < len(front_x) and front_y[stop] >= y:
                stop += 1
            front_x[at:stop] = [x]
            front_y[at:stop] = [y]
    else:  # Compare with every kept label at once (NumPy; ortools depends on it).
        needs = np.array([[entry[1][s] for s in varying] for entry in entries], dtype=object)
        if max(abs(x) for x in needs.flat) < 2**62:
            needs = needs.astype(np.int64)
        held = np.empty_like(needs)
        for row, entry in zip(needs, entries):
            if kept and (held[: len(kept)] <= row).all(axis=1).any():
                continue
            held[len(kept)] = row
            kept.append(entry)
    return [entry[2] for entry in kept]


# -- the hint ------------------------------------------------------------------------------------
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
