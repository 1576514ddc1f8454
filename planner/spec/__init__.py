"""What the user declares -- model, devices, workload, solve options, output -- as one typed
:class:`PlanSpec`, parsed and validated before any model is built. Nothing here imports torch."""

from layerplan.planner.spec.plan_spec import PlanSpec
from layerplan.planner.spec.sections import DevicesSpec, ModelSpec, OutputSpec, Phase, SolveSpec, WorkloadSpec
from layerplan.planner.spec.sizes import (
    DEFAULT_RESERVE_BYTES,
    DeviceCap,
    build_devices,
    dtype_name,
    parse_device,
    parse_dtype,
    parse_max_memory,
    parse_reserve,
    parse_size,
)
from layerplan.planner.spec.strategies import Strategy

__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "DeviceCap",
    "DevicesSpec",
    "ModelSpec",
    "OutputSpec",
    "Phase",
    "PlanSpec",
    "SolveSpec",
    "Strategy",
    "WorkloadSpec",
    "build_devices",
    "dtype_name",
    "parse_device",
    "parse_dtype",
    "parse_max_memory",
    "parse_reserve",
    "parse_size",
]
