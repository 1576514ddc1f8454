"""The exact block DP (:mod:`layerplan.solver.block_dp`): every goal, runtime memory, any edges.

Oracle: brute force over every assignment, scored by the second cost model written in
``test_goals.py`` from the formulas (not by calling the solver's), and checked by :func:`violations`.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, event, given, settings
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
    block_dp,
    solve,
    violations,
)
from strategies import before_cache_problems, runtime_problems, small_problems
from test_goals import brute_force_goal, cost_models, hand_measures


def _dp_shaped(problem: PlacementProblem) -> PlacementProblem:
    """The problem as the block DP takes it (ordered or not): no low_zero, and tied copies (the
    later members of a tied group, such as a tied ``lm_head``) that feed no other node and are not
    pinned."""
    followers = {m for group in problem.tied_groups for m in group[1:]}
    edges = []
    for e in problem.edges:
        if e.producer in followers:
            continue
        alone = [c for c in e.consumers if c in followers][:1] if len(e.consumers) > 1 else []
        rest = tuple(c for c in e.consumers if c not in followers)
        edges += [dataclasses.replace(e, consumers=(c,)) for c in alone]  # a tied copy's own input
        if rest and not (len(e.consumers) == 1 and e.consumers[0] in followers):
            edges.append(dataclasses.replace(e, consumers=rest))
        elif len(e.consumers) == 1:
            edges.append(e)
    return dataclasses.replace(
        problem, low_zero=False, edges=tuple(edges), pins=tuple((i, d) for i, d in problem.pins if i not in followers),
    )


def _uniform_links(cost: CostModel, value: float) -> CostModel:
    k = len(cost.link_bytes_per_s)
    links = [[value if a != b else float("inf") for b in range(k)] for a in range(k)]
    return dataclasses.replace(cost, link_bytes_per_s=links)


@st.composite
def offload_problems(draw: st.DrawFn, base: st.SearchStrategy[PlacementProblem] | None = None) -> PlacementProblem:
    """1-2 GPUs too small for the model, a cpu (and sometimes a disk) with room: problems where
    offloading, the execution device's shared load and the streaming buffer decide. ``base``:
    the problems they start from (default :func:`runtime_problems`)."""
    base = _dp_shaped(draw(runtime_problems(max_nodes=6) if base is None else base))
    total = base.total_bytes + base.total_kv_bytes
    gpus = [Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=draw(st.integers(total // 2, total + 25)),
                   reserve_bytes=draw(st.integers(0, 3))) for g in range(draw(st.integers(1, 2)))]
    tiers = [Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=draw(st.integers(total // 2, 2 * total + 5)))]
    if draw(st.booleans()):
        tiers.append(Device(name="disk", kind=DeviceKind.DISK, cap_bytes=draw(st.integers(0, 2 * total + 5))))
    pins = tuple((i, d) for i, d in base.pins if d < len(gpus))
    return dataclasses.replace(base, devices=(*gpus, *tiers), pins=pins)


@st.composite
def dp_problems(draw: st.DrawFn):
    """Small DAG problems (several consumers per edge, pins, cpu/disk tiers), with and without
    runtime memory, often offloading, with a cost model whose links are one speed."""
    base = draw(st.one_of(small_problems(max_nodes=6), runtime_problems(max_nodes=6), offload_problems()))
    problem = _dp_shaped(base)
    cost = draw(cost_models(problem))
    return problem, _uniform_links(cost, draw(st.sampled_from([1e8, 1e9])))


def _check_against_brute_force(problem: PlacementProblem, cost: CostModel, goal: Goal) -> None:
    best = brute_force_goal(problem, cost, goal)
    event("infeasible" if best is None else "feasible")
    reason = block_dp.applies(problem, cost)
    if reason is not None:
        event(f"not for the DP: {reason.split(' ')[0]}")
        assert not problem.accelerators or not problem.ordered or problem.tied_groups
        return
    event("ordered" if problem.ordered else "free order")
    event("tied" if problem.tied_groups else "untied")
    if best is None:
        with pytest.raises(InfeasiblePlanError):
            solve(problem, goal=goal, cost=cost, method="dp", explain=False)
        return
    solution = solve(problem, goal=goal, cost=cost, method="dp")
    event("offloads" if any(not problem.devices[d].is_accelerator for d in solution.assignment) else "on GPUs")
    assert (solution.solver, solution.status) == ("dp", Status.OPTIMAL)
    assert violations(problem, solution.assignment) == []
    assert hand_measures(problem, cost, solution.assignment, goal) == best
    assert solution.bound == solution.headline_value


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dp_problems())
def test_block_dp_matches_brute_force_for_every_goal(goal: Goal, data) -> None:
    problem, cost = data
    _check_against_brute_force(problem, cost, goal)


@st.composite
def dp_offload_problems(draw: st.DrawFn):
    problem = draw(offload_problems())
    return problem, _uniform_links(draw(cost_models(problem)), 1e9)


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dp_offload_problems())
def test_block_dp_matches_brute_force_when_gpus_are_short(goal: Goal, data) -> None:
    problem, cost = data
    _check_against_brute_force(problem, cost, goal)


@st.composite
def interchangeable_gpu_problems(draw: st.DrawFn, bases: st.SearchStrategy[PlacementProblem] | None = None):
    """2-4 identical GPUs (same cap, reserve, speed and links: interchangeable), sometimes a
    different one among them and sometimes a cpu, in device or free order: the symmetry the DP
    prunes on (one block start per run of identical GPUs in device order; in free order the
    execution device first when nothing can be offloaded, and states with fewer GPUs used
    dominating)."""
    if bases is None:
        bases = st.one_of(small_problems(max_nodes=6), runtime_problems(max_nodes=6))
    base = _dp_shaped(draw(bases))
    total = base.total_bytes + base.total_kv_bytes
    cap, reserve = draw(st.integers(total // 3 + 4, total + 12)), draw(st.integers(0, 2))
    gpus = [Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=cap, reserve_bytes=reserve)
            for g in range(draw(st.integers(2, 4)))]
    if draw(st.booleans()):  # anywhere in the device order: it splits the identical ones into runs
        gpus.insert(draw(st.integers(0, len(gpus))), Device(
            name="odd", kind=DeviceKind.ACCELERATOR, cap_bytes=draw(st.integers(0, total)), reserve_bytes=reserve))
    tiers = [Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=draw(st.integers(0, total)))] if draw(st.booleans()) else []
    problem = dataclasses.replace(base, devices=(*gpus, *tiers), pins=(), ordered=draw(st.booleans()))
    cost = draw(cost_models(problem))
    same = cost.speeds[0]
    speeds = tuple(same if problem.devices[d].name != "odd" else s for d, s in enumerate(cost.speeds))
    return problem, _uniform_links(dataclasses.replace(cost, speeds=speeds), draw(st.sampled_from([1e8, 1e9])))


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=interchangeable_gpu_problems())
def test_block_dp_matches_brute_force_on_identical_gpus(goal: Goal, data) -> None:
    problem, cost = data
    _check_against_brute_force(problem, cost, goal)


@st.composite
def dp_before_cache_problems(draw: st.DrawFn):
    """:func:`dp_problems` whose nodes include working sets that peak before any KV cache exists
    (``before_kv_cache``: :func:`strategies.before_cache_problems`), on roomy or short GPUs."""
    encoders = before_cache_problems(max_nodes=6)
    problem = _dp_shaped(draw(st.one_of(encoders, offload_problems(encoders))))
    cost = draw(cost_models(problem))
    return problem, _uniform_links(cost, draw(st.sampled_from([1e8, 1e9])))


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dp_before_cache_problems())
def test_block_dp_matches_brute_force_with_working_sets_before_the_cache(goal: Goal, data) -> None:
    problem, cost = data
    _check_against_brute_force(problem, cost, goal)


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=interchangeable_gpu_problems(before_cache_problems(max_nodes=6)))
def test_block_dp_matches_brute_force_on_identical_gpus_with_working_sets_before_the_cache(goal: Goal, data) -> None:
    problem, cost = data
    _check_against_brute_force(problem, cost, goal)


def _llama_like(layers: int, *, kv: int, work: int, cpu: int, gpu: int, gpus: int = 2) -> PlacementProblem:
    """embed, rotary (a broadcast edge to every layer), layers, norm, head: the traced Llama shape."""
    names = ["embed", "rotary", *[f"layer{i}" for i in range(layers)], "norm", "head"]
    sizes = [40, 1, *[100] * layers, 1, 40]
    nodes = tuple(Node(name=name, size_bytes=s, kv_bytes=kv if name.startswith("layer") else 0, work_bytes=work)
                  for name, s in zip(names, sizes))
    first, last = 2, 2 + layers - 1
    edges = [Edge(producer=0, consumers=(first,), size_bytes=8),
             Edge(producer=1, consumers=tuple(range(first, last + 1)), size_bytes=3)]
    edges += [Edge(producer=i, consumers=(i + 1,), size_bytes=8) for i in range(first, last + 2)]
    devices = tuple(Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=gpu, reserve_bytes=5)
                    for g in range(gpus)) + (Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=cpu),)
    return PlacementProblem(nodes=nodes, edges=tuple(edges), devices=devices)


@pytest.mark.parametrize("goal", [Goal.TRANSFERS, Goal.BALANCED])
@pytest.mark.parametrize("gpu", [700, 1300, 2400])
def test_block_dp_and_cpsat_agree_on_a_llama_shaped_graph(goal: Goal, gpu: int) -> None:
    """Twenty layers on two GPUs, tight enough to offload at 700 and 1300 bytes: the DP's optimum
    equals CP-SAT's proven one, measure by measure (a second exact method as the oracle)."""
    problem = _llama_like(20, kv=4, work=30, cpu=4000, gpu=gpu)
    dp = solve(problem, goal=goal, method="dp")
    cpsat = solve(problem, goal=goal, method="cp-sat", num_workers=2)
    assert cpsat.status is Status.OPTIMAL
    assert [dp.values[m] for m in goal.measures] == [cpsat.values[m] for m in goal.measures]
    assert violations(problem, dp.assignment) == []


def test_auto_uses_the_dp_where_it_applies_and_cpsat_elsewhere() -> None:
    problem = _llama_like(6, kv=4, work=30, cpu=4000, gpu=500, gpus=3)
    assert solve(problem).solver == "dp"
    assert solve(dataclasses.replace(problem, ordered=False)).solver == "dp"  # identical GPUs
    bigger = dataclasses.replace(problem.devices[2], cap_bytes=900)
    mixed = dataclasses.replace(problem, ordered=False, devices=(*problem.devices[:2], bigger, problem.devices[3]))
    assert solve(mixed).solver == "dp"  # GPUs that differ, in free order: groups of interchangeable ones
    assert solve(dataclasses.replace(mixed, ordered=True)).solver == "dp"
    low_zero = dataclasses.replace(mixed, low_zero=True)  # "balanced_low_0": CP-SAT's
    assert solve(low_zero, num_workers=2).solver == "cp-sat"
    assert solve(problem, method="cp-sat", num_workers=2).solver == "cp-sat"
    with pytest.raises(InvalidSpecError, match="low_zero"):
        solve(low_zero, method="dp")
    with pytest.raises(InvalidSpecError, match="method="):
        solve(problem, method="fast")


def test_an_infeasible_problem_is_still_explained_by_cpsat() -> None:
    problem = _llama_like(6, kv=4, work=30, cpu=0, gpu=300)
    with pytest.raises(InfeasiblePlanError) as caught:
        solve(problem, num_workers=2)
    assert caught.value.extra_bytes  # CP-SAT's least extra memory, as before the DP existed


def _identical_gpu_chain() -> tuple[PlacementProblem, CostModel]:
    """24 equal layers over 4 equal GPUs (a latency goal bisects the utilisation after the time)."""
    nodes = tuple(Node(name=f"layers.{i}", size_bytes=10, kv_bytes=1, work_bytes=2) for i in range(24))
    edges = tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=4) for i in range(23))
    devices = tuple(Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=90) for g in range(4))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=devices, ordered=False)
    cost = CostModel(
        speeds=(DeviceSpeed(flops_per_s=1e12, mem_bytes_per_s=1e11),) * 4,
        link_bytes_per_s=[[1e9] * 4 for _ in range(4)],
        work=(NodeWork(prefill_flops=1000, decode_flops=10, prefill_bytes=10, decode_bytes=11),) * 24,
        decode_steps=8,
    )
    return problem, cost


@pytest.mark.parametrize("runs_before_deadline", [2, 4])
def test_a_dp_past_its_deadline_returns_its_best_placement_unproven(monkeypatch, runs_before_deadline: int) -> None:
    """The deadline passes during the utilisation bisection: the time phase's optimum comes back
    FEASIBLE (valid, its time proven: bound = the optimal time), not an error and not CP-SAT."""
    problem, cost = _identical_gpu_chain()
    exact = solve(problem, goal=Goal.LATENCY, cost=cost, method="dp")
    assert exact.status is Status.OPTIMAL
    real_run, calls = block_dp._run, []

    def run_then_time_out(*args, **kwargs):
        calls.append(1)
        if len(calls) > runs_before_deadline:  # the time phase is a quick and an exact pass: 2 runs
            raise block_dp.OutOfTime
        return real_run(*args, **kwargs)

    monkeypatch.setattr(block_dp, "_run", run_then_time_out)
    cut = solve(problem, goal=Goal.LATENCY, cost=cost, method="dp")
    assert (cut.solver, cut.status) == ("dp", Status.FEASIBLE)
    assert violations(problem, cut.assignment) == []
    assert cut.values["time_ns"] == exact.values["time_ns"] == cut.bound
    assert cut.values["max_utilisation"] >= exact.values["max_utilisation"]
    calls.clear()
    auto = solve(problem, goal=Goal.LATENCY, cost=cost, num_workers=2)  # small enough for CP-SAT
    assert auto.solver == "cp-sat"
    calls.clear()
    monkeypatch.setattr("layerplan.solver.cpsat._CPSAT_MAX_CELLS", 0)  # as if too big for CP-SAT
    assert solve(problem, goal=Goal.LATENCY, cost=cost).assignment == cut.assignment


@pytest.mark.parametrize("ordered", [True, False])
def test_a_smaller_gpu_between_identical_ones_is_not_taken_for_them(ordered: bool) -> None:
    """Device order 0 (20 B), a small GPU (10 B), two identical 40 B GPUs: the best split skips the
    small one (one cut). Its open block and an identical GPU's look alike in a label, but only the
    identical GPU's can grow: the DP must not let one stand for the other."""
    nodes = tuple(Node(name=f"layers.{i}", size_bytes=10) for i in range(6))
    edges = tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=1) for i in range(5))
    devices = tuple(Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=c) for g, c in enumerate((20, 10, 40, 40)))
    problem = PlacementProblem(nodes=nodes, edges=edges, devices=devices, ordered=ordered)
    dp = solve(problem, goal=Goal.TRANSFERS, method="dp")
    assert dp.values["transfer_bytes"] == 1
    assert dp.assignment == (0, 0, 2, 2, 2, 2)
