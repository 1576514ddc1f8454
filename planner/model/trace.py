"""Trace a meta-device model into a :class:`~layerplan.planner.graph.LayerGraph`.

Nodes are found from the module tree (each ``no_split_module_classes`` instance is one node, leaves
and root parameters outside such blocks are nodes too) and ordered by *execution*: a forward pass on
meta tensors (no memory, no compute) with a forward pre-hook on each node. Edges come from the same
pass: a ``TorchFunctionMode`` follows every tensor computed outside the nodes back to the node
outputs it derives from, so the tensor a consumer receives (e.g. ``lm_head``'s sliced hidden states,
or T5's ``position_bias`` shared by every block) is attributed to the node that produced it, with its
real shape and dtype; a tensor glue code combines from several nodes' tensors (LLaVA's and
Qwen2-VL's ``masked_scatter`` of the image features into the text embeddings) is an edge from each
of them at the size that node handed over (the image features, not the whole prompt's embeddings).
The pass is ``generate()``'s prefill: an encoder-decoder model's encoder reads
the prompt and its decoder the one ``decoder_start_token_id`` token, so edges between decoder nodes
carry 1 token and the encoder output ``prompt_len``.

FLOPs per node and the bytes each edge carries in one decode step come from
:func:`layerplan.planner.model.measure.measure_node_memory`: the decode step records, per node, the bytes of every
tensor it receives, keyed by argument (:func:`layerplan.planner.model.measure.input_tensors`), and an edge's decode
size is what its consumers receive under the key they received it by in prefill. So it is measured,
not derived: hidden states shrink to one token, T5's encoder output keeps ``prompt_len`` tokens (the
decoder is handed it every step), edges into encoder blocks carry 0 (they do not run in decode).
Without a decode step (encoder-only models, ``phase="prefill"``) every edge carries 0 in decode.

Layers of the same signature are traced once (:mod:`layerplan.planner.model.replicate`): the
forwards run a model reduced to one representative of each, whose measurements are then given to
every layer it stands for; the graph is the one the full trace gives (it is traced whole whenever
that cannot be made sure of).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from accelerate.utils import compute_module_sizes, find_tied_parameters
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from layerplan.planner.model import budget
from layerplan.planner.model.estimate import (
    attention_shape,
    estimate_forward_flops,
    estimate_layer_bytes,
    has_recurrent_layers,
    is_recurrent,
)
from layerplan.planner.graph import GraphEdge, GraphNode, LayerGraph, decode_size_from_prefill
from layerplan.planner.model.measure import (
    FakeGroupedMM,
    NodeMemory,
    decodes,
    generates,
    input_tensors,
    measure_node_memory,
)
from layerplan.planner.model.experts import split_experts
from layerplan.planner.model.quantization import Quantization, is_expert_module, quantized_bytes, unquantized_experts
from layerplan.planner.model.inputs import feed_for, is_vision_language, unchecked
from layerplan.planner.model.replicate import NodeMap, NotReplicable, plan_replication, reduced_model
from layerplan.planner.model.workload import Workload

__all__ = ["trace_model", "no_split_classes"]


def no_split_classes(model: nn.Module, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Classes to keep whole: ``_no_split_modules`` of the model and of its submodules, plus ``extra``.

    Same collection rule as transformers' ``PreTrainedModel._get_no_split_modules``.
    """
    found: list[str] = list(extra)
    for module in model.modules():
        for cls_name in getattr(module, "_no_split_modules", None) or ():
            if cls_name not in found:
                found.append(cls_name)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class _NodeSpec:
    name: str
    kind: str
    module_class: str
    module: nn.Module | None  # None for a root parameter
    tensor_names: tuple[str, ...] = ()  # for root parameters: the parameter's full name


def _find_nodes(model: nn.Module, no_split: tuple[str, ...]) -> list[_NodeSpec]:
    """Nodes in registration order (each module instance once, as ``named_modules`` does)."""
    seen: set[int] = set()
    nodes: list[_NodeSpec] = []

    def visit(prefix: str, module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        cls_name = type(module).__name__
        children = list(module.named_children())
        if prefix and cls_name in no_split:
            nodes.append(_NodeSpec(prefix, "block", cls_name, module))
            return
        own = [n for n, _ in module.named_parameters(recurse=False)] + [
            n for n, _ in module.named_buffers(recurse=False)
        ]
        if prefix and children and own and _uses_own_parameters(module, no_split):
            nodes.append(_NodeSpec(prefix, "leaf", cls_name, module))
            return
        if not children:
            if own:
                nodes.append(_NodeSpec(prefix, "leaf", cls_name, module))
            return
        for tensor_name in own:  # a parameter held directly by a module that has children
            full = f"{prefix}.{tensor_name}" if prefix else tensor_name
            nodes.append(_NodeSpec(full, "parameter", "Parameter", None, (full,)))
        for child_name, child in children:
            visit(f"{prefix}.{child_name}" if prefix else child_name, child)

    visit("", model)
    return nodes


def _unfed_towers(model: nn.Module, workload: Workload) -> list[str]:
    """A note when the model has a vision or audio tower (a ``vision_config`` / ``audio_config``)
    that the traced forwards did not feed, so that its nodes hold weights only."""
    config = getattr(model, "config", None)
    towers = [name.removesuffix("_config") for name in ("vision_config", "audio_config")
              if getattr(config, name, None) is not None]
    if not towers or feed_for(model, workload).features is not None:
        return []
    why = ("images_per_prompt=0: declared, or by default when one image's tokens do not fit the prompt; or "
           if is_vision_language(model) else "")
    return [f"traced without its {' and '.join(towers)} inputs ({why}inputs this model needs beyond token ids, "
            "which layerplan does not build for it): that tower did not run, its nodes hold weights only"]


def _uses_own_parameters(module: nn.Module, no_split: tuple[str, ...]) -> bool:
    """A module with parameters of its own next to its children, and no block inside (Gemma 3's
    multimodal projector: a weight, a norm, a pooling): its forward computes with both, so it is
    kept whole, as one node, rather than split into its parameters and children with the
    parameters' matmul in none of them. A module holding blocks is still split."""
    if not any(True for _ in module.named_parameters(recurse=False)):
        return False
    return not any(type(m).__name__ in no_split for m in module.modules())


def _empty_modules(model: nn.Module, specs: list[_NodeSpec]) -> tuple[str, ...]:
    """Names of the modules outside every node that hold no parameter or buffer (dropouts,
    activations), under every name they are registered by: what accelerate's
    ``infer_auto_device_map`` lists with size 0 although no node holds it."""
    nodes = {s.name for s in specs}

    def inside_a_node(name: str) -> bool:
        while name:
            if name in nodes:
                return True
            name = name.rpartition(".")[0]
        return False

    return tuple(
        name
        for name, module in model.named_modules(remove_duplicate=False)
        if name
        and next(module.parameters(), None) is None
        and next(module.buffers(), None) is None
        and not inside_a_node(name)
    )


@dataclass(slots=True)
class _Received:
    """One tensor received from one producer: its prefill shape and dtype, and each consumer with
    the :func:`~layerplan.planner.model.measure.input_tensors` key it received the tensor under."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    consumers: list[tuple[int, str]] = field(default_factory=list)


@dataclass(slots=True)
class _FlowTracker:
    """Which node(s) each live tensor derives from (only tensors computed outside nodes)."""

    sources: dict[int, frozenset[int]] = field(default_factory=dict)
    keep_alive: list[torch.Tensor] = field(default_factory=list)
    depth: int = 0
    # (id of the tensor as received, producer) -> what was received, by whom
    received: dict[tuple[int, int], _Received] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    # id of a tensor that glue code combined from several nodes' tensors (LLaVA's masked_scatter
    # of the image features into the text embeddings) -> per producer, the (shape, dtype) of the
    # tensor that producer handed to the combination: what it sends, not the combined whole
    handed: dict[int, dict[int, tuple[tuple[int, ...], torch.dtype]]] = field(default_factory=dict)

    def mark(self, value: object, src: frozenset[int], handed: dict | None = None) -> None:
        for t in _tensors(value):
            self.sources[id(t)] = src
            if handed:
                self.handed[id(t)] = handed
            else:
                self.handed.pop(id(t), None)
            self.keep_alive.append(t)

    def origin(self, value: object) -> frozenset[int]:
        out: frozenset[int] = frozenset()
        for t in _tensors(value):
            out |= self.sources.get(id(t), frozenset())
        return out

    def handed_over(self, value: object) -> dict[int, tuple[tuple[int, ...], torch.dtype]]:
        """Per producer, the largest tensor it handed to glue code reading ``value``, when that
        glue combines tensors of several producers (or reads a combination); else ``{}``."""
        out: dict[int, tuple[tuple[int, ...], torch.dtype]] = {}
        combined = False
        for t in _tensors(value):
            if id(t) in self.handed:
                combined = True
                entries = self.handed[id(t)].items()
            else:
                entries = [(p, (tuple(t.shape), t.dtype)) for p in self.sources.get(id(t), ())]
            for producer, (shape, dtype) in entries:
                if producer not in out or _nbytes(shape, dtype) > _nbytes(*out[producer]):
                    out[producer] = (shape, dtype)
        return out if combined or len(out) > 1 else {}

    def received_as(self, t: torch.Tensor, producer: int) -> tuple[tuple[int, ...], torch.dtype]:
        """``(shape, dtype)`` of what ``producer`` sends a node that receives ``t``."""
        return self.handed.get(id(t), {}).get(producer, (tuple(t.shape), t.dtype))


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _tensors(value: object) -> Iterator[torch.Tensor]:
    leaves, _ = tree_flatten(value)
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            yield leaf
        elif hasattr(leaf, "__dict__") and type(leaf).__module__.startswith("transformers"):
            # ModelOutput / Cache objects: look one level inside
            for inner in vars(leaf).values():
                if isinstance(inner, torch.Tensor):
                    yield inner


class _FlowMode(TorchFunctionMode):
    """Propagates node provenance through the glue code between nodes."""

    def __init__(self, tracker: _FlowTracker) -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        budget.check()
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.tracker.depth == 0:
            src = self.tracker.origin((args, kwargs))
            if src:
                self.tracker.mark(out, src, self.tracker.handed_over((args, kwargs)))
        return out


def _example_inputs(model: nn.Module, workload: Workload) -> dict[str, object]:
    """The prefill forward's inputs (:mod:`layerplan.planner.model.inputs`: an encoder-decoder's
    decoder starts from one token, so the tensors between its decoder nodes carry 1 token in prefill
    and the encoder output ``prompt_len``; a vision-language model also reads its images)."""
    inputs: dict[str, object] = {**feed_for(model, workload).prefill("meta"), "use_cache": False}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        inputs["logits_to_keep"] = 0 if workload.prefill_logits else 1
    return inputs


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"


def trace_model(
    model: nn.Module,
    *,
    name: str,
    workload: Workload,
    no_split_module_classes: tuple[str, ...] = (),
    allow_cast: bool = False,
    time_limit_s: float | None = budget.DEFAULT_TRACE_TIME_LIMIT_S,
    replicate: bool = True,
    quantization: Quantization | None = None,
) -> LayerGraph:
    """Trace ``model`` (on the meta device, in ``workload.dtype``) into a :class:`LayerGraph`.

    Edges and execution order come from a prefill forward (``workload.prompt_len`` tokens); KV cache,
    working sets, FLOPs per node and edge sizes in decode from
    :func:`layerplan.planner.model.measure.measure_node_memory` (see the module docstring).

    Args:
        model: a model whose parameters are on ``torch.device("meta")``; hooks are removed before
            returning and, unless ``allow_cast``, nothing else is touched.
        name: the model's display name.
        workload: batch, lengths, dtypes and phase to size activations and KV cache for.
        no_split_module_classes: classes to keep whole in addition to the model's own.
        allow_cast: the model is ours: when its forward fails in ``workload.dtype`` it may be cast to
            bfloat16 and measured again (e.g. grouped matmuls that refuse float32 on meta), bytes then
            scaled back to ``workload.dtype``.
        time_limit_s: seconds the forwards may take in all (:mod:`layerplan.planner.model.budget`);
            past it, what is not measured yet is estimated from the config, with a note. None: no limit.
        replicate: trace one layer per distinct layer signature and replicate its measurements
            (:mod:`layerplan.planner.model.replicate`; the same graph, in a fraction of the time);
            whenever that cannot be done exactly, and with False, the whole model is traced.
        quantization: how the checkpoint stores its weights: the weights it replaces are sized
            by :func:`layerplan.planner.model.quantization.quantized_bytes` (activations, KV cache
            and FLOPs stay those of ``workload.dtype``); None: every weight in ``workload.dtype``.

    Returns:
        The graph. What could not be measured is estimated (:mod:`layerplan.planner.model.estimate`): nodes follow
        registration order, edges are ``batch * prompt_len * hidden_size * dtype bytes`` between
        consecutive nodes (1 token instead of ``prompt_len`` from the first decoder node of an
        encoder-decoder model on), per-layer KV and working set come from the config, FLOPs of blocks and
        linear leaves are ``2 * parameters * tokens`` plus attention, and decode edge sizes are the
        prefill ones with ``prompt_len`` set to 1; ``notes`` names them.
    """
    dtype = workload.dtype
    no_split = no_split_classes(model, no_split_module_classes)
    specs = _find_nodes(model, no_split)
    notes: list[str] = []
    if quantization is not None and (note := unquantized_experts(model, quantization, dtype)):
        notes.append(note)
    # Sized before measuring: a failed forward may cast the model to bfloat16 to measure again.
    sizes = (_weight_sizes(model, dtype, quantization), compute_module_sizes(model, dtype=dtype, buffers_only=True))
    with budget.time_budget(time_limit_s):
        measured = _not_traced(specs, notes) if has_recurrent_layers(getattr(model, "config", None)) else None
        if measured is None and replicate:
            measured = _measure_replicated(model, specs, no_split, workload)
        if measured is None:
            measured = _measure(model, specs, workload, allow_cast=allow_cast, notes=notes)
    traced = measured.tracker is not None
    notes.extend(_unfed_towers(model, workload))
    order = _execution_order(len(specs), measured.tracker.order if traced else [])
    graph_nodes = _graph_nodes(model, specs, order, workload, measured, notes, sizes)
    notes.extend(measured.memory.flop_notes)
    has_decode = decodes(model, workload)
    if has_decode and not measured.memory.decode_input_bytes:
        notes.append("edge sizes in decode derived from the prefill shapes (the prompt_len dimension set to 1)")
    if traced:
        edges = _traced_edges(specs, order, graph_nodes, workload, measured, has_decode=has_decode)
    else:
        edges = _estimated_edges(model, graph_nodes, workload, has_decode=has_decode)
    graph = LayerGraph(
        model=name,
        model_class=type(model).__name__,
        dtype=str(dtype).removeprefix("torch."),
        workload=workload.to_traced(),
        nodes=graph_nodes,
        edges=tuple(edges),
        tied_parameters=tuple(tuple(g) for g in find_tied_parameters(model)),
        no_split_module_classes=no_split,
        empty_modules=_empty_modules(model, specs),
        notes=tuple(notes),
        quantization=quantization.describe() if quantization is not None else "",
        quantization_method=quantization.method if quantization is not None else "",
    )
    return split_experts(_with_tied_groups(graph), model, *sizes)


@dataclass(frozen=True, slots=True)
class _Measured:
    """One trace-and-measure pass: the recorder (None when the forward failed), the per-node
    measurements, and the factors from the dtype measured in to the workload's (activations,
    KV cache)."""

    tracker: _FlowTracker | None  # the prefill trace (None: the forward failed)
    memory: NodeMemory
    scale: float
    kv_scale: float


def _not_traced(specs: list, notes: list[str]) -> _Measured:
    """No forward at all, for models with recurrent layers: without the mamba_ssm / fla kernels,
    transformers' reference scans loop over every token in Python, which under the recorders takes
    minutes (a 4-layer Mamba ran past a 60 s budget at the default context). Their per-sequence
    state, working sets and FLOPs come from the config (:mod:`layerplan.planner.model.estimate`)."""
    reason = ("not traced: recurrent (state-space / linear-attention) layers scan every token in Python on "
              "meta; recurrent state, KV cache, working sets and FLOPs from the config")
    notes.append(reason)
    zeros = (0,) * len(specs)
    memory = NodeMemory(kv_bytes=zeros, prefill_work_bytes=zeros, decode_work_bytes=zeros, prefill_flops=zeros,
                        decode_flops=zeros, notes=(reason,))
    return _Measured(tracker=None, memory=memory, scale=1.0, kv_scale=1.0)


def _measure(model: nn.Module, specs: list, workload: Workload, *, allow_cast: bool, notes: list[str]) -> _Measured:
    """Trace and measure in ``workload.dtype``; when that fails and the model is ours, again in
    bfloat16 (bytes then scaled back), with a note either way."""
    dtype = workload.dtype
    module_to_node = {id(s.module): i for i, s in enumerate(specs) if s.module is not None}
    measured_dtype = dtype
    tracker, memory = _trace_and_measure(model, specs, module_to_node, workload, notes)
    if (tracker is None or memory.notes) and allow_cast and dtype != torch.bfloat16 and not budget.expired():
        first_error = notes.pop() if notes else ""
        retry = dataclasses.replace(workload, dtype=torch.bfloat16, kv_dtype=torch.bfloat16)
        tracker, memory = _trace_and_measure(model.to(torch.bfloat16), specs, module_to_node, retry, notes)
        if tracker is not None and not memory.notes:
            measured_dtype = torch.bfloat16
            notes.append(f"{first_error}; traced in bfloat16 instead and scaled activation and KV bytes "
                         f"to {str(dtype).removeprefix('torch.')}")
        else:
            notes.append(first_error)
    return _Measured(tracker=tracker, memory=memory, scale=dtype.itemsize / measured_dtype.itemsize,
                     kv_scale=workload.kv_dtype.itemsize / measured_dtype.itemsize)


def _measure_replicated(
    model: nn.Module, specs: list[_NodeSpec], no_split: tuple[str, ...], workload: Workload
) -> _Measured | None:
    """Trace and measure the model reduced to one representative per layer signature, expanded to
    every node (:mod:`layerplan.planner.model.replicate`); None when the model has no layers to
    replicate, or the reduced trace fails, has notes, or does not map onto the full model: the caller
    then traces the full model, so that the graph never depends on replication working."""
    replication = plan_replication(model, {s.name for s in specs if s.kind == "block"})
    if replication is None:
        return None
    notes: list[str] = []
    try:
        reduced = reduced_model(model, replication)
        reduced_specs = _find_nodes(reduced, no_split)
        module_to_node = {id(s.module): i for i, s in enumerate(reduced_specs) if s.module is not None}
        # the cache is built from the full config: the representatives keep their own layer_idx
        tracker, memory = _trace_and_measure(reduced, reduced_specs, module_to_node, workload, notes,
                                             cache_config=getattr(model, "config", None))
        # FLOPs outside every node add up over the layers that ran: only the full trace knows them
        if tracker is None or notes or memory.notes or memory.flop_notes:
            return None
        nodes = NodeMap.from_names(replication, full=[s.name for s in specs], reduced=[s.name for s in reduced_specs])
        expanded = _expanded_tracker(tracker, nodes)
    except NotReplicable:
        return None
    return _Measured(tracker=expanded, memory=_expanded_memory(memory, nodes), scale=1.0,
                     kv_scale=workload.kv_dtype.itemsize / workload.dtype.itemsize)


def _expanded_tracker(tracker: _FlowTracker, nodes: NodeMap) -> _FlowTracker:
    """The reduced trace's execution order and handed-over tensors, for every node of the full model.

    Raises:
        NotReplicable: see :meth:`NodeMap.order` and :meth:`NodeMap.flows`.
    """
    expanded = _FlowTracker(order=nodes.order(tracker.order))
    for (tensor, producer), received in tracker.received.items():
        for full_producer, consumers in nodes.flows(producer, received.consumers):
            expanded.received[(tensor, full_producer)] = _Received(received.shape, received.dtype, consumers)
    return expanded


def _expanded_memory(memory: NodeMemory, nodes: NodeMap) -> NodeMemory:
    """Each full node's bytes and FLOPs: its own, or its representative's."""
    return dataclasses.replace(
        memory,
        kv_bytes=nodes.values(memory.kv_bytes),
        prefill_work_bytes=nodes.values(memory.prefill_work_bytes),
        decode_work_bytes=nodes.values(memory.decode_work_bytes),
        prefill_live_bytes=nodes.values(memory.prefill_live_bytes) if memory.prefill_live_bytes else (),
        decode_live_bytes=nodes.values(memory.decode_live_bytes) if memory.decode_live_bytes else (),
        prefill_flops=nodes.values(memory.prefill_flops),
        decode_flops=nodes.values(memory.decode_flops),
        decode_input_bytes=nodes.values(memory.decode_input_bytes) if memory.decode_input_bytes else (),
    )


def _graph_nodes(
    model: nn.Module, specs: list, order: list[int], workload: Workload, measured: _Measured, notes: list[str],
    sizes: tuple[dict[str, int], dict[str, int]],
) -> tuple[GraphNode, ...]:
    """The nodes in execution order with weights, buffers (``sizes``: module sizes and buffer sizes,
    taken before any cast) and the measured (or estimated) KV cache, working sets and FLOPs."""
    memory = measured.memory
    sizes, buffer_sizes = sizes
    estimated = _estimates(model, specs, workload) if memory.notes else {}
    estimated_flops = _estimate_flops(model, specs, workload) if memory.notes else {}
    if estimated or estimated_flops:
        names = list(dict.fromkeys([*estimated, *estimated_flops]))
        what = [f"KV cache and working set of {len(estimated)} blocks"] if estimated else []
        what += [f"FLOPs of {len(estimated_flops)} nodes"] if estimated_flops else []
        notes.append(
            f"{' and '.join(what)} estimated from the config (planner/estimate.py): "
            f"{', '.join(specs[i].name for i in names[:3])}" + (", ..." if len(names) > 3 else "")
        )
    executed = set(measured.tracker.order) if measured.tracker is not None else set()
    experts = _expert_bytes(model, specs, sizes)
    before_cache = _before_kv_cache(model, specs)

    def node(i: int) -> GraphNode:
        kv, pre, dec = memory.kv_bytes[i], memory.prefill_work_bytes[i], memory.decode_work_bytes[i]
        pre_live = memory.prefill_live_bytes[i] if memory.prefill_live_bytes else 0
        dec_live = memory.decode_live_bytes[i] if memory.decode_live_bytes else 0
        if i in estimated:
            kv, pre = estimated[i]
            dec = pre_live = dec_live = 0
        else:
            kv, pre, dec = int(kv * measured.kv_scale), int(pre * measured.scale), int(dec * measured.scale)
            pre_live, dec_live = int(pre_live * measured.scale), int(dec_live * measured.scale)
        # FLOPs do not depend on the dtype measured in
        pre_flops, dec_flops = estimated_flops.get(i, (memory.prefill_flops[i], memory.decode_flops[i]))
        return GraphNode(
            name=specs[i].name,
            kind=specs[i].kind,
            module_class=specs[i].module_class,
            weight_bytes=sizes.get(specs[i].name, 0) - buffer_sizes.get(specs[i].name, 0),
            buffer_bytes=buffer_sizes.get(specs[i].name, 0),
            kv_bytes=kv,
            prefill_work_bytes=pre,
            decode_work_bytes=dec,
            prefill_live_bytes=pre_live,
            decode_live_bytes=dec_live,
            prefill_flops=pre_flops,
            decode_flops=dec_flops,
            executed=i in executed,
            estimated=i in estimated or i in estimated_flops,
            expert_bytes=experts.get(i, 0),
            before_kv_cache=i in before_cache,
        )

    return tuple(node(i) for i in order)


def _before_kv_cache(model: nn.Module, specs: list[_NodeSpec]) -> frozenset[int]:
    """The nodes that run only before any KV cache exists: those of an encoder-decoder's encoder
    (``model.get_encoder()``) that its decoder does not also hold, when the model generates.

    transformers ``GenerationMixin.generate`` runs the whole encoder once, in its step 4
    (``_maybe_prepare_encoder_kwargs_for_generation``; ``_prepare_encoder_decoder_kwargs_for_generation``
    before transformers 5), and makes the cache only in step 7 (``_prepare_cache_for_generation``;
    a ``DynamicCache`` allocates its tensors at the decoder's first ``update``). T5 and BART take
    that path as is; Whisper's ``WhisperGenerationMixin.generate`` hands each 30 s segment to it
    (``generate_with_fallback``), and its language detection runs a ``use_cache=False`` forward.
    A model that does not generate keeps no cache: nothing to mark.
    """
    config = getattr(model, "config", None)
    get_encoder = getattr(model, "get_encoder", None)
    if not getattr(config, "is_encoder_decoder", False) or not generates(model) or not callable(get_encoder):
        return frozenset()
    encoder = get_encoder()
    if not isinstance(encoder, nn.Module):
        return frozenset()
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    decoder = decoder if isinstance(decoder, nn.Module) else nn.Module()

    def members(module: nn.Module) -> set[int]:
        return {id(x) for x in (*module.modules(), *module.parameters(), *module.buffers())}

    only_encoder = members(encoder) - members(decoder)
    tensors = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    out = set()
    for i, spec in enumerate(specs):
        held = [spec.module] if spec.module is not None else [tensors[n] for n in spec.tensor_names if n in tensors]
        if held and all(id(x) in only_encoder for x in held):
            out.add(i)
    return frozenset(out)


def _expert_bytes(model: nn.Module, specs: list[_NodeSpec], sizes: dict[str, int]) -> dict[int, int]:
    """``{node: bytes}`` of the MoE expert modules (:func:`~layerplan.planner.model.quantization.is_expert_module`)
    inside each node, outermost ones only, from the sizes :func:`_weight_sizes` gives."""
    node_of = {s.name: i for i, s in enumerate(specs)}
    out: dict[int, int] = {}
    counted: list[str] = []
    for name, module in model.named_modules():
        if not is_expert_module(name, module) or any(name.startswith(outer + ".") for outer in counted[-1:]):
            continue
        counted.append(name)
        holder = name.rsplit(".", 1)[0] if "." in name else ""
        while holder and holder not in node_of:
            holder = holder.rsplit(".", 1)[0] if "." in holder else ""
        if holder in node_of:
            out[node_of[holder]] = out.get(node_of[holder], 0) + sizes.get(name, 0)
    return out


def _weight_sizes(model: nn.Module, dtype: torch.dtype, quantization: Quantization | None) -> dict[str, int]:
    """accelerate's ``compute_module_sizes`` (every module and tensor name -> bytes, in ``dtype``),
    with the parameters ``from_pretrained`` keeps in float32 at 4 bytes (:func:`_kept_in_fp32`) and
    the weights ``quantization`` replaces at their stored bytes."""
    sizes = compute_module_sizes(model, dtype=dtype)
    stored = _kept_in_fp32(model, dtype)
    if quantization is not None:
        stored.update(quantized_bytes(model, quantization, dtype.itemsize))
    for name, size in stored.items():
        change = size - sizes.get(name, 0)
        parts = name.split(".")
        for i in range(len(parts) + 1):
            sizes[".".join(parts[:i])] += change
    return sizes


def _kept_in_fp32(model: nn.Module, dtype: torch.dtype) -> dict[str, int]:
    """``{parameter: bytes}`` of the floating parameters ``from_pretrained`` loads in float32 at
    ``dtype``: the class's ``_keep_in_fp32_modules`` in float16, ``_keep_in_fp32_modules_strict``
    in float16 and bfloat16 (transformers' ``PreTrainedModel._get_dtype_plan``, its patterns matched
    with ``core_model_loading.build_glob_alternation`` as loading matches them)."""
    plan = model._get_dtype_plan(dtype) if hasattr(model, "_get_dtype_plan") else {}
    if not plan:
        return {}
    from transformers.core_model_loading import build_glob_alternation

    pattern, _, _ = build_glob_alternation(list(plan))
    return {name: p.numel() * 4 for name, p in model.named_parameters()
            if p.is_floating_point() and pattern.search(name)}


def _traced_edges(
    specs: list, order: list[int], graph_nodes: tuple[GraphNode, ...], workload: Workload, measured: _Measured,
    *, has_decode: bool,
) -> list[GraphEdge]:
    """Every tensor the recorder saw leave a node for later nodes, sized in prefill and decode."""
    memory, scale, tracker = measured.memory, measured.scale, measured.tracker
    position = {node: pos for pos, node in enumerate(order)}

    def decode_size(received: _Received, consumers: list[tuple[int, str]], size_bytes: int) -> int:
        if not has_decode:
            return 0
        if not memory.decode_input_bytes:
            return decode_size_from_prefill(size_bytes, received.shape, prompt_len=workload.prompt_len)
        # what the consumers receive under the same argument in the decode step (0: not called)
        return int(max(memory.decode_input_bytes[c].get(key, 0) for c, key in consumers) * scale)

    edges: list[GraphEdge] = []
    for (_, producer), received in tracker.received.items():
        consumers = [(c, key) for c, key in received.consumers if position[c] > position[producer]]
        if not consumers:
            continue
        size_bytes = int(math.prod(received.shape) * received.dtype.itemsize * scale)
        edges.append(
            GraphEdge(
                producer=specs[producer].name,
                consumers=tuple(specs[c].name for c in sorted({c for c, _ in consumers}, key=position.get)),
                shape=received.shape,
                dtype=str(received.dtype).removeprefix("torch."),
                size_bytes=size_bytes,
                decode_size_bytes=decode_size(received, consumers, size_bytes),
            )
        )
    by_name = {n.name: pos for pos, n in enumerate(graph_nodes)}
    edges.sort(key=lambda e: (by_name[e.producer], [by_name[c] for c in e.consumers]))
    return edges


def _estimated_edges(
    model: nn.Module, graph_nodes: tuple[GraphNode, ...], workload: Workload, *, has_decode: bool
) -> list[GraphEdge]:
    """Without a trace: one ``(batch, tokens, hidden)`` tensor between consecutive nodes."""
    dtype = workload.dtype
    hidden = _hidden_size(model)
    decode_bytes = workload.batch_size * hidden * dtype.itemsize if has_decode else 0  # (batch, 1, hidden)
    # an encoder-decoder's decoder (from its first node on) runs on the 1 decoder_start token
    decoder_from = _first_decoder_node(model, graph_nodes)
    edges = []
    for pos, (a, b) in enumerate(zip(graph_nodes, graph_nodes[1:])):
        shape = (workload.batch_size, 1 if pos >= decoder_from else workload.prompt_len, hidden)
        edges.append(GraphEdge(producer=a.name, consumers=(b.name,), shape=shape,
                               dtype=str(dtype).removeprefix("torch."),
                               size_bytes=math.prod(shape) * dtype.itemsize, decode_size_bytes=decode_bytes))
    return edges


def _trace_and_measure(model, specs, module_to_node, workload: Workload, notes: list[str], *,  # noqa: ANN001, ANN202
                       cache_config: object | None = None):
    """One prefill trace for order and edges, then the memory measurement (its decode cache built
    from ``cache_config``, default ``model.config``); failures become notes."""
    tracker: _FlowTracker | None = _FlowTracker()
    try:
        _run_meta_forward(model, specs, module_to_node, tracker, workload)
    except Exception as exc:  # a model's forward can fail on meta in many ways; fall back
        tracker = None
        notes.append(f"meta forward failed in {str(workload.dtype).removeprefix('torch.')} ({_first_line(exc)}); "
                     "nodes follow registration order and edges are batch x prompt_len x hidden_size "
                     "(batch x 1 x hidden_size between decoder nodes of an encoder-decoder model)")
    if tracker is None:
        n = len(specs)
        zeros = (0,) * n
        memory = NodeMemory(kv_bytes=zeros, prefill_work_bytes=zeros, decode_work_bytes=zeros,
                            prefill_flops=zeros, decode_flops=zeros, notes=("not measured: the forward failed",))
    else:
        memory = measure_node_memory(model, [s.module for s in specs], workload, cache_config=cache_config)
        notes.extend(memory.notes)
    return tracker, memory


def _blocks(config, specs: list[_NodeSpec]) -> Iterator[tuple[int, bool, str | None]]:  # noqa: ANN001
    """``(node, is_decoder, layer_type)`` of each block; ``layer_type`` from ``config.layer_types``."""
    layer_types = getattr(config, "layer_types", None)
    encdec = bool(getattr(config, "is_encoder_decoder", False))
    decoder_index = 0
    for i, spec in enumerate(specs):
        if spec.kind != "block":
            continue
        is_decoder = not encdec or "decoder" in spec.name
        layer_type = None
        if is_decoder and isinstance(layer_types, list | tuple) and decoder_index < len(layer_types):
            layer_type = layer_types[decoder_index]
        yield i, is_decoder, layer_type
        decoder_index += is_decoder


def _estimates(model: nn.Module, specs: list[_NodeSpec], workload: Workload) -> dict[int, tuple[int, int]]:
    """Config-based ``(kv_bytes, work_bytes)`` for each decoder block (encoder blocks: no KV)."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    out: dict[int, tuple[int, int]] = {}
    for i, is_decoder, layer_type in _blocks(config, specs):
        kv, work = estimate_layer_bytes(config, workload, layer_type=layer_type)
        out[i] = (kv if is_decoder else 0, work)
    return out


def _estimate_flops(model: nn.Module, specs: list[_NodeSpec], workload: Workload) -> dict[int, tuple[int, int]]:
    """Config-based ``(prefill_flops, decode_flops)`` of each block and each ``nn.Linear`` leaf
    (:func:`layerplan.planner.model.estimate.estimate_forward_flops`), with the tokens :mod:`layerplan.planner.model.measure` runs:

    * decoder-only block: prefill ``prompt_len`` queries over ``prompt_len`` keys; decode 1 query over
      ``context_len`` keys (the window on sliding-window layers);
    * encoder-decoder: encoder blocks prefill as above and do not run in decode; decoder blocks see 1
      decoder token in prefill and per decode step, attending to their own tokens plus the
      ``prompt_len`` encoder tokens;
    * linear leaf (no attention): the output embedding projects 1 position per sequence in prefill
      (``logits_to_keep=1``) unless ``prefill_logits``, other linears every prompt token; 1 in decode.
    """
    config = getattr(model, "config", None)
    if config is None:
        return {}
    b, prompt, context = workload.batch_size, workload.prompt_len, workload.context_len
    has_decode = decodes(model, workload)
    encdec = bool(getattr(config, "is_encoder_decoder", False))
    shape = attention_shape(config)
    window = shape.sliding_window if shape is not None else None
    out: dict[int, tuple[int, int]] = {}

    def flops(i: int, q_tokens: int, kv_tokens: int) -> int:
        params = sum(p.numel() for p in specs[i].module.parameters())
        return estimate_forward_flops(config, num_parameters=params, batch_size=b, q_tokens=q_tokens,
                                      kv_tokens=kv_tokens)

    for i, is_decoder, layer_type in _blocks(config, specs):
        sliding = layer_type == "sliding_attention" or (layer_type is None and window is not None)
        if encdec and not is_decoder:
            out[i] = (flops(i, prompt, prompt), 0)
        elif encdec:
            self_tokens = max(context - prompt, 1)
            out[i] = (flops(i, 1, 1 + prompt), flops(i, 1, self_tokens + prompt) if has_decode else 0)
        elif is_recurrent(config, layer_type):  # a scan: no attention over earlier tokens
            out[i] = (flops(i, prompt, 0), flops(i, 1, 0) if has_decode else 0)
        else:
            kv_tokens = min(context, window) if sliding and window is not None else context
            out[i] = (flops(i, prompt, prompt), flops(i, 1, kv_tokens) if has_decode else 0)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    keeps_last = "logits_to_keep" in inspect.signature(model.forward).parameters and not workload.prefill_logits
    for i, spec in enumerate(specs):
        if spec.kind == "leaf" and isinstance(spec.module, nn.Linear):
            q_tokens = 1 if spec.module is head and (keeps_last or encdec) else prompt
            out[i] = (flops(i, q_tokens, 0), flops(i, 1, 0) if has_decode else 0)
    return out


def _run_meta_forward(model, specs, module_to_node, tracker: _FlowTracker, workload: Workload) -> None:
    handles = []

    def pre_hook(module, args, kwargs):  # noqa: ANN001
        node = module_to_node[id(module)]
        if tracker.depth == 0:
            if node not in tracker.order:
                tracker.order.append(node)
            for key, t in input_tensors(args, kwargs):
                for producer in tracker.sources.get(id(t), ()):
                    if producer == node:
                        continue
                    entry = tracker.received.setdefault((id(t), producer),
                                                        _Received(*tracker.received_as(t, producer)))
                    entry.consumers.append((node, key))
        tracker.depth += 1

    def post_hook(module, args, kwargs, output):  # noqa: ANN001
        tracker.depth -= 1
        if tracker.depth == 0:
            tracker.mark(output, frozenset({module_to_node[id(module)]}))

    for spec in specs:
        if spec.module is not None:
            handles.append(spec.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(spec.module.register_forward_hook(post_hook, with_kwargs=True))
    try:
        # FakeTensorMode on top of meta: transformers treats fake tensors as "tracing" and skips the
        # data-dependent checks (``Tensor.item()``) that plain meta tensors cannot answer.
        # FakeGroupedMM: float32 MoE experts, which the fake grouped matmul refuses (its docstring).
        with (torch.no_grad(), unchecked(), FakeTensorMode(allow_non_fake_inputs=True), FakeGroupedMM(),
              _FlowMode(tracker)):
            model(**_example_inputs(model, workload))
    finally:
        for handle in handles:
            handle.remove()


def _execution_order(num_nodes: int, executed: list[int]) -> list[int]:
    """Executed nodes in call order; each never-called node just before the next called node in
    registration order (or at the end)."""
    if not executed:
        return list(range(num_nodes))
    called = set(executed)
    rank = {node: pos for pos, node in enumerate(executed)}
    keys = {}
    for i in range(num_nodes):
        if i in called:
            keys[i] = (rank[i], 1, i)
        else:
            nxt = next((j for j in range(i + 1, num_nodes) if j in called), None)
            keys[i] = (rank[nxt] if nxt is not None else len(executed), 0, i)
    return sorted(range(num_nodes), key=keys.__getitem__)


def _first_decoder_node(model: nn.Module, nodes: tuple[GraphNode, ...]) -> int:
    """Position of the first node of an encoder-decoder model's decoder (named ``decoder.*``, as
    :func:`_blocks` tells them), ``len(nodes)`` for any other model."""
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return len(nodes)
    return next((pos for pos, n in enumerate(nodes) if "decoder" in n.name), len(nodes))


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for attr in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise AssertionError("a model without a hidden size reached the fallback")


def _with_tied_groups(graph: LayerGraph) -> LayerGraph:
    """Node groups that must share a device: union of the nodes holding each tied-parameter group."""
    parent = {n.name: n.name for n in graph.nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group in graph.tied_parameters:
        holders = [h for h in (graph.node_of(p) for p in group) if h is not None]
        for other in holders[1:]:
            parent[find(other)] = find(holders[0])
    groups: dict[str, list[str]] = {}
    for n in graph.nodes:
        groups.setdefault(find(n.name), []).append(n.name)
    tied = tuple(tuple(g) for g in groups.values() if len(g) > 1)
    return dataclasses.replace(graph, tied_groups=tied)
