"""Pure placement solver: integer problem, CP-SAT model and exact chain DP. Never imports torch."""

from layerplan.solver.accounting import DeviceLoad, device_loads
from layerplan.solver.cost import CostModel, DeviceSpeed, NodeWork, Timing, timing
from layerplan.solver.cpsat import least_extra_memory, solution_of, solve
from layerplan.solver.dp import solve_chain_dp
from layerplan.solver.hint import chain_hint
from layerplan.solver.errors import InfeasiblePlanError, InvalidSpecError, LayerplanError, TraceError
from layerplan.solver.goals import Goal, Measure, score
from layerplan.solver.problem import (
    Device,
    DeviceKind,
    Edge,
    Node,
    Objective,
    PlacementProblem,
    Rule,
    Violation,
    evaluate,
    format_bytes,
    violations,
)
from layerplan.solver.solution import Solution, Status

__all__ = [
    "CostModel",
    "Device",
    "DeviceSpeed",
    "DeviceLoad",
    "DeviceKind",
    "Edge",
    "Goal",
    "Measure",
    "InfeasiblePlanError",
    "InvalidSpecError",
    "LayerplanError",
    "Node",
    "NodeWork",
    "Objective",
    "PlacementProblem",
    "Rule",
    "Violation",
    "Solution",
    "Status",
    "Timing",
    "TraceError",
    "chain_hint",
    "device_loads",
    "evaluate",
    "format_bytes",
    "least_extra_memory",
    "solution_of",
    "score",
    "solve",
    "solve_chain_dp",
    "timing",
    "violations",
]
