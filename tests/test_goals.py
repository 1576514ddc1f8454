"""Objectives (latency, throughput, balanced, transfers), the cost model and the strategy rules.

Oracles: brute force over every assignment, scored by a second implementation of the cost model
written here from the formulas in :mod:`layerplan.solver.cost` (not by calling it), and hand-computed cases.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layerplan.solver import (
    CostModel,
    Device,
    DeviceKind,
    DeviceSpeed,
    Edge,
    Goal,
    InfeasiblePlanError,
    InvalidSpecError,
    Node,
    NodeWork,
    PlacementProblem,
    Status,
    device_loads,
    least_extra_memory,
    timing,
    violations,
)
from layerplan.solver import solve as _solve_any
from strategies import gpus, small_problems

# These tests are CP-SAT's (tests/test_block_dp.py checks the block DP that solve() tries first).
solve = partial(_solve_any, method="cp-sat")

WORKERS = 2


# -- a second implementation of the cost model, from the formulas ----------------------------------
def _ns(seconds: float) -> int:
    return math.ceil(seconds * 1e9 - 1e-9) if seconds > 0 else 0


def hand_times(problem: PlacementProblem, cost: CostModel, assignment) -> tuple[int, int]:
    """``(total_ns, bottleneck_ns)`` of ``assignment``, straight from the formulas."""
    accs = [d for d, dev in enumerate(problem.devices) if dev.kind is DeviceKind.ACCELERATOR]
    cpus = [d for d, dev in enumerate(problem.devices) if dev.kind is DeviceKind.CPU]
    execution = accs[0] if accs else (cpus[0] if cpus else 0)
    runs = [d if problem.devices[d].kind is DeviceKind.ACCELERATOR else execution for d in assignment]
    steps = (cost.prefill_steps, cost.decode_steps)
    stage: dict[int, int] = {}
    for i, (stored, where) in enumerate(zip(assignment, runs)):
        speed, work = cost.speeds[where], cost.work[i]
        for weight, flops, moved in ((steps[0], work.prefill_flops, work.prefill_bytes),
                                     (steps[1], work.decode_flops, work.decode_bytes)):
            t = _ns(max(flops / speed.flops_per_s, moved / speed.mem_bytes_per_s)) if flops or moved else 0
            if stored != where and problem.nodes[i].size_bytes:
                t += _ns(problem.nodes[i].size_bytes / cost.speeds[stored].read_bytes_per_s)
            stage[where] = stage.get(where, 0) + weight * t
    for e, edge in enumerate(problem.edges):
        src = runs[edge.producer]
        for dst in {runs[c] for c in edge.consumers} - {src}:
            bw = cost.link_bytes_per_s[src][dst]
            for weight, size in ((steps[0], edge.size_bytes),
                                 (steps[1], cost.edge_decode_bytes[e] if cost.edge_decode_bytes else edge.size_bytes)):
                if size:
                    stage[dst] = stage.get(dst, 0) + weight * (_ns(cost.link_latency_s) + _ns(size / bw))
    return sum(stage.values()), max(stage.values(), default=0)


def hand_utilisation(problem: PlacementProblem, assignment) -> int:
    computing = problem.computing_devices
    loads = device_loads(problem, assignment)
    return max((-(-10_000 * loads[d].total // problem.devices[d].cap_bytes)
                for d in computing if problem.devices[d].cap_bytes), default=0)


def hand_measures(problem, cost, assignment, goal: Goal) -> tuple[int, ...]:
    total, bottleneck = hand_times(problem, cost, assignment) if cost else (0, 0)
    offload = sum(x.size_bytes * problem.devices[d].offload_cost for x, d in zip(problem.nodes, assignment))
    transfer = 0
    runs = [problem.compute_device(d) for d in assignment]
    for edge in problem.edges:
        transfer += edge.size_bytes * len({runs[c] for c in edge.consumers} - {runs[edge.producer]})
    values = {"time_ns": total, "bottleneck_ns": bottleneck, "offload_cost": offload,
              "transfer_bytes": transfer, "max_utilisation": hand_utilisation(problem, assignment)}
    return tuple(values[m] for m in goal.measures)


def brute_force_goal(problem, cost, goal: Goal):
    best = None
    for assignment in itertools.product(range(len(problem.devices)), repeat=len(problem.nodes)):
        if not violations(problem, assignment):
            value = hand_measures(problem, cost, assignment, goal)
            if best is None or value < best:
                best = value
    return best


# -- generators ------------------------------------------------------------------------------------
@st.composite
def cost_models(draw: st.DrawFn, problem: PlacementProblem) -> CostModel:
    """Speeds, links and node work small enough that times are a few hundred ns (distinct values)."""
    k = len(problem.devices)
    speeds = tuple(
        DeviceSpeed(flops_per_s=draw(st.sampled_from([1e9, 2e9, 4e9])),
                    mem_bytes_per_s=draw(st.sampled_from([1e8, 3e8])),
                    read_bytes_per_s=draw(st.sampled_from([1e7, 5e7])))
        for _ in range(k)
    )
    links = [[math.inf] * k for _ in range(k)]
    for a in range(k):
        for b in range(a + 1, k):
            links[a][b] = links[b][a] = draw(st.sampled_from([1e8, 2e8, 1e9]))
    work = tuple(
        NodeWork(prefill_flops=draw(st.integers(0, 400)), decode_flops=draw(st.integers(0, 50)),
                 prefill_bytes=draw(st.integers(0, 40)), decode_bytes=draw(st.integers(0, 40)))
        for _ in problem.nodes
    )
    return CostModel(
        speeds=speeds,
        link_bytes_per_s=links,
        link_latency_s=draw(st.sampled_from([0.0, 5e-9])),
        work=work,
        edge_decode_bytes=tuple(draw(st.integers(0, e.size_bytes)) for e in problem.edges),
        prefill_steps=draw(st.integers(0, 1)),
        decode_steps=draw(st.integers(0, 3)),
    )


@st.composite
def costed_problems(draw: st.DrawFn, *, max_nodes: int = 6, max_devices: int = 3):
    problem = draw(small_problems(max_nodes=max_nodes, max_devices=max_devices))
    if draw(st.booleans()):
        problem = dataclasses.replace(problem, low_zero=True)
    return problem, draw(cost_models(problem))


# -- CP-SAT = brute force for every goal -------------------------------------------------------------
@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=costed_problems())
def test_every_goal_matches_brute_force(goal: Goal, data) -> None:
    problem, cost = data
    best = brute_force_goal(problem, cost, goal)
    if best is None:
        with pytest.raises(InfeasiblePlanError):
            solve(problem, goal=goal, cost=cost, num_workers=WORKERS, explain=False)
        return
    solution = solve(problem, goal=goal, cost=cost, num_workers=WORKERS)
    assert solution.status is Status.OPTIMAL
    assert violations(problem, solution.assignment) == []
    assert hand_measures(problem, cost, solution.assignment, goal) == best
    assert solution.timing is not None
    assert (solution.timing.total_ns, solution.timing.bottleneck_ns) == hand_times(problem, cost, solution.assignment)
    assert solution.bound == solution.headline_value


@settings(max_examples=60, deadline=None)
@given(data=costed_problems())
def test_timing_matches_the_formulas_on_every_assignment(data) -> None:
    problem, cost = data
    for assignment in itertools.islice(itertools.product(range(len(problem.devices)), repeat=len(problem.nodes)), 50):
        t = timing(problem, cost, assignment)
        assert (t.total_ns, t.bottleneck_ns) == hand_times(problem, cost, assignment)
        assert t.total_ns == t.compute_ns + t.transfer_ns + t.streaming_ns
        assert t.total_ns == cost.prefill_steps * t.prefill_ns + cost.decode_steps * t.decode_ns


# -- strategy rules -----------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=costed_problems())
def test_low_zero_keeps_the_first_gpu_no_heavier_than_any_other(data) -> None:
    problem, cost = data
    problem = dataclasses.replace(problem, low_zero=True)
    try:
        solution = solve(problem, goal=Goal.BALANCED, num_workers=WORKERS, explain=False)
    except InfeasiblePlanError:
        return
    accs = problem.accelerators
    held = {a: sum(x.size_bytes for x, d in zip(problem.nodes, solution.assignment) if d == a) for a in accs}
    for a in accs[1:]:
        assert held[accs[0]] <= held[a]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=costed_problems())
def test_latency_is_never_slower_than_transfers_or_sequential(data) -> None:
    problem, cost = data
    free = dataclasses.replace(problem, ordered=False)
    try:
        fastest = solve(free, goal=Goal.LATENCY, cost=cost, num_workers=WORKERS, explain=False)
    except InfeasiblePlanError:
        return
    assert all(fastest.assignment[n] == d for n, d in problem.pins)
    for other_problem, goal in ((free, Goal.TRANSFERS), (dataclasses.replace(problem, ordered=True), Goal.LATENCY)):
        try:
            other = solve(other_problem, goal=goal, cost=cost, num_workers=WORKERS, explain=False)
        except InfeasiblePlanError:
            continue
        assert fastest.timing.total_ns <= other.timing.total_ns


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=costed_problems(max_nodes=7), goal=st.sampled_from(list(Goal)))
def test_the_same_problem_gives_the_same_placement(data, goal: Goal) -> None:
    problem, cost = data
    try:
        first = solve(problem, goal=goal, cost=cost, num_workers=4, explain=False)
    except InfeasiblePlanError:
        return
    again = solve(problem, goal=goal, cost=cost, num_workers=4, explain=False)
    other_workers = solve(problem, goal=goal, cost=cost, num_workers=3, explain=False)
    assert first.assignment == again.assignment == other_workers.assignment


def test_identical_gpus_many_layers_is_deterministic() -> None:
    # 24 equal layers on 4 equal GPUs: every split point between blocks has the same time, so
    # many placements tie; two runs (and another worker count) must still agree.
    nodes = tuple(Node(name=f"layers.{i}", size_bytes=10, kv_bytes=1, work_bytes=2) for i in range(24))
    edges = tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=4) for i in range(23))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=gpus(90, 90, 90, 90), ordered=False)
    k = len(problem.devices)
    cost = CostModel(
        speeds=(DeviceSpeed(flops_per_s=1e12, mem_bytes_per_s=1e11),) * k,
        link_bytes_per_s=[[1e9] * k for _ in range(k)],
        work=(NodeWork(prefill_flops=1000, decode_flops=10, prefill_bytes=10, decode_bytes=11),) * 24,
        decode_steps=8,
    )
    runs = {solve(problem, goal=goal, cost=cost, num_workers=w).assignment
            for goal in (Goal.LATENCY,) for w in (2, 2, 8)}
    assert len(runs) == 1


# -- the cost model by hand --------------------------------------------------------------------------
def _two_gpus_and_cpu() -> tuple[PlacementProblem, CostModel]:
    """Three nodes of 100 bytes, two edges of 1000 bytes (10 bytes per decode step)."""
    nodes = tuple(Node(name=f"n{i}", size_bytes=100) for i in range(3))
    edges = (Edge(producer=0, consumers=(1,), size_bytes=1000), Edge(producer=1, consumers=(2,), size_bytes=1000))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=gpus(1000, 1000, cpu=1000))
    cost = CostModel(
        speeds=(
            DeviceSpeed(flops_per_s=1e12, mem_bytes_per_s=1e11),  # GPU 0
            DeviceSpeed(flops_per_s=5e11, mem_bytes_per_s=1e11),  # GPU 1: half the FLOP/s
            DeviceSpeed(flops_per_s=1e10, mem_bytes_per_s=1e10, read_bytes_per_s=1e9),  # cpu: 1 GB/s host link
        ),
        link_bytes_per_s=((math.inf, 1e9, 1e9), (1e9, math.inf, 1e9), (1e9, 1e9, math.inf)),
        link_latency_s=1e-6,
        work=(NodeWork(prefill_flops=10**6, decode_flops=10**3, prefill_bytes=10**4, decode_bytes=10**4),) * 3,
        edge_decode_bytes=(10, 10),
        prefill_steps=1,
        decode_steps=4,
    )
    return problem, cost


def test_cost_model_by_hand() -> None:
    problem, cost = _two_gpus_and_cpu()
    # Placement: n0 on GPU 0, n1 on GPU 1, n2 on cpu (offloaded: computes on GPU 0, streamed in).
    t = timing(problem, cost, (0, 1, 2))
    # Prefill compute: GPU 0: max(1e6/1e12, 1e4/1e11) = max(1 us, 0.1 us) = 1000 ns, twice (n0, n2);
    #   GPU 1: max(1e6/5e11, 1e4/1e11) = 2000 ns.  -> 4000 ns.
    # Decode compute: max(1e3/1e12, 1e4/1e11) = 100 ns (memory-bound) on either GPU, 3 nodes -> 300 ns.
    # Streaming n2 every step: 100 B / 1e9 B/s = 100 ns in prefill and in decode.
    # Transfers: n0 -> n1 (GPU 0 -> 1) and n1 -> n2 (GPU 1 -> 0): prefill 1 us + 1000 B / 1e9 = 2000 ns
    #   each; decode 1 us + 10 B / 1e9 = 1010 ns each.
    assert t.prefill_ns == 4000 + 100 + 2 * 2000 == 8100
    assert t.decode_ns == 300 + 100 + 2 * 1010 == 2420
    assert t.total_ns == 8100 + 4 * 2420 == 17780
    assert t.streaming_ns == 100 + 4 * 100
    assert t.transfer_ns == 2 * 2000 + 4 * 2 * 1010
    # Per device: GPU 0 runs n0 and n2 (1000 + 4*100 each, + 100 + 4*100 streaming) and receives
    # n1's output (2000 + 4*1010); GPU 1 runs n1 (2000 + 400) and receives n0's output.
    assert t.stage_ns == (2 * 1400 + 500 + 6040, 2400 + 6040, 0)
    assert t.bottleneck_ns == 9340
    assert t.per_token_s == pytest.approx(17780e-9 / 4)


def test_latency_prefers_the_faster_gpu_and_no_offload() -> None:
    problem, cost = _two_gpus_and_cpu()
    solution = solve(problem, goal=Goal.LATENCY, cost=cost, num_workers=WORKERS)
    # Everything on GPU 0 (300 B of a 1000 B cap): no transfer, no streaming, the faster FLOP/s:
    # prefill 3 * 1000 ns + decode 4 * 3 * 100 ns = 4200 ns.
    assert solution.assignment == (0, 0, 0)
    assert solution.timing.total_ns == 4200


def test_throughput_spreads_the_work() -> None:
    problem, cost = _two_gpus_and_cpu()
    fast = dataclasses.replace(cost, link_latency_s=0.0, edge_decode_bytes=(0, 0))
    solution = solve(problem, goal=Goal.THROUGHPUT, cost=fast, num_workers=WORKERS)
    # All on GPU 0: bottleneck 4200 ns. Two nodes on GPU 0 and one on GPU 1: GPU 0 = 2 * 1400 = 2800
    # (+ 1000 ns receiving a 1000 B prefill tensor when it reads from GPU 1), GPU 1 = 2400 (+1000 when
    # it receives). Best: n0, n1 on GPU 0, n2 on GPU 1: max(2800, 2400 + 1000) = 3400 ns.
    assert solution.timing.bottleneck_ns == 3400
    assert solution.assignment == (0, 0, 1)


def test_goal_that_needs_a_cost_model_says_so() -> None:
    problem, _ = _two_gpus_and_cpu()
    with pytest.raises(InvalidSpecError, match="needs a cost model"):
        solve(problem, goal="latency")
    with pytest.raises(InvalidSpecError, match="unknown objective 'fastest'"):
        solve(problem, goal="fastest")


# -- least extra memory --------------------------------------------------------------------------------
def _brute_extra(problem: PlacementProblem) -> int | None:
    roomy = dataclasses.replace(
        problem, devices=tuple(dataclasses.replace(d, cap_bytes=10**9) for d in problem.devices)
    )
    best = None
    for assignment in itertools.product(range(len(problem.devices)), repeat=len(problem.nodes)):
        if violations(roomy, assignment):
            continue
        loads = device_loads(problem, assignment)
        extra = sum(max(0, load.total - d.cap_bytes) for load, d in zip(loads, problem.devices))
        best = extra if best is None else min(best, extra)
    return best


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=small_problems(max_nodes=5, max_devices=3))
def test_least_extra_memory_matches_brute_force(problem: PlacementProblem) -> None:
    best = _brute_extra(problem)
    extra = least_extra_memory(problem, num_workers=WORKERS)
    if best is None:
        assert extra is None
        return
    assert extra is not None
    assert sum(extra.values()) == best
    grown = dataclasses.replace(problem, devices=tuple(
        dataclasses.replace(d, cap_bytes=d.cap_bytes + extra.get(i, 0)) for i, d in enumerate(problem.devices)))
    solve(grown, num_workers=WORKERS, explain=False)  # fits now (raises otherwise)


def test_infeasible_error_names_the_least_extra_memory() -> None:
    # Two GPUs of 25 B, five whole layers of 10 B: 50 B for 50 B of caps, but whole layers pack
    # 2 + 2 and one is left over; three layers on one GPU need 30 B: 5 B more there.
    problem = PlacementProblem(
        nodes=tuple(Node(name=f"l{i}", size_bytes=10) for i in range(5)),
        devices=(Device(name="0", kind=DeviceKind.ACCELERATOR, cap_bytes=25),
                 Device(name="1", kind=DeviceKind.ACCELERATOR, cap_bytes=25)),
    )
    with pytest.raises(InfeasiblePlanError) as caught:
        solve(problem, num_workers=WORKERS)
    assert sum(caught.value.extra_bytes.values()) == 5
    assert "least extra memory that makes it fit: 5 B on" in str(caught.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=costed_problems())
def test_least_total_ns_bounds_every_assignment_and_is_reached_on_one_device(data) -> None:
    """The latency floor (each node on its fastest computing device, nothing moved) is at most the
    hand-computed time of every assignment, valid or not; with one computing device and nothing
    stored elsewhere, some assignment reaches it when no edge crosses devices."""
    from layerplan.solver.cost import least_total_ns

    problem, cost = data
    floor = least_total_ns(problem, cost)
    times = [hand_times(problem, cost, a)[0]
             for a in itertools.product(range(len(problem.devices)), repeat=len(problem.nodes))]
    assert floor <= min(times)
    if len(problem.computing_devices) == 1:
        assert floor == hand_times(problem, cost, (problem.computing_devices[0],) * len(problem.nodes))[0]
