"""A solved placement as the user gets it: the accelerate device_map (adapter, mapping) and the report."""

from layerplan.planner.output.adapter import DeviceUsage, Plan, build_plan

__all__ = ["DeviceUsage", "Plan", "build_plan"]
