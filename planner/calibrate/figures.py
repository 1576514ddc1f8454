"""Effective device figures from a measured run: the profile a calibration writes.

Per device that computed (the plan's compute device of each node):

* ``flops_per_s = sum(prefill FLOPs) / sum(prefill seconds)`` over its nodes (the graph's FLOPs:
  ``torch.utils.flop_counter`` formulas; the roofline's compute side, Williams et al. 2009);
* ``mem_bytes_per_s = sum(decode bytes) / sum(decode seconds per step)``, decode bytes being what
  the cost model charges a decode step (weights + KV cache + working set: Pope et al. 2023,
  :mod:`layerplan.planner.hardware.costing`);
* a GPU's ``read_bytes_per_s``: its measured host link.

These are effective figures: they fold launch and Python overheads into the rate, so that the cost
model's ``max(FLOPs / rate, bytes / rate)`` per node reproduces the measured times of this workload.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from layerplan.planner.calibrate.apply import device_type
from layerplan.planner.calibrate.profile import CalibrationProfile, LayerTime, ProfileEntry
from layerplan.planner.calibrate.run import Measurement
from layerplan.planner.output.adapter import Plan

__all__ = ["compute_devices", "measured_profile"]


def _key(name: str) -> int | str:
    return int(name) if name.isdigit() else name


def compute_devices(plan: Plan) -> dict[str, int | str]:
    """Node name -> the device it computes on (an offloaded node: the execution device)."""
    problem = plan.problem
    return {n.name: _key(problem.devices[problem.compute_device(a)].name)
            for n, a in zip(plan.graph.nodes, plan.solution.assignment, strict=True)}


def _ratio(numerator: float, seconds: float) -> float | None:
    return numerator / seconds if numerator > 0 and seconds > 0 else None


def _layer_times(plan: Plan, measured: Measurement, nodes: list[str]) -> dict[str, LayerTime]:
    by_class: dict[str, list[str]] = defaultdict(list)
    classes = {n.name: n.module_class for n in plan.graph.nodes}
    for name in nodes:
        by_class[classes[name]].append(name)
    times = measured.times
    out = {}
    for cls, names in by_class.items():
        prefill = [times.node_prefill_s[n] for n in names if n in times.node_prefill_s]
        decode = [times.node_decode_s[n] for n in names if n in times.node_decode_s]
        out[cls] = LayerTime(prefill_s=sum(prefill) / len(prefill) if prefill else None,
                             decode_s=sum(decode) / len(decode) if decode else None)
    return out


def _entry(plan: Plan, measured: Measurement, device: int | str, nodes: list[str], *,
           reported_names: Mapping[int, str], measured_on: Mapping[str, object]) -> ProfileEntry:
    graph_nodes = {n.name: n for n in plan.graph.nodes}
    times = measured.times
    flops = sum(graph_nodes[n].prefill_flops for n in nodes if n in times.node_prefill_s)
    seconds = sum(times.node_prefill_s.get(n, 0.0) for n in nodes)
    decoded = [n for n in nodes if n in times.node_decode_s]
    moved = sum(graph_nodes[n].size_bytes + graph_nodes[n].kv_bytes + graph_nodes[n].decode_work_bytes for n in decoded)
    step = sum(times.node_decode_s[n] for n in decoded)
    types = plan.spec.devices.types if plan.spec is not None else {}
    return ProfileEntry(
        device_type=device_type(device, types=types, reported_names=reported_names), dtype=plan.graph.dtype,
        flops_per_s=_ratio(flops, seconds), mem_bytes_per_s=_ratio(moved, step),
        read_bytes_per_s=measured.host_link_bytes_per_s.get(device) if isinstance(device, int) else None,
        layer_time_s=_layer_times(plan, measured, nodes), measured_on=measured_on,
    )


def measured_profile(plan: Plan, measured: Measurement, *, reported_names: Mapping[int, str]) -> CalibrationProfile:
    """The profile of ``measured`` (a run of ``plan``): one entry per device that computed.

    Two devices of one type (two identical GPUs) give two entries for one key: the first is kept.
    """
    by_device: dict[int | str, list[str]] = defaultdict(list)
    for node, device in compute_devices(plan).items():
        by_device[device].append(node)
    measured_on = {"model": plan.graph.model, "model_class": plan.graph.model_class,
                   "workload": plan.graph.workload.to_dict()}
    entries: dict[tuple[str, str], ProfileEntry] = {}
    for device, nodes in by_device.items():
        entry = _entry(plan, measured, device, nodes, reported_names=reported_names, measured_on=measured_on)
        entries.setdefault((entry.device_type, entry.dtype), entry)
    return CalibrationProfile(entries=tuple(entries.values()))
