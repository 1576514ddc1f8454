"""The warm path's shortcuts (issue 9) return what the work they skip would have returned.

* :func:`layerplan.solver.block_dp._quick_is_exact`: a phase whose quick pass provably lost
  nothing skips its exact pass. Oracle: the same DP with the exact pass always run.
* ``then`` (:func:`layerplan.solver.block_dp._phase`): the utilisation found with the phase
  before it. Oracle: the utilisation phase run on its own.
* :func:`layerplan.solver.goals.scores`: every measure of a placement at once. Oracle:
  :func:`~layerplan.solver.goals.score`, one measure at a time.
* :func:`layerplan.planner.quiet.quiet` and :func:`layerplan.planner.provenance.library_versions`,
  which now skip repeated work, still restore and return what they did.
"""

from __future__ import annotations

import dataclasses
import logging
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from layerplan.planner.provenance import library_versions
from layerplan.planner.quiet import quiet
from layerplan.solver import Goal, Measure, block_dp, score
from layerplan.solver.goals import scores
from test_block_dp import _llama_like, dp_problems
from test_goals import costed_problems


def _solve_or_reason(problem, goal: Goal, cost):
    try:
        return block_dp.solve_blocks(problem, goal, cost)
    except (block_dp.OutOfLabels, block_dp.OutOfTime) as exc:
        return type(exc).__name__


@pytest.mark.parametrize("goal", list(Goal))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dp_problems())
def test_skipping_a_proven_exact_pass_changes_no_placement(goal: Goal, data) -> None:
    problem, cost = data
    if block_dp.applies(problem, cost) is not None:
        return
    shortcut = _solve_or_reason(problem, goal, cost)
    with mock.patch.object(block_dp, "_quick_is_exact", lambda quick, dropped: False):
        every_pass = _solve_or_reason(problem, goal, cost)
    assert shortcut == every_pass


@pytest.mark.parametrize("goal", [Goal.LATENCY, Goal.BALANCED])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dp_problems())
def test_the_utilisation_found_with_the_phase_before_is_its_own_phases(goal: Goal, data) -> None:
    problem, cost = data
    if block_dp.applies(problem, cost) is not None:
        return
    joint = _solve_or_reason(problem, goal, cost)
    exact = block_dp._exact

    def alone(*args, then=None, **kwargs):
        return exact(*args, **kwargs)

    with mock.patch.object(block_dp, "_exact", alone):
        apart = _solve_or_reason(problem, goal, cost)
    assert joint == apart


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize(("layers", "gpu"), [(12, 500), (20, 700), (20, 900)])
def test_the_utilisation_found_with_the_phase_before_on_a_llama_shaped_graph(layers: int, gpu: int, ordered: bool) -> None:
    """Layers that must partly go to the cpu: the quick pass truncates, so the offload cost's
    exact pass also finds the utilisation (the drawn problems above rarely get that far)."""
    problem = dataclasses.replace(_llama_like(layers, kv=4, work=30, cpu=4000, gpu=gpu), ordered=ordered)
    run, joint_passes = block_dp._run, []

    def counted(*args, **kwargs):
        joint_passes.append(kwargs.get("then"))
        return run(*args, **kwargs)

    with mock.patch.object(block_dp, "_run", counted):
        joint = block_dp.solve_blocks(problem, Goal.BALANCED, None)
    assert Measure.MAX_UTILISATION in joint_passes
    exact = block_dp._exact
    with mock.patch.object(block_dp, "_exact", lambda *args, then=None, **kwargs: exact(*args, **kwargs)):
        assert block_dp.solve_blocks(problem, Goal.BALANCED, None) == joint


@pytest.mark.parametrize(
    ("quick", "dropped", "exact"),
    [
        (((0, 1), 7), [], True),  # nothing truncated: the quick pass was the exact pass
        (None, [], True),  # ... and found no placement
        (((0, 1), 7), [8, 9], True),  # every dropped label is bounded above 7
        (((0, 1), 7), [9, 7], False),  # one might tie 7: the exact pass picks among the ties
        (((0, 1), 7), [6], False),  # one might do better
        (None, [3], False),  # truncation may have lost every placement
    ],
)
def test_when_the_quick_pass_is_exact(quick, dropped: list[int], exact: bool) -> None:
    assert block_dp._quick_is_exact(quick, dropped) is exact


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=costed_problems())
def test_scores_are_the_scores_one_at_a_time(data) -> None:
    problem, cost = data[:2]
    assignment = tuple(d % len(problem.devices) for d in range(len(problem.nodes)))
    assert scores(problem, assignment, Measure, cost) == {m: score(problem, assignment, m, cost) for m in Measure}
    assert scores(problem, assignment, ["transfer_bytes"]) == {Measure.TRANSFER_BYTES: score(problem, assignment, "transfer_bytes")}


def test_nested_quiet_restores_every_level() -> None:
    logger = logging.getLogger("transformers")
    before = logger.level
    logger.setLevel(logging.INFO)
    try:
        with quiet():
            assert logger.level == logging.ERROR
            with quiet():
                assert logger.level == logging.ERROR
            assert logger.level == logging.ERROR
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)


def test_library_versions_are_a_fresh_dict_each_call() -> None:
    first = library_versions()
    first["torch"] = "changed by a caller"
    assert library_versions()["torch"] != "changed by a caller"
    assert set(library_versions()) == {"layerplan", "torch", "transformers", "accelerate"}
