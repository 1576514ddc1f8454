"""What the user declares -- model, devices, workload, solve options, output -- as one typed
:class:`PlanSpec`, parsed and validated before any model is built. Nothing here imports torch.

Names are resolved on first use (PEP 562): :mod:`.sizes` sits below both this package's sections
and :mod:`layerplan.planner.hardware` (which the sections use to check device types and rates), so
importing it must not import the sections first.
"""

from layerplan.planner._lazy import lazy_exports

_PUBLIC = {
    "PlanSpec": "layerplan.planner.spec.plan_spec",
    "DevicesSpec": "layerplan.planner.spec.sections",
    "ModelSpec": "layerplan.planner.spec.sections",
    "OutputSpec": "layerplan.planner.spec.sections",
    "Phase": "layerplan.planner.spec.sections",
    "SolveSpec": "layerplan.planner.spec.sections",
    "WorkloadSpec": "layerplan.planner.spec.sections",
    "Strategy": "layerplan.planner.spec.strategies",
    "DEFAULT_RESERVE_BYTES": "layerplan.planner.spec.sizes",
    "DeviceCap": "layerplan.planner.spec.sizes",
    "build_devices": "layerplan.planner.spec.sizes",
    "dtype_name": "layerplan.planner.spec.sizes",
    "parse_device": "layerplan.planner.spec.sizes",
    "parse_dtype": "layerplan.planner.spec.sizes",
    "parse_max_memory": "layerplan.planner.spec.sizes",
    "parse_reserve": "layerplan.planner.spec.sizes",
    "parse_size": "layerplan.planner.spec.sizes",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
