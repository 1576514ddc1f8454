"""Nodes offloaded inside the execution device's block (``Node.offload_inline``: a MoE layer's
experts on cpu/disk while its attention stays on GPU 0, llama.cpp's ``-ot exps=CPU``).

Oracles: a contiguity rule written here from its definition (not :func:`violations`) checked on
every assignment; brute force over every assignment (through :func:`violations`, itself checked
by the first oracle) scored by ``test_goals.py``'s hand-written measures, for CP-SAT and the block
DP, every goal; and hand-computed fixtures. Mutants of the rule in each solver are caught.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from layerplan.solver import (
    Device,
    DeviceKind,
    Edge,
    Goal,
    InvalidSpecError,
    Node,
    PlacementProblem,
    Rule,
    Status,
    block_dp,
    solve,
    solve_chain_dp,
    violations,
)
from layerplan.solver import cpsat
from layerplan.testing import ContiguityError, check_plan, problems
from strategies import gpus, runtime_problems, small_problems
from test_block_dp import _check_against_brute_force, _dp_shaped, _uniform_links, offload_problems
from test_goals import WORKERS, brute_force_goal, cost_models, hand_measures


# -- the rule, written from its definition ---------------------------------------------------------
def _contiguous(problem: PlacementProblem, assignment) -> bool:
    """Each accelerator's nodes (followers left out) are one run of consecutive positions; for the
    first accelerator (the execution device) positions are counted after dropping the flagged nodes
    stored on a non-accelerator."""
    accs = [d for d, dev in enumerate(problem.devices) if dev.kind is DeviceKind.ACCELERATOR]
    followers = {m for group in problem.tied_groups for m in group[1:]}
    for a in accs:
        sequence = [
            assignment[i] for i in range(len(problem.nodes))
            if i not in followers
            and not (a == accs[0] and problem.nodes[i].offload_inline
                     and problem.devices[assignment[i]].kind is not DeviceKind.ACCELERATOR)
        ]
        where = [t for t, d in enumerate(sequence) if d == a]
        if where and where != list(range(where[0], where[-1] + 1)):
            return False
    return True


def _hosted(problem: PlacementProblem, assignment) -> bool:
    """Each flagged non-follower node runs where the non-follower node before it runs (offloaded
    nodes run on the first accelerator, or the first cpu without one)."""
    kinds = [dev.kind for dev in problem.devices]
    accs = [d for d, kind in enumerate(kinds) if kind is DeviceKind.ACCELERATOR]
    cpus = [d for d, kind in enumerate(kinds) if kind is DeviceKind.CPU]
    execution = accs[0] if accs else cpus[0] if cpus else 0

    def runs(d: int) -> int:
        return d if kinds[d] is DeviceKind.ACCELERATOR else execution

    followers = {m for group in problem.tied_groups for m in group[1:]}
    kept = [i for i in range(len(problem.nodes)) if i not in followers]
    return all(runs(assignment[e]) == runs(assignment[h]) for h, e in zip(kept, kept[1:]) if problem.nodes[e].offload_inline)


@st.composite
def flagged(draw: st.DrawFn, base: st.SearchStrategy[PlacementProblem]) -> PlacementProblem:
    """``base`` with a drawn set of nodes flagged ``offload_inline`` (at least one)."""
    problem = draw(base)
    n = len(problem.nodes)
    chosen = set(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n)))
    nodes = tuple(dataclasses.replace(x, offload_inline=i in chosen) for i, x in enumerate(problem.nodes))
    return dataclasses.replace(problem, nodes=nodes)


@settings(max_examples=150, deadline=None)
@given(problem=flagged(small_problems(max_nodes=5, max_devices=4)))
def test_the_checker_keeps_the_rule_as_defined_on_every_assignment(problem: PlacementProblem) -> None:
    for assignment in itertools.product(range(len(problem.devices)), repeat=len(problem.nodes)):
        broken = {v.rule for v in violations(problem, assignment)}
        assert (Rule.CONTIGUITY in broken) == (not _contiguous(problem, assignment)), assignment
        assert (Rule.HOST in broken) == (not _hosted(problem, assignment)), assignment


def _experts_problem(*, flags: tuple[bool, ...], sizes: tuple[int, ...], gpu_caps: tuple[int, ...], cpu: int = 100,
                     disk: int | None = None, ordered: bool = True) -> PlacementProblem:
    names = [f"n{i}" for i in range(len(sizes))]
    return PlacementProblem(
        nodes=tuple(Node(name=name, size_bytes=s, offload_inline=f) for name, s, f in zip(names, sizes, flags)),
        edges=tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=1) for i in range(len(sizes) - 1)),
        devices=gpus(*gpu_caps, cpu=cpu, disk=disk),
        ordered=ordered,
    )


# Devices: 0 and 1 are GPUs, 2 is cpu, 3 is disk; node 2 is flagged, node 1 is not.
_TABLE = _experts_problem(flags=(False, False, True, False, False), sizes=(1,) * 5, gpu_caps=(10, 10), disk=100)


@pytest.mark.parametrize(
    ("assignment", "rules"),
    [
        ((0, 0, 2, 0, 0), []),  # experts on cpu inside GPU 0's block
        ((0, 0, 3, 0, 0), []),  # ... or on disk
        ((0, 0, 2, 0, 1), []),  # GPU 0's block then GPU 1's
        ((0, 2, 0, 0, 0), [Rule.CONTIGUITY]),  # node 1 is not flagged: it splits the block (experts on GPU 0)
        ((0, 2, 2, 0, 0), [Rule.CONTIGUITY]),  # ... also next to a flagged one
        ((0, 1, 2, 1, 1), [Rule.CONTIGUITY, Rule.HOST]),  # on GPU 1 (not the execution device): strict
        ((1, 1, 2, 0, 0), [Rule.ORDER, Rule.HOST]),  # experts run on GPU 0, their layer on GPU 1
        ((0, 0, 1, 1, 1), [Rule.HOST]),  # experts on another GPU than their layer
        ((0, 1, 1, 1, 1), []),  # experts with their layer on GPU 1
        ((0, 2, 0, 0, 0), [Rule.CONTIGUITY]),
        ((2, 2, 2, 0, 0), []),  # flagged or not, offloaded before the block
        ((0, 0, 2, 1, 0), [Rule.CONTIGUITY]),  # GPU 1 between splits GPU 0
        ((1, 0, 2, 0, 1), [Rule.CONTIGUITY, Rule.ORDER]),  # GPU 1 on both sides
    ],
)
def test_the_checker_by_hand(assignment: tuple[int, ...], rules: list[Rule]) -> None:
    assert sorted(v.rule.value for v in violations(_TABLE, assignment)) == sorted(r.value for r in rules)
    assert _contiguous(_TABLE, assignment) == (Rule.CONTIGUITY not in rules)
    assert _hosted(_TABLE, assignment) == (Rule.HOST not in rules)


def test_without_the_flag_the_split_block_is_refused() -> None:
    strict = dataclasses.replace(_TABLE, nodes=tuple(dataclasses.replace(x, offload_inline=False) for x in _TABLE.nodes))
    assert [v.rule for v in violations(strict, (0, 0, 2, 0, 0))] == [Rule.CONTIGUITY]
    with pytest.raises(ContiguityError):
        check_plan((0, 0, 2, 0, 0), strict)
    check_plan((0, 0, 2, 0, 0), _TABLE)


def test_cpu_only_problems_ignore_the_flag() -> None:
    problem = PlacementProblem(
        nodes=(Node(name="a", size_bytes=1), Node(name="b", size_bytes=1, offload_inline=True)),
        devices=(Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=1), Device(name="disk", kind=DeviceKind.DISK, cap_bytes=1)),
    )
    assert not problem.has_inline_offload
    assert violations(problem, (0, 1)) == []


def test_the_flag_is_validated() -> None:
    with pytest.raises(InvalidSpecError, match="offload_inline=1"):
        Node(name="x", size_bytes=1, offload_inline=1)  # type: ignore[arg-type]


# -- fixtures where the flag decides ---------------------------------------------------------------
# embed 4, layer 1, experts 3, layer 1, other 3 (flagged or not), layer 1, head 4 = 17 bytes on a
# 11-byte GPU and a cpu: at least 6 bytes are offloaded. Offloaded cost = bytes (cpu costs 1/byte).
# * the rule (only the experts 3 may sit inside): experts + the embedding (or the head) = 7;
# * strict (no flag): a prefix and a suffix, e.g. embed + layer + experts = 8;
# * too loose (any offloaded node inside): experts + other = 6.
_SIZES = (4, 1, 3, 1, 3, 1, 4)
_RIGHT = _experts_problem(flags=(False, False, True, False, False, False, False), sizes=_SIZES, gpu_caps=(11,))
_BOTH = _experts_problem(flags=(False, False, True, False, True, False, False), sizes=_SIZES, gpu_caps=(11,))
_STRICT = _experts_problem(flags=(False,) * 7, sizes=_SIZES, gpu_caps=(11,))


@pytest.mark.parametrize("method", ["dp", "cp-sat"])
@pytest.mark.parametrize(("problem", "offload_cost"), [(_RIGHT, 7), (_BOTH, 6), (_STRICT, 8)])
def test_the_fixture_by_hand(problem: PlacementProblem, offload_cost: int, method: str) -> None:
    solution = solve(problem, method=method, num_workers=WORKERS)
    assert solution.status is Status.OPTIMAL
    assert solution.objective.offload_cost == offload_cost
    assert violations(problem, solution.assignment) == []
    if offload_cost < 8:
        assert solution.assignment[2] == 1 and solution.assignment[1] == solution.assignment[3] == 0


def test_experts_on_another_gpu_are_not_inline() -> None:
    # GPU 0 holds one byte: the experts would split GPU 1's block, so the strict optimum stands.
    problem = _experts_problem(flags=(False, False, True, False, False, False, False), sizes=_SIZES, gpu_caps=(1, 11))
    for method in ("dp", "cp-sat"):
        solution = solve(problem, method=method, num_workers=WORKERS)
        assert solution.objective.offload_cost == brute_force_goal(problem, None, Goal.TRANSFERS)[0] == 7
        assert violations(problem, solution.assignment) == []


def test_the_chain_dp_refuses_inline_nodes() -> None:
    with pytest.raises(InvalidSpecError, match="offload_inline"):
        solve_chain_dp(_RIGHT)


def test_without_anywhere_to_offload_there_is_no_open_variable() -> None:
    built = cpsat._build(dataclasses.replace(_BOTH, devices=_BOTH.devices[:1]), goal=Goal.TRANSFERS, cost=None)
    assert built.open_at == {}
    assert cpsat._build(_BOTH, goal=Goal.TRANSFERS, cost=None).open_at.keys() == {2, 4}


# -- mutants ---------------------------------------------------------------------------------------
def _with_dp_inline(monkeypatch, pick) -> None:
    made = block_dp._data

    def data(problem, cost):
        found = made(problem, cost)
        return dataclasses.replace(found, inline=[bool(found.offs) and pick(x) for x in problem.nodes])

    monkeypatch.setattr(block_dp, "_data", data)


def _with_cpsat_inline(monkeypatch, pick) -> None:
    monkeypatch.setattr(cpsat, "_inline_nodes", lambda problem: [i for i, x in enumerate(problem.nodes) if pick(x)])


@pytest.mark.parametrize("solver", ["dp", "cp-sat"])
@pytest.mark.parametrize("mutant", ["flag ignored", "every offloaded node inline"])
def test_a_broken_rule_in_either_solver_is_caught(monkeypatch, solver: str, mutant: str) -> None:
    pick = (lambda x: False) if mutant == "flag ignored" else (lambda x: True)
    (_with_dp_inline if solver == "dp" else _with_cpsat_inline)(monkeypatch, pick)
    best = brute_force_goal(_RIGHT, None, Goal.TRANSFERS)
    assert best[0] == 7
    with pytest.raises(AssertionError):  # a worse optimum, or a placement the checker refuses
        solution = solve(_RIGHT, method=solver, num_workers=WORKERS)
        assert violations(_RIGHT, solution.assignment) == []
        assert solution.objective.as_tuple() == best


def test_a_checker_that_ignores_the_flag_is_caught(monkeypatch) -> None:
    monkeypatch.setattr(PlacementProblem, "inline_offloaded", lambda self, node, device: False)
    assert not _contiguous(_TABLE, (0, 1, 2, 1, 1))  # the oracle is not patched
    assert _contiguous(_TABLE, (0, 0, 2, 0, 0))
    assert any(v.rule is Rule.CONTIGUITY for v in violations(_TABLE, (0, 0, 2, 0, 0)))  # what the first test catches


# -- solvers against brute force, every goal -------------------------------------------------------
@st.composite
def moe_problems(draw: st.DrawFn, *, runtime: bool | None = None) -> PlacementProblem:
    """MoE-shaped chains: embedding, (layer, flagged experts) x 1-2, head; experts the larger;
    1-2 GPUs short of the model, a cpu with room (sometimes a disk); sometimes runtime memory."""
    layers = draw(st.integers(1, 2))
    embed, layer, experts, head = (draw(st.integers(0, 6)), draw(st.integers(0, 4)),
                                   draw(st.integers(2, 10)), draw(st.integers(0, 6)))
    with_runtime = draw(st.booleans()) if runtime is None else runtime
    kv, work = (draw(st.integers(0, 2)), draw(st.integers(0, 3))) if with_runtime else (0, 0)
    nodes = [Node(name="embed", size_bytes=embed, work_bytes=work)]
    for i in range(layers):
        nodes.append(Node(name=f"layers.{i}", size_bytes=layer, kv_bytes=kv, work_bytes=work))
        nodes.append(Node(name=f"layers.{i}.experts", size_bytes=experts, work_bytes=work, offload_inline=True))
    nodes.append(Node(name="head", size_bytes=head, work_bytes=work))
    total = sum(x.size_bytes for x in nodes)
    hidden = draw(st.integers(0, 2))
    # GPU 0 often holds everything but some experts (plus room for runtime memory).
    dense = total - layers * experts + (layers * kv + 2 * work + 2 * hidden + 2 + experts if with_runtime else 0)
    caps = [draw(st.one_of(st.integers(dense, dense + experts * layers), st.integers(total // 3, total + 4)))]
    caps += [draw(st.integers(0, total)) for _ in range(draw(st.integers(0, 1)))]
    devices = [Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=cap,
                      reserve_bytes=draw(st.integers(0, 2)) if with_runtime else 0)
               for g, cap in enumerate(caps)]
    devices.append(Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=draw(st.integers(total // 2, 2 * total))))
    if draw(st.booleans()):
        devices.append(Device(name="disk", kind=DeviceKind.DISK, cap_bytes=2 * total))
    return PlacementProblem(
        nodes=tuple(nodes),
        edges=tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=hidden) for i in range(len(nodes) - 1)),
        devices=tuple(devices), ordered=draw(st.booleans()),
    )


@st.composite
def inline_costed_problems(draw: st.DrawFn):
    """Small DAG problems (tied groups, pins, low_zero, cpu/disk tiers) with flagged nodes, often
    short of GPU memory, and a cost model."""
    problem = draw(st.one_of(moe_problems(), flagged(small_problems(max_nodes=6, max_devices=3)),
                             flagged(offload_problems(runtime_problems(max_nodes=5)))))
    if draw(st.booleans()):
        problem = dataclasses.replace(problem, low_zero=True)
    return problem, draw(cost_models(problem))


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=inline_costed_problems())
def test_cpsat_matches_brute_force_with_inline_nodes(goal: Goal, data) -> None:
    problem, cost = data
    best = brute_force_goal(problem, cost, goal)
    if best is None:
        event("infeasible")
        with pytest.raises(Exception, match="no placement|missing|needs"):
            solve(problem, goal=goal, cost=cost, method="cp-sat", num_workers=WORKERS, explain=False)
        return
    solution = solve(problem, goal=goal, cost=cost, method="cp-sat", num_workers=WORKERS)
    _note_split(problem, solution.assignment)
    assert solution.status is Status.OPTIMAL
    assert violations(problem, solution.assignment) == []
    assert hand_measures(problem, cost, solution.assignment, goal) == best
    assert solution.bound == solution.headline_value


def _note_split(problem: PlacementProblem, assignment) -> None:
    x = problem.execution_device
    on_x = [i for i, d in enumerate(assignment) if d == x and not problem.is_follower(i)]
    inside = on_x and any(problem.inline_offloaded(i, assignment[i]) for i in range(on_x[0], on_x[-1]))
    event("execution block split by inline nodes" if inside else "no split")


@st.composite
def dp_inline_problems(draw: st.DrawFn):
    problem = draw(st.one_of(moe_problems(), flagged(offload_problems()),
                             flagged(offload_problems(small_problems(max_nodes=6))),
                             flagged(st.builds(_dp_shaped, small_problems(max_nodes=6)))))
    cost = draw(cost_models(problem))
    return problem, _uniform_links(cost, draw(st.sampled_from([1e8, 1e9])))


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dp_inline_problems())
def test_block_dp_matches_brute_force_with_inline_nodes(goal: Goal, data) -> None:
    problem, cost = data
    best = brute_force_goal(problem, cost, goal)
    if best is not None and block_dp.applies(problem, cost) is None:
        _note_split(problem, solve(problem, goal=goal, cost=cost, method="dp").assignment)
    _check_against_brute_force(problem, cost, goal)


@settings(max_examples=100, deadline=None)
@given(problem=problems(offload_inline=True, max_nodes=5, max_accelerators=2))
def test_the_strategy_draws_flagged_problems_the_solvers_place(problem: PlacementProblem) -> None:
    assert any(x.offload_inline for x in problem.nodes)
    assert not any(problem.nodes[i].offload_inline for i in (0, len(problem.nodes) - 1)) or len(problem.nodes) < 3
    try:
        solution = solve(problem, num_workers=WORKERS)
    except Exception as exc:  # noqa: BLE001 - only infeasibility is allowed, and brute force agrees
        assert type(exc).__name__ == "InfeasiblePlanError", exc
        assert brute_force_goal(problem, None, Goal.TRANSFERS) is None
        return
    check_plan(solution, problem)
    assert solution.objective.as_tuple() == brute_force_goal(problem, None, Goal.TRANSFERS)


@st.composite
def costed_moe_problems(draw: st.DrawFn, *, uniform_links: bool):
    problem = draw(moe_problems())
    cost = draw(cost_models(problem))
    return problem, _uniform_links(cost, 1e9) if uniform_links else cost


@pytest.mark.parametrize("method", ["dp", "cp-sat"])
@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_both_solvers_match_brute_force_on_moe_shaped_problems(goal: Goal, method: str, data) -> None:
    problem, cost = data.draw(costed_moe_problems(uniform_links=method == "dp"))
    if method == "dp":
        best = brute_force_goal(problem, cost, goal)
        if best is not None:
            _note_split(problem, solve(problem, goal=goal, cost=cost, method="dp").assignment)
        _check_against_brute_force(problem, cost, goal)
    else:
        test_cpsat_matches_brute_force_with_inline_nodes.hypothesis.inner_test(goal, (problem, cost))


# Experts 4 after a layer 4 on a 5-byte GPU 0, a layer 4 then on a 10-byte GPU 1: with the host rule
# the experts go to cpu (cost 4); a solver that forgets it puts them on GPU 1 (cost 0, a crash in
# accelerate: the layer on GPU 0 would add the experts' output, on GPU 1, to its residual).
_HOSTED = _experts_problem(flags=(False, True, False), sizes=(4, 4, 4), gpu_caps=(5, 10))


@pytest.mark.parametrize("solver", ["dp", "cp-sat"])
def test_a_solver_that_forgets_the_host_rule_is_caught(monkeypatch, solver: str) -> None:
    best = brute_force_goal(_HOSTED, None, Goal.TRANSFERS)
    assert best[0] == 4
    assert solve(_HOSTED, method=solver, num_workers=WORKERS).objective.as_tuple() == best
    if solver == "dp":
        made = block_dp._data
        monkeypatch.setattr(block_dp, "_data", lambda p, c: dataclasses.replace(made(p, c), hosted=[False] * 3))
    else:
        monkeypatch.setattr(PlacementProblem, "host_of", lambda self, node: None)
    with pytest.raises(AssertionError):
        solution = solve(_HOSTED, method=solver, num_workers=WORKERS)
        assert _hosted(_HOSTED, solution.assignment)
        assert solution.objective.as_tuple() == best
