"""The library entry points: :func:`trace` a model into a LayerGraph, :func:`plan` a placement."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from accelerate.utils import check_device_map
from torch import nn

from layerplan.planner.output.adapter import Plan, build_plan
from layerplan.planner.hardware.costing import cost_model
from layerplan.planner.graph import LayerGraph
from layerplan.planner.hardware import HardwareSpec, build_hardware, detect_max_memory, lookup_accelerator
from layerplan.planner.output.mapping import is_full, load_device_map, node_devices
from layerplan.planner.model.measure import generates
from layerplan.planner.model.source import resolve_source
from layerplan.planner.spec.sizes import DeviceCap, build_devices, parse_device, parse_dtype
from layerplan.planner.spec.strategies import Strategy
from layerplan.planner.model.trace import trace_model
from layerplan.planner.spec.workload import Phase, Workload
from layerplan.solver import (
    Goal,
    InfeasiblePlanError,
    InvalidSpecError,
    LayerplanError,
    PlacementProblem,
    Solution,
    Status,
    evaluate,
    format_bytes,
    score,
    solve,
    timing,
    violations,
)

__all__ = ["trace", "plan", "plan_graph", "evaluate_map", "resolve_max_memory"]

ModelLike = str | os.PathLike | nn.Module | LayerGraph


def _default_dtype(config) -> torch.dtype:  # noqa: ANN001
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str | torch.dtype):
        try:
            return parse_dtype(value)
        except InvalidSpecError:
            pass
    return torch.float32


def _model_context(config) -> int | None:  # noqa: ANN001
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def trace(
    model: str | os.PathLike | nn.Module,
    *,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 1,
    seq_len: int | None = None,
    prompt_len: int | None = None,
    max_new_tokens: int | None = None,
    kv_dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    phase: str | Phase = Phase.GENERATE,
    prefill_logits: bool = False,
    no_split_module_classes: tuple[str, ...] = (),
) -> tuple[LayerGraph, nn.Module]:
    """Build ``model`` on the meta device and trace it into a :class:`LayerGraph` at a workload.

    Args:
        model: catalog name, directory holding ``config.json``, path to a ``config.json``, Hub id
            (local cache only) or an ``nn.Module`` (not modified).
        dtype: weight and activation dtype; default the checkpoint's published dtype, else float32.
        batch_size: sequences per forward pass.
        seq_len: total context in tokens (prompt + new tokens); default the model's context capped
            at 4096 (:meth:`Workload.from_lengths` says how the rest is filled in).
        prompt_len: prompt tokens (prefill length).
        max_new_tokens: generated tokens (decode steps).
        kv_dtype: KV-cache dtype; default ``dtype``.
        attn_implementation: ``"sdpa"`` or ``"eager"``; default what transformers picks for the model
            (sdpa where supported).
        phase: ``"prefill"``, ``"decode"`` or ``"generate"`` (both; default).
        prefill_logits: size prefill logits for every prompt position, not only the last.
        no_split_module_classes: classes to keep whole in addition to the model's ``_no_split_modules``.

    Returns:
        ``(graph, meta_model)``; the meta model is what :func:`accelerate.utils.check_device_map`
        is run against.

    Raises:
        InvalidSpecError: unknown model, bad dtype or workload.
        TraceError: the model cannot be built on meta.
    """
    source = resolve_source(model)
    config = source.config
    torch_dtype = parse_dtype(dtype) if dtype is not None else _default_dtype(config)
    meta_model = source.meta_model(attn_implementation=attn_implementation)
    chosen = getattr(getattr(meta_model, "config", None), "_attn_implementation", None)
    if max_new_tokens is None and not generates(meta_model):
        max_new_tokens = 0  # an encoder (BERT, MiniLM) runs one forward: the whole context is prompt
    workload = Workload.from_lengths(
        model_context=_model_context(config),
        seq_len=seq_len,
        prompt_len=prompt_len,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        dtype=torch_dtype,
        kv_dtype=parse_dtype(kv_dtype) if kv_dtype is not None else None,
        attn_implementation=attn_implementation or (chosen if chosen in ("sdpa", "eager") else "sdpa"),
        phase=phase,
        prefill_logits=prefill_logits,
    )
    owned = source.module is None or meta_model is not source.module
    if owned and torch_dtype.is_floating_point:
        meta_model = meta_model.to(torch_dtype)
    graph = trace_model(
        meta_model,
        name=source.name,
        workload=workload,
        no_split_module_classes=tuple(no_split_module_classes),
        allow_cast=owned,
    )
    return graph, meta_model


def resolve_max_memory(
    max_memory: Mapping[int | str, int | str] | None,
    *,
    device_types: Mapping[int | str, str] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> dict[int | str, int | str]:
    """The caps to plan with: ``max_memory`` as given, or detected on this machine when None.

    Detection is accelerate's ``get_max_memory`` (free memory of each visible GPU, available RAM
    for ``"cpu"``) plus the free space of ``offload_folder`` for ``"disk"``
    (:func:`layerplan.planner.hardware.presets.detect_max_memory`); a GPU named in ``device_types`` that is not
    visible gets its preset's memory, so a machine without GPUs can plan for declared ones.
    """
    if max_memory is not None:
        return dict(max_memory)
    detected: dict[int | str, int | str] = dict(detect_max_memory(offload_folder=offload_folder))
    for key, name in (device_types or {}).items():
        gpu = parse_device(key)
        if gpu not in detected:
            detected[gpu] = lookup_accelerator(name).memory_bytes
    return detected


def _declared(
    graph: LayerGraph,
    *,
    max_memory: Mapping[int | str, int | str] | None,
    reserve: Mapping[int | str, int | str] | int | str | None,
    device_types: Mapping[int | str, str] | None,
    hardware: Mapping[str, Any] | None,
    offload_folder: str | os.PathLike | None,
    extra_devices: tuple[int | str, ...] = (),
) -> tuple[tuple[DeviceCap, ...], HardwareSpec]:
    """Devices (caps, reserves) and their hardware; ``extra_devices`` join with a cap of 0."""
    caps = resolve_max_memory(max_memory, device_types=device_types, offload_folder=offload_folder)
    for key in extra_devices:
        if key not in {parse_device(k) for k in caps}:
            caps[key] = 0
    devices: tuple[DeviceCap, ...] = build_devices(caps, reserve)
    spec = build_hardware([d.key for d in devices], dtype=graph.dtype, device_types=device_types,
                          **dict(hardware or {}))
    return devices, spec


def _pin_indices(graph: LayerGraph, pins: Mapping[str, int | str], keys: list[int | str]) -> dict[str, int]:
    """Node name -> device index for every node a pin (or a partial device_map key) covers."""
    out: dict[str, int] = {}
    for node, device in node_devices(graph, pins).items():
        if device not in keys:
            raise InvalidSpecError(
                f"the device_map/pins put {node!r} on device {device!r}, which is not in max_memory "
                f"({', '.join(map(str, keys))}); add it to max_memory or use a declared device"
            )
        out[node] = keys.index(device)
    return out


def _as_map(device_map: Mapping[str, int | str] | str | os.PathLike | None) -> dict[str, int | str] | None:
    if device_map is None:
        return None
    if isinstance(device_map, (str, os.PathLike)):
        return load_device_map(device_map)
    return dict(device_map)


def plan_graph(
    graph: LayerGraph,
    *,
    max_memory: Mapping[int | str, int | str] | None = None,
    strategy: Strategy | str = Strategy.AUTO,
    objective: Goal | str | None = None,
    device_map: Mapping[str, int | str] | str | os.PathLike | None = None,
    pins: Mapping[str, int | str] | None = None,
    device_types: Mapping[int | str, str] | None = None,
    hardware: Mapping[str, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    reserve: Mapping[int | str, int | str] | int | str | None = None,
    time_limit_s: float = 30.0,
) -> Plan:
    """Solve the placement of an already traced ``graph``.

    Args:
        graph: from :func:`trace` or :meth:`LayerGraph.from_json`.
        max_memory: device -> cap (``{0: "40GiB", 1: "40GiB", "cpu": "200GiB"}``), accelerate's
            keys; None detects them (:func:`resolve_max_memory`).
        strategy: ``"auto"``, ``"balanced"``, ``"balanced_low_0"`` or ``"sequential"``
            (:mod:`layerplan.planner.spec.strategies`).
        objective: ``"latency"``, ``"throughput"``, ``"balanced"`` or ``"transfers"``
            (:class:`solver.Goal`); default: the strategy's.
        device_map: a dict or a JSON file of module -> device. A map covering every node is
            evaluated and returned unchanged (raising if it does not fit); a partial one pins the
            modules it names (a prefix such as ``"model.layers"`` pins every node under it).
        pins: more module -> device pins, same rules as a partial ``device_map``.
        device_types: accelerator key -> preset name (``{0: "h100-sxm"}``), for the cost model
            (:mod:`layerplan.planner.hardware.presets`).
        hardware: further :func:`layerplan.planner.hardware.presets.build_hardware` options: ``interconnect``,
            ``links``, ``host_link``, ``disk_read``, ``overrides``.
        offload_folder: where ``from_pretrained`` writes disk-offloaded weights; required when the
            plan uses ``"disk"``.
        reserve: bytes kept free on each device that computes (CUDA context, allocator slack):
            None gives every accelerator ``spec.DEFAULT_RESERVE_BYTES`` (1 GiB) and cpu/disk 0;
            one size applies to every accelerator; a mapping sets devices one by one.
        time_limit_s: CP-SAT wall-clock limit in seconds; past it the best plan is returned as
            ``feasible`` with its proven bound.

    Each device that computes is charged, besides the weights stored on it, the KV cache of the
    nodes that run on it, its largest working set, the tensors it receives, the streaming buffer
    for offloaded nodes (execution device) and its reserve (:mod:`layerplan.solver.accounting`).

    Raises:
        InvalidSpecError: bad device, size, pin, strategy, objective or device type; disk used
            without ``offload_folder``.
        InfeasiblePlanError: the caps cannot hold the model; the message says how many bytes are
            missing, the least extra memory per device that makes it fit and, when no ``cpu`` was
            declared, whether offloading to it would.
    """
    strategy = Strategy.parse(strategy)
    goal = Goal.parse(objective) if objective is not None else strategy.default_goal
    given = _as_map(device_map)
    if given is not None and is_full(graph, given):
        if pins:
            raise InvalidSpecError("a full device_map places every module already; drop the pins")
        result = evaluate_map(graph, given, max_memory=max_memory, device_types=device_types, hardware=hardware,
                              offload_folder=offload_folder, reserve=reserve)
        over = [u for u in result.usage if u.free_bytes < 0]
        if over or result.violations:
            problems = [f"device {u.device!r} over its cap by {format_bytes(-u.free_bytes)}" for u in over]
            raise InfeasiblePlanError(
                "the given device_map does not fit: " + "; ".join(problems + list(result.violations))
                + "; run `layerplan evaluate` for the breakdown, or give a partial map to solve the rest",
                missing_bytes=sum(-u.free_bytes for u in over),
            )
        return result
    devices, spec = _declared(graph, max_memory=max_memory, reserve=reserve, device_types=device_types,
                              hardware=hardware, offload_folder=offload_folder)
    keys = [d.key for d in devices]
    pin_index = _pin_indices(graph, {**(given or {}), **dict(pins or {})}, keys)
    problem = dataclasses.replace(
        graph.to_problem(devices=[d.to_solver() for d in devices], pins=pin_index, ordered=strategy.ordered),
        low_zero=strategy.low_zero,
    )
    cost = cost_model(graph, problem, spec)
    try:
        solution = solve(problem, goal=goal, cost=cost, time_limit_s=time_limit_s)
    except InfeasiblePlanError as exc:
        raise _with_offload_hint(exc, graph, devices, spec, problem, goal, time_limit_s) from None
    return build_plan(
        graph, problem, solution, offload_folder=os.fspath(offload_folder) if offload_folder else None,
        strategy=strategy.value, hardware_notes=spec.notes,
    )


def _with_offload_hint(
    exc: InfeasiblePlanError,
    graph: LayerGraph,
    devices: tuple[DeviceCap, ...],
    spec: HardwareSpec,
    problem: PlacementProblem,
    goal: Goal,
    time_limit_s: float,
) -> InfeasiblePlanError:
    """``exc``, plus whether offloading to host RAM would make it fit and at what estimated cost
    (only when no ``cpu`` was declared: with one, the solver already tried)."""
    if any(d.key == "cpu" for d in devices) or not problem.accelerators:
        return exc
    ram = detect_max_memory().get("cpu", 0)
    if ram <= 0:
        return exc
    with_cpu = tuple(devices) + (DeviceCap(key="cpu", cap_bytes=ram),)
    try:
        cpu_spec = build_hardware([d.key for d in with_cpu], dtype=graph.dtype,
                                  device_types={d.key: spec.device(d.key).preset for d in devices
                                                if d.key not in ("cpu", "disk")})
        cpu_problem = dataclasses.replace(problem, devices=tuple(d.to_solver() for d in with_cpu))
        cost = cost_model(graph, cpu_problem, cpu_spec)
        solution = solve(cpu_problem, goal=goal, cost=cost, time_limit_s=min(time_limit_s, 10.0), explain=False)
    except LayerplanError:
        return InfeasiblePlanError(f"{exc}; offloading to this machine's RAM ({format_bytes(ram)}) would not "
                                   "make it fit either", missing_bytes=exc.missing_bytes, node=exc.node,
                                   extra_bytes=exc.extra_bytes)
    cpu_index = len(with_cpu) - 1
    offloaded = sum(n.size_bytes for n, d in zip(cpu_problem.nodes, solution.assignment) if d == cpu_index)
    assert solution.timing is not None
    return InfeasiblePlanError(
        f"{exc}; or add cpu: offloading {format_bytes(offloaded)} to host RAM fits, at an estimated "
        f"{solution.timing.per_token_s * 1e3:.1f} ms per token (--max-memory ... cpu=SIZE)",
        missing_bytes=exc.missing_bytes, node=exc.node, extra_bytes=exc.extra_bytes,
    )


def evaluate_map(
    graph: LayerGraph,
    device_map: Mapping[str, int | str] | str | os.PathLike,
    *,
    max_memory: Mapping[int | str, int | str] | None = None,
    device_types: Mapping[int | str, str] | None = None,
    hardware: Mapping[str, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    reserve: Mapping[int | str, int | str] | int | str | None = None,
    solver_name: str = "given",
) -> Plan:
    """Evaluate a full ``device_map`` (dict or JSON file) under layerplan's accounting, unchanged.

    Nothing is solved: the plan's ``device_map`` is the given one, its usage may exceed caps
    (``DeviceUsage.free_bytes < 0``) and ``Plan.violations`` lists every rule it breaks. A device
    the map uses but ``max_memory`` does not declare counts with a cap of 0.

    Raises:
        InvalidSpecError: the map names an unknown module, does not cover every node, or splits a
            node layerplan keeps whole; bad caps or hardware.
    """
    given = _as_map(device_map)
    assert given is not None
    placed = node_devices(graph, given)
    missing = [n.name for n in graph.nodes if n.name not in placed]
    if missing:
        raise InvalidSpecError(
            f"the device_map does not place {len(missing)} node(s), e.g. {missing[0]!r}; give a full map "
            "to evaluate, or plan with it as a partial map (`layerplan plan --device-map`)"
        )
    used = tuple(dict.fromkeys(placed.values()))
    devices, spec = _declared(graph, max_memory=max_memory, reserve=reserve, device_types=device_types,
                              hardware=hardware, offload_folder=offload_folder, extra_devices=used)
    # accelerate's dispatch_model runs offloaded modules on the first accelerator of the map (on
    # the cpu when the map has none): list that one first, and leave the others out when none is used.
    accelerators = [k for k in used if k not in ("cpu", "disk")]
    devices = tuple(sorted(
        (d for d in devices if d.key in ("cpu", "disk") or accelerators),
        key=lambda d: 0 if accelerators and d.key == accelerators[0] else 1,
    ))
    keys = [d.key for d in devices]
    problem = graph.to_problem(devices=[d.to_solver() for d in devices], ordered=False)
    assignment = tuple(keys.index(placed[n.name]) for n in graph.nodes)
    cost = cost_model(graph, problem, spec)
    values = {m: score(problem, assignment, m, cost) for m in
              ("offload_cost", "transfer_bytes", "max_utilisation", "time_ns", "bottleneck_ns")}
    solution = Solution(
        assignment=assignment, status=Status.GIVEN, objective=evaluate(problem, assignment),
        bound=0, wall_time_s=0.0, solver=solver_name, goal=Goal.LATENCY.value, values=values,
        timing=timing(problem, cost, assignment),
    )
    return build_plan(graph, problem, solution, offload_folder=os.fspath(offload_folder) if offload_folder else None,
                      device_map=given, hardware_notes=spec.notes, check_disk=False,
                      violations=tuple(v for v in violations(problem, assignment) if "> cap" not in v))


def plan(
    model: ModelLike,
    *,
    max_memory: Mapping[int | str, int | str] | None = None,
    strategy: Strategy | str = Strategy.AUTO,
    objective: Goal | str | None = None,
    device_map: Mapping[str, int | str] | str | os.PathLike | None = None,
    pins: Mapping[str, int | str] | None = None,
    device_types: Mapping[int | str, str] | None = None,
    hardware: Mapping[str, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    reserve: Mapping[int | str, int | str] | int | str | None = None,
    time_limit_s: float = 30.0,
    **workload: Any,
) -> Plan:
    """Trace ``model`` and solve its placement on the devices in ``max_memory``.

    Example::

        plan = planner.plan("llama-2-70b", max_memory={0: "40GiB", 1: "40GiB", "cpu": "200GiB"},
                            device_types={0: "a100-40gb", 1: "a100-40gb"})
        model = AutoModelForCausalLM.from_pretrained(path, **plan.from_pretrained_kwargs())

    Args:
        model: see :func:`trace`; a :class:`LayerGraph` is planned as is.
        max_memory, strategy, objective, device_map, pins, device_types, hardware, offload_folder,
            reserve, time_limit_s: see :func:`plan_graph`.
        **workload: ``dtype``, ``batch_size``, ``seq_len``, ``prompt_len``, ``max_new_tokens``,
            ``kv_dtype``, ``attn_implementation``, ``phase``, ``prefill_logits``,
            ``no_split_module_classes``: see :func:`trace` (ignored for a :class:`LayerGraph`).

    Returns:
        A :class:`Plan` whose ``device_map`` accelerate's ``check_device_map`` accepts.

    Raises:
        InvalidSpecError, TraceError, InfeasiblePlanError: see :func:`trace` and :func:`plan_graph`.
    """
    start = time.perf_counter()
    meta_model = None
    if isinstance(model, LayerGraph):
        graph = model
    else:
        graph, meta_model = trace(model, **workload)
    trace_time_s = time.perf_counter() - start
    result = plan_graph(graph, max_memory=max_memory, strategy=strategy, objective=objective,
                        device_map=device_map, pins=pins, device_types=device_types, hardware=hardware,
                        offload_folder=offload_folder, reserve=reserve, time_limit_s=time_limit_s)
    if meta_model is not None:
        check_device_map(meta_model, result.device_map)  # accelerate's own coverage check
    return dataclasses.replace(result, trace_time_s=trace_time_s)
