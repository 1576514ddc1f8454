"""The pure placement problem: integers only, no torch.

A :class:`PlacementProblem` is a list of nodes in execution order, the tensors (edges) that flow
between them, the devices with their caps, tied groups and pins. Every size is an ``int`` of bytes.

Placement rules (shared by the CP-SAT model, the chain DP and :func:`evaluate`):

* every node is placed on exactly one device;
* what a device holds never exceeds its ``cap_bytes``: the weights of the nodes stored on it and,
  for a problem with runtime memory (:attr:`PlacementProblem.has_runtime_memory`: some node has KV
  or working-set bytes, or some device a reserve), on each device that computes also the KV cache,
  the largest working set, the tensors it receives, the streaming buffer for offloaded nodes and
  the reserve; a working set that peaks before any KV cache exists (:attr:`Node.before_kv_cache`:
  an encoder under ``generate()``) is charged instead of the KV cache and the other working sets
  when it is the larger (see :mod:`layerplan.solver.accounting`);
* the nodes of a tied group share one device; the first member (in execution order) is the group's
  *anchor*, the others are *followers*;
* each accelerator holds at most one contiguous run of non-follower nodes in execution order
  (followers, e.g. an ``lm_head`` tied to the input embedding, sit with their anchor and are exempt);
  for the execution device (an accelerator) the run is taken with the *inline-offloadable* nodes
  (:attr:`Node.offload_inline`: a MoE layer's experts) that are stored on a cpu/disk device left
  out: they compute on the execution device, inside its block. Every other accelerator's run is
  strict, and an offloaded node without the flag ends the execution device's run as any node does;
* an inline-offloadable node computes where its *host* (the non-follower node just before it: the
  layer whose forward calls the experts) computes, and sits on its host's accelerator unless it is
  offloaded: accelerate keeps a submodule's outputs on the device it ran on
  (``hooks.AlignDevicesHook`` with ``io_same_device=False`` below the root), and the host's forward
  goes on with them (the residual add), so experts on another device than their layer's would
  make it mix devices;
* with ``ordered=True`` the accelerator blocks appear in the order the devices are listed (what
  accelerate's ``infer_auto_device_map`` does: it fills GPU 0, then GPU 1, ...);
* with ``low_zero=True`` the first accelerator stores no more weight bytes than any other
  accelerator (accelerate's ``"balanced_low_0"``: GPU 0 keeps room for ``generate()``'s outputs);
* pins fix a node to a device.

Offloaded nodes (on a ``CPU`` or ``DISK`` device) compute on the *execution device*: the first
accelerator listed, or the CPU when there is none (accelerate ``big_modeling.dispatch_model``:
``execution_device = main_device if device in ["cpu", "disk"]``). accelerate takes ``main_device``
as the first accelerator *in the device_map*, so when anything is offloaded the execution device
must store at least one node (the adapter then lists it first).

Objective, lexicographic:

1. ``offload_cost`` = sum over offloaded nodes of ``size_bytes * device.offload_cost`` (a slower tier
   has a larger per-byte cost, so disk is the last resort);
2. ``transfer_bytes`` = for every edge and every execution device ``e`` that runs at least one of its
   consumers while its producer runs elsewhere, ``edge.size_bytes`` once (a tensor is sent once per
   destination device, as accelerate's ``AlignDevicesHook`` moves inputs once per module call and
   the receiving device keeps them).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from layerplan.solver.accounting import device_loads
from layerplan.solver.errors import InvalidSpecError

__all__ = [
    "Rule",
    "Violation",
    "DeviceKind",
    "Device",
    "Node",
    "Edge",
    "PlacementProblem",
    "Objective",
    "evaluate",
    "violations",
    "format_bytes",
]


def format_bytes(num_bytes: int) -> str:
    """Render a byte count with a binary unit, e.g. ``1717986918 -> '1.60 GiB'``."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class DeviceKind(enum.Enum):
    """What a device is, as far as the solver cares."""

    ACCELERATOR = "accelerator"
    CPU = "cpu"
    DISK = "disk"


#: Default per-byte offload costs: disk is slower than host RAM, so it costs more.
DEFAULT_OFFLOAD_COST = {DeviceKind.ACCELERATOR: 0, DeviceKind.CPU: 1, DeviceKind.DISK: 8}


@dataclass(frozen=True, kw_only=True, slots=True)
class Device:
    """A placement target.

    Attributes:
        name: accelerate's name for it (``"0"``, ``"1"``, ``"cpu"``, ``"disk"``, ``"mps"``).
        kind: accelerator, CPU or disk.
        cap_bytes: the most bytes it may hold (accelerate's ``max_memory``), >= 0.
        offload_cost: cost per byte of a node offloaded here; 0 for accelerators. ``-1`` (the
            default) means "the default for this kind" (cpu 1, disk 8).
        reserve_bytes: bytes held back on this device whenever it computes (CUDA context,
            allocator slack), >= 0; ignored on a device that never computes.
    """

    name: str
    kind: DeviceKind
    cap_bytes: int
    offload_cost: int = -1
    reserve_bytes: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, DeviceKind):
            raise InvalidSpecError(
                f"device {self.name!r} has kind={self.kind!r}; expected a DeviceKind "
                "(ACCELERATOR, CPU or DISK)"
            )
        if not isinstance(self.cap_bytes, int) or self.cap_bytes < 0:
            raise InvalidSpecError(
                f"device {self.name!r} has cap_bytes={self.cap_bytes!r}; expected an int >= 0"
            )
        if self.offload_cost == -1:
            object.__setattr__(self, "offload_cost", DEFAULT_OFFLOAD_COST[self.kind])
        if not isinstance(self.offload_cost, int) or self.offload_cost < 0:
            raise InvalidSpecError(
                f"device {self.name!r} has offload_cost={self.offload_cost!r}; expected an int >= 0 "
                "(CP-SAT takes integer coefficients only)"
            )
        if not isinstance(self.reserve_bytes, int) or self.reserve_bytes < 0:
            raise InvalidSpecError(
                f"device {self.name!r} has reserve_bytes={self.reserve_bytes!r}; expected an int >= 0"
            )
        if self.kind is DeviceKind.ACCELERATOR and self.offload_cost != 0:
            raise InvalidSpecError(f"accelerator {self.name!r} must have offload_cost=0")

    @property
    def is_accelerator(self) -> bool:
        return self.kind is DeviceKind.ACCELERATOR


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """One vertex of the layer graph.

    Attributes:
        name: module name, e.g. ``"model.layers.7"``.
        size_bytes: bytes resident on the device that holds it (weights + buffers), >= 0.
        kv_bytes: KV cache it keeps for the whole workload, charged to the device it computes
            on, >= 0.
        work_bytes: peak working set of its forward (transient activations), >= 0.
        before_kv_cache: its working set peaks before any KV cache exists, so it never coexists
            with the KV cache of the device it computes on: an encoder-decoder's encoder under
            ``generate()``, which transformers runs once, whole, before the decoder's first step
            creates any cache (``GenerationMixin.generate``: step 4,
            ``_maybe_prepare_encoder_kwargs_for_generation``, ``_prepare_encoder_decoder_kwargs_for_generation``
            before transformers 5, then step 7, ``_prepare_cache_for_generation``; a ``DynamicCache``
            allocates its tensors at the decoder's first ``update``). Its device is charged
            ``max(its largest such working set, KV cache + largest other working set)``
            (:mod:`layerplan.solver.accounting`); False: the working set coexists with the cache.
        offload_inline: the node may be stored on a cpu/disk device *inside* the execution
            device's block: its weights are streamed in and it computes on the execution device
            between its block's neighbours, so the block stays one contiguous run
            (:func:`violations`, rule ``contiguity``). What llama.cpp's ``-ot exps=CPU`` does for a
            MoE layer's routed experts, and what accelerate does for any module mapped to
            ``"cpu"``/``"disk"`` inside a module mapped to a GPU: ``big_modeling.dispatch_model``
            sets ``execution_device = main_device if device in ["cpu", "disk"]`` (the first
            accelerator of the map) and ``hooks.attach_align_device_hook_on_blocks`` streams that
            module's weights there. Only on the execution device: inside another accelerator's
            block the node would still compute on the execution device, so there it splits the
            block as any offloaded node does. Such a node also computes where its host (the
            non-follower node before it) computes (rule ``host``). False (the default): neither.
    """

    name: str
    size_bytes: int
    kv_bytes: int = 0
    work_bytes: int = 0
    before_kv_cache: bool = False
    offload_inline: bool = False

    def __post_init__(self) -> None:
        for field_name in ("size_bytes", "kv_bytes", "work_bytes"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidSpecError(
                    f"node {self.name!r} has {field_name}={value!r}; expected an int >= 0"
                )
        for field_name in ("before_kv_cache", "offload_inline"):
            if not isinstance(getattr(self, field_name), bool):
                raise InvalidSpecError(
                    f"node {self.name!r} has {field_name}={getattr(self, field_name)!r}; expected True or False"
                )


@dataclass(frozen=True, kw_only=True, slots=True)
class Edge:
    """One tensor: produced by node ``producer``, read by each node in ``consumers``.

    Attributes:
        producer: index of the producing node.
        consumers: indices of the reading nodes, each > ``producer`` (execution order).
        size_bytes: bytes of the tensor per forward pass, >= 0.
    """

    producer: int
    consumers: tuple[int, ...]
    size_bytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "consumers", tuple(sorted(set(self.consumers))))
        if not self.consumers:
            raise InvalidSpecError(f"edge from node {self.producer} has no consumers")
        if self.consumers[0] <= self.producer:
            raise InvalidSpecError(
                f"edge {self.producer} -> {self.consumers[0]} goes backwards; nodes must be in "
                "execution order (consumer index > producer index)"
            )
        if not isinstance(self.size_bytes, int) or self.size_bytes < 0:
            raise InvalidSpecError(
                f"edge from node {self.producer} has size_bytes={self.size_bytes!r}; expected an "
                "int >= 0"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class Objective:
    """Lexicographic objective value: offload cost first, then transfer bytes."""

    offload_cost: int
    transfer_bytes: int

    def as_tuple(self) -> tuple[int, int]:
        return (self.offload_cost, self.transfer_bytes)


@dataclass(frozen=True, kw_only=True, slots=True)
class PlacementProblem:
    """Nodes, edges, devices, tied groups and pins; see the module docstring for the rules.

    Attributes:
        nodes: in execution order.
        edges: tensors between nodes.
        devices: placement targets; accelerators first in the order blocks should follow.
        tied_groups: tuples of node indices that must share a device (each sorted, disjoint).
        pins: ``(node index, device index)`` pairs.
        ordered: accelerator blocks follow the device order.
        low_zero: the first accelerator stores no more weight bytes than any other accelerator.

    Raises:
        InvalidSpecError: an index is out of range, names repeat, groups overlap, or two members of
            a tied group are pinned to different devices.
    """

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...] = ()
    devices: tuple[Device, ...]
    tied_groups: tuple[tuple[int, ...], ...] = ()
    pins: tuple[tuple[int, int], ...] = ()
    ordered: bool = True
    low_zero: bool = False
    _follower_anchor: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", tuple(self.edges))
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(
            self, "tied_groups", tuple(tuple(sorted(set(g))) for g in self.tied_groups if len(set(g)) > 1)
        )
        object.__setattr__(self, "pins", tuple(sorted(set((int(n), int(d)) for n, d in self.pins))))
        n, k = len(self.nodes), len(self.devices)
        if k == 0:
            raise InvalidSpecError("no devices given; declare at least one device in max_memory")
        for label, names in (("node", [x.name for x in self.nodes]), ("device", [d.name for d in self.devices])):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise InvalidSpecError(f"{label} name {name!r} appears twice; names must be unique")
                seen.add(name)
        for e in self.edges:
            if not (0 <= e.producer < n and e.consumers[-1] < n):
                raise InvalidSpecError(f"edge {e.producer} -> {e.consumers} refers to a node outside 0..{n - 1}")
        anchor: dict[int, int] = {}
        for group in self.tied_groups:
            if group[0] < 0 or group[-1] >= n:
                raise InvalidSpecError(f"tied group {group} refers to a node outside 0..{n - 1}")
            for member in group:
                if member in anchor or any(member == a for a in anchor.values()):
                    raise InvalidSpecError(f"node {self.nodes[member].name!r} is in two tied groups; merge them")
            for member in group[1:]:
                anchor[member] = group[0]
        object.__setattr__(self, "_follower_anchor", anchor)
        pinned: dict[int, int] = {}
        for node, device in self.pins:
            if not 0 <= node < n:
                raise InvalidSpecError(f"pin refers to node {node} outside 0..{n - 1}")
            if not 0 <= device < k:
                raise InvalidSpecError(f"pin refers to device {device} outside 0..{k - 1}")
            if node in pinned:
                raise InvalidSpecError(
                    f"node {self.nodes[node].name!r} is pinned to two devices "
                    f"({self.devices[pinned[node]].name!r} and {self.devices[device].name!r}); pin it once"
                )
            pinned[node] = device
        for group in self.tied_groups:
            targets = {pinned[m]: m for m in group if m in pinned}
            if len(targets) > 1:
                (d1, m1), (d2, m2) = list(targets.items())[:2]
                raise InvalidSpecError(
                    f"tied nodes {self.nodes[m1].name!r} and {self.nodes[m2].name!r} are pinned to "
                    f"different devices ({self.devices[d1].name!r} and {self.devices[d2].name!r}); "
                    "tied parameters must share a device: pin them to the same one"
                )

    # -- derived views -------------------------------------------------------------------------
    def anchor_of(self, node: int) -> int:
        """The tied-group anchor of ``node`` (``node`` itself when it is not a follower)."""
        return self._follower_anchor.get(node, node)

    def is_follower(self, node: int) -> bool:
        return node in self._follower_anchor

    def inline_offloaded(self, node: int, device: int) -> bool:
        """Whether ``node`` stored on ``device`` sits inside the execution device's block without
        splitting it (:attr:`Node.offload_inline`, stored on a cpu/disk device, and the execution
        device an accelerator)."""
        return (
            self.nodes[node].offload_inline
            and not self.devices[device].is_accelerator
            and self.devices[self.execution_device].is_accelerator
        )

    @property
    def accelerators(self) -> tuple[int, ...]:
        """Indices of accelerator devices, in listed order."""
        return tuple(i for i, d in enumerate(self.devices) if d.is_accelerator)

    @property
    def execution_device(self) -> int:
        """Index of the device offloaded nodes compute on: the first accelerator, else the first CPU."""
        accs = self.accelerators
        if accs:
            return accs[0]
        cpus = [i for i, d in enumerate(self.devices) if d.kind is DeviceKind.CPU]
        return cpus[0] if cpus else 0

    @property
    def computing_devices(self) -> tuple[int, ...]:
        """Indices of the devices nodes run on: the accelerators, or the execution device alone."""
        return self.accelerators or (self.execution_device,)

    def compute_device(self, device: int) -> int:
        """Where a node stored on ``device`` runs its forward."""
        return device if self.devices[device].is_accelerator else self.execution_device

    @property
    def is_chain(self) -> bool:
        """True when every edge goes from node ``i`` to node ``i + 1`` only."""
        return all(e.consumers == (e.producer + 1,) for e in self.edges)

    def host_of(self, node: int) -> int | None:
        """The host of an inline-offloadable non-follower node: the non-follower node before it
        (None for any other node, or when there is none before it)."""
        if not self.nodes[node].offload_inline or self.is_follower(node):
            return None
        return next((h for h in range(node - 1, -1, -1) if not self.is_follower(h)), None)

    @property
    def has_inline_offload(self) -> bool:
        """True when some node may sit offloaded inside the execution device's block
        (:attr:`Node.offload_inline`, with an accelerator and a cpu/disk device to offload to)."""
        return (
            bool(self.accelerators)
            and any(not d.is_accelerator for d in self.devices)
            and any(x.offload_inline for x in self.nodes)
        )

    @property
    def has_runtime_memory(self) -> bool:
        """True when some node has KV or working-set bytes or some device a reserve.

        A problem without any is weights-only (accelerate's own accounting): then neither the
        tensors a device receives nor the streaming buffer are charged to its cap either.
        """
        return any(x.kv_bytes or x.work_bytes for x in self.nodes) or any(
            d.reserve_bytes for d in self.devices
        )

    @property
    def total_bytes(self) -> int:
        """Weight bytes of all nodes."""
        return sum(x.size_bytes for x in self.nodes)

    @property
    def total_kv_bytes(self) -> int:
        return sum(x.kv_bytes for x in self.nodes)

    @property
    def total_cap_bytes(self) -> int:
        return sum(d.cap_bytes for d in self.devices)


class Rule(enum.Enum):
    """A placement rule (see the module docstring); :func:`violations` names the one broken."""

    COVERAGE = "coverage"  # one valid device per node
    CAP = "cap"  # every device within its cap, runtime memory included
    TIES = "ties"  # a tied group on one device
    PINS = "pins"  # pinned nodes where pinned
    CONTIGUITY = "contiguity"  # one block per accelerator
    ORDER = "order"  # blocks in device order (ordered problems)
    HOST = "host"  # an inline-offloadable node computes where the node before it does
    EXECUTION_DEVICE = "execution_device"  # offload needs the execution device to store a node
    LOW_ZERO = "low_zero"  # GPU 0 stores no more than any other GPU


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: which (:class:`Rule`) and a readable line (``str(v)``)."""

    rule: Rule
    message: str

    def __str__(self) -> str:
        return self.message


def violations(problem: PlacementProblem, assignment: Sequence[int]) -> list[Violation]:
    """Every rule the ``assignment`` (device index per node) breaks, one :class:`Violation` each; [] if none."""
    out: list[Violation] = []
    n, k = len(problem.nodes), len(problem.devices)
    if len(assignment) != n:
        return [Violation(Rule.COVERAGE, f"assignment has {len(assignment)} entries for {n} nodes")]
    if any(not 0 <= d < k for d in assignment):
        return [Violation(Rule.COVERAGE, f"assignment uses a device index outside 0..{k - 1}")]
    for dev, load in zip(problem.devices, device_loads(problem, assignment)):
        if load.total > dev.cap_bytes:
            detail = "" if not problem.has_runtime_memory else (
                f" (weights {load.weights}, KV {load.kv}, activations {load.activations}, "
                f"streaming {load.streaming}, reserve {load.reserve})"
            )
            out.append(Violation(Rule.CAP, f"device {dev.name!r} holds {load.total} bytes > cap {dev.cap_bytes}{detail}"))
    for group in problem.tied_groups:
        if len({assignment[m] for m in group}) > 1:
            out.append(Violation(Rule.TIES, f"tied group {group} is split across devices"))
    for node, d in problem.pins:
        if assignment[node] != d:
            out.append(Violation(Rule.PINS, f"node {problem.nodes[node].name!r} is not on its pinned device"))
    first_seen: list[int] = []
    runs: dict[int, int] = {}
    prev = None
    execution_prev = None  # the same walk with inline-offloaded nodes left out (Node.offload_inline)
    execution = problem.execution_device
    for i, d in enumerate(assignment):
        if problem.is_follower(i):
            continue
        if d != prev:
            if problem.devices[d].is_accelerator and d != execution:
                runs[d] = runs.get(d, 0) + 1
                if runs[d] == 1:
                    first_seen.append(d)
            prev = d
        if problem.inline_offloaded(i, d):
            continue
        if d != execution_prev:
            if d == execution and problem.devices[d].is_accelerator:
                runs[d] = runs.get(d, 0) + 1
                if runs[d] == 1:
                    first_seen.append(d)
            execution_prev = d
    for i in range(n):
        host = problem.host_of(i)
        if host is not None and problem.compute_device(assignment[i]) != problem.compute_device(assignment[host]):
            out.append(Violation(Rule.HOST, f"node {problem.nodes[i].name!r} computes on "
                f"{problem.devices[problem.compute_device(assignment[i])].name!r} but its host "
                f"{problem.nodes[host].name!r} on {problem.devices[problem.compute_device(assignment[host])].name!r}"))
    for d, count in runs.items():
        if count > 1:
            out.append(Violation(Rule.CONTIGUITY, f"accelerator {problem.devices[d].name!r} holds {count} separate blocks"))
    accs = problem.accelerators
    if problem.ordered:
        order = [accs.index(d) for d in first_seen]
        if order != sorted(order):
            out.append(Violation(Rule.ORDER, "accelerator blocks are not in device order"))
    offloaded = [i for i, d in enumerate(assignment) if problem.compute_device(d) != d]
    if offloaded and problem.devices[execution].is_accelerator and execution not in assignment:
        out.append(Violation(Rule.EXECUTION_DEVICE, f"node {problem.nodes[offloaded[0]].name!r} is offloaded but the execution device "
            f"{problem.devices[execution].name!r} stores no node (accelerate would run it elsewhere)"))
    if problem.low_zero and len(accs) > 1:
        held = [sum(x.size_bytes for x, d in zip(problem.nodes, assignment) if d == a) for a in accs]
        lightest = min(range(1, len(accs)), key=lambda r: held[r])
        if held[0] > held[lightest]:
            out.append(Violation(Rule.LOW_ZERO, f"accelerator {problem.devices[accs[0]].name!r} stores {held[0]} bytes > "
                f"{held[lightest]} on {problem.devices[accs[lightest]].name!r} (low_zero)"))
    return out


def evaluate(problem: PlacementProblem, assignment: Sequence[int]) -> Objective:
    """The objective of ``assignment`` (device index per node), feasible or not.

    Returns:
        :class:`Objective` with ``offload_cost`` (bytes x per-byte cost) and ``transfer_bytes``
        (bytes per forward pass, each tensor counted once per destination execution device).
    """
    offload = sum(
        node.size_bytes * problem.devices[d].offload_cost for node, d in zip(problem.nodes, assignment)
    )
    transfer = 0
    for e in problem.edges:
        src = problem.compute_device(assignment[e.producer])
        dests = {problem.compute_device(assignment[c]) for c in e.consumers}
        transfer += e.size_bytes * len(dests - {src})
    return Objective(offload_cost=offload, transfer_bytes=transfer)
