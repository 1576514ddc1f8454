"""Interchangeable accelerators, and the one placement chosen among their relabellings.

Two accelerators are *interchangeable* when relabelling them (moving every node of one onto the
other and back) maps every valid placement to a valid placement with the same value on every
measure: same cap and reserve, no pin names them, not the first accelerator under ``low_zero``,
and, with a cost model, the same speed and the same links (bandwidth and latency) to every other
device, so that swapping two of them leaves the link matrix as it was (the GPUs of one host are
interchangeable, a GPU of another host is not). The execution device (the first accelerator) is
special only in placements that offload something: offloaded nodes compute on it, so it must stay
where it is. In a placement that offloads nothing it computes only its own nodes and trades places
like the others.

The *canonical* placement of a class of relabellings uses, in each group, the lowest indices
first: with ``ordered=True`` the used accelerators of each run of consecutive group members (in
device order) are the first ones of the run, in block order; with ``ordered=False`` the used
members are, in index order, those whose blocks start earliest in execution order. So a plan never
leaves GPU 0 empty while an identical GPU 1 holds a block. The CP-SAT model states the same order
as constraints (:mod:`layerplan.solver.cpsat`); the chain DP and the hint relabel their result
with :func:`canonical_assignment`.
"""

from __future__ import annotations

from collections.abc import Sequence

from layerplan.solver.cost import CostModel
from layerplan.solver.problem import PlacementProblem

__all__ = ["interchangeable_groups", "group_runs", "canonical_assignment", "offloads"]


def interchangeable_groups(problem: PlacementProblem, cost: CostModel | None = None) -> list[tuple[int, ...]]:
    """Groups (of 2 or more, in listed order) of interchangeable accelerators (module docstring).

    The execution device may belong to a group; it is interchangeable only in placements that
    offload nothing (:func:`offloads`).
    """
    accs = problem.accelerators
    excluded = {d for _, d in problem.pins}
    if problem.low_zero and accs:
        excluded.add(accs[0])
    by_signature: dict[tuple, list[int]] = {}
    for d in accs:
        if d not in excluded:
            device = problem.devices[d]
            signature = (device.cap_bytes, device.reserve_bytes, cost.speeds[d] if cost else None)
            by_signature.setdefault(signature, []).append(d)
    groups = []
    for group in by_signature.values():
        for part in _transposable(group, cost, len(problem.devices)) if cost is not None else [group]:
            if len(part) > 1:
                groups.append(tuple(part))
    return groups


def _transposable(group: Sequence[int], cost: CostModel, k: int) -> list[list[int]]:
    """``group`` split into classes whose members can be swapped without changing a link: ``a`` and
    ``b`` are swappable when the link between them is the same both ways and every other device
    ``x`` has the same bandwidth and latency to and from both. A member joins a class only when it
    is swappable with every member, so every transposition within a class keeps the link matrix,
    hence every permutation does (GPUs of one host, where the hosts are joined by a slower network)."""

    # Each device's row and column of the bandwidth and latency matrices, as one list: ``a`` and
    # ``b`` are swappable when ``a``'s, with its entries at ``a`` and ``b`` exchanged, equals ``b``'s
    # (that covers the link between them both ways), compared in C rather than entry by entry.
    latency = [[cost.latency_s(s, d) for d in range(k)] for s in range(k)]
    links = cost.link_bytes_per_s
    lines = {d: ([*links[d]], [links[x][d] for x in range(k)], latency[d], [latency[x][d] for x in range(k)])
             for d in group}

    def swappable(a: int, b: int) -> bool:
        for line_a, line_b in zip(lines[a], lines[b]):
            moved = list(line_a)
            moved[a], moved[b] = moved[b], moved[a]
            if moved != line_b:
                return False
        return True

    classes: list[list[int]] = []
    for d in group:
        home = next((c for c in classes if all(swappable(m, d) for m in c)), None)
        if home is None:
            classes.append([d])
        else:
            home.append(d)
    return classes


def offloads(problem: PlacementProblem, assignment: Sequence[int]) -> bool:
    """Whether ``assignment`` stores a node on a device that is not an accelerator."""
    return any(not problem.devices[d].is_accelerator for d in assignment)


def group_runs(problem: PlacementProblem, group: Sequence[int]) -> list[tuple[int, ...]]:
    """``group`` cut into runs of accelerators that are consecutive in device order (``ordered``
    problems), or the whole group as one run (unordered)."""
    if not problem.ordered:
        return [tuple(group)] if group else []
    rank = {d: r for r, d in enumerate(problem.accelerators)}
    out: list[list[int]] = []
    for d in group:
        if out and rank[d] == rank[out[-1][-1]] + 1:
            out[-1].append(d)
        else:
            out.append([d])
    return [tuple(run) for run in out]


def canonical_assignment(
    problem: PlacementProblem, assignment: Sequence[int], *, cost: CostModel | None = None
) -> tuple[int, ...]:
    """``assignment`` with interchangeable accelerators relabelled into canonical order (module
    docstring). Validity and every measure (offload cost, transfer bytes, utilisation, times) are
    unchanged; an assignment already canonical comes back equal.

    Args:
        problem: the problem ``assignment`` places.
        assignment: a device index per node.
        cost: the cost model the placement is scored with, if any (devices of different speeds or
            links are not interchangeable).
    """
    assignment = tuple(assignment)
    groups = interchangeable_groups(problem, cost)
    if not groups:
        return assignment
    first: dict[int, int] = {}  # device -> position in execution order of its first node
    for i, d in enumerate(assignment):
        first.setdefault(d, i)
    movable = not offloads(problem, assignment)
    relabel: dict[int, int] = {}
    for group in groups:
        members = [d for d in group if movable or d != problem.execution_device]
        for run in group_runs(problem, members):
            used = sorted((d for d in run if d in first), key=first.__getitem__)
            relabel.update(zip(used, run))
    return tuple(relabel.get(d, d) for d in assignment)
