"""layerplan.testing: the strategies users generate problems with, and check_plan's typed errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import layerplan
from layerplan.solver import Device, DeviceKind, Edge, Node, PlacementProblem, Rule, violations
from layerplan.testing import (
    CapError,
    ContiguityError,
    CoverageError,
    ExecutionDeviceError,
    LowZeroError,
    OrderError,
    PinsError,
    PlanCheckError,
    TiesError,
    check_plan,
    device_sets,
    layer_graphs,
    problems,
    workloads,
)


# The user's test from issue 13, as written there.
@settings(max_examples=50, deadline=None)
@given(problems())
def test_any_generated_problem_solves_to_a_valid_plan(problem):
    try:
        solution = layerplan.solve(problem)
    except layerplan.InfeasiblePlanError:
        return
    check_plan(solution, problem)


def _gpu(name: str, cap: int) -> Device:
    return Device(name=name, kind=DeviceKind.ACCELERATOR, cap_bytes=cap)


def _problem(*, caps=(10, 10), cpu: int | None = None, **options) -> PlacementProblem:
    devices = tuple(_gpu(str(g), c) for g, c in enumerate(caps))
    if cpu is not None:
        devices += (Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=cpu),)
    nodes = tuple(Node(name=f"layers.{i}", size_bytes=3) for i in range(4))
    edges = tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=1) for i in range(3))
    return PlacementProblem(nodes=nodes, edges=edges, devices=devices, **options)


@pytest.mark.parametrize(("problem", "assignment", "error"), [
    (_problem(), (0, 0, 0), CoverageError),
    (_problem(), (0, 0, 0, 7), CoverageError),
    (_problem(caps=(5, 10)), (0, 0, 1, 1), CapError),
    (_problem(tied_groups=((0, 3),)), (0, 0, 1, 1), TiesError),
    (_problem(pins=((3, 0),)), (0, 0, 1, 1), PinsError),
    (_problem(), (0, 1, 0, 0), ContiguityError),
    (_problem(ordered=True), (1, 1, 0, 0), OrderError),
    (_problem(cpu=20), (1, 2, 2, 2), ExecutionDeviceError),
    (_problem(low_zero=True), (0, 0, 0, 1), LowZeroError),
])
def test_each_broken_rule_raises_its_own_error(problem, assignment, error) -> None:
    with pytest.raises(error) as raised:
        check_plan(assignment, problem)
    assert raised.value.rule is error.rule
    assert [v.rule for v in raised.value.violations] == [error.rule]
    assert isinstance(raised.value, AssertionError)


def test_several_broken_rules_raise_the_first_and_list_them_all() -> None:
    problem = _problem(caps=(5, 10), pins=((3, 0),))
    with pytest.raises(CapError) as raised:  # cap comes before pins in rule order
        check_plan((0, 0, 1, 1), problem)
    assert {v.rule for v in raised.value.violations} == {Rule.CAP, Rule.PINS}
    assert "pins" in str(raised.value) and "cap" in str(raised.value)


def test_a_valid_placement_passes_in_every_form() -> None:
    problem = _problem(ordered=True)
    solution = layerplan.solve(problem)
    assert violations(problem, solution.assignment) == []
    check_plan(solution, problem)
    check_plan(list(solution.assignment), problem)
    with pytest.raises(TypeError, match="PlacementProblem"):
        check_plan(solution)
    with pytest.raises(TypeError, match="device index"):
        check_plan(("0", "1", "1", "1"), problem)
    with pytest.raises(PlanCheckError):
        check_plan((1, 1, 0, 0), problem)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(min_nodes=10_000, max_nodes=10_000, min_accelerators=64, max_accelerators=64))
def test_problems_scale_to_10k_nodes_and_64_devices(problem) -> None:
    assert len(problem.nodes) == 10_000
    assert len(problem.accelerators) == 64


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_problems_keep_the_options_they_are_given(data) -> None:
    low = data.draw(st.integers(1, 30))
    high = data.draw(st.integers(low, 40))
    gpus = data.draw(st.integers(0, 5))
    problem = data.draw(problems(min_nodes=low, max_nodes=high, min_accelerators=gpus, max_accelerators=gpus,
                                 offload_tiers=gpus == 0 or None, tied=False, pins=False, ordered=True,
                                 runtime_memory=False, identical=True))
    assert low <= len(problem.nodes) <= high
    assert len(problem.accelerators) == gpus
    assert problem.ordered and not problem.tied_groups and not problem.pins
    assert not problem.has_runtime_memory
    assert len({problem.devices[d].cap_bytes for d in problem.accelerators}) <= 1  # identical


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(min_nodes=3, before_kv_cache=True, runtime_memory=True))
def test_generated_encoders_peak_before_the_cache_and_solve_to_valid_plans(problem) -> None:
    encoder = [x for x in problem.nodes if x.before_kv_cache]
    assert encoder and all(x.name.startswith("encoder.") and x.kv_bytes == 0 for x in encoder)
    assert not problem.nodes[0].before_kv_cache and not problem.nodes[-1].before_kv_cache
    try:
        solution = layerplan.solve(problem)
    except layerplan.InfeasiblePlanError:
        return
    check_plan(solution, problem)


def test_check_plan_charges_an_encoder_working_set_instead_of_the_kv_cache() -> None:
    # One GPU: weights 3 + 3, a KV cache of 6 beside a 2-byte working set, an encoder working set
    # of 14 before the cache: 6 + max(14, 6 + 2) = 20 B; charged beside the cache, 6 + 6 + 14 = 26 B.
    def problem(cap: int, *, flagged: bool = True) -> PlacementProblem:
        nodes = (Node(name="encoder.0", size_bytes=3, work_bytes=14, before_kv_cache=flagged),
                 Node(name="decoder.0", size_bytes=3, kv_bytes=6, work_bytes=2))
        return PlacementProblem(nodes=nodes, devices=(_gpu("0", cap),))

    check_plan((0, 0), problem(20))
    with pytest.raises(CapError, match="holds 20 bytes > cap 19"):
        check_plan((0, 0), problem(19))
    with pytest.raises(CapError, match="holds 26 bytes > cap 20"):
        check_plan((0, 0), problem(20, flagged=False))


@settings(max_examples=60, deadline=None)
@given(device_sets(total_bytes=1000, min_accelerators=2, max_accelerators=3, offload_tiers=True))
def test_device_sets_have_accelerators_first_then_one_cpu(devices) -> None:
    kinds = [d.kind for d in devices]
    assert kinds[:kinds.count(DeviceKind.ACCELERATOR)] == [DeviceKind.ACCELERATOR] * kinds.count(DeviceKind.ACCELERATOR)
    assert 2 <= kinds.count(DeviceKind.ACCELERATOR) <= 3
    assert kinds.count(DeviceKind.CPU) == 1 and kinds.count(DeviceKind.DISK) <= 1


@pytest.mark.parametrize(("options", "message"), [
    ({"min_nodes": 0}, "min_nodes=0"),
    ({"min_nodes": 5, "max_nodes": 2}, "min_nodes=5 > max_nodes=2"),
    ({"max_accelerators": -1}, "max_accelerators=-1"),
    ({"tied": "yes"}, "tied='yes'"),
    ({"max_accelerators": 0, "min_accelerators": 0, "offload_tiers": False}, "no device"),
    ({"broadcast_edges": None}, "broadcast_edges=None"),
    ({"before_kv_cache": 1}, "before_kv_cache=1"),
])
def test_bad_arguments_are_refused_when_the_strategy_is_made(options, message) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        problems(**options)


def test_the_testing_surface_imports_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, layerplan, layerplan.testing; layerplan.solve; layerplan.InfeasiblePlanError; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_graphs(max_layers=12))
def test_generated_layer_graphs_round_trip_and_plan_to_a_valid_map(graph) -> None:
    from layerplan.planner.graph import LayerGraph

    assert LayerGraph.from_json(graph.to_json()) == graph  # the graph file schema accepts it
    share = (graph.total_bytes + graph.total_kv_bytes) // 2
    room = max(n.work_bytes for n in graph.nodes) + 2 * max(e.size_bytes for e in graph.edges) + (1 << 20)
    plan = layerplan.plan(graph, max_memory={0: share + room, 1: share + room, "cpu": 4 * graph.total_bytes + room},
                          reserve=0)
    check_plan(plan)
    for node in graph.nodes:  # every node is covered by a key of the map (itself or a dotted prefix)
        assert any(k == "" or node.name == k or node.name.startswith(f"{k}.") for k in plan.device_map), node.name
    kv = sum(n.kv_bytes for n in graph.nodes if n.kind == "block")
    w = graph.workload
    assert kv == graph.total_kv_bytes and kv % (2 * w.batch_size * w.context_len) == 0


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_graphs(min_layers=10_000, max_layers=10_000))
def test_layer_graphs_scale_to_10k_layers(graph) -> None:
    assert len(graph.nodes) == 10_004


@pytest.mark.parametrize(("strategy", "options", "message"), [
    (layer_graphs, {"min_layers": 0}, "min_layers=0"),
    (layer_graphs, {"min_layers": 3, "max_layers": 2}, "min_layers=3 > max_layers=2"),
    (layer_graphs, {"workload": 3}, "workload=3"),
    (workloads, {"max_batch_size": 0}, "max_batch_size=0"),
    (workloads, {"dtypes": ("int4",)}, "dtypes="),
])
def test_graph_strategies_refuse_bad_arguments(strategy, options, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        strategy(**options)
