"""layerplan: declarative placement planning for large models.

Declare the model, the devices and the workload (a :class:`PlanSpec`, a TOML file, or keyword
arguments); get a solved, checked accelerate ``device_map``::

    import layerplan

    spec = layerplan.PlanSpec.from_toml("spec.toml")
    plan = layerplan.plan(spec)
    model = AutoModelForCausalLM.from_pretrained(path, **plan.from_pretrained_kwargs())

The packages follow the data flow (``../shared/DESIGN.md``): :mod:`layerplan.planner` (everything
that knows PyTorch and Hugging Face: spec, model, hardware, output, baselines) and
:mod:`layerplan.solver` (the pure integer problem; never imports torch).
"""

from layerplan.planner import (
    InfeasiblePlanError,
    InvalidSpecError,
    LayerGraph,
    LayerplanError,
    Plan,
    TraceError,
    plan,
    plan_graph,
    trace,
)

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
