"""Measure each node's runtime memory on the meta device: KV cache and peak transient working set.

Nothing is guessed: the model runs under ``FakeTensorMode`` (shapes only, no memory, no compute) at
the declared workload, and

* the **working set** of a node is ``peak - live-at-entry`` bytes while its forward runs, from a
  ``TorchDispatchMode`` that follows every storage allocated and freed (fake tensors included). It
  holds the node's temporaries and its output, and in decode the fresh copy ``DynamicCache`` makes
  when it concatenates one token to a layer's cache.
* the **live bytes** of a node are the activation bytes live at its peak that are not its working
  set: what was allocated during the forward and is still referenced when the node starts. That is
  the model's inputs, the ``inputs_embeds`` the model's forward keeps for the whole pass, the node's
  input hidden states, rotary ``cos``/``sin``, attention masks built by glue code outside every
  node (Gemma-2 eager: two float32 ``batch x seq^2`` masks; Falcon SDPA: a boolean one), an
  encoder-decoder's encoder output. Weights and buffers are swapped in before tracking, and every
  storage a cache's ``update`` hands back (the KV cache, charged as ``kv_bytes``) leaves the count
  when it is handed back, so neither is counted twice; the transient a decode step's
  ``torch.cat`` makes while the previous cache tensor is still alive stays in the working set. On
  one device, ``weights + KV + max over nodes of (working set + live bytes)`` is the forward's peak.
  (PyTorch's
  ``torch.distributed._tools.mem_tracker.MemTracker`` measures the same under ``FakeTensorMode``,
  but updates every module's peak on every op: O(ops x modules), minutes for a 405B model; this
  tracker only follows the nodes.)
* the **KV cache** of a node is the largest storage behind the keys + values its attention modules
  hand back from ``Cache.update`` (and the cache keeps, or keeps a view of) over the workload: at
  the last decode step, ``2 * n_kv_heads * head_dim * dtype_bytes * tokens`` per attention layer
  (vLLM ``kv_cache_interface.py``) with ``tokens`` the context, or the window for sliding-window
  layers, and the encoder length for cross-attention. A sliding-window layer (transformers
  ``DynamicSlidingWindowLayer``) keeps after the prompt a window-long *view* of the prompt's K/V,
  whose storage is the whole prompt's until its first decode step replaces it: when the prompt is
  longer than the window that layer is charged the prompt's tokens (see :func:`_decode`). Encoder
  layers and layers without attention never call it.
* the **FLOPs** of a node are those of the ops that run while it is the innermost running node,
  each counted with PyTorch's own per-op formula (``torch.utils.flop_counter.flop_registry``, keyed
  by ``func._overloadpacket``, as ``FlopCounterMode`` does): matmuls (``mm``, ``addmm``, ``bmm``,
  ``baddbmm``), convolutions and fused attention (``_scaled_dot_product_*``: ``2 * 2 * batch *
  heads * q_len * kv_len * head_dim``, causal masking not discounted); elementwise ops, norms and
  softmax count 0, as there. Two kernels our CPU fake tensors reach have no entry in torch 2.13's
  registry and get one built from its shape functions: ``_scaled_dot_product_flash_attention_for_cpu``
  (same ``query, key, value`` arguments as the CUDA flash kernel: the same ``sdpa_flop``) and
  ``_grouped_mm`` (MoE experts: one ``mm_flop`` over all routed rows). ``FlopCounterMode`` itself is
  not used: it attributes FLOPs to module *names*, to every ancestor of the running module, from a
  ``ModuleTracker`` that hooks every module, and it is a second dispatch mode per op on top of the
  one this module already runs; a 405B trace would pay both, to then map names back to our nodes.
  Here counting adds one dictionary lookup per op, and one shape formula per matmul or attention op,
  to the memory tracker below (about 1% of a trace).

Phases (see :class:`~layerplan.planner.model.workload.Phase`): prefill = one forward over the prompt (``use_cache=
False``, logits for the last position only unless ``prefill_logits``); decode = one token after a
cache filled with ``context - 1`` tokens. The decode step also records the bytes of every tensor each
node receives (:func:`input_tensors` keys), so that :mod:`layerplan.planner.model.trace` can size its edges in decode.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry, mm_flop, shape_wrapper
from torch.utils.weak import WeakIdKeyDictionary

from layerplan.planner.model import budget
from layerplan.planner.model.inputs import Feed, feed_for, kv_tokens, unchecked
from layerplan.planner.model.workload import Phase, Workload

__all__ = ["FakeGroupedMM", "NodeMemory", "decodes", "generates", "input_tensors", "measure_node_memory"]


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeMemory:
    """Per node (in the order of the ``modules`` given): bytes and FLOPs at the workload.

    Attributes:
        kv_bytes: the largest KV cache storage the node holds over the workload (the end, or
            a sliding-window layer's prompt: see the module docstring).
        prefill_work_bytes: peak transient working set during prefill.
        decode_work_bytes: peak transient working set during one decode step (0 if not measured).
        prefill_live_bytes: activation bytes live at the node's prefill peak besides its working set
            (what the forward had allocated and still held when the node started, KV cache
            excluded: see the module docstring); over several calls of one node, the largest peak
            less ``prefill_work_bytes``. ``()`` when not measured.
        decode_live_bytes: the same in the decode step (``()`` when not measured).
        prefill_flops: floating-point operations of the node's forward(s) in the prefill pass
            (``torch.utils.flop_counter`` formulas, see the module docstring).
        decode_flops: the same for one decode step at full context (0 without a decode step:
            :func:`decodes` is False, or the measurement failed).
        decode_input_bytes: per node, the bytes of each tensor it received in the decode step, keyed
            as :func:`input_tensors` keys them (``{}`` for a node the step did not call); ``()`` when no
            decode step was measured.
        notes: what could not be measured and why (empty when everything was measured).
        flop_notes: FLOPs left out (an op whose formula rejected its shapes, FLOPs outside every
            node); everything else stands, so these do not make :mod:`layerplan.planner.model.trace` estimate.
    """

    kv_bytes: tuple[int, ...]
    prefill_work_bytes: tuple[int, ...]
    decode_work_bytes: tuple[int, ...]
    prefill_flops: tuple[int, ...]
    decode_flops: tuple[int, ...]
    decode_input_bytes: tuple[Mapping[str, int], ...] = ()
    prefill_live_bytes: tuple[int, ...] = ()
    decode_live_bytes: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    flop_notes: tuple[str, ...] = ()


@dataclass(slots=True)
class _Recorder:
    """Which node is running, the storage bytes behind the K+V each cache hands back to it (self /
    cross), and who is told of the tensors handed back (``on_update``: the meter measuring now,
    which stops counting them as activations).

    The storage, not the tensor: transformers' cache layers keep what ``update`` returns
    (``DynamicLayer``: ``self.keys = torch.cat(...)``, returned) or a slice of it
    (``DynamicSlidingWindowLayer``: returns the ``cat`` and keeps ``[:, :, -sliding_window + 1:]``,
    a view whose storage is the whole ``cat``), so that storage is what the cache holds."""

    current: list[int] = field(default_factory=list)
    kv: dict[tuple[str, int], int] = field(default_factory=dict)
    on_update: list[Callable[[tuple[torch.Tensor, ...]], None]] = field(default_factory=list)

    def wrap(self, cache: object, tag: str) -> None:
        original = cache.update  # type: ignore[attr-defined]

        def update(key_states, value_states, layer_idx, *args, **kwargs):  # noqa: ANN001, ANN202
            keys, values = original(key_states, value_states, layer_idx, *args, **kwargs)
            if self.current:
                key = (tag, self.current[-1])
                self.kv[key] = self.kv.get(key, 0) + _storage_bytes(keys) + _storage_bytes(values)
            for told in self.on_update:
                told((keys, values))
            return keys, values

        cache.update = update  # type: ignore[attr-defined]


def _storage_bytes(t: torch.Tensor) -> int:
    """Bytes of the storage behind ``t`` (all of it, for a view of a larger tensor)."""
    return t.untyped_storage().nbytes()


def _accepts(model: nn.Module, name: str) -> bool:
    params = inspect.signature(model.forward).parameters
    return name in params


def generates(model: nn.Module) -> bool:
    """Whether ``generate()`` applies, so a KV cache and a decode phase exist (transformers
    ``PreTrainedModel.can_generate``; BERT-style encoders accept a cache argument but never decode)."""
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate):
        return bool(can_generate())
    return _accepts(model, "past_key_values")


def decodes(model: nn.Module, workload: Workload) -> bool:
    """Whether the workload has a decode step: the model generates and the phase is not prefill."""
    return workload.phase is not Phase.PREFILL and generates(model)


def input_tensors(args: tuple, kwargs: Mapping[str, object]) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors a module call receives, each with a key stable across calls of the same forward.

    The key is the positional index or keyword name, then the tensor's rank among that argument's
    tensors (``"0/0"`` = ``hidden_states`` passed first; ``"position_embeddings/1"`` = ``sin``), so a
    tensor a node receives in prefill is found again in decode. ``ModelOutput`` and ``Cache``
    objects are looked into one level deep.
    """
    for name, value in [*((str(i), a) for i, a in enumerate(args)), *kwargs.items()]:
        rank = 0
        for leaf in tree_flatten(value)[0]:
            if isinstance(leaf, torch.Tensor):
                inner = (leaf,)
            elif hasattr(leaf, "__dict__") and type(leaf).__module__.startswith("transformers"):
                inner = tuple(v for v in vars(leaf).values() if isinstance(v, torch.Tensor))
            else:
                continue
            for t in inner:
                yield f"{name}/{rank}", t
                rank += 1


@shape_wrapper
def _grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """``_grouped_mm`` (MoE experts): each group is one matmul, so together they are one ``mm`` over
    every row of ``mat_a`` (2D ``(rows, K)`` or 3D ``(groups, M, K)``) against one group's ``(K, N)``;
    with both operands 2D the groups split ``K`` and the whole is ``mm(mat_a, mat_b)``."""
    k = a_shape[-1]
    if len(b_shape) == 3:
        return mm_flop((math.prod(a_shape[:-1]), k), (b_shape[-2], b_shape[-1]))
    if len(a_shape) == 2 and len(b_shape) == 2:
        return mm_flop(a_shape, b_shape)
    raise ValueError(f"grouped_mm of {tuple(a_shape)} x {tuple(b_shape)}: layout without a FLOP formula")


def _grouped_mm_shape(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor | None) -> tuple[int, ...]:
    """The output shape of ``_grouped_mm(a, b, offs)``, per layout (torch's
    ``_meta_registrations._create_grouped_mm_output_tensor``): 2D x 3D ``(S, N)``; 3D x 3D (a
    batched matmul) ``(G, M, N)``; 2D x 2D (groups split ``K``) ``(groups, M, N)``; 3D x 2D ``(M, N)``."""
    if a.dim() == 2:
        if b.dim() == 2:
            assert offs is not None  # the op requires offsets for a 2D operand
            return (offs.shape[0], a.shape[0], b.shape[1])
        return (a.shape[0], b.shape[-1])
    if b.dim() == 2:
        return (a.shape[1], b.shape[1])
    return (a.shape[0], a.shape[1], b.shape[-1])


class FakeGroupedMM(TorchDispatchMode):
    """``aten._grouped_mm`` in float32 / float16 on fake tensors: the output, contiguous, of the
    shape the real kernel returns (:func:`_grouped_mm_shape`), in ``out_dtype`` or the inputs' dtype.

    PyTorch's meta kernel, which fake tensors run, implements the CUDA kernel's checks and refuses
    anything but bfloat16 ("Expected inputs of BF16 type"), while the CPU kernel multiplies float32
    (and transformers calls it for MoE experts on the CPU, ``integrations/moe.py``). Every other
    call, bfloat16 ones included, goes to the meta kernel unchanged.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is torch.ops.aten._grouped_mm.default:
            a, b = args[0], args[1]
            offs = args[2] if len(args) > 2 else kwargs.get("offs")
            out_dtype = (args[4] if len(args) > 4 else kwargs.get("out_dtype")) or a.dtype
            if a.dtype == b.dtype and a.dtype in (torch.float32, torch.float16) and out_dtype == a.dtype:
                return torch.empty(_grouped_mm_shape(a, b, offs), dtype=out_dtype, device=a.device)
        return func(*args, **kwargs)


def _flop_formulas() -> dict[object, Callable[..., int]]:
    """PyTorch's registry, plus the kernels it misses that our fake CPU forward reaches."""
    formulas = dict(flop_registry)
    aten = torch.ops.aten
    # The CPU fused SDPA kernel takes (query, key, value, ...) like the CUDA flash kernel.
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas.setdefault(aten._scaled_dot_product_flash_attention_for_cpu,
                            flop_registry[aten._scaled_dot_product_flash_attention])
    if hasattr(aten, "_grouped_mm"):
        formulas.setdefault(aten._grouped_mm, _grouped_mm_flop)
    # transformers' MoE fallback (input (S, K), weight (experts, K, N), offs): an opaque custom op
    if hasattr(torch.ops.transformers, "grouped_mm_fallback"):
        formulas.setdefault(torch.ops.transformers.grouped_mm_fallback, _grouped_mm_flop)
    return formulas


class _NodeMeter(TorchDispatchMode):
    """Per node, while its forward runs: the peak of live storage bytes above entry and in all, its
    FLOPs and (``record_inputs``) the bytes of the tensors it receives.

    A storage is counted once, when an op returns it without having received it (a fresh
    allocation, not a view or an in-place result), and released by a weakref finalizer when the last
    tensor on it dies (CPython frees at once, so the count follows the real program); a storage a
    cache hands back (:meth:`to_cache`) leaves the count then. An op's FLOPs go to the innermost
    running node; ops outside every node (glue code) to ``outside_flops``.
    """

    def __init__(self, num_nodes: int, *, record_inputs: bool = False) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.work = [0] * num_nodes
        self.total = [0] * num_nodes  # the largest peak of live bytes while the node ran, entry included
        self.flops = [0] * num_nodes
        self.outside_flops = 0
        self.uncounted: dict[str, str] = {}  # op -> why its FLOPs are not counted
        self.inputs: list[dict[str, int]] | None = [{} for _ in range(num_nodes)] if record_inputs else None
        self._formulas = _flop_formulas()
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> its finalizer
        self._stack: list[tuple[int, int, int]] = []  # (node, live at entry, outer peak)

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        budget.check()
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                storage = leaf.untyped_storage()
                if id(storage) not in inputs and storage not in self._seen:
                    nbytes = storage.nbytes()
                    self._seen[storage] = weakref.finalize(storage, self._free, nbytes)
                    self.live += nbytes
        self.peak = max(self.peak, self.live)
        formula = self._formulas.get(func._overloadpacket)
        if formula is not None:
            try:
                flops = formula(*args, **(kwargs or {}), out_val=out)
            except Exception as exc:  # a formula that rejects these shapes costs its FLOPs, not the run
                self.uncounted.setdefault(str(func._overloadpacket), f"{type(exc).__name__}: {exc}"[:120])
            else:
                if self._stack:
                    self.flops[self._stack[-1][0]] += flops
                else:
                    self.outside_flops += flops
        return out

    def enter(self, node: int, args: tuple, kwargs: Mapping[str, object]) -> None:
        if self.inputs is not None and not self.inputs[node]:  # a node called more than once: its first call
            self.inputs[node] = {key: t.nbytes for key, t in input_tensors(args, kwargs)}
        self._stack.append((node, self.live, self.peak))
        self.peak = self.live

    def leave(self) -> None:
        node, entry, outer_peak = self._stack.pop()
        self.work[node] = max(self.work[node], self.peak - entry)
        self.total[node] = max(self.total[node], self.peak)
        self.peak = max(outer_peak, self.peak)

    def to_cache(self, tensors: tuple[torch.Tensor, ...]) -> None:
        """The storages behind ``tensors`` now hold KV cache (charged as ``kv_bytes``): no longer
        counted as live activations. Peaks already reached keep them (a decode step's ``cat`` peak
        holds the new cache tensor next to the old one)."""
        for t in tensors:
            finalizer = self._seen.get(t.untyped_storage())
            if finalizer is not None and finalizer.alive:
                _, _, (nbytes,), _ = finalizer.detach()
                self.live -= nbytes

    def live_bytes(self) -> list[int]:
        """Per node, its largest peak less its working set: bytes live beside the working set."""
        return [total - work for total, work in zip(self.total, self.work)]


def _make_cache(config, recorder: _Recorder):  # noqa: ANN001, ANN202
    """The cache ``generate()`` would make for ``config``, with its ``update`` recorded."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    if getattr(config, "is_encoder_decoder", False):
        self_cache, cross_cache = DynamicCache(config=config), DynamicCache(config=config)
        recorder.wrap(self_cache, "self")
        recorder.wrap(cross_cache, "cross")
        return EncoderDecoderCache(self_cache, cross_cache)
    cache = DynamicCache(config=config)
    recorder.wrap(cache, "self")
    return cache


def measure_node_memory(
    model: nn.Module,
    modules: Sequence[nn.Module | None],
    workload: Workload,
    *,
    cache_config: object | None = None,
) -> NodeMemory:
    """Measure KV cache, working set, FLOPs and decode-step inputs per node module (see the module
    docstring).

    Args:
        model: a model on the meta device, in ``workload.dtype``; left unmodified.
        modules: the node modules in node order (``None`` for root-parameter nodes: 0 bytes, 0 FLOPs).
        workload: batch, lengths, phase.
        cache_config: the config to build the decode step's cache from (default ``model.config``):
            a model that runs only some of its layers (:mod:`layerplan.planner.model.replicate`)
            still indexes the cache by its layers' own ``layer_idx``, so needs the full model's.

    Returns:
        :class:`NodeMemory`; a phase that cannot run on meta yields zeros and a note.
    """
    n = len(modules)
    zeros = (0,) * n
    notes: list[str] = []
    flop_notes: list[str] = []
    index = {id(m): i for i, m in enumerate(modules) if m is not None}
    recorder = _Recorder()
    handles = []
    trackers: list[_NodeMeter] = []  # the one measuring now, if any

    def pre(module, args, kwargs):  # noqa: ANN001
        recorder.current.append(index[id(module)])
        if trackers:
            trackers[-1].enter(index[id(module)], args, kwargs)

    def post(module, args, output):  # noqa: ANN001
        recorder.current.pop()
        if trackers:
            trackers[-1].leave()

    def tracked(phase: str, run: Callable[[], object], *, record_inputs: bool = False) -> _NodeMeter:
        trackers.append(_NodeMeter(n, record_inputs=record_inputs))
        recorder.on_update.append(trackers[-1].to_cache)
        try:
            with trackers[-1]:
                run()
            meter = trackers[-1]
        finally:
            trackers.pop()
            recorder.on_update.clear()
        for op, why in meter.uncounted.items():
            flop_notes.append(f"{phase} FLOPs of {op} not counted ({why})")
        if meter.outside_flops:
            flop_notes.append(f"{meter.outside_flops} {phase} FLOPs ran outside every node and are in none")
        return meter

    for m in modules:
        if m is not None:
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post))

    feed = feed_for(model, workload)
    causal_kwargs = {}
    if _accepts(model, "logits_to_keep"):
        causal_kwargs["logits_to_keep"] = 0 if workload.prefill_logits else 1

    prefill, decode, kv = None, None, zeros
    try:
        with torch.no_grad(), unchecked(), FakeTensorMode(allow_non_fake_inputs=True), FakeGroupedMM():
            # Swap in fake copies of the weights *before* tracking: otherwise each meta weight is
            # converted to a fake tensor at first use and counted as a working-set allocation.
            # They are fake *CPU* tensors so that SDPA dispatches to a fused kernel (as on a GPU)
            # rather than meta's math fallback, which materialises the attention scores.
            memo: dict[int, torch.Tensor] = {}
            fake_state = {}
            for name, t in [*model.named_parameters(remove_duplicate=False),
                            *model.named_buffers(remove_duplicate=False)]:
                if id(t) not in memo:
                    memo[id(t)] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu",
                                                      requires_grad=t.requires_grad)
                fake_state[name] = memo[id(t)]

            def call(**kwargs):  # noqa: ANN003, ANN202
                return torch.func.functional_call(model, fake_state, args=(), kwargs=kwargs, tie_weights=False)

            prefill = tracked("prefill", lambda: call(**feed.prefill("cpu"), use_cache=False, **causal_kwargs))
            if generates(model):  # encoders (BERT) keep no KV cache and have no decode phase
                cache = _make_cache(model.config if cache_config is None else cache_config, recorder)
                kv, decode = _decode(call, tracked, feed, kv_tokens(workload), recorder, n, causal_kwargs, cache)
    except Exception as exc:  # meta kernels are missing for some ops; report, never crash
        notes.append(f"memory measurement failed ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]})")
    finally:
        for h in handles:
            h.remove()
    if not decodes(model, workload):
        decode = None
    return NodeMemory(
        kv_bytes=tuple(kv),
        prefill_work_bytes=tuple(prefill.work) if prefill else zeros,
        decode_work_bytes=tuple(decode.work) if decode else zeros,
        prefill_flops=tuple(prefill.flops) if prefill else zeros,
        decode_flops=tuple(decode.flops) if decode else zeros,
        decode_input_bytes=tuple(decode.inputs) if decode and decode.inputs is not None else (),
        prefill_live_bytes=tuple(prefill.live_bytes()) if prefill else (),
        decode_live_bytes=tuple(decode.live_bytes()) if decode else (),
        notes=tuple(notes),
        flop_notes=tuple(flop_notes),
    )


def _decode(call, tracked, feed: Feed, tokens: int, recorder: _Recorder, n: int, causal_kwargs, cache):  # noqa: ANN001, ANN202
    """Fill ``cache`` so that one more token makes ``tokens`` of context, then measure that decode
    step: ``(kv_bytes, meter)``. An encoder-decoder's cross-attention cache is filled once, from
    the encoder output (the prompt, or the audio frames).

    ``kv_bytes`` is, per node, the largest storage its cache holds: at the last step, or after the
    prompt where that is more. A sliding-window layer (transformers ``DynamicSlidingWindowLayer``)
    keeps, from ``generate()``'s prefill until its first decode step, a window-long view of the
    prompt's whole K/V, so that when the prompt is longer than the window the fill runs in two
    forwards, as ``generate()`` does: the prompt, then the rest of the context; the second holds
    ``window - 1 + rest`` tokens, which no real run does, and is not counted. A cache without
    sliding layers holds at most the last step's storage and is filled in one forward.
    """
    kwargs = {} if feed.encoder_decoder else causal_kwargs
    prompt_tokens = min(feed.prompt_len, tokens - 1)  # a prefill-only workload fills prompt - 1
    windows = [layer.sliding_window for layer in getattr(cache, "layers", ())
               if getattr(layer, "is_sliding", False) and hasattr(layer, "sliding_window")]
    after_prompt: dict[int, int] = {}
    if not feed.encoder_decoder and any(window < prompt_tokens for window in windows):
        filled = call(**feed.fill("cpu", prompt_tokens + 1), past_key_values=cache, use_cache=True, **kwargs)
        after_prompt = {node: size for (tag, node), size in recorder.kv.items() if tag == "self"}
        recorder.kv.clear()
        if prompt_tokens < tokens - 1:
            filled = call(**feed.fill("cpu", tokens - prompt_tokens), past_key_values=cache, use_cache=True, **kwargs)
    else:
        filled = call(**feed.fill("cpu", tokens), past_key_values=cache, use_cache=True, **kwargs)
    step = feed.step("cpu", filled)
    cross = {node: size for (tag, node), size in recorder.kv.items() if tag == "cross"}
    recorder.kv.clear()
    meter = tracked("decode", lambda: call(**step, past_key_values=cache, use_cache=True, **causal_kwargs),
                    record_inputs=True)
    # the last step's self-attention K/V (the whole context, or the window's storage), or the
    # prompt's where a sliding layer held more after it; cross-attention from the fill
    kv = [max(recorder.kv.get(("self", i), 0), after_prompt.get(i, 0)) + cross.get(i, 0) for i in range(n)]
    return kv, meter
