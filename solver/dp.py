"""Exact dynamic program for chain placement problems (the solver's oracle and fast path).

:mod:`layerplan.solver.hint` reuses it, with few labels per state, as a heuristic hint for any problem.

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
order is the lexicographic order of :class:`layerplan.solver.problem.Objective`, and a common suffix keeps
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

from layerplan.solver._feasibility import check_capacity, structural_infeasibility
from layerplan.solver._symmetry import canonical_assignment
from layerplan.solver.errors import InvalidSpecError
from layerplan.solver.problem import PlacementProblem, evaluate, violations
from layerplan.solver.solution import Solution, Status

__all__ = ["solve_chain_dp"]

#: Labels kept per state by the quick pass (incumbent) and by the hint; the exact pass keeps them all.
QUICK_MAX_LABELS = 8


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


class OutOfTime(Exception):
    """The DP ran past its ``deadline`` (only the hint gives one)."""


def solve_chain_dp(problem: PlacementProblem) -> Solution:
    """Exact optimum of a chain placement problem.

    Args:
        problem: a chain (``problem.is_chain``) with ``ordered=True`` and no tied groups; pins,
            offload devices (cpu, disk) and accelerators that stay empty are all allowed.

    Returns:
        An OPTIMAL :class:`Solution` (``solver="dp"``) minimising ``offload_cost`` first, then
        ``transfer_bytes``, both as :func:`layerplan.solver.problem.evaluate` computes them; ties are broken
        deterministically, and interchangeable accelerators are used lowest index first
        (:func:`layerplan.solver._symmetry.canonical_assignment`).

    Raises:
        InvalidSpecError: the problem is not a chain, is unordered, has tied groups, has nodes
            that may be offloaded inside the execution device's block (``Node.offload_inline``) or has
            runtime memory (KV, working sets, reserves). Without runtime memory a node's
            ``before_kv_cache`` changes no charge (:mod:`layerplan.solver.accounting`), so the DP
            honours it by ignoring it.
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
    if problem.has_inline_offload:
        raise InvalidSpecError(
            "solve_chain_dp keeps every block strict and does not model nodes offloaded inside the "
            "execution device's block (Node.offload_inline); use solver.solve"
        )
    if problem.tied_groups:
        raise InvalidSpecError(
            f"solve_chain_dp does not handle tied groups ({len(problem.tied_groups)} given); use "
            "solver.solve for problems with tied parameters"
        )
    started = time.perf_counter()
    check_capacity(problem)
    # A quick truncated pass gives an incumbent whose cost bounds the exact pass.
    incumbent = _chain_dp(problem, max_labels=QUICK_MAX_LABELS, deadline=None)
    upper_bound = None if incumbent is None else _scaled_cost(problem, incumbent)
    assignment = _chain_dp(problem, max_labels=None, deadline=None, upper_bound=upper_bound)
    if assignment is not None and violations(problem, assignment):
        assignment = _with_execution_device_used(problem)
    if assignment is None:
        raise structural_infeasibility(problem)
    # Interchangeable GPUs used lowest index first, as CP-SAT returns them (same objective).
    assignment = canonical_assignment(problem, assignment)
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
    the execution device stores a node (:mod:`layerplan.solver.problem`).

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
        deadline: ``time.perf_counter()`` value past which :class:`OutOfTime` is raised.
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
            raise OutOfTime
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
