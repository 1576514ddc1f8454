"""The block DP's utilisation floor (where its bisection starts) is a lower bound: no valid
placement has a smaller max utilisation. Oracle: every assignment, checked by the rules."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings

from layerplan.solver import violations
from layerplan.solver.block_dp import _utilisation_floor
from layerplan.solver.goals import max_utilisation
from strategies import runtime_problems, small_problems


def _least(problem) -> int | None:
    every = itertools.product(range(len(problem.devices)), repeat=len(problem.nodes))
    values = [max_utilisation(problem, a) for a in every if not violations(problem, a)]
    return min(values, default=None)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problems(max_nodes=5, max_devices=3))
def test_the_floor_is_at_most_the_least_utilisation(problem) -> None:
    least = _least(problem)
    if least is not None:
        assert _utilisation_floor(problem) <= least


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runtime_problems(max_nodes=5, max_devices=3))
def test_the_floor_holds_with_runtime_memory(problem) -> None:
    least = _least(problem)
    if least is not None:
        assert _utilisation_floor(problem) <= least
