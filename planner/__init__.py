"""layerplan's planner: everything that knows PyTorch and Hugging Face.

Public surface: :func:`plan` (trace + solve), :func:`trace`, :func:`plan_graph`, the :class:`Plan`
and :class:`LayerGraph` data, and the error hierarchy.
"""

from layerplan.planner.output.adapter import Plan
from layerplan.planner.api import plan, plan_graph, trace
from layerplan.planner.graph import LayerGraph
from layerplan.solver.errors import InfeasiblePlanError, InvalidSpecError, LayerplanError, TraceError

__all__ = [
    "InfeasiblePlanError",
    "InvalidSpecError",
    "LayerGraph",
    "LayerplanError",
    "Plan",
    "TraceError",
    "plan",
    "plan_graph",
    "trace",
]
