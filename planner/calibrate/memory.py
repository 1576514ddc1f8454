"""Measured memory of a real run, per device: what the allocators saw, and what tensors hold.

Not the code path of the predictions (:mod:`layerplan.planner.model.measure` follows fake-tensor
storages under a dispatch mode); here the numbers come from the allocators themselves:

* a GPU's peak: ``torch.cuda.max_memory_allocated(i)`` after ``torch.cuda.reset_peak_memory_stats(i)``
  (the caching allocator's own count of bytes handed to tensors, its reserved slack excluded);
* the CPU's peak: the allocation and free events of PyTorch's CPU allocator recorded by the torch
  profiler with ``profile_memory=True`` (each event's ``alloc_size``, positive when allocated, in
  time order: the same events ``torch.profiler._memory_profiler`` reads); blocks allocated before
  the profile started have no free event, so the running sum is the bytes above the level at entry.

Resident bytes (weights, KV cache) are the storages of the tensors themselves, each counted once,
whole (a cache *view* of a longer tensor counts the storage behind it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["AllocatorPeaks", "cache_bytes", "device_key", "storage_bytes", "weight_bytes"]


def device_key(device: torch.device) -> int | str:
    """accelerate's key of a torch device: ``cuda:1`` -> ``1``, ``cpu`` -> ``"cpu"``."""
    if device.type == "cuda":
        return device.index if device.index is not None else torch.cuda.current_device()
    return device.type if device.index is None else f"{device.type}:{device.index}"


def storage_bytes(tensors: Iterable[torch.Tensor]) -> dict[int | str, int]:
    """Bytes of the distinct storages behind ``tensors``, per device (meta tensors hold none)."""
    seen: set[tuple[int | str, int]] = set()
    out: dict[int | str, int] = {}
    for t in tensors:
        if t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = (device_key(t.device), storage.data_ptr())
        if key in seen:
            continue
        seen.add(key)
        out[key[0]] = out.get(key[0], 0) + storage.nbytes()
    return out


def _offloaded(model: nn.Module) -> Iterator[torch.Tensor]:
    """Weights accelerate's hooks keep off the module (``AlignDevicesHook.weights_map`` values that
    are tensors in memory: cpu offload; disk offload maps files and yields nothing here)."""
    for module in model.modules():
        weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        dataset = getattr(weights, "dataset", None)
        state = getattr(dataset, "state_dict", None) if dataset is not None else None
        if isinstance(state, dict):
            yield from (v for v in state.values() if isinstance(v, torch.Tensor))
            return  # one dataset is shared by every hook of the model


def weight_bytes(model: nn.Module) -> dict[int | str, int]:
    """Bytes of the model's parameters and buffers per device, tied ones once, cpu-offloaded
    weights held by accelerate's hooks included."""
    tensors = [*model.parameters(), *model.buffers(), *_offloaded(model)]
    return storage_bytes(tensors)


def _cache_tensors(cache: object) -> Iterator[torch.Tensor]:
    """Keys and values of every layer of a transformers cache (an ``EncoderDecoderCache``'s two)."""
    for part in (cache, getattr(cache, "self_attention_cache", None), getattr(cache, "cross_attention_cache", None)):
        for layer in getattr(part, "layers", None) or ():
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    yield t


def cache_bytes(cache: object | None) -> dict[int | str, int]:
    """Bytes of a cache's K/V storages per device (``{}`` for None)."""
    return storage_bytes(_cache_tensors(cache)) if cache is not None else {}


@dataclass(slots=True)
class AllocatorPeaks:
    """Context manager: per device, the peak allocated bytes above the level at entry.

    Attributes:
        devices: the devices watched (accelerate keys: GPU indices, ``"cpu"``).
        entry_bytes: per GPU, ``torch.cuda.memory_allocated`` at entry (the CPU's is not known to
            the allocator: the caller adds the resident bytes it measured).
        peak_bytes: filled on exit: per device, peak bytes above entry (>= 0).
    """

    devices: tuple[int | str, ...]
    entry_bytes: dict[int | str, int] = field(default_factory=dict)
    peak_bytes: dict[int | str, int] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _profiler: object | None = None

    def __enter__(self) -> AllocatorPeaks:
        for gpu in self._gpus():
            torch.cuda.synchronize(gpu)
            torch.cuda.reset_peak_memory_stats(gpu)
            self.entry_bytes[gpu] = torch.cuda.memory_allocated(gpu)
        if "cpu" in self.devices:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = self._stack.enter_context(profile(activities=[ProfilerActivity.CPU], profile_memory=True))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for gpu in self._gpus():
            torch.cuda.synchronize(gpu)
            self.peak_bytes[gpu] = max(0, torch.cuda.max_memory_allocated(gpu) - self.entry_bytes[gpu])
        self._stack.close()
        if self._profiler is not None and exc_info[0] is None:
            self.peak_bytes["cpu"] = _cpu_peak(self._profiler)

    def _gpus(self) -> list[int]:
        return [d for d in self.devices if isinstance(d, int)]


def _allocations(profiler: object) -> Iterator[tuple[int, int]]:
    """``(time ns, signed bytes)`` of every CPU allocator event the profiler recorded."""
    from torch._C._profiler import _EventType

    stack = list(profiler.profiler.kineto_results.experimental_event_tree())  # type: ignore[attr-defined]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            yield node.start_time_ns, node.extra_fields.alloc_size


def _cpu_peak(profiler: object) -> int:
    """The peak of the running sum of CPU allocations and frees, in time order (>= 0)."""
    live = peak = 0
    for _, size in sorted(_allocations(profiler), key=lambda event: event[0]):
        live += size
        peak = max(peak, live)
    return peak
