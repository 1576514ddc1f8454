"""What each device really holds under a placement: the memory accounting every solver obeys.

For a device ``d`` and an assignment (storage device per node):

* ``weights``: bytes of the nodes *stored* on ``d`` (weights and buffers);
* for a device that computes at least one node (an accelerator, or the CPU when it is the execution
  device), and only when the problem has runtime memory
  (:attr:`layerplan.solver.problem.PlacementProblem.has_runtime_memory`):

  * ``kv``: KV cache of every node that *computes* on ``d``: offloaded nodes compute on the
    execution device and keep their cache there (accelerate ``hooks.AlignDevicesHook`` moves the
    inputs, hence the cache tensors created from them, to the execution device);
  * ``activations``: the largest working set among the nodes computing on ``d`` (one node runs at a
    time) plus the bytes of every tensor sent to ``d`` from another device (received once and kept
    for the pass, as :func:`layerplan.solver.problem.evaluate` counts transfers). A working set
    that peaks before any KV cache exists (:attr:`~layerplan.solver.problem.Node.before_kv_cache`:
    an encoder under ``generate()``) never coexists with the cache: with ``pre`` the largest such
    working set and ``work`` the largest other one, the device needs ``max(pre, kv + work)`` for
    cache and working sets, so ``activations`` charges ``max(work, pre - kv)``: the larger of the
    working set next to the cache and what the earlier peak needs beyond the cache's bytes (its
    room is free then). ``kv`` stays the cache's own bytes;
  * ``streaming``: on the execution device, the largest node stored elsewhere that computes there
    (``AlignDevicesHook`` with ``offload=True`` brings one offloaded module's weights in at a time);
  * ``reserve``: the device's fixed ``reserve_bytes`` (CUDA context, allocator slack).

``total = weights + kv + activations + streaming + reserve`` must not exceed the device's cap, i.e.
``weights + received + streaming + reserve + max(pre, kv + work)``; without ``before_kv_cache``
nodes (``pre = 0``) that is ``weights + kv + work + received + streaming + reserve``. A
weights-only problem charges ``weights`` alone, which is what accelerate's ``infer_auto_device_map``
checks against ``max_memory``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # problem.py imports this module for its cap check.
    from layerplan.solver.problem import PlacementProblem

__all__ = ["DeviceLoad", "device_loads"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceLoad:
    """Bytes one device holds under a placement, by kind (see the module docstring): ``kv`` is
    the KV cache's bytes; ``activations`` the received tensors plus the working set charged
    beside that cache (``max(work, pre - kv)``), so that ``total`` is the device's peak."""

    weights: int
    kv: int = 0
    activations: int = 0
    streaming: int = 0
    reserve: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.activations + self.streaming + self.reserve


def device_loads(problem: PlacementProblem, assignment: Sequence[int]) -> list[DeviceLoad]:
    """Per device (in ``problem.devices`` order), what it holds under ``assignment``.

    Args:
        problem: the placement problem.
        assignment: storage device index per node (``len(problem.nodes)`` entries).

    Returns:
        One :class:`DeviceLoad` per device, in bytes.
    """
    k = len(problem.devices)
    weights = [0] * k
    for node, stored in zip(problem.nodes, assignment):
        weights[stored] += node.size_bytes
    if not problem.has_runtime_memory:
        return [DeviceLoad(weights=w) for w in weights]
    kv = [0] * k
    work = [0] * k  # the largest working set that coexists with the KV cache
    pre = [0] * k  # the largest working set that peaks before any KV cache exists
    inbound = [0] * k
    streaming = [0] * k
    computes = [False] * k
    for node, stored in zip(problem.nodes, assignment):
        runs = problem.compute_device(stored)
        computes[runs] = True
        kv[runs] += node.kv_bytes
        if node.before_kv_cache:
            pre[runs] = max(pre[runs], node.work_bytes)
        else:
            work[runs] = max(work[runs], node.work_bytes)
        if runs != stored:
            streaming[runs] = max(streaming[runs], node.size_bytes)
    for edge in problem.edges:
        src = problem.compute_device(assignment[edge.producer])
        for dst in {problem.compute_device(assignment[c]) for c in edge.consumers} - {src}:
            inbound[dst] += edge.size_bytes
    return [
        DeviceLoad(
            weights=weights[d],
            kv=kv[d],
            activations=max(work[d], pre[d] - kv[d]) + inbound[d],
            streaming=streaming[d],
            reserve=device.reserve_bytes if computes[d] else 0,
        )
        for d, device in enumerate(problem.devices)
    ]
