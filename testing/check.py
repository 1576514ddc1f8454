"""``check_plan``: a placement checked against every rule, one typed error per broken rule.

The rules are those of :func:`layerplan.solver.violations` (one source: the solver's own property
tests and a user's suite check the same thing): every node on one valid device (coverage), caps
with runtime memory (cap), tied groups on one device (ties), pins (pins), one contiguous block per
accelerator (contiguity), blocks in device order for ordered problems (order), inline-offloadable
nodes computing where their host does (host), offloading only
with the execution device holding a block (execution device), and ``balanced_low_0``'s GPU 0 rule
(low zero).
"""

from __future__ import annotations

from collections.abc import Sequence

from layerplan.solver.problem import PlacementProblem, Rule, Violation, violations
from layerplan.solver.solution import Solution

__all__ = [
    "CapError",
    "ContiguityError",
    "CoverageError",
    "ExecutionDeviceError",
    "HostError",
    "LowZeroError",
    "OrderError",
    "PinsError",
    "PlanCheckError",
    "TiesError",
    "check_plan",
]


class PlanCheckError(AssertionError):
    """A placement breaks a rule. An ``AssertionError``, so test runners report it as a failure.

    Attributes:
        rule: the first broken :class:`layerplan.solver.Rule` (the subclass says which).
        violations: every broken rule, one :class:`layerplan.solver.Violation` each, in rule order.
    """

    rule: Rule

    def __init__(self, found: Sequence[Violation]) -> None:
        self.violations = tuple(found)
        lines = "; ".join(f"{v.rule.value}: {v}" for v in self.violations)
        super().__init__(f"the placement breaks {len(self.violations)} rule(s): {lines}")


class CoverageError(PlanCheckError):
    """A node is unplaced, placed twice, or on a device index the problem does not have."""

    rule = Rule.COVERAGE


class CapError(PlanCheckError):
    """A device holds more than its cap (weights, KV cache, activations, streaming, reserve)."""

    rule = Rule.CAP


class TiesError(PlanCheckError):
    """A tied group (a tied ``lm_head`` and its embedding) is split across devices."""

    rule = Rule.TIES


class PinsError(PlanCheckError):
    """A pinned node is not on its pinned device."""

    rule = Rule.PINS


class ContiguityError(PlanCheckError):
    """An accelerator holds more than one contiguous block of layers."""

    rule = Rule.CONTIGUITY


class OrderError(PlanCheckError):
    """An ordered problem's accelerator blocks are not in device order."""

    rule = Rule.ORDER


class HostError(PlanCheckError):
    """An inline-offloadable node (MoE experts) computes elsewhere than its host, the node before
    it (its layer): the layer's forward would mix devices."""

    rule = Rule.HOST


class ExecutionDeviceError(PlanCheckError):
    """Nodes are offloaded but the execution device (first accelerator) stores none: accelerate
    would run them elsewhere than the plan assumed."""

    rule = Rule.EXECUTION_DEVICE


class LowZeroError(PlanCheckError):
    """``balanced_low_0``: GPU 0 stores more than the lightest other GPU."""

    rule = Rule.LOW_ZERO


_ERRORS: dict[Rule, type[PlanCheckError]] = {
    cls.rule: cls for cls in (CoverageError, CapError, TiesError, PinsError, ContiguityError, OrderError,
                              HostError, ExecutionDeviceError, LowZeroError)
}


def check_plan(placement: Solution | Sequence[int] | object, problem: PlacementProblem | None = None) -> None:
    """Check a placement of ``problem`` against every rule; return None when it keeps them all.

    Args:
        placement: a :class:`layerplan.solver.Solution` (from ``layerplan.solve``), a
            :class:`layerplan.Plan` (from ``layerplan.plan``; it carries its problem), or a device
            index per node.
        problem: the problem placed; may be left out for a ``Plan``.

    Raises:
        PlanCheckError: the subclass of the first broken rule (:class:`CapError`, ...), listing
            every broken rule in ``violations``.
        TypeError: ``placement`` or ``problem`` is not one of the kinds above.
    """
    if problem is None:
        problem = getattr(placement, "problem", None)
    if not isinstance(problem, PlacementProblem):
        raise TypeError(f"problem={problem!r}; expected a layerplan.solver.PlacementProblem "
                        "(pass it, or give a layerplan.Plan, which carries its own)")
    assignment = _assignment(placement)
    found = violations(problem, assignment)
    if found:
        order = list(_ERRORS)
        first = min(found, key=lambda v: order.index(v.rule)).rule
        raise _ERRORS[first](sorted(found, key=lambda v: order.index(v.rule)))


def _assignment(placement: object) -> tuple[int, ...]:
    solution = getattr(placement, "solution", placement)  # a Plan carries its Solution
    if isinstance(solution, Solution):
        return solution.assignment
    if isinstance(solution, Sequence) and not isinstance(solution, str | bytes):
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in solution):
            raise TypeError("placement: expected a device index (int) per node")
        return tuple(solution)
    raise TypeError(f"placement={type(placement).__name__}; expected a layerplan Solution, Plan, "
                    "or a device index per node")
