"""The block DP on links that depend on the sender (GPUs on two hosts), through two relaxations
(:mod:`layerplan.solver._relaxed`).

Oracles: brute force over every assignment scored by the second implementation of the cost model in
``tests/test_goals.py`` (written from the formulas, not by calling them), and the real timing of
every assignment for the relaxations' order.
"""

from __future__ import annotations

import itertools
import time

from hypothesis import HealthCheck, assume, given, settings

from layerplan.solver import Goal, InfeasiblePlanError, Status, solve, timing, violations
from layerplan.solver._relaxed import links_only, relaxed_start, uniform_links
from test_goals import brute_force_goal, costed_problems, hand_measures


@settings(max_examples=60, deadline=None)
@given(data=costed_problems())
def test_fastest_links_never_slow_a_placement_and_slowest_never_speed_it(data) -> None:
    problem, cost = data
    fast, slow = uniform_links(problem, cost, fastest=True), uniform_links(problem, cost, fastest=False)
    for assignment in itertools.islice(itertools.product(range(len(problem.devices)), repeat=len(problem.nodes)), 60):
        low, real, high = (timing(problem, c, assignment) for c in (fast, cost, slow))
        assert low.total_ns <= real.total_ns <= high.total_ns
        assert low.bottleneck_ns <= real.bottleneck_ns <= high.bottleneck_ns


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=costed_problems(max_nodes=5, max_devices=3))
def test_timed_goals_on_sender_dependent_links_match_brute_force(data) -> None:
    problem, cost = data
    assume(links_only(problem, cost))
    for goal in (Goal.LATENCY, Goal.THROUGHPUT):
        best = brute_force_goal(problem, cost, goal)
        if best is None:
            continue
        start, bound = relaxed_start(problem, goal, cost, started=time.perf_counter(),
                                     deadline=time.perf_counter() + 30)
        assert start is not None and violations(problem, start) == []
        assert bound is None or bound <= best[0]  # a lower bound on the headline (the first measure)
        solution = solve(problem, goal=goal, cost=cost, num_workers=2)
        assert solution.status is Status.OPTIMAL and solution.solver == "dp+cp-sat"
        assert hand_measures(problem, cost, solution.assignment, goal) == best
        assert solution.bound == solution.headline_value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=costed_problems(max_nodes=5, max_devices=3))
def test_untimed_goals_ignore_the_links_and_stay_with_the_dp(data) -> None:
    problem, cost = data
    assume(links_only(problem, cost))
    for goal in (Goal.BALANCED, Goal.TRANSFERS):
        best = brute_force_goal(problem, cost, goal)
        if best is None:
            try:
                solve(problem, goal=goal, cost=cost, num_workers=2, explain=False)
            except InfeasiblePlanError:
                continue
            raise AssertionError("solved a problem brute force finds no placement for")
        solution = solve(problem, goal=goal, cost=cost, num_workers=2)
        assert solution.status is Status.OPTIMAL and solution.solver == "dp"
        assert hand_measures(problem, cost, solution.assignment, goal) == best
        assert solution.timing == timing(problem, cost, solution.assignment)  # timed with the real links
