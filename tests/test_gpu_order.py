"""Interchangeable GPUs are used lowest index first, by every solver path, at no cost in objective.

Among identical accelerators (same cap, no reserve, speeds or pins telling them apart) a plan that
needs fewer GPUs than declared uses GPUs 0..u-1: never an empty GPU 0 next to a used GPU 1. The
objective is the one brute force (every assignment, :func:`tests.strategies.brute_force`) or the
exact chain DP finds, so the order costs nothing.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerplan.solver import (
    CostModel,
    DeviceSpeed,
    Goal,
    InfeasiblePlanError,
    NodeWork,
    PlacementProblem,
    Status,
    chain_hint,
    score,
    solve,
    solve_chain_dp,
    violations,
)
from tests.strategies import brute_force, chain_of, check_placement, gpus, identical_gpu_problems

WORKERS = 2  # the suite runs on two cores


def used_gpus(problem: PlacementProblem, assignment: tuple[int, ...]) -> list[int]:
    return sorted({d for d in assignment if problem.devices[d].is_accelerator})


def assert_prefix(problem: PlacementProblem, assignment: tuple[int, ...]) -> None:
    used = used_gpus(problem, assignment)
    assert used == list(problem.accelerators[: len(used)]), (
        f"{assignment} uses GPUs {used} of {list(problem.accelerators)}")


# -- the reported case ---------------------------------------------------------------------------
@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("cpu", [None, 100])
@pytest.mark.parametrize("use_hint", [True, False])
def test_two_nodes_on_three_identical_gpus_use_gpus_0_and_1(ordered: bool, cpu: int | None, use_hint: bool) -> None:
    # 5 + 8 bytes on GPUs of 10: one GPU per node, one 1-byte cut whichever two GPUs hold them.
    # Before the fix: (1, 2) with a cpu declared (the execution device stayed out of the symmetry
    # breaking), (0, 3) on four ordered GPUs.
    for num_gpus in (3, 4):
        problem = chain_of(5, 8, edge_bytes=1, devices=gpus(*[10] * num_gpus, cpu=cpu), ordered=ordered)
        solution = solve(problem, num_workers=WORKERS, use_hint=use_hint)
        assert solution.assignment == (0, 1)
        assert solution.objective.as_tuple() == (0, 1)
        if ordered:
            assert solve_chain_dp(problem).assignment == (0, 1)
        assert chain_hint(problem) == (0, 1)


def test_used_gpus_keep_the_block_order_of_an_ordered_run() -> None:
    # 3 x 6 bytes on four GPUs of 12, then a cpu: the least transfer is 2 + 1 nodes (one 1-byte
    # cut) on GPUs 0 and 1; balanced spreads them 1/1/1 over GPUs 0, 1, 2 in block order.
    problem = chain_of(6, 6, 6, edge_bytes=1, devices=gpus(12, 12, 12, 12, cpu=100), ordered=True)
    transfers = solve(problem, num_workers=WORKERS)
    assert used_gpus(problem, transfers.assignment) == [0, 1] and transfers.objective.as_tuple() == (0, 1)
    assert solve(problem, goal=Goal.BALANCED, num_workers=WORKERS).assignment == (0, 1, 2)


# -- properties ----------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identical_gpu_problems(max_nodes=5, max_gpus=4),
       st.sampled_from([Goal.TRANSFERS, Goal.BALANCED]), st.booleans())
def test_cpsat_uses_identical_gpus_as_a_prefix(problem: PlacementProblem, goal: Goal, use_hint: bool) -> None:
    best = brute_force(problem)
    if best is None:
        with pytest.raises(InfeasiblePlanError):
            solve(problem, goal=goal, num_workers=WORKERS, use_hint=use_hint)
        return
    solution = solve(problem, goal=goal, num_workers=WORKERS, use_hint=use_hint)
    assert solution.status is Status.OPTIMAL
    check_placement(problem, solution.assignment)
    assert_prefix(problem, solution.assignment)
    if goal is Goal.TRANSFERS:
        assert solution.objective.as_tuple() == best
    else:  # the first measure of balanced is the offload cost: brute force's first entry
        assert solution.objective.offload_cost == best[0]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identical_gpu_problems(max_nodes=10, max_gpus=5, chain=True))
def test_dp_hint_and_cpsat_use_identical_gpus_as_a_prefix_on_chains(problem: PlacementProblem) -> None:
    try:
        exact = solve_chain_dp(problem)
    except InfeasiblePlanError:
        assert chain_hint(problem) is None or not violations(problem, chain_hint(problem))
        return
    assert_prefix(problem, exact.assignment)
    hint = chain_hint(problem)
    if hint is not None:
        check_placement(problem, hint)
        assert_prefix(problem, hint)
    solution = solve(problem, num_workers=WORKERS)
    assert_prefix(problem, solution.assignment)
    assert solution.objective == exact.objective


def test_latency_and_throughput_on_identical_gpus_use_a_prefix() -> None:
    # The three GPUs have one speed and one link between any two, so they are interchangeable
    # under the cost model; the cpu streams at 1 kB/s, so nothing is offloaded and the two nodes
    # take two GPUs (before the fix: GPUs 1 and 2). Oracle: every assignment scored by solver.score.
    problem = chain_of(5, 8, edge_bytes=4, devices=gpus(10, 10, 10, cpu=100), ordered=False)
    k = len(problem.devices)
    speed = DeviceSpeed(flops_per_s=1e9, mem_bytes_per_s=1e8)
    cost = CostModel(
        speeds=(speed,) * (k - 1) + (DeviceSpeed(read_bytes_per_s=1e3),),
        link_bytes_per_s=[[1e8] * k for _ in range(k)],
        work=(NodeWork(prefill_flops=100, prefill_bytes=10), NodeWork(prefill_flops=300, prefill_bytes=20)),
        decode_steps=2,
    )
    valid = [a for a in itertools.product(range(k), repeat=len(problem.nodes)) if not violations(problem, a)]
    for goal in (Goal.LATENCY, Goal.THROUGHPUT):
        best = min(tuple(score(problem, a, m, cost) for m in goal.measures) for a in valid)
        solution = solve(problem, goal=goal, cost=cost, num_workers=WORKERS)
        assert solution.assignment == (0, 1)
        assert tuple(solution.values[m] for m in goal.measures) == best
