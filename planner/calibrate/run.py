"""Load a model with a plan and run its workload for real: the measurements a calibration compares.

The model is loaded as users load it, ``from_pretrained(folder, **plan.from_pretrained_kwargs())``,
and run through the same ``generate()`` path (random token ids, an attention mask, greedy,
``min_new_tokens = max_new_tokens`` so that no end-of-sequence token stops it early); an encoder
(``generate()`` does not apply: BERT, MiniLM) runs one plain forward. Three runs: a warm-up (kernel
and allocator initialisation are not the workload's), one under :class:`AllocatorPeaks`, one under
:class:`NodeTimer` (the profiler's bookkeeping would slow the timed one).

``generate(max_new_tokens=n)`` of a decoder runs one prefill and ``n - 1`` decode forwards and leaves
``prompt + n - 1`` tokens in the cache; the graph's workload with ``max_new_tokens = steps`` sizes a
cache of ``prompt + steps`` tokens (its decode step at full context), so a decoder generates
``steps + 1`` tokens. An encoder-decoder's cache holds the decoder start token and ``n - 1``
generated ones: ``n = steps`` (as ``tests/test_memory.py`` checks against the graph).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig

from layerplan.planner.calibrate.memory import AllocatorPeaks, cache_bytes, storage_bytes, weight_bytes
from layerplan.planner.calibrate.timing import NodeTimer, PhaseTimes
from layerplan.planner.model.meta import auto_class_for
from layerplan.planner.output.adapter import Plan
from layerplan.planner.quiet import quiet
from layerplan.solver import InvalidSpecError

__all__ = ["Measurement", "generate_tokens", "measure_plan"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Measurement:
    """What one real run of a plan's workload measured, per device (accelerate keys).

    Attributes:
        weights_bytes: parameters and buffers resident per device (cpu-offloaded ones on cpu).
        kv_bytes: storages of the KV cache per device at the end of the run.
        peak_bytes: peak allocated bytes per device: resident at entry + the allocator's peak above it.
        times: seconds per phase and per node (:class:`PhaseTimes`).
        host_link_bytes_per_s: per GPU, a timed host-to-device copy; empty without GPUs.
    """

    weights_bytes: Mapping[int | str, int]
    kv_bytes: Mapping[int | str, int]
    peak_bytes: Mapping[int | str, int]
    times: PhaseTimes
    host_link_bytes_per_s: Mapping[int, float]


def generate_tokens(model: nn.Module, steps: int) -> int:
    """``max_new_tokens`` for ``generate()`` so that the cache ends as the graph sizes it at
    ``steps`` decode steps (module docstring); 0 for a model that does not generate (one forward)."""
    if not _generates(model):
        return 0
    if steps == 0:
        return 1  # prefill only: the prompt's cache
    return steps if getattr(model.config, "is_encoder_decoder", False) else steps + 1


def _generates(model: nn.Module) -> bool:
    can_generate = getattr(model, "can_generate", None)
    return bool(can_generate()) if callable(can_generate) else False


def _load(folder: str, plan: Plan) -> nn.Module:
    """``from_pretrained`` of the class the plan was made for, with the plan's kwargs.

    Raises:
        InvalidSpecError: the model reads something other than token ids.
    """
    config = AutoConfig.from_pretrained(folder)
    cls = auto_class_for(config)
    attn = plan.graph.workload.attn_implementation
    model = cls.from_pretrained(folder, attn_implementation=attn, **plan.from_pretrained_kwargs()).eval()
    if getattr(model, "main_input_name", "input_ids") != "input_ids":
        raise InvalidSpecError(f"{plan.graph.model} reads {model.main_input_name!r}, not token ids; calibrate "
                               "runs text workloads only")
    return model


def _inputs(model: nn.Module, plan: Plan) -> dict[str, torch.Tensor]:
    """Random token ids (batch x prompt) and their attention mask, on the plan's first accelerator
    (where accelerate's hooks would move them), else the cpu."""
    w = plan.graph.workload
    vocab = model.config.get_text_config().vocab_size
    devices = [d for d in plan.device_map.values() if d not in ("cpu", "disk")]
    device = devices[0] if devices else "cpu"
    ids = torch.randint(0, vocab, (w.batch_size, w.prompt_len), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _run(model: nn.Module, inputs: Mapping[str, torch.Tensor], tokens: int) -> object | None:
    """One run of the workload; the cache it leaves (None for an encoder's forward)."""
    with torch.no_grad():
        if tokens == 0:
            model(**inputs)
            return None
        pad = model.generation_config.pad_token_id
        eos = model.generation_config.eos_token_id
        if pad is None:
            pad = eos[0] if isinstance(eos, list) else (eos if eos is not None else 0)
        out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             return_dict_in_generate=True, pad_token_id=pad)
        return out.past_key_values


def _host_link(gpu: int, *, nbytes: int = 64 * 2**20, repeats: int = 3) -> float:
    """Bytes/s of the fastest of ``repeats`` copies of ``nbytes`` from pageable host memory to ``gpu``
    (accelerate copies offloaded weights from pageable memory)."""
    host = torch.empty(nbytes, dtype=torch.uint8)
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize(gpu)
        start = time.perf_counter()
        host.to(gpu)
        torch.cuda.synchronize(gpu)
        best = min(best, time.perf_counter() - start)
    return nbytes / best


def _node_modules(model: nn.Module, plan: Plan) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    return {n.name: modules[n.name] for n in plan.graph.nodes if n.kind != "parameter" and n.name in modules}


def _watched(plan: Plan) -> tuple[int | str, ...]:
    """Devices whose memory is measured: each one of the plan that holds or runs something, but disk."""
    return tuple(u.device for u in plan.usage if u.device != "disk" and (u.nodes or u.kv_bytes or u.activation_bytes))


def measure_plan(plan: Plan, folder: str, *, steps: int) -> Measurement:
    """Load ``folder`` with ``plan`` and measure its workload at ``steps`` decode steps.

    Args:
        plan: a plan of the workload that runs (its graph traced at ``max_new_tokens = steps``).
        folder: a ``save_pretrained`` checkpoint of the plan's model.
        steps: decode steps (:func:`generate_tokens`).

    Returns:
        A :class:`Measurement`.

    Raises:
        InvalidSpecError: a model that does not read token ids.
    """
    with quiet():
        model = _load(folder, plan)
        inputs = _inputs(model, plan)
        tokens = generate_tokens(model, steps)
        _run(model, inputs, tokens)  # warm-up
        gc.collect()
        devices = _watched(plan)
        weights = weight_bytes(model)
        with AllocatorPeaks(devices=devices) as peaks:
            cache = _run(model, inputs, tokens)
        kv = cache_bytes(cache)
        del cache
        gc.collect()
        with NodeTimer(model=model, nodes=_node_modules(model, plan)) as timer:
            _run(model, inputs, tokens)
    # at entry the GPUs' allocators know what they hold; the CPU's resident bytes are its weights and the inputs
    entry = {"cpu": weights.get("cpu", 0) + storage_bytes(inputs.values()).get("cpu", 0), **peaks.entry_bytes}
    peak = {d: entry.get(d, 0) + peaks.peak_bytes.get(d, 0) for d in devices}
    links = {d: _host_link(d) for d in devices if isinstance(d, int)}
    return Measurement(weights_bytes=weights, kv_bytes=kv, peak_bytes=peak, times=timer.times(),
                       host_link_bytes_per_s=links)
