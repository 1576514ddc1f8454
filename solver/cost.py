"""The cost model: estimated time of the workload under a placement, in integer nanoseconds.

A forward step (one prefill pass over the prompt, or one decode step) runs the nodes one after the
other, as accelerate's ``dispatch_model`` does (no pipelining within one request), so its time is
the sum of:

* **compute** of each node on the device it computes on, at that device's roofline (Williams,
  Waterman and Patterson, "Roofline: an insightful visual performance model", CACM 2009):
  ``max(flops / peak_flops_per_s, bytes / mem_bytes_per_s)``, where ``bytes`` is what the node
  moves through device memory in that step (its weights, the KV cache it reads, its working set;
  decode is memory-bound because it reads every weight once per token: Pope et al., "Efficiently
  Scaling Transformer Inference", MLSys 2023, section 2);
* **transfers** across cuts: for every tensor and every device that reads it while its producer
  runs elsewhere, ``link_latency(src, dst) + bytes / link_bytes_per_s(src, dst)`` (the tensor moves once per
  destination, as in :func:`layerplan.solver.problem.evaluate`);
* **offload streaming**: a node stored on ``cpu`` or ``disk`` has its weights copied to the
  execution device before every forward, ``size_bytes / read_bytes_per_s`` of its storage device
  (accelerate ``hooks.AlignDevicesHook`` with ``offload=True`` loads the weights in
  ``pre_forward`` and drops them in ``post_forward``, on every call).

The workload weighs the two phases: ``prefill_steps`` prefill passes (1 for ``generate``) and
``decode_steps`` decode steps (the new tokens). Every per-node and per-transfer time is rounded up
to a whole nanosecond *before* summing, so the CP-SAT model (integer coefficients only) and
:func:`timing` compute the very same totals.

Derived quantities (:class:`Timing`):

* ``total_ns`` = ``prefill_steps * prefill_ns + decode_steps * decode_ns``: the latency objective;
* ``per_token_s`` = ``total_ns / max(decode_steps, 1)``: time per generated token, prefill included;
* ``stage_ns[d]``: the weighted time spent on device ``d`` (its compute, the streaming into it, the
  transfers it receives); ``bottleneck_ns`` = ``max(stage_ns)`` bounds the throughput of a pipeline
  of micro-batches (GPipe, Huang et al. 2019): the throughput objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from layerplan.solver.errors import InvalidSpecError
from layerplan.solver.problem import PlacementProblem

__all__ = [
    "DeviceSpeed", "NodeWork", "CostModel", "Timing", "timing", "node_time_ns", "edge_time_ns", "least_total_ns",
]

_NS = 1e9


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceSpeed:
    """How fast one placement target is.

    Attributes:
        flops_per_s: peak dense FLOP/s in the workload's dtype (used when nodes compute here).
        mem_bytes_per_s: memory bandwidth, bytes/s (used when nodes compute here).
        read_bytes_per_s: for ``cpu`` and ``disk``: bytes/s at which weights stored here reach the
            execution device (host link; disk read and host link in series for disk). Unused on
            accelerators.
    """

    flops_per_s: float = 0.0
    mem_bytes_per_s: float = 0.0
    read_bytes_per_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flops_per_s", "mem_bytes_per_s", "read_bytes_per_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise InvalidSpecError(f"DeviceSpeed.{name}={value!r}; expected a number >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeWork:
    """What one node's forward does, per step.

    Attributes:
        prefill_flops: FLOPs of one prefill pass over the prompt.
        decode_flops: FLOPs of one decode step.
        prefill_bytes: bytes moved through device memory in one prefill pass.
        decode_bytes: bytes moved through device memory in one decode step.
    """

    prefill_flops: int = 0
    decode_flops: int = 0
    prefill_bytes: int = 0
    decode_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("prefill_flops", "decode_flops", "prefill_bytes", "decode_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidSpecError(f"NodeWork.{name}={value!r}; expected an int >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class CostModel:
    """Speeds, links and per-node work for one :class:`~layerplan.solver.problem.PlacementProblem`.

    Attributes:
        speeds: one per problem device, in ``problem.devices`` order.
        link_bytes_per_s: ``k x k``; ``[s][d]`` is the bandwidth of a tensor computed on ``s`` and
            read on ``d`` (only pairs of computing devices are used; > 0 there).
        link_latency_s: fixed cost of one transfer (seconds).
        pair_latency_s: ``k x k`` seconds per transfer from ``s`` to ``d``, for links whose latency
            differs by pair (two hosts: the network's latency across them); empty: every pair
            takes ``link_latency_s``.
        work: one per node, in ``problem.nodes`` order.
        edge_decode_bytes: one per edge: bytes crossing in one decode step (``Edge.size_bytes`` is
            the prefill size).
        prefill_steps: weight of the prefill pass (1 for generate, 0 for decode only).
        decode_steps: weight of one decode step: the tokens generated.
    """

    speeds: tuple[DeviceSpeed, ...]
    link_bytes_per_s: tuple[tuple[float, ...], ...]
    link_latency_s: float = 10e-6
    pair_latency_s: tuple[tuple[float, ...], ...] = ()
    work: tuple[NodeWork, ...]
    edge_decode_bytes: tuple[int, ...] = ()
    prefill_steps: int = 1
    decode_steps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "speeds", tuple(self.speeds))
        object.__setattr__(self, "link_bytes_per_s", tuple(tuple(r) for r in self.link_bytes_per_s))
        object.__setattr__(self, "pair_latency_s", tuple(tuple(r) for r in self.pair_latency_s))
        if any(not (isinstance(x, (int, float)) and x >= 0) for r in self.pair_latency_s for x in r):
            raise InvalidSpecError("CostModel.pair_latency_s has an entry that is not seconds >= 0")
        object.__setattr__(self, "work", tuple(self.work))
        object.__setattr__(self, "edge_decode_bytes", tuple(self.edge_decode_bytes))
        for name in ("prefill_steps", "decode_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidSpecError(f"CostModel.{name}={value!r}; expected an int >= 0")
        if not (isinstance(self.link_latency_s, (int, float)) and self.link_latency_s >= 0):
            raise InvalidSpecError(f"CostModel.link_latency_s={self.link_latency_s!r}; expected seconds >= 0")

    def latency_s(self, src: int, dst: int) -> float:
        """Seconds added per transfer from device ``src`` to ``dst``."""
        return self.pair_latency_s[src][dst] if self.pair_latency_s else self.link_latency_s

    def check(self, problem: PlacementProblem) -> None:
        """Raise :class:`InvalidSpecError` unless the model's sizes match ``problem`` and every
        device that may compute or stream has a speed."""
        k, n = len(problem.devices), len(problem.nodes)
        if len(self.speeds) != k or len(self.link_bytes_per_s) != k or any(len(r) != k for r in self.link_bytes_per_s):
            raise InvalidSpecError(f"cost model has {len(self.speeds)} device speeds / a link matrix "
                                   f"not {k}x{k} for {k} devices; give one per device")
        if self.pair_latency_s and (len(self.pair_latency_s) != k or any(len(r) != k for r in self.pair_latency_s)):
            raise InvalidSpecError(f"cost model's pair_latency_s is not {k}x{k} for {k} devices")
        if len(self.work) != n:
            raise InvalidSpecError(f"cost model has work for {len(self.work)} nodes, the problem has {n}")
        if self.edge_decode_bytes and len(self.edge_decode_bytes) != len(problem.edges):
            raise InvalidSpecError(f"cost model has {len(self.edge_decode_bytes)} edge decode sizes for "
                                   f"{len(problem.edges)} edges")
        computing = problem.computing_devices
        for c in computing:
            s = self.speeds[c]
            if s.flops_per_s <= 0 or s.mem_bytes_per_s <= 0:
                raise InvalidSpecError(f"device {problem.devices[c].name!r} computes but its speed is "
                                       f"{s.flops_per_s} FLOP/s, {s.mem_bytes_per_s} B/s; give both > 0")
            for c2 in computing:
                if c2 != c and self.link_bytes_per_s[c][c2] <= 0:
                    raise InvalidSpecError(f"link {problem.devices[c].name!r} -> {problem.devices[c2].name!r} "
                                           "has no bandwidth; give it > 0 bytes/s")
        for d, device in enumerate(problem.devices):
            if d not in computing and not device.is_accelerator and self.speeds[d].read_bytes_per_s <= 0:
                raise InvalidSpecError(f"offload device {device.name!r} has read_bytes_per_s="
                                       f"{self.speeds[d].read_bytes_per_s}; give it > 0 bytes/s")


@dataclass(frozen=True, kw_only=True, slots=True)
class Timing:
    """Estimated times of one placement (see the module docstring); nanoseconds are integers.

    Attributes:
        prefill_ns: one prefill pass.
        decode_ns: one decode step.
        total_ns: ``prefill_steps * prefill_ns + decode_steps * decode_ns``.
        compute_ns, transfer_ns, streaming_ns: ``total_ns`` split by cause.
        stage_ns: per device (``problem.devices`` order), the weighted time spent there.
        decode_steps: the workload's decode steps (for ``per_token_s``).
    """

    prefill_ns: int
    decode_ns: int
    total_ns: int
    compute_ns: int
    transfer_ns: int
    streaming_ns: int
    stage_ns: tuple[int, ...]
    decode_steps: int

    @property
    def bottleneck_ns(self) -> int:
        """The busiest device's weighted time: the throughput objective."""
        return max(self.stage_ns, default=0)

    @property
    def per_token_s(self) -> float:
        """Seconds per generated token, prefill included (per forward when nothing is generated)."""
        return self.total_ns / _NS / max(self.decode_steps, 1)


def _ceil_ns(seconds: float) -> int:
    return math.ceil(seconds * _NS - 1e-9) if seconds > 0 else 0


def node_time_ns(problem: PlacementProblem, cost: CostModel, node: int, stored: int) -> tuple[int, int, int, int]:
    """``(prefill compute, decode compute, prefill streaming, decode streaming)`` ns of ``node``
    stored on device ``stored`` (it computes on ``problem.compute_device(stored)``)."""
    runs = problem.compute_device(stored)
    speed = cost.speeds[runs]
    work = cost.work[node]

    def roofline(flops: int, moved: int) -> int:
        if flops == 0 and moved == 0:
            return 0
        return _ceil_ns(max(flops / speed.flops_per_s, moved / speed.mem_bytes_per_s))

    prefill = roofline(work.prefill_flops, work.prefill_bytes)
    decode = roofline(work.decode_flops, work.decode_bytes)
    stream = 0
    if runs != stored and problem.nodes[node].size_bytes:
        stream = _ceil_ns(problem.nodes[node].size_bytes / cost.speeds[stored].read_bytes_per_s)
    return prefill, decode, stream, stream


def edge_time_ns(problem: PlacementProblem, cost: CostModel, edge: int, src: int, dst: int) -> tuple[int, int]:
    """``(prefill, decode)`` ns to move edge ``edge``'s tensor from compute device ``src`` to ``dst``."""
    bandwidth = cost.link_bytes_per_s[src][dst]
    prefill_bytes = problem.edges[edge].size_bytes
    decode_bytes = cost.edge_decode_bytes[edge] if cost.edge_decode_bytes else prefill_bytes
    latency = _ceil_ns(cost.latency_s(src, dst))
    prefill = latency + _ceil_ns(prefill_bytes / bandwidth) if prefill_bytes else 0
    decode = latency + _ceil_ns(decode_bytes / bandwidth) if decode_bytes else 0
    return prefill, decode


def timing(problem: PlacementProblem, cost: CostModel, assignment: Sequence[int]) -> Timing:
    """Estimated times of ``assignment`` (storage device index per node), feasible or not.

    Raises:
        InvalidSpecError: the cost model does not match ``problem`` (see :meth:`CostModel.check`).
    """
    cost.check(problem)
    p, d = cost.prefill_steps, cost.decode_steps
    k = len(problem.devices)
    stage = [0] * k
    compute = [0, 0]
    stream = [0, 0]
    transfer = [0, 0]
    for i, stored in enumerate(assignment):
        cp, cd, sp, sd = node_time_ns(problem, cost, i, stored)
        runs = problem.compute_device(stored)
        compute[0] += cp
        compute[1] += cd
        stream[0] += sp
        stream[1] += sd
        stage[runs] += p * (cp + sp) + d * (cd + sd)
    for e, edge in enumerate(problem.edges):
        src = problem.compute_device(assignment[edge.producer])
        for dst in sorted({problem.compute_device(assignment[c]) for c in edge.consumers} - {src}):
            tp, td = edge_time_ns(problem, cost, e, src, dst)
            transfer[0] += tp
            transfer[1] += td
            stage[dst] += p * tp + d * td
    prefill_ns = compute[0] + stream[0] + transfer[0]
    decode_ns = compute[1] + stream[1] + transfer[1]
    return Timing(
        prefill_ns=prefill_ns,
        decode_ns=decode_ns,
        total_ns=p * prefill_ns + d * decode_ns,
        compute_ns=p * compute[0] + d * compute[1],
        transfer_ns=p * transfer[0] + d * transfer[1],
        streaming_ns=p * stream[0] + d * stream[1],
        stage_ns=tuple(stage),
        decode_steps=d,
    )


def least_total_ns(problem: PlacementProblem, cost: CostModel) -> int:
    """A lower bound on ``timing(problem, cost, a).total_ns`` over every assignment ``a``: each node
    computing on its fastest computing device (:attr:`PlacementProblem.computing_devices`; a node
    stored on cpu or disk computes on the execution device, one of them), with no transfer and no
    streaming, which only add time. Valid for every cap, pin and order: none can make a node faster.

    Raises:
        InvalidSpecError: the cost model does not match ``problem``.
    """
    cost.check(problem)
    p, d = cost.prefill_steps, cost.decode_steps
    total = 0
    for i in range(len(problem.nodes)):
        times = (node_time_ns(problem, cost, i, c) for c in problem.computing_devices)
        total += min(p * cp + d * cd for cp, cd, _, _ in times)
    return total
