"""Measure each node's runtime memory on the meta device: KV cache and peak transient working set.

Nothing is guessed: the model runs under ``FakeTensorMode`` (shapes only, no memory, no compute) at
the declared workload, and

* the **working set** of a node is ``peak - live-at-entry`` bytes while its forward runs, from a
  ``TorchDispatchMode`` that follows every storage allocated and freed (fake tensors included). It
  holds the node's temporaries and its output, and in decode the fresh copy ``DynamicCache`` makes
  when it concatenates one token to a layer's cache. (PyTorch's
  ``torch.distributed._tools.mem_tracker.MemTracker`` measures the same under ``FakeTensorMode``,
  but updates every module's peak on every op: O(ops x modules), minutes for a 405B model; this
  tracker only follows the nodes.)
* the **KV cache** of a node is the bytes of keys + values its attention modules hand back from
  ``Cache.update`` at the last decode step of the workload, i.e. ``2 * n_kv_heads * head_dim *
  dtype_bytes * tokens`` per attention layer (vLLM ``kv_cache_interface.py``) with ``tokens`` the
  context, or the window for sliding-window layers (transformers ``DynamicSlidingWindowLayer``), and
  the encoder length for cross-attention. Encoder layers and layers without attention never call it.

Phases (see :class:`~planner.workload.Phase`): prefill = one forward over the prompt (``use_cache=
False``, logits for the last position only unless ``prefill_logits``); decode = one token after a
cache filled with ``context - 1`` tokens.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from planner.workload import Phase, Workload

__all__ = ["NodeMemory", "generates", "measure_node_memory"]


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeMemory:
    """Per node (in the order of the ``modules`` given): bytes at the workload.

    Attributes:
        kv_bytes: KV cache held by the node at the end of the workload.
        prefill_work_bytes: peak transient working set during prefill.
        decode_work_bytes: peak transient working set during one decode step (0 if not measured).
        notes: what could not be measured and why (empty when everything was measured).
    """

    kv_bytes: tuple[int, ...]
    prefill_work_bytes: tuple[int, ...]
    decode_work_bytes: tuple[int, ...]
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class _Recorder:
    """Which node is running, and the K+V bytes each cache hands back to it (self / cross)."""

    current: list[int] = field(default_factory=list)
    kv: dict[tuple[str, int], int] = field(default_factory=dict)

    def wrap(self, cache: object, tag: str) -> None:
        original = cache.update  # type: ignore[attr-defined]

        def update(key_states, value_states, layer_idx, *args, **kwargs):  # noqa: ANN001, ANN202
            keys, values = original(key_states, value_states, layer_idx, *args, **kwargs)
            if self.current:
                key = (tag, self.current[-1])
                self.kv[key] = self.kv.get(key, 0) + keys.nbytes + values.nbytes
            return keys, values

        cache.update = update  # type: ignore[attr-defined]


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


class _LiveBytes(TorchDispatchMode):
    """Bytes of live storages, and the peak seen since the current node started.

    A storage is counted once, when an op returns it without having received it (a fresh
    allocation, not a view or an in-place result), and released by a weakref finalizer when the last
    tensor on it dies (CPython frees at once, so the count follows the real program).
    """

    def __init__(self, num_nodes: int) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.work = [0] * num_nodes
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._stack: list[tuple[int, int, int]] = []  # (node, live at entry, outer peak)

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                storage = leaf.untyped_storage()
                if id(storage) not in inputs and storage not in self._seen:
                    nbytes = storage.nbytes()
                    self._seen[storage] = nbytes
                    weakref.finalize(storage, self._free, nbytes)
                    self.live += nbytes
        self.peak = max(self.peak, self.live)
        return out

    def enter(self, node: int) -> None:
        self._stack.append((node, self.live, self.peak))
        self.peak = self.live

    def leave(self) -> None:
        node, entry, outer_peak = self._stack.pop()
        self.work[node] = max(self.work[node], self.peak - entry)
        self.peak = max(outer_peak, self.peak)


def _make_cache(model: nn.Module, recorder: _Recorder):  # noqa: ANN202
    """The cache ``generate()`` would make, with its ``update`` recorded."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    config = model.config
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
) -> NodeMemory:
    """Measure KV cache and working set per node module (see the module docstring).

    Args:
        model: a model on the meta device, in ``workload.dtype``; left unmodified.
        modules: the node modules in node order (``None`` for root-parameter nodes: 0 bytes).
        workload: batch, lengths, phase.

    Returns:
        :class:`NodeMemory`; a phase that cannot run on meta yields zeros and a note.
    """
    n = len(modules)
    zeros = (0,) * n
    notes: list[str] = []
    index = {id(m): i for i, m in enumerate(modules) if m is not None}
    recorder = _Recorder()
    handles = []
    trackers: list[_LiveBytes] = []  # the one measuring now, if any

    def pre(module, args):  # noqa: ANN001
        recorder.current.append(index[id(module)])
        if trackers:
            trackers[-1].enter(index[id(module)])

    def post(module, args, output):  # noqa: ANN001
        recorder.current.pop()
        if trackers:
            trackers[-1].leave()

    def tracked(run: Callable[[], object]) -> tuple[int, ...]:
        trackers.append(_LiveBytes(n))
        try:
            with trackers[-1]:
                run()
            return tuple(trackers[-1].work)
        finally:
            trackers.pop()

    for m in modules:
        if m is not None:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))

    b = workload.batch_size
    encdec = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    causal_kwargs = {}
    if _accepts(model, "logits_to_keep"):
        causal_kwargs["logits_to_keep"] = 0 if workload.prefill_logits else 1

    def ids(length: int) -> torch.Tensor:
        return torch.zeros((b, length), dtype=torch.long, device="cpu")

    prefill_work, decode_work, kv = zeros, zeros, zeros
    try:
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
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

            prefill_work = tracked(lambda: call(**_prefill_inputs(ids, workload, encdec), use_cache=False,
                                                **causal_kwargs))
            if generates(model):  # encoders (BERT) keep no KV cache and have no decode phase
                kv, decode_work = _decode(call, tracked, ids, workload, encdec, recorder, n, causal_kwargs, model)
    except Exception as exc:  # meta kernels are missing for some ops; report, never crash
        notes.append(f"memory measurement failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
    finally:
        for h in handles:
            h.remove()
    if workload.phase is Phase.PREFILL:
        decode_work = zeros
    return NodeMemory(kv_bytes=tuple(kv), prefill_work_bytes=tuple(prefill_work),
                      decode_work_bytes=tuple(decode_work), notes=tuple(notes))


def _prefill_inputs(ids: Callable[[int], torch.Tensor], workload: Workload, encdec: bool) -> dict:
    inputs = {"input_ids": ids(workload.prompt_len)}
    if encdec:
        inputs["decoder_input_ids"] = ids(1)
    return inputs


def _decode(call, tracked, ids, workload: Workload, encdec: bool, recorder: _Recorder, n: int, causal_kwargs, model):  # noqa: ANN001, ANN202
    """Fill a cache to ``context - 1`` tokens, then measure one decode step."""
    cache = _make_cache(model, recorder)
    kv_tokens = workload.prompt_len if workload.phase is Phase.PREFILL else workload.context_len
    if encdec:
        # the encoder reads the prompt once (cross-attention cache = prompt_len tokens); the decoder's
        # self-attention cache grows to max_new_tokens
        decoder_tokens = max(kv_tokens - workload.prompt_len, 1)
        fill = call(input_ids=ids(workload.prompt_len), decoder_input_ids=ids(max(decoder_tokens - 1, 1)),
                    past_key_values=cache, use_cache=True)
        step = {"encoder_outputs": (fill.encoder_last_hidden_state,), "decoder_input_ids": ids(1)}
    else:
        call(input_ids=ids(max(kv_tokens - 1, 1)), past_key_values=cache, use_cache=True, **causal_kwargs)
        step = {"input_ids": ids(1)}
    cross = {node: size for (tag, node), size in recorder.kv.items() if tag == "cross"}
    recorder.kv.clear()
    work = tracked(lambda: call(**step, past_key_values=cache, use_cache=True, **causal_kwargs))
    # the last step's self-attention K/V: the whole context (or the window); cross-attention from the fill
    kv = [recorder.kv.get(("self", i), 0) + cross.get(i, 0) for i in range(n)]
    return kv, work
