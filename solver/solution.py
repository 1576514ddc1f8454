"""Typed solver results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from layerplan.solver.cost import Timing
from layerplan.solver.goals import Goal
from layerplan.solver.problem import Objective, PlacementProblem

__all__ = ["Status", "Solution"]


class Status(enum.Enum):
    """How good a returned placement is known to be.

    Infeasibility is not a status: it is raised as :class:`layerplan.solver.errors.InfeasiblePlanError`.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    #: Not solved: a placement given by the user (or another tool), evaluated as is.
    GIVEN = "given"


@dataclass(frozen=True, kw_only=True, slots=True)
class Solution:
    """A placement and what is proven about it.

    Attributes:
        assignment: device index per node, in node order (length = number of nodes).
        status: OPTIMAL (proven) or FEASIBLE (time limit hit; see ``bound`` and ``gap``).
        objective: offload cost and transfer bytes of the placement (see :mod:`layerplan.solver.problem`).
        bound: proven lower bound on the goal's headline measure (:attr:`headline`) given the
            measures before it; equals its value when OPTIMAL.
        wall_time_s: solver wall time in seconds.
        solver: which algorithm produced it (``"cp-sat"`` or ``"dp"``).
        goal: the objective solved for (:class:`layerplan.solver.goals.Goal` value).
        values: measure name -> value of the placement (every measure of the goal, plus offload
            cost, transfer bytes and max utilisation; time measures when a cost model was given).
        timing: the cost model's estimate of the placement, when a cost model was given.
    """

    assignment: tuple[int, ...]
    status: Status
    objective: Objective
    bound: int
    wall_time_s: float
    solver: str
    goal: str = Goal.TRANSFERS.value
    values: Mapping[str, int] = field(default_factory=dict)
    timing: Timing | None = None

    @property
    def headline(self) -> str:
        """The measure :attr:`bound` and :attr:`gap` refer to (e.g. ``"transfer_bytes"``)."""
        return Goal(self.goal).headline

    @property
    def headline_value(self) -> int:
        """The placement's value of :attr:`headline`."""
        if self.headline in self.values:
            return self.values[self.headline]
        return getattr(self.objective, self.headline)

    @property
    def gap(self) -> float:
        """Relative gap ``(value - bound) / value`` on the headline measure; 0.0 when proven."""
        value = self.headline_value
        return 0.0 if value == 0 else (value - self.bound) / value

    def device_of(self, problem: PlacementProblem, node: int) -> str:
        """Name of the device node ``node`` is placed on."""
        return problem.devices[self.assignment[node]].name
