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

from planner.adapter import Plan, build_plan
from planner.graph import LayerGraph
from planner.measure import generates
from planner.source import resolve_source
from planner.spec import DeviceSpec, build_devices, parse_device, parse_dtype
from planner.trace import trace_model
from planner.workload import Phase, Workload
from solver import InvalidSpecError
from solver.cpsat import solve

__all__ = ["trace", "plan", "plan_graph"]

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


def plan_graph(
    graph: LayerGraph,
    *,
    max_memory: Mapping[int | str, int | str],
    pins: Mapping[str, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
    reserve: Mapping[int | str, int | str] | int | str | None = None,
    time_limit_s: float = 30.0,
) -> Plan:
    """Solve the placement of an already traced ``graph``.

    Args:
        graph: from :func:`trace` or :meth:`LayerGraph.from_json`.
        max_memory: device -> cap (``{0: "40GiB", 1: "40GiB", "cpu": "200GiB"}``), accelerate's keys.
        pins: node name -> device, e.g. ``{"lm_head": 1}``; a pin on a module *inside* a node pins
            the node.
        offload_folder: where ``from_pretrained`` writes disk-offloaded weights; required when the
            plan uses ``"disk"``.
        reserve: bytes kept free on each device that computes (CUDA context, allocator slack):
            None gives every accelerator ``spec.DEFAULT_RESERVE_BYTES`` (1 GiB) and cpu/disk 0;
            one size applies to every accelerator; a mapping sets devices one by one.
        time_limit_s: CP-SAT wall-clock limit in seconds; past it the best plan is returned as
            ``feasible`` with its proven bound.

    Each device that computes is charged, besides the weights stored on it, the KV cache of the
    nodes that run on it, its largest working set, the tensors it receives, the streaming buffer
    for offloaded nodes (execution device) and its reserve (:mod:`solver.accounting`).

    Raises:
        InvalidSpecError: bad device, size or pin; disk used without ``offload_folder``.
        InfeasiblePlanError: the caps cannot hold the model (message says how many bytes are missing).
    """
    devices: tuple[DeviceSpec, ...] = build_devices(max_memory, reserve)
    keys = [d.key for d in devices]
    pin_index: dict[str, int] = {}
    for name, device in (pins or {}).items():
        key = parse_device(device)
        if key not in keys:
            raise InvalidSpecError(
                f"pin {name}={device!r} names a device not in max_memory ({', '.join(map(str, keys))}); "
                "add it to max_memory or pin to a declared device"
            )
        node = graph.node_of(name)
        if node is None:
            raise InvalidSpecError(
                f"pin {name!r} is not a module of {graph.model}; nodes are e.g. "
                f"{', '.join(n.name for n in graph.nodes[:3])}, ..., {graph.nodes[-1].name}"
            )
        if node in pin_index and pin_index[node] != keys.index(key):
            raise InvalidSpecError(f"pins put node {node!r} on two devices; pin it once")
        pin_index[node] = keys.index(key)
    problem = graph.to_problem(devices=[d.to_solver() for d in devices], pins=pin_index)
    solution = solve(problem, time_limit_s=time_limit_s)
    return build_plan(
        graph, problem, solution, offload_folder=os.fspath(offload_folder) if offload_folder else None
    )


def plan(
    model: ModelLike,
    *,
    max_memory: Mapping[int | str, int | str],
    pins: Mapping[str, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
    reserve: Mapping[int | str, int | str] | int | str | None = None,
    time_limit_s: float = 30.0,
    **workload: Any,
) -> Plan:
    """Trace ``model`` and solve its placement on the devices in ``max_memory``.

    Example::

        plan = planner.plan("llama-2-70b", max_memory={0: "40GiB", 1: "40GiB", "cpu": "200GiB"})
        model = AutoModelForCausalLM.from_pretrained(path, **plan.from_pretrained_kwargs())

    Args:
        model: see :func:`trace`; a :class:`LayerGraph` is planned as is.
        max_memory, pins, offload_folder, reserve, time_limit_s: see :func:`plan_graph`.
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
    result = plan_graph(graph, max_memory=max_memory, pins=pins, offload_folder=offload_folder,
                        reserve=reserve, time_limit_s=time_limit_s)
    if meta_model is not None:
        check_device_map(meta_model, result.device_map)  # accelerate's own coverage check
    return dataclasses.replace(result, trace_time_s=trace_time_s)
