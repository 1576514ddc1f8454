"""The library entry points, each taking a :class:`PlanSpec` (or keyword arguments that build one):
:func:`trace` a model into a LayerGraph, :func:`plan` a placement, :func:`evaluate_map` a given map.

The flow is the one of ``../shared/DESIGN.md``: the spec is validated when it is built (before
anything is imported from torch); the model source is resolved and the workload checked against
the model's config (before any model is built); then the meta model is traced, and the graph solved.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from accelerate.utils import check_device_map
from torch import nn

from layerplan.planner.calibrate.apply import calibrated_hardware
from layerplan.planner.graph import LayerGraph
from layerplan.planner.hardware import HardwareSpec, detect_device_names, detect_max_memory
from layerplan.planner.hardware.costing import cost_model
from layerplan.planner.hardware.presets import lookup_accelerator
from layerplan.planner.model.cache import cache_dir, graph_key, load_cached, store
from layerplan.planner.model.inputs import image_tokens_per_image, is_vision_language
from layerplan.planner.model.measure import generates
from layerplan.planner.model.quantization import (
    UNQUANTIZED_EXPERTS,
    Quantization,
    from_config,
    parse_quantization,
    refuses_offload,
)
from layerplan.planner.model.source import ModelSource, resolve_source
from layerplan.planner.model.trace import trace_model
from layerplan.planner.model.workload import Workload
from layerplan.planner.output.adapter import Plan, build_plan
from layerplan.planner.output.mapping import is_full, node_devices
from layerplan.planner.plan_cache import load_plan, plan_key, store_plan
from layerplan.planner.quiet import quiet
from layerplan.planner.spec import (
    DeviceCap,
    DevicesSpec,
    ModelSpec,
    PlanSpec,
    SolveSpec,
    WorkloadSpec,
    build_devices,
    parse_dtype,
)
from layerplan.solver import (
    CostModel,
    Goal,
    InfeasiblePlanError,
    InvalidSpecError,
    LayerplanError,
    Measure,
    PlacementProblem,
    Rule,
    Solution,
    Status,
    evaluate,
    format_bytes,
    solve,
    timing,
    violations,
)
from layerplan.solver.cost import least_total_ns
from layerplan.solver.goals import scores

__all__ = [
    "as_spec", "evaluate_map", "least_ms_per_token", "load_graph", "model_context", "plan", "plan_graph",
    "resolve_max_memory", "solve_graph", "trace",
]


def as_spec(model: Any, **options: Any) -> PlanSpec:
    """``model`` when it is a :class:`PlanSpec` (then ``options`` must be empty), else the spec
    :meth:`PlanSpec.from_kwargs` builds from ``model`` and ``options``.

    Raises:
        InvalidSpecError: both a spec and options, an unknown option, or any field's error.
    """
    if isinstance(model, PlanSpec):
        if options:
            raise InvalidSpecError(
                f"pass a PlanSpec or keyword options, not both (got {', '.join(sorted(options))}); "
                "change the spec with spec.replace(...) or dataclasses.replace"
            )
        return model
    return PlanSpec.from_kwargs(model, **options)


# -- model and workload ------------------------------------------------------------------------------
def _default_dtype(config) -> torch.dtype:  # noqa: ANN001
    value = getattr(config, "dtype", None)  # transformers 5's name; reading torch_dtype would warn
    if isinstance(value, str | torch.dtype):
        try:
            return parse_dtype(value)
        except InvalidSpecError:
            pass
    return torch.float32


#: Config fields that give a model's positions, first found wins: decoders' own, the decoder
#: context of encoder-decoder speech models (Whisper's ``max_target_positions``), older names.
_CONTEXT_FIELDS = ("max_position_embeddings", "max_target_positions", "n_positions", "max_sequence_length",
                   "seq_length")


def _context_field(config) -> tuple[int, str] | None:  # noqa: ANN001
    """``(positions, field name)`` of the text decoder of ``config`` (a multimodal config's
    ``text_config``: transformers' ``get_text_config(decoder=True)``), or None."""
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    for attr in _CONTEXT_FIELDS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, attr
    return None


def _model_context(config) -> int | None:  # noqa: ANN001
    found = _context_field(config)
    return found[0] if found is not None else None


def model_context(model: Any) -> int | None:
    """The model's positions (its text decoder's ``max_position_embeddings`` or the like), or None
    when its config does not say (or ``model`` is a graph).

    Args:
        model: what ``[model] source`` takes, or a :class:`PlanSpec`.

    Raises:
        InvalidSpecError: the source cannot be resolved.
    """
    source = resolve_source(model.model.source if isinstance(model, PlanSpec) else model)
    return _model_context(source.config)


def _check_context(source: ModelSource, workload: WorkloadSpec) -> None:
    """A declared context longer than the model's positions is an error, never a silent clamp."""
    found = _context_field(source.config)
    declared = workload.seq_len or (
        workload.prompt_len + (workload.max_new_tokens or 0) if workload.prompt_len is not None else None
    )
    if found is not None and declared is not None and declared > found[0]:
        context, field_name = found
        raise InvalidSpecError(
            f"the workload's context of {declared} tokens (prompt + new tokens) exceeds {source.name}'s "
            f"{context} positions ({field_name}); lower seq_len / prompt_len / max_new_tokens to at most {context}"
        )


def _resolve_workload(source: ModelSource, meta_model: nn.Module, dtype: torch.dtype, spec: WorkloadSpec) -> Workload:
    """The declared workload with the model's defaults filled in (:meth:`Workload.from_lengths`),
    and a vision-language model's images (:func:`_images`).

    Raises:
        InvalidSpecError: see :meth:`Workload.from_lengths` and :func:`_images`.
    """
    chosen = getattr(getattr(meta_model, "config", None), "_attn_implementation", None)
    max_new_tokens = spec.max_new_tokens
    if max_new_tokens is None and not generates(meta_model):
        max_new_tokens = 0  # an encoder (BERT, MiniLM) runs one forward: the whole context is prompt
    workload = Workload.from_lengths(
        model_context=_model_context(source.config),
        seq_len=spec.seq_len,
        prompt_len=spec.prompt_len,
        max_new_tokens=max_new_tokens,
        batch_size=spec.batch_size or 1,
        dtype=dtype,
        kv_dtype=parse_dtype(spec.kv_dtype) if spec.kv_dtype is not None else None,
        attn_implementation=spec.attn_implementation or (chosen if chosen in ("sdpa", "eager") else "sdpa"),
        phase=spec.phase.value if spec.phase is not None else "generate",
        prefill_logits=bool(spec.prefill_logits),
    )
    images, tokens = _images(source, meta_model, workload, spec.images_per_prompt)
    return dataclasses.replace(workload, images_per_prompt=images, image_tokens=tokens)


def _images(source: ModelSource, meta_model: nn.Module, workload: Workload, declared: int | None) -> tuple[int, int]:
    """``(images_per_prompt, image tokens)``: the declared images (default 1 for a vision-language
    model whose prompt holds one image, else 0) and the prompt tokens they expand to; ``(0, 0)``
    when the model's image path cannot run on shapes (the trace then notes that its vision tower
    was not run).

    Raises:
        InvalidSpecError: images for a model that reads none, or more image tokens than the prompt holds.
    """
    if not is_vision_language(meta_model):
        if declared:
            raise InvalidSpecError(
                f"images_per_prompt={declared} but {source.name} reads no images (its config has no "
                "vision_config and image token); drop images_per_prompt")
        return 0, 0
    images = 1 if declared is None else declared
    per_image = image_tokens_per_image(meta_model, workload.dtype) if images else None
    if per_image is None:
        return 0, 0
    tokens = images * per_image
    if declared is None and tokens >= workload.prompt_len:
        return 0, 0  # the default image does not fit this prompt: text only, and the trace says so
    if tokens >= workload.prompt_len:
        raise InvalidSpecError(
            f"{images} image(s) of {source.name} take {tokens} prompt tokens ({per_image} each), more than the "
            f"prompt_len={workload.prompt_len} that holds them and the text; raise prompt_len / seq_len above "
            f"{tokens} or lower images_per_prompt")
    return images, tokens


def _trace_source(source: ModelSource, model: ModelSpec, workload: WorkloadSpec) -> tuple[LayerGraph, nn.Module]:
    """Build ``source`` on the meta device and trace it at ``workload`` (see :func:`trace`)."""
    _check_context(source, workload)
    quantization = _quantization(source, model)  # an unsupported method is refused before any work
    dtype = parse_dtype(model.dtype) if model.dtype is not None else _default_dtype(source.config)
    meta_model = source.meta_model(attn_implementation=workload.attn_implementation)
    resolved = _resolve_workload(source, meta_model, dtype, workload)
    owned = source.module is None or meta_model is not source.module
    if owned and dtype.is_floating_point:
        meta_model = meta_model.to(dtype)
    graph = trace_model(meta_model, name=source.name, workload=resolved, allow_cast=owned,
                        no_split_module_classes=model.no_split_module_classes, time_limit_s=model.trace_time_limit_s,
                        quantization=quantization)
    return graph, meta_model


def _quantization(source: ModelSource, model: ModelSpec) -> Quantization | None:
    """The declared ``[model] quantization``, else the checkpoint's ``quantization_config``."""
    if model.quantization is not None:
        return parse_quantization(model.quantization)
    return from_config(source.config) if source.config is not None else None


def trace(model: Any, **options: Any) -> tuple[LayerGraph, nn.Module]:
    """Build a model on the meta device and trace it into a :class:`LayerGraph` at a workload.

    Args:
        model: a :class:`PlanSpec` (its ``model`` and ``workload`` sections are used), or what
            ``[model] source`` takes: a catalog name, a model directory, a config file, a Hub id
            (local cache only) or an ``nn.Module`` (never modified: a module with weights in memory
            is rebuilt on meta from its config).
        **options: with a model, the fields of ``[model]`` and ``[workload]`` (``dtype``,
            ``batch_size``, ``seq_len``, ``prompt_len``, ``max_new_tokens``, ``kv_dtype``,
            ``attn_implementation``, ``phase``, ``prefill_logits``, ``images_per_prompt``,
            ``no_split_module_classes``).

    Returns:
        ``(graph, meta_model)``; the meta model is what accelerate's ``check_device_map`` is run against.

    Raises:
        InvalidSpecError: an unknown model or option, a bad dtype or workload, a context longer
            than the model's positions, or a source that is already a traced graph.
        TraceError: the model cannot be built on meta.
    """
    spec = as_spec(model, **options)
    source = resolve_source(spec.model.source)
    if source.graph is not None:
        raise InvalidSpecError(f"{source.name} is already a traced graph; plan it, or trace the model it came from")
    with quiet():
        return _trace_source(source, spec.model, spec.workload)


def load_graph(spec: PlanSpec) -> tuple[LayerGraph, nn.Module | None]:
    """The spec's graph: traced from its model, or read as given (a graph JSON or a LayerGraph),
    in which case a declared workload or dtype must match the one it was traced at.

    Raises:
        InvalidSpecError: see :func:`trace`; a declared workload field that differs from the graph's.
    """
    source = resolve_source(spec.model.source)
    if source.graph is None:
        with quiet():
            return _cached_or_traced(source, spec)
    graph = source.graph
    declared = {**spec.workload.to_dict(), **({"dtype": spec.model.dtype} if spec.model.dtype else {})}
    traced = {**graph.workload.to_dict(), "dtype": graph.dtype, "seq_len": graph.workload.context_len}
    for key, value in declared.items():
        if key in traced and traced[key] != value:
            raise InvalidSpecError(
                f"{key}={value!r} was declared but the graph {source.name} was traced at {key}={traced[key]!r}; "
                "drop the option, or trace the model again at this workload (`layerplan trace`)"
            )
    return graph, None


def _cached_or_traced(source: ModelSource, spec: PlanSpec) -> tuple[LayerGraph, nn.Module | None]:
    """The graph cache's entry for this model and workload (meta model None), else a fresh trace,
    stored for next time (:mod:`layerplan.planner.model.cache`)."""
    cacheable = spec.model.cache and source.module is None and source.config is not None
    if not cacheable:
        return _trace_source(source, spec.model, spec.workload)
    _check_context(source, spec.workload)
    dtype = spec.model.dtype or str(_default_dtype(source.config)).removeprefix("torch.")
    key = graph_key(source.config.to_dict(), dtype=dtype, workload=spec.workload.to_dict(),
                    no_split=spec.model.no_split_module_classes, quantization=spec.model.quantization)
    folder = cache_dir(spec.model.cache_dir)
    cached = load_cached(folder, key)
    if cached is not None:
        note = f"graph read from the cache ({folder / key}.json); pass --no-cache to trace again"
        return dataclasses.replace(cached, model=source.name, notes=(*cached.notes, note)), None
    started = time.perf_counter()
    graph, meta_model = _trace_source(source, spec.model, spec.workload)
    if time.perf_counter() - started < spec.model.trace_time_limit_s:  # a trace cut short is not kept
        store(folder, key, graph)
    return graph, meta_model


# -- devices -----------------------------------------------------------------------------------------
def resolve_max_memory(devices: DevicesSpec) -> dict[int | str, int]:
    """The caps: ``devices.max_memory`` as declared, or detected on this machine.

    Detection (``devices.max_memory is None``) is accelerate's ``get_max_memory`` (free GPU
    memory, available RAM, the offload folder's free space for disk:
    :func:`layerplan.planner.hardware.detect_max_memory`); a GPU named in ``devices.types`` that is
    not visible gets its preset's memory, so a machine without GPUs can plan for declared ones.
    """
    if devices.max_memory is not None:
        return dict(devices.max_memory)
    detected: dict[int | str, int] = dict(detect_max_memory(offload_folder=devices.offload_folder))
    for gpu, name in devices.types.items():
        detected.setdefault(gpu, lookup_accelerator(name).memory_bytes)
    return detected


def _hardware(keys: list[int | str], dtype: str, devices: DevicesSpec) -> HardwareSpec:
    """The declared hardware of ``keys`` (device types, links, host link, disk, overrides), with the
    calibration profile's measured figures when ``devices.calibration`` names one."""
    return calibrated_hardware(keys, dtype=dtype, devices=devices, profile=devices.calibration,
                               reported_names=detect_device_names())


def _declared(
    graph: LayerGraph, devices: DevicesSpec, *, extra_devices: tuple[int | str, ...] = ()
) -> tuple[tuple[DeviceCap, ...], HardwareSpec]:
    """Devices (caps, reserves) and their hardware; ``extra_devices`` join with a cap of 0."""
    caps = resolve_max_memory(devices)
    for key in extra_devices:
        caps.setdefault(key, 0)
    declared = build_devices(caps, devices.reserve)
    return declared, _hardware([d.key for d in declared], graph.dtype, devices)


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


# -- solve -------------------------------------------------------------------------------------------
def solve_graph(graph: LayerGraph, spec: PlanSpec, *, explain: bool = True, check_disk: bool = True) -> Plan:
    """Solve the placement of ``graph`` under ``spec.devices`` and ``spec.solve`` (see :func:`plan`).

    Args:
        explain: on infeasibility, also find the least extra memory that would make it fit and
            whether offloading to host RAM would (two more solves); capacity studies, which make
            many plans and only need the verdict, pass False.
        check_disk: require ``offload_folder`` when the plan puts weights on ``disk`` (a plan that
            is not going to be loaded does not need one).

    Raises:
        InvalidSpecError, InfeasiblePlanError: see :func:`plan`.
        LayerplanError: the solver neither found a placement nor proved there is none in time.
    """
    options: SolveSpec = spec.solve
    given = dict(options.device_map) if options.device_map is not None else None
    if given is not None and is_full(graph, given):
        if options.pins:
            raise InvalidSpecError("a full device_map places every module already; drop the pins")
        return _given_map_fits(evaluate_map(graph, given, spec))
    devices, hardware, kept_note, problem, cost = _problem(graph, spec, {**(given or {}), **options.pins})
    strategy = options.strategy
    goal = str(getattr(options.goal, "value", options.goal))
    stored = _plan_cache(spec, problem, cost, goal)
    solution = load_plan(*stored, problem, cost, goal) if stored else None
    if solution is not None:
        kept_note = (*kept_note, f"placement read from the plan cache ({stored[0] / 'plans' / stored[1]}.json); "
                                 "pass --no-cache to solve again")
    else:
        try:
            solution = solve(problem, goal=options.goal, cost=cost, time_limit_s=options.time_limit_s, explain=explain)
        except InfeasiblePlanError as exc:
            if explain:
                exc = _with_offload_hint(exc, graph, spec.devices, devices, problem, options)
            raise _with_reasons(exc, graph, kept_note) from None
        if stored:
            store_plan(*stored, solution)
    return build_plan(graph, problem, solution, offload_folder=spec.devices.offload_folder, check_disk=check_disk,
                      strategy=strategy.value, hardware_notes=(*hardware.notes, *kept_note), spec=spec)


def _plan_cache(spec: PlanSpec, problem: PlacementProblem, cost: CostModel | None, goal: str):  # noqa: ANN202
    """``(folder, key)`` of this solve in the plan cache (:mod:`layerplan.planner.plan_cache`), or
    None: only for models named by a string (a load; not an ``nn.Module`` or a graph object) with
    the cache on."""
    if not (spec.model.cache and isinstance(spec.model.source, str)):
        return None
    return cache_dir(spec.model.cache_dir), plan_key(problem, cost, goal)


def _problem(graph: LayerGraph, spec: PlanSpec, pins: Mapping[str, int | str]):  # noqa: ANN202
    """``(devices, hardware, kept note, problem, cost model)`` of ``graph`` under ``spec``'s devices
    and strategy, with ``pins`` (module -> device) applied."""
    devices, hardware = _declared(graph, spec.devices)
    devices, kept_note = _without_refused_offload(graph, devices)
    pin_index = _pin_indices(graph, pins, [d.key for d in devices])
    strategy = spec.solve.strategy
    problem = dataclasses.replace(
        graph.to_problem(devices=[d.to_solver() for d in devices], pins=pin_index, ordered=strategy.ordered),
        low_zero=strategy.low_zero,
    )
    return devices, hardware, kept_note, problem, cost_model(graph, problem, hardware)


def least_ms_per_token(graph: LayerGraph, spec: PlanSpec) -> float:
    """A lower bound, in milliseconds, on the estimated time per token of *any* placement of
    ``graph`` on ``spec``'s devices: every node at its fastest computing device, nothing
    transferred or streamed (:func:`layerplan.solver.cost.least_total_ns`). No solve.

    Raises:
        InvalidSpecError: bad caps or hardware (see :func:`plan`).
    """
    *_, problem, cost = _problem(graph, spec, spec.solve.pins)
    return least_total_ns(problem, cost) / 1e6 / max(cost.decode_steps, 1)


def _without_refused_offload(
    graph: LayerGraph, devices: tuple[DeviceCap, ...]
) -> tuple[tuple[DeviceCap, ...], tuple[str, ...]]:
    """``devices`` with cpu/disk caps set to 0 where the quantization cannot be loaded offloaded
    (:func:`layerplan.planner.model.quantization.refuses_offload`: with accelerators, nothing on cpu
    or disk; on the CPU alone, nothing on disk), and the note saying so."""
    if not refuses_offload(graph.quantization_method):
        return devices, ()
    on_accelerators = any(d.key not in ("cpu", "disk") for d in devices)
    refused = ("cpu", "disk") if on_accelerators else ("disk",)
    if not any(d.key in refused and d.cap_bytes for d in devices):
        return devices, ()
    where = " or ".join(refused)
    note = (f"bitsandbytes weights are not offloaded to {where}: transformers' bitsandbytes quantizer refuses a "
            "device_map that puts modules there unless every module is on cpu (validate_environment)")
    return tuple(dataclasses.replace(d, cap_bytes=0) if d.key in refused else d for d in devices), (note,)


def _given_map_fits(result: Plan) -> Plan:
    """A full device_map given to :func:`plan`: returned when it fits and breaks no rule."""
    over = [u for u in result.usage if u.free_bytes < 0]
    if over or result.violations:
        problems = [f"device {u.device!r} over its cap by {format_bytes(-u.free_bytes)}" for u in over]
        raise InfeasiblePlanError(
            "the given device_map does not fit: " + "; ".join(problems + [str(v) for v in result.violations])
            + "; run `layerplan evaluate` for the breakdown, or give a partial map to solve the rest",
            missing_bytes=sum(-u.free_bytes for u in over),
        )
    return result


def _with_reasons(exc: InfeasiblePlanError, graph: LayerGraph, kept_note: tuple[str, ...]) -> InfeasiblePlanError:
    """``exc`` with what made the model this large or these devices this small, when the plan's
    own notes say so: cpu/disk refused to bitsandbytes weights, and MoE experts it leaves unquantized."""
    reasons = [*kept_note, *(n for n in graph.notes if n.startswith(UNQUANTIZED_EXPERTS))]
    if not reasons:
        return exc
    return InfeasiblePlanError(f"{exc} ({'; '.join(reasons)})", missing_bytes=exc.missing_bytes, node=exc.node,
                               extra_bytes=exc.extra_bytes)


def _with_offload_hint(
    exc: InfeasiblePlanError,
    graph: LayerGraph,
    declared: DevicesSpec,
    devices: tuple[DeviceCap, ...],
    problem: PlacementProblem,
    options: SolveSpec,
) -> InfeasiblePlanError:
    """``exc``, plus whether offloading to host RAM would make it fit and at what estimated cost on
    the *declared* hardware (only when no ``cpu`` was declared: with one, the solver already tried).
    The RAM is this machine's (nothing else is known about a host), and the message says so."""
    if any(d.key == "cpu" for d in devices) or not problem.accelerators or refuses_offload(graph.quantization_method):
        return exc
    ram = detect_max_memory().get("cpu", 0)
    if ram <= 0:
        return exc
    with_cpu = tuple(devices) + (DeviceCap(key="cpu", cap_bytes=ram),)
    try:
        cpu_hardware = _hardware([d.key for d in with_cpu], graph.dtype, declared)
        cpu_problem = dataclasses.replace(problem, devices=tuple(d.to_solver() for d in with_cpu))
        solution = solve(cpu_problem, goal=options.goal, cost=cost_model(graph, cpu_problem, cpu_hardware),
                         time_limit_s=min(options.time_limit_s, 10.0), explain=False)
    except LayerplanError:
        return InfeasiblePlanError(f"{exc}; offloading to this machine's RAM ({format_bytes(ram)}) would not "
                                   "make it fit either", missing_bytes=exc.missing_bytes, node=exc.node,
                                   extra_bytes=exc.extra_bytes)
    cpu_index = len(with_cpu) - 1
    offloaded = sum(n.size_bytes for n, d in zip(cpu_problem.nodes, solution.assignment) if d == cpu_index)
    assert solution.timing is not None
    return InfeasiblePlanError(
        f"{exc}; or add cpu: offloading {format_bytes(offloaded)} to host RAM (this machine has "
        f"{format_bytes(ram)}) fits, at an estimated {solution.timing.per_token_s * 1e3:.1f} ms per token "
        "on the declared hardware (--max-memory ... cpu=SIZE)",
        missing_bytes=exc.missing_bytes, node=exc.node, extra_bytes=exc.extra_bytes,
    )


def evaluate_map(
    graph: LayerGraph,
    device_map: Mapping[str, int | str] | str | os.PathLike,
    spec: PlanSpec | None = None,
    *,
    solver_name: str = "given",
    **options: Any,
) -> Plan:
    """Evaluate a full ``device_map`` (dict or JSON file) under layerplan's accounting, unchanged.

    Nothing is solved: the plan's ``device_map`` is the given one, its usage may exceed caps
    (``DeviceUsage.free_bytes < 0``) and ``Plan.violations`` lists every rule it breaks besides
    caps. A device the map uses but ``max_memory`` does not declare counts with a cap of 0.

    Args:
        graph: the traced model.
        device_map: module -> device, or a JSON file of it.
        spec: its ``devices`` section gives caps and hardware (or ``**options``: ``max_memory=...``).
        solver_name: the plan's ``solution.solver`` (``"accelerate"`` for its baseline maps).

    Raises:
        InvalidSpecError: the map names an unknown module, does not cover every node, or splits a
            node layerplan keeps whole; bad caps or hardware.
    """
    spec = as_spec(graph, **options) if spec is None else spec
    given = dict(SolveSpec(device_map=device_map).device_map or {})
    placed = node_devices(graph, given)
    missing = [n.name for n in graph.nodes if n.name not in placed]
    if missing:
        raise InvalidSpecError(
            f"the device_map does not place {len(missing)} node(s), e.g. {missing[0]!r}; give a full map "
            "to evaluate, or plan with it as a partial map (`layerplan plan --device-map`)"
        )
    used = tuple(dict.fromkeys(placed.values()))
    devices, hardware = _declared(graph, spec.devices, extra_devices=used)
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
    cost = cost_model(graph, problem, hardware)
    values = {m.value: value for m, value in scores(problem, assignment, Measure, cost).items()}
    solution = Solution(
        assignment=assignment, status=Status.GIVEN, objective=evaluate(problem, assignment),
        bound=0, wall_time_s=0.0, solver=solver_name, goal=Goal.LATENCY.value, values=values,
        timing=timing(problem, cost, assignment),
    )
    return build_plan(graph, problem, solution, offload_folder=spec.devices.offload_folder,
                      device_map=given, hardware_notes=hardware.notes, check_disk=False, spec=spec,
                      violations=tuple(v for v in violations(problem, assignment) if v.rule is not Rule.CAP))


def plan_graph(graph: LayerGraph, spec: PlanSpec | None = None, **options: Any) -> Plan:
    """Solve the placement of an already traced ``graph``: :func:`plan` without the trace.

    ``spec`` (its ``devices`` and ``solve`` sections) or ``**options`` (``max_memory=...``,
    ``strategy=...``, ...: see :func:`plan`).
    """
    spec = as_spec(graph, **options) if spec is None else spec
    with quiet():
        return solve_graph(graph, spec)


def plan(model: Any, **options: Any) -> Plan:
    """Trace a model and solve its placement on the declared devices.

    Example::

        plan = layerplan.plan("llama-2-70b", max_memory={0: "40GiB", 1: "40GiB", "cpu": "200GiB"},
                              device_types={0: "a100-40gb", 1: "a100-40gb"})
        plan = layerplan.plan(layerplan.PlanSpec.from_toml("spec.toml"))     # the same, declared
        model = AutoModelForCausalLM.from_pretrained(path, **plan.from_pretrained_kwargs())

    Args:
        model: a :class:`PlanSpec`, or what ``[model] source`` takes (a catalog name, model
            directory, config file, Hub id in the local cache, graph JSON, ``nn.Module`` or
            :class:`LayerGraph`).
        **options: with a model, any field of the spec's sections by name (``max_memory``,
            ``types`` / ``device_types``, ``reserve``, ``interconnect``, ``links``, ``host_link``,
            ``disk_read``, ``overrides``, ``offload_folder``; ``dtype``, ``no_split_module_classes``;
            ``batch_size``, ``seq_len``, ``prompt_len``, ``max_new_tokens``, ``kv_dtype``,
            ``attn_implementation``, ``phase``, ``prefill_logits``, ``images_per_prompt``; ``strategy``, ``objective``,
            ``pins``, ``device_map``, ``time_limit_s``) -- see the sections in
            :mod:`layerplan.planner.spec.sections`.

    Each device that computes is charged, besides the weights stored on it, the KV cache of the
    nodes that run on it, its largest working set, the tensors it receives, the streaming buffer
    for offloaded nodes (execution device) and its reserve (:mod:`layerplan.solver.accounting`).

    Returns:
        A :class:`Plan` (carrying its spec) whose ``device_map`` accelerate's ``check_device_map``
        accepts (checked on the meta model when it was traced now; a graph from the cache or a
        graph JSON has its node names from that same check-free model tree).

    Raises:
        InvalidSpecError: bad input (reported before any model is built where the spec alone shows it).
        TraceError: the model cannot be built on meta.
        InfeasiblePlanError: the caps cannot hold the model; the message says how many bytes are
            missing, the least extra memory per device that makes it fit and, when no ``cpu`` was
            declared, whether offloading to it would.
    """
    spec = as_spec(model, **options)
    start = time.perf_counter()
    graph, meta_model = load_graph(spec)
    trace_time_s = time.perf_counter() - start
    with quiet():
        result = solve_graph(graph, spec)
        if meta_model is not None:
            check_device_map(meta_model, result.device_map)  # accelerate's own coverage check
    return dataclasses.replace(result, trace_time_s=trace_time_s)
