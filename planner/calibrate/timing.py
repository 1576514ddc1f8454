"""Measured time of a real run: per node and per top-level forward, prefill apart from decode.

Forward pre/post hooks on each node module read ``time.perf_counter`` after
``torch.cuda.synchronize()`` on every GPU (kernels are asynchronous: without it a node's time would
be its launch time). A node's accelerate hook (``AlignDevicesHook``: moving inputs to its device,
loading offloaded weights) runs inside the module's call, so its time is part of the node's, as the
cost model charges transfers and offload streaming to the node that receives them.

A node inside another (a MoE layer's experts node, :mod:`layerplan.planner.model.experts`) has
its time taken off the enclosing node's, so the times of the nodes add up to the forward's.

Phases: ``generate()`` calls the model's forward once for the prefill, then once per decode step;
everything before the first forward returns (an encoder-decoder's encoder too) is prefill.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["NodeTimer", "PhaseTimes"]


@dataclass(frozen=True, kw_only=True, slots=True)
class PhaseTimes:
    """Measured seconds of one run.

    Attributes:
        prefill_s: the prefill forward (the first call of the model's forward).
        decode_step_s: mean seconds of the later forwards (one decode step each); None without any.
        decode_steps: how many decode forwards ran.
        node_prefill_s: node name -> seconds in prefill (all its calls).
        node_decode_s: node name -> mean seconds per decode step.
    """

    prefill_s: float
    decode_step_s: float | None
    decode_steps: int
    node_prefill_s: Mapping[str, float]
    node_decode_s: Mapping[str, float]


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for gpu in range(torch.cuda.device_count()):
            torch.cuda.synchronize(gpu)


@dataclass(slots=True)
class NodeTimer:
    """Context manager timing ``nodes`` (name -> module) and the calls of ``model``'s forward.

    Hooks are removed on exit; the model is otherwise left as it was. Read :meth:`times` after.
    """

    model: nn.Module
    nodes: Mapping[str, nn.Module]
    _forwards: list[float] = field(default_factory=list)
    _spent: dict[tuple[str, int], float] = field(default_factory=dict)
    _open: dict[int, float] = field(default_factory=dict)
    _handles: list = field(default_factory=list)
    _running: list[str] = field(default_factory=list)  # nodes whose forward is on the stack

    def _phase(self) -> int:
        return 0 if not self._forwards else 1  # 0 prefill, 1 decode

    def _start(self, key: int) -> None:
        _synchronize()
        self._open[key] = time.perf_counter()

    def _stop(self, key: int) -> float:
        _synchronize()
        return time.perf_counter() - self._open.pop(key)

    def __enter__(self) -> NodeTimer:
        for name, module in self.nodes.items():
            self._handles.append(module.register_forward_pre_hook(lambda m, a, name=name: self._node_start(name, m)))
            self._handles.append(module.register_forward_hook(lambda m, a, o, name=name: self._node_done(name, m)))
        self._handles.append(self.model.register_forward_pre_hook(lambda m, a: self._start(-1)))
        self._handles.append(self.model.register_forward_hook(lambda m, a, o: self._forwards.append(self._stop(-1))))
        return self

    def _node_start(self, name: str, module: nn.Module) -> None:
        self._running.append(name)
        self._start(id(module))

    def _node_done(self, name: str, module: nn.Module) -> None:
        key, spent = (name, self._phase()), self._stop(id(module))
        self._spent[key] = self._spent.get(key, 0.0) + spent
        self._running.pop()
        if self._running:  # a node inside another (a MoE layer's experts): not the outer one's time
            outer = (self._running[-1], key[1])
            self._spent[outer] = self._spent.get(outer, 0.0) - spent

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def times(self) -> PhaseTimes:
        """The seconds measured (a plain forward, as an encoder runs, is one prefill)."""
        steps = max(len(self._forwards) - 1, 0)
        return PhaseTimes(
            prefill_s=self._forwards[0] if self._forwards else 0.0,
            decode_step_s=sum(self._forwards[1:]) / steps if steps else None,
            decode_steps=steps,
            node_prefill_s={name: s for (name, phase), s in self._spent.items() if phase == 0},
            node_decode_s={name: s / steps for (name, phase), s in self._spent.items() if phase == 1 and steps},
        )
