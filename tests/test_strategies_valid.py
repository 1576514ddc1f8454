"""layerplan.testing's ``problems()`` draws only valid problems: 200 examples here, 10,000 in the
slow profile (``HYPOTHESIS_PROFILE=slow python -m pytest tests/test_strategies_valid.py``, a nightly
run; see the README).

Each drawn problem is checked against the placement rules' preconditions written out here, not
through the constructor that built it, and then rebuilt from its parts (the constructor's own
validation runs again on plain tuples).
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings

from layerplan.solver import DeviceKind, PlacementProblem
from layerplan.testing import problems
from tests.conftest import examples

_KIND_ORDER = {DeviceKind.ACCELERATOR: 0, DeviceKind.CPU: 1, DeviceKind.DISK: 2}


def _preconditions(problem: PlacementProblem) -> None:
    n, k = len(problem.nodes), len(problem.devices)
    assert n >= 1 and k >= 1
    assert len({node.name for node in problem.nodes}) == n
    assert all(min(node.size_bytes, node.kv_bytes, node.work_bytes) >= 0 for node in problem.nodes)
    kinds = [_KIND_ORDER[d.kind] for d in problem.devices]
    assert kinds == sorted(kinds) and kinds.count(1) <= 1 and kinds.count(2) <= 1  # GPUs, then one cpu, one disk
    assert len({d.name for d in problem.devices}) == k and all(d.cap_bytes >= 0 for d in problem.devices)
    for edge in problem.edges:
        assert 0 <= edge.producer < min(edge.consumers) and max(edge.consumers) < n and edge.size_bytes >= 0
    members = [m for group in problem.tied_groups for m in group]
    assert len(members) == len(set(members)) and all(list(g) == sorted(g) and len(g) >= 2 for g in problem.tied_groups)
    pinned = dict(problem.pins)
    assert len(pinned) == len(problem.pins) and all(0 <= node < n and 0 <= d < k for node, d in problem.pins)
    for group in problem.tied_groups:  # a tied group is never pinned to two devices
        assert len({pinned[m] for m in group if m in pinned}) <= 1


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_nodes=40, max_accelerators=8))
def test_generated_problems_are_valid(problem) -> None:
    _preconditions(problem)
    rebuilt = PlacementProblem(
        nodes=tuple(dataclasses.replace(node) for node in problem.nodes),
        edges=tuple(dataclasses.replace(edge) for edge in problem.edges),
        devices=tuple(dataclasses.replace(device) for device in problem.devices),
        tied_groups=tuple(tuple(g) for g in problem.tied_groups), pins=tuple(problem.pins),
        ordered=problem.ordered, low_zero=problem.low_zero,
    )
    assert rebuilt == problem
