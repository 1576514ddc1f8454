"""Typed solver results."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from solver.problem import Objective, PlacementProblem

__all__ = ["Status", "Solution"]


class Status(enum.Enum):
    """How good a returned placement is known to be.

    Infeasibility is not a status: it is raised as :class:`solver.errors.InfeasiblePlanError`.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"


@dataclass(frozen=True, kw_only=True, slots=True)
class Solution:
    """A placement and what is proven about it.

    Attributes:
        assignment: device index per node, in node order (length = number of nodes).
        status: OPTIMAL (proven) or FEASIBLE (time limit hit; see ``bound`` and ``gap``).
        objective: value of the placement (see :mod:`solver.problem`).
        bound: proven lower bound on ``objective.transfer_bytes`` given its offload cost; equals it
            when OPTIMAL.
        wall_time_s: solver wall time in seconds.
        solver: which algorithm produced it (``"cp-sat"`` or ``"dp"``).
    """

    assignment: tuple[int, ...]
    status: Status
    objective: Objective
    bound: int
    wall_time_s: float
    solver: str

    @property
    def gap(self) -> float:
        """Relative gap ``(objective - bound) / objective`` on transfer bytes; 0.0 when proven."""
        value = self.objective.transfer_bytes
        return 0.0 if value == 0 else (value - self.bound) / value

    def device_of(self, problem: PlacementProblem, node: int) -> str:
        """Name of the device node ``node`` is placed on."""
        return problem.devices[self.assignment[node]].name
