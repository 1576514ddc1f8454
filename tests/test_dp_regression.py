"""The block DP proves the same optimum CP-SAT proves, on real catalog graphs (a regression test of
``solve()``'s fast path against the solver that planned them before it)."""

from __future__ import annotations

import dataclasses

import pytest

import layerplan
import layerplan.planner.api as api
from layerplan.planner.spec import PlanSpec
from layerplan.solver import Goal, Status, solve, violations

DEVICES = {
    "2x80+2x24GiB": {0: "80GiB", 1: "80GiB", 2: "24GiB", 3: "24GiB"},  # mixed GPUs, free order
    "2x12GiB+cpu": {0: "12GiB", 1: "12GiB", "cpu": "200GiB"},  # offloading
}


def _problem(name: str, devices: str, *, ordered: bool):  # noqa: ANN202
    graph, _ = layerplan.trace(name, seq_len=512)
    spec = PlanSpec.from_kwargs(graph, max_memory=DEVICES[devices])
    declared, hardware = api._declared(graph, spec.devices)
    problem = graph.to_problem(devices=[d.to_solver() for d in declared], ordered=ordered)
    return problem, api.cost_model(graph, problem, hardware)


@pytest.mark.parametrize("goal", [Goal.LATENCY, Goal.TRANSFERS])
@pytest.mark.parametrize("devices", list(DEVICES))
@pytest.mark.parametrize("name", ["gpt2-xl", "llama-3-8b", "mixtral-8x7b"])
def test_dp_proves_cpsats_optimum_on_catalog_graphs(name: str, devices: str, goal: Goal) -> None:
    problem, cost = _problem(name, devices, ordered=False)
    dp = solve(problem, goal=goal, cost=cost)
    cpsat = solve(problem, goal=goal, cost=cost, method="cp-sat", num_workers=2, time_limit_s=60)
    assert dp.solver == "dp" and cpsat.status is Status.OPTIMAL
    assert violations(problem, dp.assignment) == []
    assert [dp.values[m] for m in goal.measures] == [cpsat.values[m] for m in goal.measures]


def test_dp_on_an_ordered_problem_matches_cpsat() -> None:
    problem, cost = _problem("llama-3-8b", "2x80+2x24GiB", ordered=True)
    dp = solve(problem, goal=Goal.LATENCY, cost=cost)
    cpsat = solve(dataclasses.replace(problem), goal=Goal.LATENCY, cost=cost, method="cp-sat", num_workers=2)
    assert dp.solver == "dp"
    assert [dp.values[m] for m in Goal.LATENCY.measures] == [cpsat.values[m] for m in Goal.LATENCY.measures]
