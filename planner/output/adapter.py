"""Turn a solver :class:`~solver.Solution` into an accelerate ``device_map`` and a :class:`Plan`.

The device_map uses accelerate's value types (``int`` GPU ids, ``"cpu"``, ``"disk"``, ``"mps"``) and is
collapsed to the coarsest prefixes as accelerate's ``clean_device_map`` collapses it (in linear time:
:mod:`layerplan.planner.output.collapse`); keys are then ordered
by execution so that the first accelerator in the map is the one offloaded modules run on
(accelerate ``dispatch_model`` takes ``main_device`` as the first non-cpu/disk value).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from layerplan.planner.graph import LayerGraph
from layerplan.planner.output.collapse import collapse, first_positions
from layerplan.planner.spec import PlanSpec
from layerplan.solver import (
    InvalidSpecError,
    PlacementProblem,
    Solution,
    Timing,
    Violation,
    device_loads,
    format_bytes,
)

__all__ = ["DeviceUsage", "Cut", "Plan", "to_device_map", "build_plan"]

#: ``[model] quantization`` names that transformers can apply at load time, as BitsAndBytesConfig fields.
_BNB_CONFIGS: dict[str, dict[str, Any]] = {
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "nf4-double": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
    "fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
    "int8": {"load_in_8bit": True},
}


def _accelerate_key(name: str) -> int | str:
    return int(name) if name.isdigit() else name


def to_device_map(graph: LayerGraph, problem: PlacementProblem, solution: Solution) -> dict[str, int | str]:
    """``{module name: device}`` covering every node, collapsed to the coarsest prefixes.

    Returns:
        A new dict in execution order (except that, when something is offloaded, an entry of the
        execution device comes first, as accelerate's ``dispatch_model`` takes the first
        accelerator it meets as ``main_device``); ``{"": device}`` when everything shares one device.
    """
    raw = _node_map(graph, [_accelerate_key(problem.devices[d].name) for d in solution.assignment])
    cleaned = collapse(raw)
    ordered = sorted(cleaned, key=first_positions(raw).__getitem__)
    # accelerate's dispatch_model runs offloaded modules on the first accelerator of the map; the
    # solver assumed the problem's execution device: list one of its entries first when it differs.
    execution = _accelerate_key(problem.devices[problem.execution_device].name)
    offloaded = any(problem.compute_device(d) != d for d in solution.assignment)
    accelerators = [k for k in ordered if cleaned[k] not in ("cpu", "disk")]
    if offloaded and accelerators and cleaned[accelerators[0]] != execution:
        first = next(k for k in ordered if cleaned[k] == execution)
        ordered = [first] + [k for k in ordered if k != first]
    return {k: cleaned[k] for k in ordered}


def _node_map(graph: LayerGraph, devices: list[int | str]) -> dict[str, int | str]:
    """``{key: device}`` per node, in execution order. A MoE layer whose experts node
    (:mod:`layerplan.planner.model.experts`) shares its device is one key; one whose experts are
    placed apart is named by its :attr:`~layerplan.planner.graph.GraphNode.parts` and the experts'
    key, as accelerate cannot take a nested map (``tests/test_moe_inline_loading.py``)."""
    layer_of = graph.experts_layers()
    apart = {layer for experts, layer in layer_of.items() if devices[experts] != devices[layer]}
    raw: dict[str, int | str] = {}
    for i, (node, device) in enumerate(zip(graph.nodes, devices, strict=True)):
        if i in apart:
            raw |= dict.fromkeys(node.parts, device)
        elif i not in layer_of or layer_of[i] in apart:  # experts with their layer are under its key
            raw[node.name] = device
    return raw


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceUsage:
    """What one device holds under a plan, in bytes (the accounting of :mod:`layerplan.solver.accounting`).

    Attributes:
        device: accelerate key (``0``, ``"cpu"``, ...).
        cap_bytes: its cap (``max_memory``).
        weights_bytes: weights + buffers stored on it.
        kv_bytes: KV cache of the nodes that compute on it (offloaded ones included on the
            execution device).
        activation_bytes: its largest working set plus the tensors it receives.
        streaming_bytes: on the execution device, the largest offloaded node brought in to run.
        reserve_bytes: its fixed reserve (CUDA context, allocator slack), when it computes.
        nodes: node names stored on it, in execution order.
    """

    device: int | str
    cap_bytes: int
    weights_bytes: int
    kv_bytes: int = 0
    activation_bytes: int = 0
    streaming_bytes: int = 0
    reserve_bytes: int = 0
    nodes: tuple[str, ...] = ()

    @property
    def used_bytes(self) -> int:
        """Everything it holds: weights + KV + activations + streaming + reserve."""
        return (self.weights_bytes + self.kv_bytes + self.activation_bytes + self.streaming_bytes
                + self.reserve_bytes)

    @property
    def free_bytes(self) -> int:
        """``cap_bytes - used_bytes`` (never negative for a solved plan)."""
        return self.cap_bytes - self.used_bytes

    @property
    def utilisation(self) -> float:
        """``used_bytes / cap_bytes`` (0 when the cap is 0)."""
        return self.used_bytes / self.cap_bytes if self.cap_bytes else 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Cut:
    """Tensors crossing a device boundary: ``size_bytes`` per forward pass from ``src`` to ``dst``
    (execution devices), leaving node ``producer`` for node(s) ``consumers`` (several tensors of one
    producer to the same readers, such as rotary ``cos`` and ``sin``, are summed into one cut)."""

    producer: str
    consumers: tuple[str, ...]
    src: int | str
    dst: int | str
    size_bytes: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """A solved placement and everything needed to load with it.

    Attributes:
        graph: the traced layer graph.
        problem: the pure problem that was solved.
        solution: the solver's result (status, objective, bound).
        device_map: accelerate ``device_map`` (module name -> device).
        max_memory: the caps as accelerate takes them (device -> bytes).
        offload_folder: folder for disk-offloaded weights, or ``None``.
        usage: per device, in declaration order.
        cuts: tensors crossing device boundaries.
        trace_time_s: seconds spent building and tracing the meta model.
        strategy: the strategy solved (``"auto"``, ...), or None for a given device_map.
        hardware_notes: assumptions made about the hardware (default device types, disk speed).
        violations: placement rules a *given* device_map breaks besides caps (e.g. a GPU holding
            two separate blocks); always empty for a solved plan.
        spec: the :class:`~layerplan.planner.spec.PlanSpec` the plan was made from (written by
            :meth:`to_dict`, so a plan can be reproduced from its own JSON).
    """

    graph: LayerGraph
    problem: PlacementProblem
    solution: Solution
    device_map: dict[str, int | str]
    max_memory: dict[int | str, int]
    offload_folder: str | None
    usage: tuple[DeviceUsage, ...]
    cuts: tuple[Cut, ...]
    trace_time_s: float = 0.0
    strategy: str | None = None
    hardware_notes: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    spec: PlanSpec | None = None

    @property
    def status(self) -> str:
        return self.solution.status.value

    @property
    def timing(self) -> Timing | None:
        """The cost model's estimate (:class:`solver.Timing`), when hardware was known."""
        return self.solution.timing

    @property
    def fits(self) -> bool:
        """Every device within its cap (always true for a solved plan)."""
        return all(u.free_bytes >= 0 for u in self.usage)

    @property
    def transfer_bytes(self) -> int:
        """Bytes crossing device boundaries per forward pass (the objective)."""
        return self.solution.objective.transfer_bytes

    @property
    def offloaded_bytes(self) -> int:
        """Weight bytes placed on ``cpu`` or ``disk``."""
        return sum(u.weights_bytes for u in self.usage if u.device in ("cpu", "disk"))

    @property
    def hosts(self) -> dict[int | str, str]:
        """Device -> host when the spec declares hosts (``cpu``/``disk`` on the first GPU's host),
        else empty (:mod:`layerplan.planner.hardware.network`)."""
        declared = self.spec.devices.hosts if self.spec is not None else {}
        if not declared:
            return {}
        from layerplan.planner.hardware.network import host_of_devices

        return host_of_devices([u.device for u in self.usage], declared)

    @property
    def multi_host(self) -> bool:
        """The plan's devices are on more than one host: it runs as engine pipeline stages
        (:meth:`export`), not as one process's accelerate ``device_map``."""
        return len(set(self.hosts.values())) > 1

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AutoModel*.from_pretrained`` / ``dispatch_model``:
        ``device_map``, ``max_memory``, ``dtype``, ``offload_folder`` when disk is used, and the
        ``quantization_config`` that loads an unquantized checkpoint as planned when a bitsandbytes
        method was asked for (``[model] quantization`` nf4, nf4-double, fp4, int8). The other asked
        methods need a checkpoint quantized with them (GPTQ/AWQ calibrate; it carries its config).

        Raises:
            InvalidSpecError: the plan spans several hosts (:attr:`multi_host`): an accelerate
                ``device_map`` places modules in one process; export it to an engine instead.
        """
        if self.multi_host:
            hosts = ", ".join(dict.fromkeys(self.hosts.values()))
            raise InvalidSpecError(
                f"this plan spans hosts {hosts}; an accelerate device_map is per process: run it with a pipeline "
                "engine, plan.export('vllm') / 'sglang' (CLI --export vllm)"
            )
        kwargs: dict[str, Any] = {
            "device_map": dict(self.device_map),
            "max_memory": dict(self.max_memory),
            "dtype": self.graph.dtype,
        }
        if self.offload_folder is not None:
            kwargs["offload_folder"] = self.offload_folder
        asked = self.spec.model.quantization if self.spec is not None else None
        if asked in _BNB_CONFIGS:
            from transformers import BitsAndBytesConfig

            fields = dict(_BNB_CONFIGS[asked])
            if fields.get("load_in_4bit"):
                fields["bnb_4bit_compute_dtype"] = self.graph.dtype  # computes in the planned dtype
            kwargs["quantization_config"] = BitsAndBytesConfig(**fields)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``device_map``, ``max_memory``, ``status``, objective, per-device totals."""
        hosts = self.hosts
        return {
            "model": self.graph.model,
            "model_class": self.graph.model_class,
            "dtype": self.graph.dtype,
            "quantization": self.graph.quantization or None,
            "expert_bytes": self.graph.total_expert_bytes,
            "workload": self.graph.workload.to_dict(),
            "status": self.status,
            "solver": self.solution.solver,
            "strategy": self.strategy,
            "objective": {
                "goal": self.solution.goal,
                "headline": self.solution.headline,
                "bound": self.solution.bound,
                "gap": self.solution.gap,
                "offload_cost": self.solution.objective.offload_cost,
                "transfer_bytes": self.solution.objective.transfer_bytes,
                **{k: v for k, v in self.solution.values.items() if k not in ("offload_cost", "transfer_bytes")},
            },
            "estimate": None if self.timing is None else {
                "prefill_s": self.timing.prefill_ns / 1e9,
                "decode_step_s": self.timing.decode_ns / 1e9,
                "per_token_s": self.timing.per_token_s,
                "total_s": self.timing.total_ns / 1e9,
                "compute_s": self.timing.compute_ns / 1e9,
                "transfer_s": self.timing.transfer_ns / 1e9,
                "streaming_s": self.timing.streaming_ns / 1e9,
                "bottleneck_s": self.timing.bottleneck_ns / 1e9,
            },
            "fits": self.fits,
            "violations": [{"rule": v.rule.value, "message": v.message} for v in self.violations],
            "device_map": dict(self.device_map),
            "max_memory": {str(k): v for k, v in self.max_memory.items()},
            "offload_folder": self.offload_folder,
            "devices": [
                {
                    "device": u.device,
                    "cap_bytes": u.cap_bytes,
                    "weights_bytes": u.weights_bytes,
                    "kv_bytes": u.kv_bytes,
                    "activation_bytes": u.activation_bytes,
                    "streaming_bytes": u.streaming_bytes,
                    "reserve_bytes": u.reserve_bytes,
                    "used_bytes": u.used_bytes,
                    "free_bytes": u.free_bytes,
                    "utilisation": round(u.utilisation, 6),
                    "first_node": u.nodes[0] if u.nodes else None,
                    "last_node": u.nodes[-1] if u.nodes else None,
                    "num_nodes": len(u.nodes),
                    **({"host": hosts[u.device]} if hosts else {}),
                }
                for u in self.usage
            ],
            "cuts": [
                {"producer": c.producer, "consumers": list(c.consumers), "src": c.src, "dst": c.dst,
                 "size_bytes": c.size_bytes}
                for c in self.cuts
            ],
            "total_bytes": self.graph.total_bytes,
            "offloaded_bytes": self.offloaded_bytes,
            "timing_s": {"trace": round(self.trace_time_s, 4), "solve": round(self.solution.wall_time_s, 4)},
            "notes": list(self.graph.notes) + list(self.hardware_notes),
            "spec": None if self.spec is None else self.spec.to_dict(),
        }

    def export(self, engine: str) -> Any:
        """The plan as ``engine``'s (``"vllm"``, ``"sglang"``) pipeline settings: an
        :class:`~layerplan.planner.output.export.EngineExport`. Raises InvalidSpecError where the
        engine cannot run this plan (offloaded layers, no single decoder stack)."""
        from layerplan.planner.output.export import export

        return export(self, engine)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def build_plan(
    graph: LayerGraph,
    problem: PlacementProblem,
    solution: Solution,
    *,
    offload_folder: str | None,
    trace_time_s: float = 0.0,
    strategy: str | None = None,
    device_map: dict[str, int | str] | None = None,
    hardware_notes: tuple[str, ...] = (),
    check_disk: bool = True,
    violations: tuple[Violation, ...] = (),
    spec: PlanSpec | None = None,
) -> Plan:
    """Assemble a :class:`Plan` from a solved (or given) problem.

    Args:
        device_map: the map to hand back as is (a given map); default: built from the solution.
        check_disk: require ``offload_folder`` when weights go to ``disk``.

    Raises:
        InvalidSpecError: the plan puts weights on ``disk`` but no ``offload_folder`` was given.
    """
    device_map = dict(device_map) if device_map is not None else to_device_map(graph, problem, solution)
    usage = []
    for d, (device, load) in enumerate(zip(problem.devices, device_loads(problem, solution.assignment))):
        names = tuple(n.name for n, a in zip(graph.nodes, solution.assignment) if a == d)
        usage.append(DeviceUsage(
            device=_accelerate_key(device.name), cap_bytes=device.cap_bytes, weights_bytes=load.weights,
            kv_bytes=load.kv, activation_bytes=load.activations, streaming_bytes=load.streaming,
            reserve_bytes=load.reserve, nodes=names,
        ))
    disk = next((u for u in usage if u.device == "disk" and u.nodes), None)
    if check_disk and disk is not None and offload_folder is None:
        raise InvalidSpecError(
            f"the plan offloads {format_bytes(disk.weights_bytes)} ({len(disk.nodes)} nodes, from "
            f"{disk.nodes[0]!r}) to disk but no offload_folder was given; pass --offload-folder DIR "
            "(offload_folder=...) or raise the cpu/GPU caps"
        )
    cuts = []
    for edge in problem.edges:
        src = problem.compute_device(solution.assignment[edge.producer])
        by_dst: dict[int, list[str]] = {}
        for c in edge.consumers:
            dst = problem.compute_device(solution.assignment[c])
            if dst != src:
                by_dst.setdefault(dst, []).append(problem.nodes[c].name)
        for dst, consumers in by_dst.items():
            cut = Cut(producer=problem.nodes[edge.producer].name, consumers=tuple(consumers),
                      src=_accelerate_key(problem.devices[src].name),
                      dst=_accelerate_key(problem.devices[dst].name), size_bytes=edge.size_bytes)
            same = next((i for i, c in enumerate(cuts) if (c.producer, c.consumers, c.dst) ==
                         (cut.producer, cut.consumers, cut.dst)), None)
            if same is None:
                cuts.append(cut)
            else:  # several tensors of one node to the same readers (rotary cos and sin): one row
                cuts[same] = dataclasses.replace(cuts[same], size_bytes=cuts[same].size_bytes + cut.size_bytes)
    return Plan(
        graph=graph,
        problem=problem,
        solution=solution,
        device_map=device_map,
        max_memory={u.device: u.cap_bytes for u in usage},
        offload_folder=offload_folder,
        usage=tuple(usage),
        cuts=tuple(cuts),
        trace_time_s=trace_time_s,
        strategy=strategy,
        hardware_notes=tuple(hardware_notes),
        violations=tuple(violations),
        spec=spec,
    )
