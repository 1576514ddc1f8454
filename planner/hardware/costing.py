"""Build the solver's :class:`~solver.CostModel` from a traced graph and the declared hardware.

Per node (see :mod:`layerplan.solver.cost` for how they are combined):

* FLOPs: measured per node on the meta device with ``torch.utils.flop_counter``'s formulas
  (:class:`layerplan.planner.graph.GraphNode` ``prefill_flops`` / ``decode_flops``);
* bytes moved through device memory, the roofline's memory side (Pope et al., "Efficiently Scaling
  Transformer Inference", 2023, section 2: decode reads every weight and the KV cache once per
  token): prefill = weights + working set; decode = weights + KV cache + working set;
* per edge, the bytes crossing in prefill (measured at ``prompt_len`` tokens) and in one decode
  step (:class:`layerplan.planner.graph.GraphEdge` ``decode_size_bytes``).

Weights stored on ``disk`` reach the execution device through the disk and then the host link, in
series (accelerate's disk offload reads a memory-mapped file on the CPU, then copies it over):
``1 / (1 / disk_read + 1 / host_link)``.

Steps (the workload's phase): ``generate`` = one prefill + ``max_new_tokens`` decode steps;
``prefill`` = one prefill; ``decode`` = ``max_new_tokens`` decode steps; a model that does not
generate (an encoder) = one forward.
"""

from __future__ import annotations

from layerplan.planner.graph import LayerGraph
from layerplan.planner.spec.sections import Phase
from layerplan.planner.hardware.resolve import HardwareSpec
from layerplan.solver import CostModel, DeviceSpeed, NodeWork, PlacementProblem

__all__ = ["cost_model"]


def _device_key(name: str) -> int | str:
    return int(name) if name.isdigit() else name


def cost_model(graph: LayerGraph, problem: PlacementProblem, hardware: HardwareSpec) -> CostModel:
    """The cost model of ``graph`` on ``hardware``, for ``problem`` (built from the same graph).

    Args:
        graph: the traced graph (nodes in the order of ``problem.nodes``).
        problem: its placement problem (devices named by accelerate key).
        hardware: speeds and links of every device in ``problem.devices``
            (:func:`layerplan.planner.hardware.presets.build_hardware`).

    Returns:
        A :class:`solver.CostModel` with times in the units of :mod:`layerplan.solver.cost`.
    """
    keys = [_device_key(d.name) for d in problem.devices]
    speeds = []
    for key in keys:
        device = hardware.device(key)
        read = device.read_bytes_per_s
        if key == "disk" and read > 0 and hardware.host_link_bytes_per_s > 0:
            read = 1.0 / (1.0 / read + 1.0 / hardware.host_link_bytes_per_s)
        speeds.append(DeviceSpeed(flops_per_s=device.flops_per_s, mem_bytes_per_s=device.mem_bytes_per_s,
                                  read_bytes_per_s=read))
    links = tuple(tuple(hardware.link(a, b) for b in keys) for a in keys)
    latencies = tuple(tuple(hardware.latency(a, b) for b in keys) for a in keys) if hardware.multi_host else ()
    work = tuple(
        NodeWork(
            prefill_flops=n.prefill_flops,
            decode_flops=n.decode_flops,
            prefill_bytes=n.size_bytes + n.prefill_work_bytes,
            decode_bytes=n.size_bytes + n.kv_bytes + n.decode_work_bytes,
        )
        for n in graph.nodes
    )
    new_tokens, phase = graph.workload.max_new_tokens, graph.workload.phase
    if new_tokens == 0:
        prefill_steps, decode_steps = 1, 0
    elif phase is Phase.PREFILL:
        prefill_steps, decode_steps = 1, 0
    elif phase is Phase.DECODE:
        prefill_steps, decode_steps = 0, new_tokens
    else:
        prefill_steps, decode_steps = 1, new_tokens
    return CostModel(
        speeds=tuple(speeds),
        link_bytes_per_s=links,
        link_latency_s=hardware.link_latency_s,
        pair_latency_s=latencies,
        work=work,
        edge_decode_bytes=tuple(e.decode_size_bytes for e in graph.edges),
        prefill_steps=prefill_steps,
        decode_steps=decode_steps,
    )
