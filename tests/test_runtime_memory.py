"""Runtime memory in the solver: KV cache, working sets, received tensors, streaming, reserves.

Oracles: brute force over every assignment (through :func:`violations`), and a second, by-hand
accounting written here from the rules in DESIGN.md, independent of :mod:`layerplan.solver.accounting`.
"""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layerplan.solver import (
    Device,
    DeviceKind,
    Edge,
    InfeasiblePlanError,
    InvalidSpecError,
    Node,
    PlacementProblem,
    Rule,
    chain_hint,
    solve_chain_dp,
    violations,
)
from layerplan.solver import solve as _solve_any

# These tests are CP-SAT's (tests/test_block_dp.py checks the block DP that solve() tries first).
solve = partial(_solve_any, method="cp-sat")
from tests.strategies import assert_cpsat_matches_brute_force, runtime_problems

WORKERS = 2


def by_hand(problem: PlacementProblem, assignment: tuple[int, ...]) -> dict[str, int]:
    """Bytes each device holds, recomputed node by node from the stated rules."""
    devices = problem.devices
    accelerators = [d for d, dev in enumerate(devices) if dev.kind is DeviceKind.ACCELERATOR]
    if accelerators:
        execution = accelerators[0]
    else:
        execution = next((d for d, dev in enumerate(devices) if dev.kind is DeviceKind.CPU), 0)

    def runs_on(stored: int) -> int:
        return stored if devices[stored].kind is DeviceKind.ACCELERATOR else execution

    runtime = any(x.kv_bytes or x.work_bytes for x in problem.nodes) or any(d.reserve_bytes for d in devices)
    held = {dev.name: 0 for dev in devices}
    for d, dev in enumerate(devices):
        mine = [i for i, a in enumerate(assignment) if a == d]
        runs = [i for i, a in enumerate(assignment) if runs_on(a) == d]
        held[dev.name] += sum(problem.nodes[i].size_bytes for i in mine)
        if not runs or not runtime:  # weights-only problems charge weights alone
            continue
        held[dev.name] += dev.reserve_bytes
        held[dev.name] += sum(problem.nodes[i].kv_bytes for i in runs)
        held[dev.name] += max(problem.nodes[i].work_bytes for i in runs)
        streamed = [problem.nodes[i].size_bytes for i in runs if assignment[i] != d]
        held[dev.name] += max(streamed, default=0)
        for edge in problem.edges:
            reads_here = any(runs_on(assignment[c]) == d for c in edge.consumers)
            if reads_here and runs_on(assignment[edge.producer]) != d:
                held[dev.name] += edge.size_bytes
    return held


def gpu(name: str, cap: int, reserve: int = 0) -> Device:
    return Device(name=name, kind=DeviceKind.ACCELERATOR, cap_bytes=cap, reserve_bytes=reserve)


def chain(*nodes: Node, edge_bytes: int = 0) -> tuple[tuple[Node, ...], tuple[Edge, ...]]:
    edges = tuple(
        Edge(producer=i, consumers=(i + 1,), size_bytes=edge_bytes) for i in range(len(nodes) - 1)
    ) if edge_bytes else ()
    return tuple(nodes), edges


# -- oracles -------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runtime_problems(max_nodes=6, max_devices=3), st.booleans())
def test_cpsat_matches_brute_force_with_runtime_memory(problem: PlacementProblem, use_hint: bool) -> None:
    solution = assert_cpsat_matches_brute_force(problem, use_hint=use_hint)
    if solution is None:
        return
    held = by_hand(problem, solution.assignment)
    for device in problem.devices:
        assert held[device.name] <= device.cap_bytes, (device.name, held, solution.assignment)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runtime_problems(max_nodes=6, max_devices=3))
def test_the_accounting_agrees_with_the_rules_by_hand(problem: PlacementProblem) -> None:
    # Every assignment, not only solver output: violations() flags a device exactly when the
    # by-hand total exceeds its cap.
    import itertools

    for assignment in itertools.islice(
        itertools.product(range(len(problem.devices)), repeat=len(problem.nodes)), 200
    ):
        held = by_hand(problem, assignment)
        flagged = {
            str(v).split("'")[1] for v in violations(problem, assignment) if v.rule is Rule.CAP
        }
        over = {d.name for d in problem.devices if held[d.name] > d.cap_bytes}
        assert flagged == over, (assignment, held)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runtime_problems(max_nodes=6, max_devices=3))
def test_the_hint_is_valid_or_absent(problem: PlacementProblem) -> None:
    hint = chain_hint(problem)
    if hint is not None:
        assert violations(problem, hint) == []


# -- hand-computed fixtures ----------------------------------------------------------------------
def test_kv_cache_moves_a_layer_to_the_next_gpu() -> None:
    # Weights alone (4 x 10) fit GPU 0 (cap 45); with 5 bytes of KV each, GPU 0 takes 3 layers.
    nodes, edges = chain(*(Node(name=f"l{i}", size_bytes=10, kv_bytes=5) for i in range(4)))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 45), gpu("1", 45)))
    assert solve(problem, num_workers=WORKERS).assignment == (0, 0, 0, 1)


def test_offloaded_nodes_keep_their_kv_cache_on_the_execution_device() -> None:
    # l1 offloaded to the CPU still computes on GPU 0: its KV (8) and its streamed weights (20)
    # land there. GPU 0: 10 + 8 (l0 KV) + 8 (l1 KV) + 20 (streaming) = 46 > 45. Every other
    # placement is 46 on GPU 0 too, or overflows the CPU (cap 20), so a cap of 45 has none.
    nodes, edges = chain(Node(name="l0", size_bytes=10, kv_bytes=8), Node(name="l1", size_bytes=20, kv_bytes=8))
    cpu = Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=20)
    tight = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 45), cpu))
    assert by_hand(tight, (0, 1)) == {"0": 46, "cpu": 20}
    assert any(str(v).startswith("device '0' holds 46") and v.rule is Rule.CAP for v in violations(tight, (0, 1)))
    with pytest.raises(InfeasiblePlanError):
        solve(tight, num_workers=WORKERS)
    roomy = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 46), cpu))
    assert solve(roomy, num_workers=WORKERS).assignment == (0, 0)


def test_the_largest_working_set_counts_once_per_device() -> None:
    # Working sets 7 and 9 on one GPU: charged max = 9, not 16. 2 x 10 + 9 = 29 fits a cap of 29.
    nodes, edges = chain(Node(name="a", size_bytes=10, work_bytes=7), Node(name="b", size_bytes=10, work_bytes=9))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 29),))
    assert solve(problem, num_workers=WORKERS).assignment == (0, 0)
    tight = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 28),))
    with pytest.raises(InfeasiblePlanError):
        solve(tight, num_workers=WORKERS)


def test_a_received_tensor_is_charged_to_the_receiving_gpu() -> None:
    # Split after a: GPU 1 holds b (10) + the 6-byte tensor from a = 16; a cap of 15 forbids it.
    nodes, edges = chain(
        Node(name="a", size_bytes=10, work_bytes=1), Node(name="b", size_bytes=10), edge_bytes=6
    )
    fits = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 12), gpu("1", 17)))
    assert solve(fits, num_workers=WORKERS).assignment == (0, 1)
    with pytest.raises(InfeasiblePlanError):
        solve(PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 12), gpu("1", 15))), num_workers=WORKERS)


def test_the_reserve_is_charged_only_where_something_computes() -> None:
    # GPU 1's reserve exceeds its cap; the plan keeps everything on GPU 0 and is still valid.
    nodes, edges = chain(Node(name="a", size_bytes=10, kv_bytes=1), Node(name="b", size_bytes=10, kv_bytes=1))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 30, reserve=8), gpu("1", 5, reserve=6)))
    solution = solve(problem, num_workers=WORKERS)
    assert solution.assignment == (0, 0)
    assert by_hand(problem, solution.assignment) == {"0": 30, "1": 0}


def test_kv_cache_larger_than_the_gpus_is_refused_with_the_missing_bytes() -> None:
    # 4 x 30 bytes of KV must sit on the GPUs (offloading moves weights only): 120 > 50 + 50.
    nodes, edges = chain(*(Node(name=f"l{i}", size_bytes=1, kv_bytes=30) for i in range(4)))
    cpu = Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=10**6)
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 50), gpu("1", 50), cpu))
    with pytest.raises(InfeasiblePlanError, match="KV cache") as caught:
        solve(problem, num_workers=WORKERS)
    assert caught.value.missing_bytes == 20
    assert "20 B missing" in str(caught.value)


def test_a_node_whose_kv_fits_no_gpu_is_named() -> None:
    nodes, edges = chain(Node(name="small", size_bytes=1), Node(name="huge", size_bytes=1, kv_bytes=60))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 50), gpu("1", 50)))
    with pytest.raises(InfeasiblePlanError, match="KV cache 60 B") as caught:
        solve(problem, num_workers=WORKERS)
    assert caught.value.node == "huge"
    # It needs 1 (weights) + 60 (KV) on a 50-byte GPU: 11 bytes short there, although the two GPUs
    # together hold more than the whole model and its cache.
    assert caught.value.missing_bytes == 11


def test_the_dp_refuses_runtime_memory() -> None:
    nodes, edges = chain(Node(name="a", size_bytes=1, kv_bytes=1))
    with pytest.raises(InvalidSpecError, match="solver.solve"):
        solve_chain_dp(PlacementProblem(nodes=nodes, edges=edges, devices=(gpu("0", 10),)))


@pytest.mark.parametrize("field", ["kv_bytes", "work_bytes"])
def test_negative_runtime_bytes_are_rejected(field: str) -> None:
    with pytest.raises(InvalidSpecError, match=f"{field}=-1"):
        Node(name="a", size_bytes=1, **{field: -1})


def test_negative_reserve_is_rejected() -> None:
    with pytest.raises(InvalidSpecError, match="reserve_bytes=-1"):
        gpu("0", 10, reserve=-1)
