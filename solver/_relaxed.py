"""The block DP on problems whose links depend on the sender (GPUs on several hosts), by relaxation.

The block DP (:mod:`layerplan.solver.block_dp`) prices a tensor by the device that receives it, so
it needs every link into a device to be equally fast whoever sends. Where that fails only because
of the links (two hosts: NVLink within one, InfiniBand between them), two relaxations of the cost
model restore it:

* **fastest links**: every link into ``c`` runs at the fastest bandwidth and the least latency of
  any link into ``c``. Every transfer is at most as slow as under the real links and node times are
  unchanged, so every placement's time and busiest stage are at most their real values, and the
  DP's optimum of the headline measure (``time_ns``, ``bottleneck_ns``: the first measure of the
  latency and throughput goals) is a **lower bound** on the real optimum;
* **slowest links**: the reverse; its optimum is a placement whose real value is at most its
  relaxed value, a good start when the hosts are joined by a slow network.

:func:`relaxed_start` returns the better of the two placements under the real cost model, with the
bound: CP-SAT then starts from that placement, and when its real headline equals the bound the
headline phase is proven without a search (:func:`layerplan.solver.cpsat.solve`).

Goals without a timed measure do not read the links at all: :func:`links_unused` lets the DP solve
them as they are, with no cost model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from layerplan.solver import block_dp
from layerplan.solver._feasibility import check_capacity
from layerplan.solver.cost import CostModel
from layerplan.solver.errors import InfeasiblePlanError
from layerplan.solver.goals import Goal, score
from layerplan.solver.problem import PlacementProblem

__all__ = ["links_only", "links_unused", "relaxed_start", "uniform_links"]


def links_only(problem: PlacementProblem, cost: CostModel | None) -> bool:
    """Whether the block DP refuses ``problem`` only because its links into a device differ by sender."""
    return cost is not None and block_dp.applies(problem, cost) is not None and block_dp.applies(problem, None) is None


def links_unused(problem: PlacementProblem, goal: Goal, cost: CostModel | None) -> bool:
    """Whether the DP may drop ``cost``: the goal times nothing and only the links stood in the way."""
    return not goal.needs_cost and links_only(problem, cost)


def uniform_links(problem: PlacementProblem, cost: CostModel, *, fastest: bool) -> CostModel:
    """``cost`` with every link into each computing device set to the fastest (or slowest) link
    into it: bandwidth and latency picked separately, so ``fastest`` is never slower than any real
    link and the slowest never faster (module docstring)."""
    k = len(problem.devices)
    links = [list(row) for row in cost.link_bytes_per_s]
    latency = [[cost.latency_s(s, d) for d in range(k)] for s in range(k)]
    computing = problem.computing_devices
    pick_rate: Callable = max if fastest else min
    pick_latency: Callable = min if fastest else max
    for c in computing:
        senders = [s for s in computing if s != c]
        if not senders:
            continue
        rate = pick_rate(cost.link_bytes_per_s[s][c] for s in senders)
        delay = pick_latency(cost.latency_s(s, c) for s in senders)
        for s in senders:
            links[s][c], latency[s][c] = rate, delay
    return dataclasses.replace(cost, link_bytes_per_s=tuple(map(tuple, links)),
                               pair_latency_s=tuple(map(tuple, latency)))


def _best_dp_placement(
    problem: PlacementProblem, goal: Goal, cost: CostModel, deadline: float
) -> tuple[tuple[int, ...] | None, bool]:
    """The DP's placement under ``cost`` and whether it is that cost's proven optimum."""
    try:
        found = block_dp.solve_blocks(problem, goal, cost, deadline=deadline)
    except block_dp.OutOfTime as exc:
        return exc.placement, False
    except block_dp.OutOfLabels:
        return None, False
    return (tuple(found), True) if found is not None else (None, False)


def relaxed_start(
    problem: PlacementProblem, goal: Goal, cost: CostModel | None, *, started: float, deadline: float
) -> tuple[tuple[int, ...] | None, int | None]:
    """``(placement, headline bound)`` from the two relaxations (module docstring), each within
    half of ``deadline - started``; ``(None, None)`` where they do not apply (the DP refuses the
    problem for another reason than its links, the goal times nothing, or the caps cannot hold it).
    The bound is None unless the fastest-links DP proved its optimum."""
    if not goal.needs_cost or not links_only(problem, cost):
        return None, None
    try:
        check_capacity(problem)
    except InfeasiblePlanError:
        return None, None
    assert cost is not None
    middle = started + (deadline - started) / 2
    optimistic = uniform_links(problem, cost, fastest=True)
    fast, proven = _best_dp_placement(problem, goal, optimistic, middle)
    slow, _ = _best_dp_placement(problem, goal, uniform_links(problem, cost, fastest=False), deadline)
    bound = score(problem, fast, goal.headline, optimistic) if proven and fast is not None else None
    found = [p for p in (fast, slow) if p is not None]
    if not found:
        return None, bound
    best = min(found, key=lambda p: tuple(score(problem, p, m, cost) for m in goal.measures))
    return best, bound
