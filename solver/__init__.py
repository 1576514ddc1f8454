"""Pure placement solver: integer problem, CP-SAT model and exact chain DP. Never imports torch."""

from solver.accounting import DeviceLoad, device_loads
from solver.cpsat import solve
from solver.dp import chain_hint, solve_chain_dp
from solver.errors import InfeasiblePlanError, InvalidSpecError, LayerplanError, TraceError
from solver.problem import (
    Device,
    DeviceKind,
    Edge,
    Node,
    Objective,
    PlacementProblem,
    evaluate,
    format_bytes,
    violations,
)
from solver.solution import Solution, Status

__all__ = [
    "Device",
    "DeviceLoad",
    "DeviceKind",
    "Edge",
    "InfeasiblePlanError",
    "InvalidSpecError",
    "LayerplanError",
    "Node",
    "Objective",
    "PlacementProblem",
    "Solution",
    "Status",
    "TraceError",
    "chain_hint",
    "device_loads",
    "evaluate",
    "format_bytes",
    "solve",
    "solve_chain_dp",
    "violations",
]
