"""What the user declares: sizes and devices, the workload, the strategy -- parsed and validated
before any model is built."""

from layerplan.planner.spec.sizes import (
    DEFAULT_RESERVE_BYTES,
    DeviceCap,
    build_devices,
    parse_device,
    parse_dtype,
    parse_max_memory,
    parse_reserve,
    parse_size,
)
from layerplan.planner.spec.strategies import Strategy
from layerplan.planner.spec.workload import Phase, Workload

__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "DeviceCap",
    "Phase",
    "Strategy",
    "Workload",
    "build_devices",
    "parse_device",
    "parse_dtype",
    "parse_max_memory",
    "parse_reserve",
    "parse_size",
]
