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
    device_loads,
    solve_chain_dp,
    violations,
)
from layerplan.solver import solve as _solve_any

# These tests are CP-SAT's (tests/test_block_dp.py checks the block DP that solve() tries first).
solve = partial(_solve_any, method="cp-sat")
from tests.strategies import assert_cpsat_matches_brute_force, before_cache_problems, runtime_problems

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
        # The KV cache and a working set beside it, or a working set that peaks before any cache
        # exists (an encoder under generate()), whichever is larger.
        kv = sum(problem.nodes[i].kv_bytes for i in runs)
        beside = max((problem.nodes[i].work_bytes for i in runs if not problem.nodes[i].before_kv_cache), default=0)
        before = max((problem.nodes[i].work_bytes for i in runs if problem.nodes[i].before_kv_cache), default=0)
        held[dev.name] += max(kv + beside, before)
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


# -- working sets that peak before any KV cache exists (an encoder under generate()) ---------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before_cache_problems(max_nodes=6, max_devices=3), st.booleans())
def test_cpsat_matches_brute_force_with_working_sets_before_the_cache(
    problem: PlacementProblem, use_hint: bool
) -> None:
    solution = assert_cpsat_matches_brute_force(problem, use_hint=use_hint)
    if solution is None:
        return
    held = by_hand(problem, solution.assignment)
    for device in problem.devices:
        assert held[device.name] <= device.cap_bytes, (device.name, held, solution.assignment)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before_cache_problems(max_nodes=6, max_devices=3))
def test_the_accounting_agrees_with_the_rules_by_hand_before_the_cache(problem: PlacementProblem) -> None:
    # Every assignment (the first 200): device_loads' totals are the by-hand bytes, and
    # violations() flags a device exactly when they exceed its cap.
    import itertools

    for assignment in itertools.islice(
        itertools.product(range(len(problem.devices)), repeat=len(problem.nodes)), 200
    ):
        held = by_hand(problem, assignment)
        loads = device_loads(problem, assignment)
        assert [load.total for load in loads] == [held[d.name] for d in problem.devices], assignment
        assert all(load.kv >= 0 and load.activations >= 0 for load in loads)
        flagged = {str(v).split("'")[1] for v in violations(problem, assignment) if v.rule is Rule.CAP}
        assert flagged == {d.name for d in problem.devices if held[d.name] > d.cap_bytes}, (assignment, held)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before_cache_problems(max_nodes=6, max_devices=3))
def test_the_hint_is_valid_or_absent_with_working_sets_before_the_cache(problem: PlacementProblem) -> None:
    hint = chain_hint(problem)
    if hint is not None:
        assert violations(problem, hint) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runtime_problems(max_nodes=5, max_devices=3), st.data())
def test_the_flag_changes_nothing_without_a_kv_cache(problem: PlacementProblem, data) -> None:
    # No KV cache: max(largest flagged working set, 0 + largest other one) is the largest working
    # set, as before; every assignment is charged the same, field by field.
    import dataclasses
    import itertools

    plain = dataclasses.replace(problem, nodes=tuple(dataclasses.replace(x, kv_bytes=0) for x in problem.nodes))
    flags = data.draw(st.lists(st.booleans(), min_size=len(plain.nodes), max_size=len(plain.nodes)))
    flagged = dataclasses.replace(plain, nodes=tuple(
        dataclasses.replace(x, before_kv_cache=f) for x, f in zip(plain.nodes, flags)))
    for assignment in itertools.islice(itertools.product(range(len(plain.devices)), repeat=len(plain.nodes)), 200):
        assert device_loads(flagged, assignment) == device_loads(plain, assignment)


def _t5_like(*, encoder_work: int, gpus: tuple[int, ...], flagged: bool = True) -> PlacementProblem:
    """shared (10 B), an encoder block (10 B, working set ``encoder_work``, before the cache), two
    decoder blocks (10 B, KV 15 B, working set 10 B): T5's shape."""
    nodes = (
        Node(name="shared", size_bytes=10, work_bytes=2),
        Node(name="encoder.block.0", size_bytes=10, work_bytes=encoder_work, before_kv_cache=flagged),
        Node(name="decoder.block.0", size_bytes=10, kv_bytes=15, work_bytes=10),
        Node(name="decoder.block.1", size_bytes=10, kv_bytes=15, work_bytes=10),
    )
    edges = tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=1) for i in range(3))
    return PlacementProblem(nodes=nodes, edges=edges, devices=tuple(gpu(str(g), c) for g, c in enumerate(gpus)))


def test_an_encoder_working_set_is_charged_instead_of_the_kv_cache_when_larger() -> None:
    # One GPU: 40 B of weights + max(50 (encoder), 30 (KV) + 10 (decoder working set)) = 90 B;
    # charged next to the KV cache, as before the flag, it would be 40 + 30 + 50 = 120 B.
    problem = _t5_like(encoder_work=50, gpus=(90,))
    (load,) = device_loads(problem, (0, 0, 0, 0))
    assert (load.weights, load.kv, load.activations, load.total) == (40, 30, 20, 90)  # 20 = 50 - 30
    (old,) = device_loads(_t5_like(encoder_work=50, gpus=(90,), flagged=False), (0, 0, 0, 0))
    assert old.total == 120
    for method in ("cp-sat", "dp"):
        assert _solve_any(problem, method=method, num_workers=WORKERS).assignment == (0, 0, 0, 0)
        with pytest.raises(InfeasiblePlanError):
            _solve_any(_t5_like(encoder_work=50, gpus=(89,)), method=method, num_workers=WORKERS, explain=False)
    # The hint's weights-only surrogate also keeps room for the largest tensor (1 B) and, on the
    # execution device, the largest node (10 B): with the flag it needs 70 (weights + KV) + 20
    # (the encoder's excess over the KV cache) + 1 + 10 = 101 B; charging the encoder beside the
    # cache it would need 70 + 50 + 1 + 10 = 131 B.
    assert chain_hint(_t5_like(encoder_work=50, gpus=(101,))) == (0, 0, 0, 0)
    assert chain_hint(_t5_like(encoder_work=50, gpus=(100,))) is None


def test_the_kv_cache_and_working_set_beside_it_are_charged_when_larger() -> None:
    # Encoder working set 30 < 30 (KV) + 10: 40 + 40 = 80 B; activations = the decoder's 10 B.
    (load,) = device_loads(_t5_like(encoder_work=30, gpus=(80,)), (0, 0, 0, 0))
    assert (load.kv, load.activations, load.total) == (30, 10, 80)
    with pytest.raises(InfeasiblePlanError):
        solve(_t5_like(encoder_work=30, gpus=(79,)), num_workers=WORKERS, explain=False)


@pytest.mark.parametrize("method", ["cp-sat", "dp"])
def test_the_flag_keeps_a_t5_on_one_gpu_where_it_used_to_split(method: str) -> None:
    # GPU 0 (95 B) holds everything (90 B) only with the flag; without it (120 B) the decoder
    # block 1 moves to GPU 1 (10 + 15 + 10 + 1 received = 36 B <= 40): one cut.
    with_flag = _solve_any(_t5_like(encoder_work=50, gpus=(95, 40)), method=method, num_workers=WORKERS)
    assert with_flag.assignment == (0, 0, 0, 0) and with_flag.values["transfer_bytes"] == 0
    without = _solve_any(_t5_like(encoder_work=50, gpus=(95, 40), flagged=False), method=method, num_workers=WORKERS)
    assert without.assignment == (0, 0, 0, 1) and without.values["transfer_bytes"] == 1


@pytest.mark.parametrize("method", ["cp-sat", "dp"])
def test_the_balanced_goal_charges_each_peak(method: str) -> None:
    # Balanced: decoder block 1 on GPU 1 (36 / 40 B = 9000) leaves GPU 0 30 + max(50, 15 + 10) =
    # 80 / 95 B (8422); all on GPU 0 is 90 / 95 (9474); (0, 0, 1, 1) overflows GPU 1 (61 B).
    # Without the flag GPU 0 would hold 30 + 15 + 50 = 95 B (10000) in the same placement.
    with_flag = _solve_any(_t5_like(encoder_work=50, gpus=(95, 40)), goal="balanced", method=method,
                           num_workers=WORKERS)
    assert with_flag.assignment == (0, 0, 0, 1) and with_flag.values["max_utilisation"] == 9000
    without = _solve_any(_t5_like(encoder_work=50, gpus=(95, 40), flagged=False), goal="balanced", method=method,
                         num_workers=WORKERS)
    assert without.values["max_utilisation"] == 10_000


def test_an_encoder_working_set_that_fits_no_gpu_is_named_as_such() -> None:
    problem = _t5_like(encoder_work=200, gpus=(100, 100))
    with pytest.raises(InfeasiblePlanError, match=r"working set 200 B \(before any KV cache exists\)") as caught:
        solve(problem, num_workers=WORKERS)
    assert caught.value.node == "encoder.block.0"
    assert caught.value.missing_bytes == 110  # 10 (weights) + 200 on a 100-byte GPU


def test_the_runtime_floor_counts_an_encoder_working_set_once_against_the_kv_cache() -> None:
    # Offloading moves weights, not runtime bytes: the GPU (39 B) needs max(30 (KV) + 10 (decoder
    # working set), 29 (encoder)) = 40 B of them, 1 B short; each node alone fits (the encoder
    # 29 + 10 streamed, a decoder block 15 + 10 + 10). Charged beside the cache, the encoder would
    # make it 30 + 29 = 59 B, 20 B short.
    cpu = Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=1000)
    problem = _t5_like(encoder_work=29, gpus=(39,))
    problem = PlacementProblem(nodes=problem.nodes, edges=problem.edges, devices=(*problem.devices, cpu))
    with pytest.raises(InfeasiblePlanError, match=r"KV cache for this workload needs 30 B \(plus 10 B") as caught:
        solve(problem, num_workers=WORKERS, explain=False)
    assert caught.value.missing_bytes == 1
