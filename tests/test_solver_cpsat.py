"""The CP-SAT model: agreement with the DP and brute force, fixtures, errors, status mapping."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from functools import partial
from pathlib import Path

import layerplan.solver.cpsat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layerplan.solver import (
    Device,
    DeviceKind,
    Edge,
    InfeasiblePlanError,
    InvalidSpecError,
    LayerplanError,
    Node,
    PlacementProblem,
    Status,
    evaluate,
    solve_chain_dp,
)
from layerplan.solver import solve as _solve_any
from ortools.sat.python import cp_model

# These tests are CP-SAT's (tests/test_block_dp.py checks the block DP that solve() tries first).
solve = partial(_solve_any, method="cp-sat")
from tests.strategies import (
    GiB,
    assert_cpsat_matches_brute_force,
    chain_of,
    chain_problems,
    check_placement,
    gpus,
    small_problems,
)

WORKERS = 2  # the suite runs on two cores


def nodes(*sizes: int, names: tuple[str, ...] | None = None) -> tuple[Node, ...]:
    names = names or tuple(f"n{i}" for i in range(len(sizes)))
    return tuple(Node(name=name, size_bytes=s) for name, s in zip(names, sizes))


# -- oracles -------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_problems(max_nodes=40, max_devices=6), st.booleans())
def test_cpsat_matches_the_dp_on_chains(problem: PlacementProblem, use_hint: bool) -> None:
    # Without the hint CP-SAT searches every phase itself; with it, phases the hint already
    # brings to 0 are skipped.
    try:
        expected = solve_chain_dp(problem).objective.as_tuple()
    except InfeasiblePlanError as error:
        with pytest.raises(InfeasiblePlanError) as caught:
            solve(problem, num_workers=WORKERS, use_hint=use_hint)
        assert caught.value.missing_bytes == error.missing_bytes
        return
    solution = solve(problem, num_workers=WORKERS, use_hint=use_hint)
    assert solution.status is Status.OPTIMAL
    check_placement(problem, solution.assignment)
    assert solution.objective.as_tuple() == expected
    assert solution.objective == evaluate(problem, solution.assignment)
    assert solution.bound == solution.objective.transfer_bytes


@settings(max_examples=200, deadline=None)
@given(small_problems(max_nodes=7, max_devices=3), st.booleans())
def test_cpsat_matches_brute_force_on_small_dags(problem: PlacementProblem, use_hint: bool) -> None:
    assert_cpsat_matches_brute_force(problem, use_hint=use_hint)


# -- hand-computed fixtures ----------------------------------------------------------------------
def test_two_gpus_split_four_equal_nodes_in_half() -> None:
    # 4 nodes of 10 bytes, two GPUs of 20 bytes: the only split is 2 + 2, cutting one 7-byte edge.
    solution = solve(chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20)), num_workers=WORKERS)
    assert solution.assignment == (0, 0, 1, 1)
    assert solution.objective.as_tuple() == (0, 7)
    assert (solution.status, solution.bound, solution.gap, solution.solver) == (Status.OPTIMAL, 7, 0.0, "cp-sat")


def test_offload_prefers_cpu_to_disk() -> None:
    # 3 x 10 bytes, GPU 20: one node leaves the GPU; cpu costs 10 * 1, disk 10 * 8.
    solution = solve(chain_of(10, 10, 10, edge_bytes=5, devices=gpus(20, cpu=10, disk=100)), num_workers=WORKERS)
    assert sorted(solution.assignment) == [0, 0, 1]
    assert solution.objective.as_tuple() == (10, 0)


def test_offloaded_node_next_to_gpu0_costs_no_transfer() -> None:
    # GPU 0, GPU 1 and cpu hold one 10-byte node each. (cpu, 0, 1) and (0, cpu, 1) cut only the
    # edge into GPU 1 (5 bytes); (0, 1, cpu) also sends GPU 1's output back to GPU 0 (10 bytes).
    solution = solve(chain_of(10, 10, 10, edge_bytes=5, devices=gpus(10, 10, cpu=10)), num_workers=WORKERS)
    assert solution.objective.as_tuple() == (10, 5)
    assert solution.assignment in {(0, 2, 1), (2, 0, 1)}


def test_a_tensor_is_sent_once_per_destination_device() -> None:
    # n0 on GPU 0 feeds n1 and n2, both pinned to GPU 1: its 5 bytes cross once, not twice.
    problem = PlacementProblem(
        nodes=nodes(1, 1, 1),
        edges=(Edge(producer=0, consumers=(1, 2), size_bytes=5),),
        devices=gpus(10, 10),
        pins=((0, 0), (1, 1), (2, 1)),
    )
    assert solve(problem, num_workers=WORKERS).objective.as_tuple() == (0, 5)


def test_a_tensor_read_on_two_devices_is_sent_to_each() -> None:
    # n0 (GPU 0) feeds n1 (GPU 1) and n2 (GPU 2), all pinned: 5 bytes to each of two devices = 10.
    problem = PlacementProblem(
        nodes=nodes(1, 1, 1),
        edges=(Edge(producer=0, consumers=(1, 2), size_bytes=5),),
        devices=gpus(10, 10, 10),
        pins=((0, 0), (1, 1), (2, 2)),
    )
    assert solve(problem, num_workers=WORKERS).objective.as_tuple() == (0, 10)


def test_skip_edge_prefers_a_cut_it_does_not_span() -> None:
    # Four 10-byte nodes on two 30-byte GPUs; edges n0 -> (n1, n2) 9 bytes, n1 -> n2 and
    # n2 -> n3 1 byte each. Cut after n0: the 9 bytes go to GPU 1 once (9); after n1: 9 + 1 = 10;
    # after n2: only n2 -> n3 crosses (1). Best: (0, 0, 0, 1) with 1 byte.
    problem = PlacementProblem(
        nodes=nodes(10, 10, 10, 10),
        edges=(
            Edge(producer=0, consumers=(1, 2), size_bytes=9),
            Edge(producer=1, consumers=(2,), size_bytes=1),
            Edge(producer=2, consumers=(3,), size_bytes=1),
        ),
        devices=gpus(30, 30),
    )
    solution = solve(problem, num_workers=WORKERS)
    assert solution.objective.as_tuple() == (0, 1)
    assert solution.assignment == (0, 0, 0, 1)


def test_tied_head_sits_with_the_embedding_without_breaking_contiguity() -> None:
    # embed (10), layers 1-3 (10 each), lm_head (0 bytes: its weight is the embedding's) tied to
    # embed. GPUs of 20: GPU 0 = embed + layer 1 (+ head), GPU 1 = layers 2, 3. Edges of 4 bytes:
    # layer 1 -> 2 crosses to GPU 1 (4) and layer 3 -> head crosses back to GPU 0 (4): 8.
    names = ("model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2", "lm_head")
    problem = PlacementProblem(
        nodes=nodes(10, 10, 10, 10, 0, names=names),
        edges=tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=4) for i in range(4)),
        devices=gpus(20, 20),
        tied_groups=((0, 4),),
    )
    solution = solve(problem, num_workers=WORKERS)
    assert solution.assignment == (0, 0, 1, 1, 0)
    assert solution.objective.as_tuple() == (0, 8)


def test_unordered_blocks_may_follow_any_device_order() -> None:
    # 20 then 10 bytes on GPUs of 10 and 20: only "GPU 1 then GPU 0" fits.
    problem = chain_of(20, 10, edge_bytes=3, devices=gpus(10, 20), ordered=False)
    solution = solve(problem, num_workers=WORKERS)
    assert solution.assignment == (1, 0)
    assert solution.objective.as_tuple() == (0, 3)
    with pytest.raises(InfeasiblePlanError, match="blocks in device order"):
        solve(chain_of(20, 10, edge_bytes=3, devices=gpus(10, 20)), num_workers=WORKERS)


def test_pins_are_honoured() -> None:
    # Node 0 pinned to GPU 1 closes GPU 0 under the device order. Offloading nodes 2-3 to the cpu
    # would make them run on accelerate's main_device, the first accelerator of the map (GPU 1),
    # not on the execution device GPU 0 that the accounting charges: that is refused, so with
    # GPU 1 full after two nodes there is no placement.
    problem = chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20, cpu=40), pins=((0, 1),))
    with pytest.raises(InfeasiblePlanError):
        solve(problem, num_workers=WORKERS, explain=False)
    # In any block order GPU 0 takes nodes 2-3 after GPU 1's block: edge 1 -> 2 crosses, 7 bytes.
    solution = solve(dataclasses.replace(problem, ordered=False), num_workers=WORKERS)
    assert solution.assignment == (1, 1, 0, 0)
    assert solution.objective.as_tuple() == (0, 7)


def test_repeated_runs_return_the_same_placement() -> None:
    # With one worker CP-SAT's search is deterministic under the fixed seed.
    problem = chain_of(7, 5, 9, 5, 5, 9, 7, 5, 7, 9, edge_bytes=3, devices=gpus(25, 20, 10, cpu=10, disk=100))
    runs = {solve(problem, num_workers=1).assignment for _ in range(3)}
    assert len(runs) == 1


# -- infeasible: messages say the value, the relation and the fix --------------------------------
def test_node_larger_than_every_cap_is_named() -> None:
    problem = PlacementProblem(
        nodes=nodes(GiB, int(1.6 * GiB), names=("model.layers.30", "model.layers.31")),
        devices=gpus(GiB // 2, GiB),
    )
    with pytest.raises(InfeasiblePlanError) as caught:
        solve(problem, num_workers=WORKERS)
    message = str(caught.value)
    # 1.6 GiB - 1 GiB = 0.6 GiB = 614.4 MiB short on the largest device.
    for part in ("'model.layers.31' needs 1.60 GiB", "largest cap is 1.00 GiB", "device '1'",
                 "614.40 MiB missing", "raise max_memory"):
        assert part in message, message
    assert caught.value.node == "model.layers.31"
    assert caught.value.missing_bytes == int(1.6 * GiB) + GiB - (GiB // 2 + GiB)


def test_model_larger_than_all_devices_reports_the_missing_bytes() -> None:
    problem = chain_of(*[10 * GiB] * 14, devices=gpus(40 * GiB, 40 * GiB, cpu=40 * GiB))
    with pytest.raises(InfeasiblePlanError) as caught:
        solve(problem, num_workers=WORKERS)
    assert str(caught.value) == (
        "the model needs 140.00 GiB but the devices hold 120.00 GiB in all: 20.00 GiB missing; "
        "raise max_memory, add a device, or add 'cpu'/'disk'; the least extra memory that makes "
        "it fit: 20.00 GiB on 'cpu'"
    )
    assert caught.value.missing_bytes == 20 * GiB
    # 140 GiB of whole 10 GiB layers in 120 GiB: 20 GiB more in all, best on host RAM.
    assert caught.value.extra_bytes == {"cpu": 20 * GiB}
    assert caught.value.node is None


def test_tied_group_larger_than_every_cap_is_named() -> None:
    # embed 6 + head 6 = 12 bytes must share a device, the largest cap is 10 (total 12 <= 20).
    problem = PlacementProblem(
        nodes=nodes(6, 0, 6, names=("embed", "layer", "head")),
        devices=gpus(10, 10),
        tied_groups=((0, 2),),
    )
    with pytest.raises(InfeasiblePlanError, match="tied nodes 'embed' and 'head' need 12 B together") as caught:
        solve(problem, num_workers=WORKERS)
    assert caught.value.node == "embed"
    assert caught.value.missing_bytes == 0


def test_pinned_node_larger_than_its_device_is_named() -> None:
    problem = PlacementProblem(nodes=nodes(8, 1), devices=gpus(5, 10), pins=((0, 0),))
    with pytest.raises(InfeasiblePlanError, match="pinned to device '0' whose cap is 5 B") as caught:
        solve(problem, num_workers=WORKERS)
    assert caught.value.node == "n0"


def test_too_many_bytes_pinned_to_one_device_are_reported() -> None:
    problem = PlacementProblem(nodes=nodes(4, 4, 4), devices=gpus(10, 10), pins=((0, 0), (1, 0), (2, 0)))
    with pytest.raises(InfeasiblePlanError, match="pinned to device '0' need 12 B but its cap is 10 B: 2 B over"):
        solve(problem, num_workers=WORKERS)


def test_structural_infeasibility_is_proven_and_explained() -> None:
    # 3 x 15 = 45 bytes fit in 20 + 25 in total, but not as whole nodes in one block per GPU.
    with pytest.raises(InfeasiblePlanError, match="one contiguous block per accelerator") as caught:
        solve(chain_of(15, 15, 15, devices=gpus(20, 25), ordered=False), num_workers=WORKERS)
    assert caught.value.missing_bytes == 0


# -- arguments and status mapping ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_limit_s": 0}, "time_limit_s=0"),
        ({"time_limit_s": -1.0}, "time_limit_s=-1.0"),
        ({"time_limit_s": float("inf")}, "time_limit_s=inf"),
        ({"num_workers": 0}, "num_workers=0"),
        ({"num_workers": 2.5}, "num_workers=2.5"),
    ],
)
def test_bad_solver_options_are_rejected(options: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        solve(chain_of(1, devices=gpus(1)), **options)


class _ReportedAs:
    """A CpSolver stand-in: solves for real, then reports ``status`` and ``bound`` instead."""

    def __init__(self, status: int, bound: float) -> None:
        self._real = cp_model.CpSolver()
        self._real.parameters.num_workers = 1
        self._status = status
        self.best_objective_bound = bound

    def solve(self, model: cp_model.CpModel) -> int:
        self._real.solve(model)
        return self._status

    def boolean_value(self, var: cp_model.IntVar) -> bool:
        return self._real.boolean_value(var)


def _report(monkeypatch: pytest.MonkeyPatch, *statuses: tuple[int, float]) -> None:
    """Make the successive CP-SAT phases report the given (status, bound) pairs."""
    queue = list(statuses)
    monkeypatch.setattr(layerplan.solver.cpsat, "_solver", lambda **_: _ReportedAs(*queue.pop(0)))


def test_time_limit_gives_feasible_with_the_proven_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # Four 10-byte nodes on two 20-byte GPUs: transfer 7, and CP-SAT "proved" only 3.
    _report(monkeypatch, (cp_model.FEASIBLE, 3.0))
    solution = solve(chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20)), num_workers=WORKERS)
    assert (solution.status, solution.objective.transfer_bytes, solution.bound) == (Status.FEASIBLE, 7, 3)
    assert solution.gap == pytest.approx(4 / 7)


def test_unproven_offload_phase_makes_the_result_feasible(monkeypatch: pytest.MonkeyPatch) -> None:
    # Offload phase unproven, transfer phase optimal: the bound holds for that offload cost.
    _report(monkeypatch, (cp_model.FEASIBLE, 0.0), (cp_model.OPTIMAL, 5.0))
    problem = chain_of(10, 10, 10, edge_bytes=5, devices=gpus(10, 10, cpu=10))
    solution = solve(problem, num_workers=WORKERS, use_hint=False)
    assert solution.status is Status.FEASIBLE
    assert solution.objective.as_tuple() == (10, 5) and solution.bound == 5


def test_unknown_without_any_placement_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _report(monkeypatch, (cp_model.UNKNOWN, 0.0))
    with pytest.raises(LayerplanError, match="neither found a placement nor proved that none exists"):
        solve(chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20)), num_workers=WORKERS, use_hint=False)


def test_unknown_with_a_hint_returns_the_hint_as_feasible(monkeypatch: pytest.MonkeyPatch) -> None:
    _report(monkeypatch, (cp_model.UNKNOWN, 2.0))
    problem = chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20))
    solution = solve(problem, num_workers=WORKERS)
    check_placement(problem, solution.assignment)
    assert (solution.status, solution.bound) == (Status.FEASIBLE, 2)


def test_model_invalid_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _report(monkeypatch, (cp_model.MODEL_INVALID, 0.0))
    with pytest.raises(LayerplanError, match="CP-SAT rejected the placement model"):
        solve(chain_of(10, 10, 10, 10, edge_bytes=7, devices=gpus(20, 20)), num_workers=WORKERS)


def test_solver_package_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys, layerplan.solver; layerplan.solver.solve; "
            "assert not {'torch', 'transformers', 'accelerate'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_devices_without_accelerators_send_nothing() -> None:
    # cpu and disk only: everything computes on the cpu (the execution device), transfer 0.
    devices = (
        Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=15),
        Device(name="disk", kind=DeviceKind.DISK, cap_bytes=100),
    )
    solution = solve(chain_of(10, 10, 10, edge_bytes=9, devices=devices), num_workers=WORKERS)
    # One node fits the cpu (10 * 1), two go to disk (20 * 8): 170.
    assert solution.objective.as_tuple() == (170, 0)
