"""Hardware for the cost model, by concern: :mod:`.presets` (published figures with sources: data),
:mod:`.parsing` (what the user writes: bandwidths, FLOP/s, device types, links),
:mod:`.resolve` (declared devices -> one :class:`HardwareSpec`: pure), :mod:`.detect` (the only
code that probes this machine) and :mod:`.costing` (graph + hardware -> the solver's cost model)."""

from layerplan.planner.hardware.detect import detect_device_names, detect_max_memory
from layerplan.planner.hardware.parsing import parse_bandwidth, parse_device_types, parse_flops, parse_links
from layerplan.planner.hardware.presets import (
    ACCELERATORS,
    DEFAULT_ACCELERATOR,
    DEFAULT_DISK,
    DEFAULT_HOST_LINK,
    DISKS,
    FLOPS_DTYPES,
    HOST_CPU,
    HOST_LINKS,
    NVLINK_LATENCY_S,
    PCIE_LATENCY_S,
    AcceleratorPreset,
    BandwidthPreset,
    HostCpuPreset,
    lookup_accelerator,
    preset_for_device_name,
)
from layerplan.planner.hardware.resolve import DeviceHardware, HardwareSpec, build_hardware

__all__ = [
    "ACCELERATORS",
    "DEFAULT_ACCELERATOR",
    "DEFAULT_DISK",
    "DEFAULT_HOST_LINK",
    "DISKS",
    "FLOPS_DTYPES",
    "HOST_CPU",
    "HOST_LINKS",
    "NVLINK_LATENCY_S",
    "PCIE_LATENCY_S",
    "AcceleratorPreset",
    "BandwidthPreset",
    "DeviceHardware",
    "HardwareSpec",
    "HostCpuPreset",
    "build_hardware",
    "detect_device_names",
    "detect_max_memory",
    "lookup_accelerator",
    "parse_bandwidth",
    "parse_device_types",
    "parse_flops",
    "parse_links",
    "preset_for_device_name",
]
