"""The exact chain DP and the chain hint: hand-computed fixtures, brute force oracle, speed."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerplan.solver.hint
from layerplan.solver import (
    Device,
    DeviceKind,
    Edge,
    InfeasiblePlanError,
    InvalidSpecError,
    Node,
    PlacementProblem,
    Status,
    chain_hint,
    evaluate,
    solve_chain_dp,
)
from tests.strategies import GiB, brute_force, chain_of, chain_problems, check_placement, gpus, small_problems


# -- hand-computed fixtures ----------------------------------------------------------------------
def test_two_gpus_split_four_equal_nodes_in_half() -> None:
    # 4 nodes of 10 bytes, two GPUs of 20 bytes: the only split is 2 + 2, cutting one 7-byte edge.
    solution = solve_chain_dp(chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20)))
    assert solution.assignment == (0, 0, 1, 1)
    assert solution.objective.as_tuple() == (0, 7)
    assert (solution.status, solution.bound, solution.solver) == (Status.OPTIMAL, 7, "dp")


def test_roomy_first_gpu_takes_everything_and_nothing_is_sent() -> None:
    # GPU 0 holds all 40 bytes: no cut, no offload; GPU 1 stays empty (accelerators may go unused).
    solution = solve_chain_dp(chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(40, 40, cpu=100)))
    assert solution.assignment == (0, 0, 0, 0)
    assert solution.objective.as_tuple() == (0, 0)


def test_offload_prefers_cpu_to_disk() -> None:
    # 3 x 10 bytes, GPU 20: one node leaves the GPU. cpu costs 1/byte (10), disk 8/byte (80).
    # The offloaded node computes on GPU 0, so no edge crosses a device: transfer 0.
    solution = solve_chain_dp(chain_of(10, 10, 10, edge_bytes=5, devices=gpus(20, cpu=10, disk=100)))
    assert sorted(solution.assignment) == [0, 0, 1]
    assert solution.objective.as_tuple() == (10, 0)


def test_offload_goes_to_disk_when_cpu_is_too_small() -> None:
    # As above but the cpu holds 5 bytes < 10: the node goes to disk, 10 * 8 = 80.
    solution = solve_chain_dp(chain_of(10, 10, 10, edge_bytes=5, devices=gpus(20, cpu=5, disk=100)))
    assert sorted(solution.assignment) == [0, 0, 2]
    assert solution.objective.as_tuple() == (80, 0)


def test_offloaded_node_next_to_gpu0_costs_no_transfer() -> None:
    # 3 x 10 bytes; GPU 0, GPU 1 and cpu hold 10 each, so each holds one node (offload 10).
    #   (0, 1, cpu): 0->1 crosses (5), 1->2 goes GPU 1 -> GPU 0 where cpu nodes compute (5): 10;
    #   (0, cpu, 1) or (cpu, 0, 1): only the edge into GPU 1 crosses: 5.
    solution = solve_chain_dp(chain_of(10, 10, 10, edge_bytes=5, devices=gpus(10, 10, cpu=10)))
    assert solution.objective.as_tuple() == (10, 5)
    assert solution.assignment in {(0, 2, 1), (2, 0, 1)}


def test_pin_to_the_second_gpu_closes_the_first() -> None:
    # Node 0 pinned to GPU 1: GPU 0 can no longer appear after it (device order). Offloading nodes
    # 2-3 would need GPU 0 (the execution device) to store a node, and GPU 1 holds only 20 bytes:
    # no placement (the DP's unconstrained optimum (1, 1, 2, 2) breaks that rule).
    problem = chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20, cpu=40), pins=((0, 1),))
    with pytest.raises(InfeasiblePlanError):
        solve_chain_dp(problem)
    # With GPU 1's cap at 40 it holds all four nodes: no offload, no transfer.
    roomy = chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 40, cpu=40), pins=((0, 1),))
    assert solve_chain_dp(roomy).assignment == (1, 1, 1, 1)


def test_pin_to_cpu_in_the_middle_sends_a_neighbour_to_the_cpu_too() -> None:
    # Node 1 pinned to cpu: GPU 0 cannot hold nodes 0 and 2 around it (that would be two blocks),
    # so one of them joins it on the cpu: offload 10 + 10 = 20. Every node computes on GPU 0:
    # transfer 0.
    problem = chain_of(10, 10, 10, edge_bytes=7, devices=gpus(100, cpu=40), pins=((1, 1),))
    solution = solve_chain_dp(problem)
    assert solution.assignment in {(0, 1, 1), (1, 1, 0)}
    assert solution.objective.as_tuple() == (20, 0)


def test_cut_goes_at_the_cheapest_edge() -> None:
    # Edges 9, 1, 9 between 4 nodes of 10; two GPUs of 30: cutting after node 1 costs 1.
    problem = PlacementProblem(
        nodes=tuple(Node(name=f"n{i}", size_bytes=10) for i in range(4)),
        edges=tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=b) for i, b in enumerate((9, 1, 9))),
        devices=gpus(30, 30),
    )
    solution = solve_chain_dp(problem)
    assert solution.assignment == (0, 0, 1, 1)
    assert solution.objective.transfer_bytes == 1


def test_empty_problem_has_the_empty_placement() -> None:
    solution = solve_chain_dp(PlacementProblem(nodes=(), devices=gpus(1)))
    assert solution.assignment == ()
    assert solution.objective.as_tuple() == (0, 0)


# -- infeasible and invalid ----------------------------------------------------------------------
def test_model_larger_than_all_caps_reports_missing_bytes() -> None:
    problem = chain_of(*[10 * GiB] * 14, devices=gpus(40 * GiB, 40 * GiB, cpu=40 * GiB))
    with pytest.raises(InfeasiblePlanError) as caught:
        solve_chain_dp(problem)
    assert caught.value.missing_bytes == 20 * GiB
    assert "20.00 GiB missing" in str(caught.value)


def test_contiguity_makes_a_fitting_total_infeasible() -> None:
    # 3 x 15 = 45 bytes, GPUs 20 + 25 = 45, but no GPU takes two 15-byte nodes: 15 + 15 = 30 > 25.
    problem = chain_of(15, 15, 15, devices=gpus(20, 25))
    with pytest.raises(InfeasiblePlanError, match="one contiguous block per accelerator") as caught:
        solve_chain_dp(problem)
    assert caught.value.missing_bytes == 0
    assert caught.value.node is None


def test_device_order_makes_a_fitting_total_infeasible() -> None:
    # 20 then 10 bytes on GPUs of 10 and 20: only GPU 1 then GPU 0 would do, against device order.
    with pytest.raises(InfeasiblePlanError, match="blocks in device order"):
        solve_chain_dp(chain_of(20, 10, devices=gpus(10, 20)))


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        (
            PlacementProblem(
                nodes=(Node(name="a", size_bytes=1), Node(name="b", size_bytes=1), Node(name="c", size_bytes=1)),
                edges=(Edge(producer=0, consumers=(2,), size_bytes=1),),
                devices=gpus(5),
            ),
            "needs a chain",
        ),
        (
            PlacementProblem(
                nodes=(Node(name="a", size_bytes=1), Node(name="b", size_bytes=1)),
                edges=(Edge(producer=0, consumers=(1,), size_bytes=1),),
                devices=gpus(5),
                ordered=False,
            ),
            "needs ordered=True",
        ),
        (
            PlacementProblem(
                nodes=(Node(name="a", size_bytes=1), Node(name="b", size_bytes=1)),
                devices=gpus(5),
                tied_groups=((0, 1),),
            ),
            "does not handle tied groups",
        ),
    ],
)
def test_dp_rejects_what_it_cannot_solve(problem: PlacementProblem, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        solve_chain_dp(problem)


# -- oracle and properties -----------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(small_problems(max_nodes=7, max_devices=3, chain=True))
def test_dp_matches_brute_force_on_small_chains(problem: PlacementProblem) -> None:
    best = brute_force(problem)
    if best is None:
        with pytest.raises(InfeasiblePlanError):
            solve_chain_dp(problem)
    else:
        solution = solve_chain_dp(problem)
        check_placement(problem, solution.assignment)
        assert solution.objective.as_tuple() == best
        assert solution.objective == evaluate(problem, solution.assignment)


@settings(max_examples=100, deadline=None)
@given(small_problems(max_nodes=7, max_devices=3, chain=True), st.data())
def test_dp_of_a_weights_only_chain_ignores_before_cache_flags(problem: PlacementProblem, data) -> None:
    # Without KV cache or working sets (weights-only) a before_kv_cache flag changes no charge: the
    # DP's answer is the brute-force optimum of the flagged problem and its unflagged twin alike.
    flags = data.draw(st.lists(st.booleans(), min_size=len(problem.nodes), max_size=len(problem.nodes)))
    flagged = dataclasses.replace(problem, nodes=tuple(
        dataclasses.replace(x, before_kv_cache=f) for x, f in zip(problem.nodes, flags)))
    assert not flagged.has_runtime_memory
    best = brute_force(flagged)
    assert best == brute_force(problem)
    if best is None:
        with pytest.raises(InfeasiblePlanError):
            solve_chain_dp(flagged)
        return
    solution = solve_chain_dp(flagged)
    check_placement(flagged, solution.assignment)
    assert solution.objective.as_tuple() == best
    assert solution.assignment == solve_chain_dp(problem).assignment


@settings(max_examples=60, deadline=None)
@given(chain_problems(max_nodes=40, max_devices=6))
def test_dp_placements_are_valid_and_scored_as_evaluate_scores_them(problem: PlacementProblem) -> None:
    try:
        solution = solve_chain_dp(problem)
    except InfeasiblePlanError as error:
        assert error.missing_bytes == max(0, problem.total_bytes - problem.total_cap_bytes)
        return
    check_placement(problem, solution.assignment)
    assert solution.objective == evaluate(problem, solution.assignment)
    assert solution.bound == solution.objective.transfer_bytes


@settings(max_examples=150, deadline=None)
@given(small_problems(max_nodes=7, max_devices=3))
def test_chain_hint_is_a_valid_placement_found_whenever_an_ordered_one_exists(
    problem: PlacementProblem,
) -> None:
    # For ordered problems the relaxation (followers folded into anchors) has exactly the
    # placements of the problem, so on these small ones the hint must find one when one exists.
    hint = chain_hint(problem)
    if hint is not None:
        check_placement(problem, hint)
    if problem.ordered:
        assert (hint is not None) == (brute_force(problem) is not None)


@settings(max_examples=40, deadline=None)
@given(chain_problems(max_nodes=40, max_devices=6))
def test_chain_hint_keeps_everything_on_one_roomy_accelerator(problem: PlacementProblem) -> None:
    roomy = Device(name="roomy", kind=DeviceKind.ACCELERATOR, cap_bytes=problem.total_bytes)
    problem = PlacementProblem(nodes=problem.nodes, edges=problem.edges, devices=(roomy, *problem.devices))
    hint = chain_hint(problem)
    assert hint is not None
    check_placement(problem, hint)
    assert evaluate(problem, hint).as_tuple() == (0, 0)


# -- large cases (their timings: benchmarks/dp_time.py) ----------------------------------------
@pytest.mark.parametrize("with_offload_devices", [False, True])
def test_dp_is_fast_when_nothing_needs_offloading(with_offload_devices: bool) -> None:
    # 300 nodes x 8 accelerators, each of which could hold the whole model.
    caps = [300 * GiB] * 8
    devices = gpus(*caps, cpu=64 * GiB, disk=1024 * GiB) if with_offload_devices else gpus(*caps)
    problem = chain_of(*[GiB] * 300, edge_bytes=2**20, devices=devices)
    solution = solve_chain_dp(problem)
    assert solution.objective.as_tuple() == (0, 0)


def test_dp_is_fast_on_a_tight_split_over_eight_gpus() -> None:
    # 300 x 1 GiB over 8 GPUs of 40 GiB: 7 cuts are needed (300 / 40 > 7), each 1 MiB.
    problem = chain_of(*[GiB] * 300, edge_bytes=2**20, devices=gpus(*[40 * GiB] * 8))
    solution = solve_chain_dp(problem)
    assert solution.objective.as_tuple() == (0, 7 * 2**20)


def test_dp_on_a_70b_like_model_offloading_to_a_tight_cpu_and_disk() -> None:
    # Embedding 1 GiB, 80 layers of 1.70 GiB, norm 8 KiB, head 1 GiB: 138 GiB and 8 KiB. The two
    # 40 GiB GPUs hold at most 80 GiB, so at least 58 GiB go to cpu (1/byte, 30 GiB) and disk
    # (8/byte). The optimum fills the cpu to within one layer: with 1.70 GiB free there, moving
    # any disk node to the cpu would cost less.
    layer = int(1.7 * GiB)
    sizes = [GiB] + [layer] * 80 + [8192, GiB]
    problem = chain_of(*sizes, edge_bytes=2**27, devices=gpus(40 * GiB, 40 * GiB, cpu=30 * GiB, disk=1024 * GiB))
    solution = solve_chain_dp(problem)
    check_placement(problem, solution.assignment)
    on_gpus = sum(s for s, d in zip(sizes, solution.assignment) if d in (0, 1))
    on_cpu = sum(s for s, d in zip(sizes, solution.assignment) if d == 2)
    on_disk = sum(s for s, d in zip(sizes, solution.assignment) if d == 3)
    assert on_gpus + on_cpu + on_disk == sum(sizes)
    assert solution.objective.offload_cost == on_cpu + 8 * on_disk
    assert on_cpu <= 30 * GiB and on_cpu > 30 * GiB - layer  # the cheap tier is filled


def test_chain_hint_is_fast_on_a_large_dag_with_a_tied_head() -> None:
    # 300 nodes with residual-style skip edges, lm_head tied to the embedding, 6 GPUs + cpu + disk.
    n = 300
    problem = PlacementProblem(
        nodes=tuple(Node(name=f"n{i}", size_bytes=GiB) for i in range(n)),
        edges=tuple(
            Edge(producer=i, consumers=tuple(sorted({i + 1, min(n - 1, i + 2)})), size_bytes=2**20)
            for i in range(n - 1)
        ),
        devices=gpus(*[40 * GiB] * 6, cpu=64 * GiB, disk=1024 * GiB),
        tied_groups=((0, n - 1),),
        ordered=False,
    )
    hint = chain_hint(problem)
    assert hint is not None
    check_placement(problem, hint)
    assert hint[n - 1] == hint[0]


def test_chain_hint_falls_back_to_a_greedy_fill_when_the_dp_runs_out_of_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No time for the DP: GPU 0 fills up with nodes 0-1 (20 of 25 bytes), GPU 1 with nodes 2-3,
    # and the last node goes to the cheapest offload tier with room, the cpu.
    monkeypatch.setattr(layerplan.solver.hint, "_HINT_DP_BUDGET_S", -1.0)
    problem = chain_of(10, 10, 10, 10, 10, devices=gpus(25, 20, cpu=10, disk=100))
    hint = chain_hint(problem)
    assert hint == (0, 0, 1, 1, 2)
    check_placement(problem, hint)


def test_chain_hint_is_none_when_nothing_fits() -> None:
    # 15 + 15 + 15 bytes on GPUs of 20 and 25: feasible in total, impossible in blocks.
    assert chain_hint(chain_of(15, 15, 15, devices=gpus(20, 25))) is None
