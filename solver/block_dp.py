"""Exact dynamic program over accelerator blocks, runtime memory and every goal included.

The fast path of :func:`layerplan.solver.solve`. It applies (:func:`applies`) to problems with at
least one accelerator and no ``low_zero``, blocks in device order or in free order, tied copies
(a tied ``lm_head``) that feed no other node and have inputs of their own, and, with a cost model,
links whose speed into each device does not depend on the sending device. Any edges (chain, skip,
broadcast: rotary tables, T5's position bias, encoder outputs), pins and offload tiers are allowed,
and memory is charged exactly as :mod:`layerplan.solver.accounting` charges it. Where it does not
apply, or runs out of labels or time, CP-SAT solves the problem.

A valid placement is a sequence of accelerator *blocks* with offloaded nodes before, between and
after them. The DP walks the nodes in execution order; a state at position ``i`` (nodes ``0..i-1``
placed) says which blocks were used (in device order: the last one; in free order: how many
members of each group of interchangeable GPUs, used lowest index first, as any placement can be
relabelled to), whether the execution device's block is to come, open or closed, what node ``i-1``
is on (that block, another accelerator's open block, or offloaded) and where each tied group's
anchor went. Node ``i`` extends the open block, is offloaded to a cpu/disk device, or starts a
block on an accelerator not used yet; a tied copy goes where its anchor went. An offloaded node
closes the open block, except an inline-offloadable one (:attr:`~layerplan.solver.problem.Node.offload_inline`:
a MoE layer's experts) while the execution device's block is open: it computes there, so that
block stays open across it (the state says node ``i`` is on it) and node ``i + 1`` may extend it.
Such a node also computes where node ``i - 1`` does (rule ``host``): it never starts a block, and
after another accelerator's block it only extends it. Of interchangeable
GPUs (:mod:`layerplan.solver._symmetry`) only the canonical relabelling is built, and states that
differ only in how many of them were used are compared as one (:func:`_across_used`).

Each state keeps a Pareto set of *labels*: vectors of integer accumulators (layout below) that
only ever grow, and whose growth and final measures are non-decreasing in each of them, so a label
no smaller than another in every entry can be dropped without losing the optimum:

* the measures so far: offload cost, transfer bytes, time (ns), the largest stage time and the
  largest utilisation of the closed blocks on other accelerators;
* the execution device ``X`` (the first accelerator): it computes both its own block and every
  offloaded node, so its load is shared along the whole chain: additive bytes (its weights, the KV
  cache and received tensors of every node computing there, its reserve once it computes), the
  largest working set, the largest streamed node, its stage time; whether it computes yet, holds a
  block, and whether anything is offloaded (then ``X`` must hold a block); one bit per non-chain
  edge "``X`` does not have this tensor yet" (its producer computes elsewhere and no consumer on
  ``X`` has received it): a tensor is received once per device;
* the bytes used on each offload device;
* the open block on another accelerator: its additive bytes, largest working set, stage time, and
  its first node ``s``: a non-chain edge reaches a block once, at its first consumer in the block,
  and only if its producer (and any earlier consumer) lies before ``s``.

With nodes whose working set peaks before any KV cache exists (``before_kv_cache``: an encoder),
a device holds ``additive + max(pre, kv + work)`` (:mod:`layerplan.solver.accounting`): its KV
cache and its largest such working set ``pre`` then have entries of their own (``XKV``, ``XPRE``,
``BKV``, ``BPRE``), the KV cache leaving the additive bytes; without such nodes they stay 0 and the
KV cache is additive, as the load is then a plain sum. The load grows with each entry, so
dominance still holds, and a ``pre`` no larger than ``kv + work`` stays so (both only grow): it is
moot, and normalised to 0.

Labels are normalised before comparison (measures the phase does not use are dropped, a device
with room for every node still to come needs no exact fill, a bit of a tensor nobody reads any
more is moot, ``s`` only matters through the producers it lies after). The goal's measures are
minimised in phases, as CP-SAT's are (:func:`solve_blocks`); in the first, a quick pass that keeps
a few labels per state gives an incumbent (and is the answer when it provably lost nothing), in
later ones the earlier optimum is one, and the exact pass drops labels whose lower bound on the
measure exceeds it (branch and bound, as in :mod:`layerplan.solver.dp`).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from layerplan.solver._symmetry import group_runs, interchangeable_groups
from layerplan.solver.cost import CostModel, edge_time_ns, node_time_ns
from layerplan.solver.goals import UTILISATION_SCALE, Goal, Measure, max_utilisation, score
from layerplan.solver.problem import PlacementProblem

__all__ = ["OutOfLabels", "OutOfTime", "applies", "solve_blocks"]

#: Labels kept per state by the quick pass.
QUICK_MAX_LABELS = 6
#: Rows compared at once by :func:`_front`.
_FRONT_CHUNK = 256
#: Labels one state may hold in the exact pass before the DP gives up (CP-SAT then solves).
MAX_LABELS = 4000

# Label layout: measures, the execution device, the open block, then offload fills and edge bits.
OFF, TR, TIME, MSTAGE, MUTIL = range(5)  # offload cost, transfer, time, closed blocks' max stage / util
XADD, XWORK, XSTREAM, XSTAGE, XIDLE, NOXB, OFFANY = range(5, 12)  # execution device
BADD, BWORK, BSTAGE, BSTART = range(12, 16)  # open block on another accelerator
XKV, XPRE, BKV, BPRE = range(16, 20)  # before_kv_cache nodes: KV cache and largest such working set
USED = 20  # then one entry per offload device, then one bit per non-chain edge


#: The label entries that only serve one measure (zeroed when the goal does not minimise it).
_MEASURE_SLOTS = (
    (Measure.OFFLOAD_COST, (OFF,)),
    (Measure.TRANSFER_BYTES, (TR,)),
    (Measure.TIME_NS, (TIME,)),
    (Measure.BOTTLENECK_NS, (MSTAGE, XSTAGE, BSTAGE)),
    (Measure.MAX_UTILISATION, (MUTIL,)),  # kept only when not bisected (_bisect_utilisation)
)


class OutOfTime(Exception):
    """The DP ran past its deadline.

    Attributes:
        placement: the best valid placement found before it (the optimum of the phases that
            finished, improved by the utilisation probes that did), or None.
        bound: the proven optimum of the goal's headline measure when its phase finished, else None.
    """

    def __init__(self, placement: tuple[int, ...] | None = None, bound: int | None = None) -> None:
        super().__init__("the block DP ran past its deadline")
        self.placement = placement
        self.bound = bound


class OutOfLabels(Exception):
    """A state needed more than :data:`MAX_LABELS` labels."""


@dataclass(slots=True)
class _Label:
    vec: tuple[int, ...]
    parent: _Label | None
    device: int


def applies(problem: PlacementProblem, cost: CostModel | None) -> str | None:
    """Why :func:`solve_blocks` cannot solve ``problem`` (a short phrase), or None when it can."""
    if problem.low_zero:
        return "low_zero"
    followers = {m for group in problem.tied_groups for m in group[1:]}
    if any(e.producer in followers or (len(e.consumers) > 1 and followers.intersection(e.consumers))
           for e in problem.edges):
        return "tied parameters whose later copy feeds another node or shares an input"
    if any(node in followers for node, _ in problem.pins):
        return "a pinned tied parameter"
    if not problem.accelerators:
        return "no accelerator"
    if cost is not None:
        computing = problem.computing_devices
        for c in computing:
            if len({(cost.link_bytes_per_s[s][c], cost.latency_s(s, c)) for s in computing if s != c}) > 1:
                return f"links into {problem.devices[c].name!r} differ by sender"
    return None


def _free_groups(problem: PlacementProblem, cost: CostModel | None) -> tuple[tuple[int, ...], ...]:
    """The accelerators after the execution device in groups of interchangeable ones (same cap,
    reserve, speed and links, none pinned: :func:`layerplan.solver._symmetry.interchangeable_groups`),
    the others alone. In free order a placement is, up to relabelling within groups, one whose
    blocks use each group's members in listed order."""
    x = problem.execution_device
    grouped = [tuple(d for d in g if d != x) for g in interchangeable_groups(problem, cost)]
    grouped = [g for g in grouped if g]
    taken = {d for g in grouped for d in g}
    alone = [(d,) for d in problem.accelerators if d != x and d not in taken]
    return tuple(sorted(grouped + alone))


def _x_group(problem: PlacementProblem, cost: CostModel | None, offs: tuple[int, ...]) -> int:
    """With no offload device, the accelerators interchangeable with the execution device ``x``:
    in free order the index of their group in :func:`_free_groups`, in device order 0 when the
    accelerator after ``x`` is one of them; else -1. A placement then offloads nothing, so ``x``
    trades places with them (:mod:`layerplan.solver._symmetry`): relabelled, ``x`` (the lowest
    index) holds the earliest of their blocks, and none of them starts a block before it."""
    x = problem.execution_device
    partners = next((g for g in interchangeable_groups(problem, cost) if x in g), None) if not offs else None
    if partners is None:
        return -1
    if problem.ordered:
        return 0 if problem.accelerators[1] in partners else -1
    return _free_groups(problem, cost).index(tuple(d for d in partners if d != x))


def _run_starts(problem: PlacementProblem, cost: CostModel | None) -> tuple[bool, ...]:
    """In device order: whether each accelerator after the execution device may start a block
    after any earlier one, False for the second and later members of a run of consecutive
    interchangeable accelerators (:func:`layerplan.solver._symmetry.group_runs`). Every placement
    relabels, order kept, to one that uses the first members of each run (the canonical one), so
    such a member only ever follows its predecessor in the run: one start per state instead of
    one per later accelerator."""
    x = problem.execution_device
    later: set[int] = set()
    for group in interchangeable_groups(problem, cost):
        for run in group_runs(problem, [d for d in group if d != x]):
            later.update(run[1:])
    return tuple(d not in later for d in problem.accelerators[1:])


@dataclass(frozen=True, slots=True)
class _Data:
    """The problem's numbers as the DP reads them (see :func:`_data`)."""

    n: int
    others: tuple[int, ...]  # the accelerators after the execution device, in listed order
    free: bool  # blocks in free order
    groups_free: tuple[tuple[int, ...], ...]  # free order: the others in interchangeable groups
    run_start: tuple[bool, ...]  # device order: per other, whether it may follow any earlier block
    run_of: tuple[int, ...]  # device order: per other, the index of its run of interchangeable ones
    x_group: int  # nothing to offload to: the group interchangeable with x (-1: none; _x_group)
    offs: tuple[int, ...]
    x: int
    runtime: bool
    w: list[int]
    kv: list[int]
    work: list[int]
    before: list[bool]  # [node] its working set peaks before any KV cache exists
    inline: list[bool]  # [node] offloaded, it keeps the execution device's block open (Node.offload_inline)
    hosted: list[bool]  # [node] it computes where the node before it does (PlacementProblem.host_of)
    split: bool  # before_kv_cache nodes with a working set: the KV cache in XKV / BKV, else in XADD / BADD
    caps: list[int]
    reserve: list[int]
    t_on: list[list[int]]  # [node][device] weighted ns stored there (compute + streaming)
    cut: list[int]  # bytes of the chain edges into node i
    cut_t: list[list[int]]  # [node][device] their weighted ns into that compute device
    consumes: list[list[tuple[int, int, int, list[int]]]]  # [node] (bit, prev, bytes, ns per device)
    produces: list[list[int]]  # [node] bits of the non-chain edges it produces
    last_use: list[int]  # [bit] last consumer
    dead_bits: list[tuple[int, ...]]  # [position] label slots of the bits whose last consumer comes before it
    thresholds: list[list[int]]  # [position] sorted producers/consumers a block start is compared with
    remaining: list[int]  # [position] weight bytes of nodes i..n-1
    min_time_after: list[int]  # [position] sum of each later node's fastest compute time
    least_cut_after: list[tuple[int, int]]  # [position] least (bytes, ns) a block starting at a node i.. receives
    by_offload_cost: list[int]  # offload slots, cheapest per byte first
    min_stream_ns_per_byte: float  # weighted streaming ns per offloaded byte, fastest offload device
    pins: dict[int, int]
    offload_cost: list[int]
    remaining_free: list[int]  # [position] weight bytes of the non-follower nodes i..n-1
    remaining_footprint: list[int]  # [position] their weight and (runtime memory) KV-cache bytes
    least_work_after: list[int]  # [position] runtime memory: the least working set of a node i..n-1 with weights
    least_kv_work_after: list[int]  # [position] the same, a before_kv_cache node's counted 0 (room for weights + KV)
    groups: dict[int, int]  # anchor or follower -> its tied group
    followers_of: dict[int, tuple[int, ...]]  # anchor -> its followers
    anchors: tuple[int, ...]  # [group] its anchor
    inputs: dict[int, list[tuple[int, int, list[int]]]]  # follower -> (producer, bytes, ns per device)
    memo: dict = dataclasses.field(default_factory=dict)  # _room_left's values (reset with the caps)
    steps: dict = dataclasses.field(default_factory=dict)  # transitions and normalisers (kept with new caps)


def _data(problem: PlacementProblem, cost: CostModel | None) -> _Data:
    nodes, devices, edges = problem.nodes, problem.devices, problem.edges
    n, k = len(nodes), len(devices)
    p, q = (cost.prefill_steps, cost.decode_steps) if cost is not None else (0, 0)
    t_on = [[0] * k for _ in range(n)]
    computing = problem.computing_devices
    if cost is not None:
        # A node's time on an accelerator depends only on its speed, so identical GPUs share one
        # computation (64 identical GPUs: 1 instead of 64 per node); an offload device is its own.
        speed_of = [cost.speeds[d] if devices[d].is_accelerator else ("stored", d) for d in range(k)]
        first = {key: d for d, key in reversed(list(enumerate(speed_of)))}
        for i in range(n):
            times: dict[int, int] = {}
            for d in range(k):
                src = first[speed_of[d]]
                if src not in times:
                    cp, cd, sp, sd = node_time_ns(problem, cost, i, src)
                    times[src] = p * (cp + sp) + q * (cd + sd)
                t_on[i][d] = times[src]
    # The link into each computing device (the same from every sender: :func:`applies`), and one
    # sender to time it from; devices with the same link share one computation per edge.
    senders = {c: next((s for s in computing if s != c), None) for c in computing}
    link_into = {c: (cost.link_bytes_per_s[s][c], cost.latency_s(s, c)) for c, s in senders.items()
                 if s is not None and cost is not None}

    def edge_ns(e: int) -> list[int]:
        out = [0] * k
        if cost is not None:
            times: dict[tuple[float, float], int] = {}
            for c, link in link_into.items():
                if link not in times:
                    tp, td = edge_time_ns(problem, cost, e, senders[c], c)
                    times[link] = p * tp + q * td
                out[c] = times[link]
        return out

    cut, cut_t = [0] * (n + 1), [[0] * k for _ in range(n + 1)]
    consumes: list[list] = [[] for _ in range(n)]
    produces: list[list[int]] = [[] for _ in range(n)]
    last_use: list[int] = []
    uses: list[list[int]] = []  # per bit: producer then consumers
    followers_of = {g[0]: g[1:] for g in problem.tied_groups}
    follower = {m for g in problem.tied_groups for m in g[1:]}
    inputs: dict[int, list] = {f: [] for f in follower}
    for e, edge in enumerate(edges):
        ns = edge_ns(e)
        for c in edge.consumers:
            if c in follower:
                inputs[c].append((edge.producer, edge.size_bytes, ns))
        if edge.consumers == (edge.producer + 1,):
            c = edge.consumers[0]
            cut[c] += edge.size_bytes
            cut_t[c] = [a + b for a, b in zip(cut_t[c], ns)]
            continue
        bit = len(last_use)
        produces[edge.producer].append(bit)
        prev = edge.producer
        for c in edge.consumers:
            consumes[c].append((bit, prev, edge.size_bytes, ns))
            prev = c
        last_use.append(edge.consumers[-1])
        uses.append([edge.producer, *edge.consumers])
    thresholds = []
    for i in range(n + 1):
        found = set()
        for chain in uses:
            at = bisect.bisect_left(chain, i, lo=1)  # first consumer >= i
            if at < len(chain) and chain[at - 1] < i:
                found.add(chain[at - 1])
        for f, edges_in in inputs.items():  # a follower's producers, while it is still to come
            found.update(p for p, _, _ in edges_in if p < i <= f)
        thresholds.append(sorted(found))
    remaining = [0] * (n + 1)
    best = [0] * (n + 1)
    allowed = _allowed(problem)
    x = problem.execution_device
    remaining_free = [0] * (n + 1)
    footprint = [0] * (n + 1)
    least_work = [1 << 62] * (n + 1)  # past the last node with weights: no node, no work (below)
    least_kv_work = [1 << 62] * (n + 1)
    for i in range(n - 1, -1, -1):
        remaining[i] = remaining[i + 1] + nodes[i].size_bytes
        free = i not in follower  # a follower's bytes and time go with its anchor (maybe already charged)
        remaining_free[i] = remaining_free[i + 1] + (nodes[i].size_bytes if free else 0)
        kv = nodes[i].kv_bytes if problem.has_runtime_memory else 0
        footprint[i] = footprint[i + 1] + (nodes[i].size_bytes + kv if free else 0)
        holds = problem.has_runtime_memory and nodes[i].size_bytes > 0
        least_work[i] = min(least_work[i + 1], nodes[i].work_bytes) if holds else least_work[i + 1]
        beside = 0 if nodes[i].before_kv_cache else nodes[i].work_bytes
        least_kv_work[i] = min(least_kv_work[i + 1], beside) if holds else least_kv_work[i + 1]
        fastest = min(t_on[i][d if devices[d].is_accelerator else x] for d in allowed[i])
        best[i] = best[i + 1] + (fastest if free else 0)
    accs = problem.accelerators
    least_cut = [(0, 0)] * (n + 1)
    low = (1 << 62, 1 << 62)
    for j in range(n - 1, -1, -1):  # the chain edge into node j: charged when a block starts there
        low = (min(low[0], cut[j]), min(low[1], min(cut_t[j][d] for d in accs)))
        least_cut[j] = low
    others = problem.accelerators[1:]
    offs = tuple(d for d in range(k) if not devices[d].is_accelerator)
    rates = [(p + q) * 1e9 / cost.speeds[o].read_bytes_per_s for o in offs
             if cost is not None and cost.speeds[o].read_bytes_per_s > 0]
    starts = _run_starts(problem, cost) if problem.ordered else ()
    split = problem.has_runtime_memory and any(x.before_kv_cache and x.work_bytes for x in nodes)
    return _Data(
        n=n, others=others, free=not problem.ordered, offs=offs,
        groups_free=_free_groups(problem, cost) if not problem.ordered else (),
        run_start=starts, run_of=tuple(r - 1 for r in itertools.accumulate(int(b) for b in starts)),
        x_group=_x_group(problem, cost, offs),
        by_offload_cost=sorted(range(len(offs)), key=lambda s: devices[offs[s]].offload_cost),
        min_stream_ns_per_byte=min(rates, default=0.0),
        x=problem.execution_device, runtime=problem.has_runtime_memory,
        w=[x.size_bytes for x in nodes], kv=[x.kv_bytes for x in nodes], work=[x.work_bytes for x in nodes],
        before=[x.before_kv_cache for x in nodes], split=split,
        inline=[bool(offs) and x.offload_inline for x in nodes],
        hosted=[problem.host_of(i) is not None for i in range(n)],
        caps=[d.cap_bytes for d in devices], reserve=[d.reserve_bytes for d in devices],
        t_on=t_on, cut=cut, cut_t=cut_t, consumes=consumes, produces=produces, last_use=last_use,
        dead_bits=[tuple(USED + len(offs) + b for b, last in enumerate(last_use) if last < i) for i in range(n + 1)],
        thresholds=thresholds, remaining=remaining, min_time_after=best, least_cut_after=least_cut, pins=dict(problem.pins),
        offload_cost=[d.offload_cost for d in devices],
        remaining_free=remaining_free, remaining_footprint=footprint,
        least_work_after=[0 if w == 1 << 62 else w for w in least_work],
        least_kv_work_after=[0 if w == 1 << 62 else w for w in least_kv_work],
        groups={m: g for g, group in enumerate(problem.tied_groups) for m in group},
        followers_of=followers_of, inputs=inputs, anchors=tuple(g[0] for g in problem.tied_groups),
    )


def _allowed(problem: PlacementProblem) -> list[tuple[int, ...]]:
    pins = dict(problem.pins)
    everywhere = tuple(range(len(problem.devices)))
    return [(pins[i],) if i in pins else everywhere for i in range(len(problem.nodes))]


# -- transitions -----------------------------------------------------------------------------------
# The per-label code below writes its comparisons out (``if a < b: a = b``) rather than calling
# max or min: a builtin call per label entry, measured at 12 % of a pass (noqa: PLR1730, FURB136).
def _receive(data: _Data, v: list[int], load: int, size: int, ns: int) -> int:
    """One tensor of ``size`` bytes received by a device: charged to the transfer bytes and, with
    runtime memory, to the receiving device's load entry ``load`` (``XADD`` or ``BADD``). Returns
    ``ns``, its weighted transfer time, for the caller to add to the time of that device."""
    v[TR] += size
    if data.runtime:
        v[load] += size
    return ns


def _receive_inputs(data: _Data, v: list[int], f: int, device: int, *, before: int, after: int) -> None:
    """The inputs of tied copy ``f`` on ``device`` (another accelerator's block of nodes
    ``before..after - 1``) whose producers lie outside that block: received there."""
    for producer, size, ns in data.inputs[f]:
        if producer < before or producer >= after:
            t = _receive(data, v, BADD, size, ns[device])
            v[TIME] += t
            v[BSTAGE] += t


def _on_x(data: _Data, i: int, v: list[int], stored: int, chain_charge: bool) -> bool:
    """Node ``i`` computes on the execution device, stored on ``stored`` (``x`` or an offload
    device); updates ``v`` in place. False when the execution device overflows."""
    return _x_step(data, i, stored, chain_charge)(v) <= data.caps[data.x]


def _x_step(data: _Data, i: int, stored: int, chain_charge: bool) -> Callable[[list[int]], int]:
    """:func:`_on_x` for node ``i``, ``stored`` and ``chain_charge`` as a function of the label
    alone, returning the execution device's load (:func:`_x_load`) for the caller to compare with
    its cap: what depends only on the node is read once for all the labels it extends."""
    x = data.x
    runtime = data.runtime
    offloaded = stored != x
    w = data.w[i]
    offload_cost = w * data.offload_cost[stored]
    kv_slot, kv = (XKV if data.split else XADD), data.kv[i]
    work_slot, work = (XPRE if data.before[i] else XWORK), data.work[i]
    reserve = data.reserve[x]
    own_ns = data.t_on[i][stored]
    chain = data.cut[i] if chain_charge else 0  # the chain edge into i, received from another device
    chain_ns = data.cut_t[i][x]
    bits = USED + len(data.offs)
    consumes = tuple((bits + bit, size, ns[x]) for bit, _prev, size, ns in data.consumes[i])
    produces = tuple(bits + bit for bit in data.produces[i])

    def step(v: list[int]) -> int:
        if offloaded:
            v[OFF] += offload_cost
            v[OFFANY] = 1
            if runtime and v[XSTREAM] < w:
                v[XSTREAM] = w
        else:
            v[XADD] += w
            v[NOXB] = 0
        if runtime:
            v[kv_slot] += kv
            if v[work_slot] < work:  # noqa: PLR1730
                v[work_slot] = work
            if v[XIDLE]:
                v[XADD] += reserve
        v[XIDLE] = 0
        t = own_ns
        if chain:  # _receive, written out: charged to the transfers and (runtime memory) to x's load
            v[TR] += chain
            if runtime:
                v[XADD] += chain
            t += chain_ns
        for slot, size, ns in consumes:  # a tensor x does not have yet: received once
            if v[slot]:
                v[slot] = 0
                v[TR] += size
                if runtime:
                    v[XADD] += size
                t += ns
        for slot in produces:
            v[slot] = 0
        v[TIME] += t
        v[XSTAGE] += t
        x_kv = v[XKV] + v[XWORK]
        return v[XADD] + (v[XPRE] if v[XPRE] > x_kv else x_kv) + v[XSTREAM]  # noqa: FURB136 (_x_load)

    return step


def _on_block(data: _Data, i: int, v: list[int], device: int, start: bool) -> bool:
    """Node ``i`` joins (``start``: opens) the block on accelerator ``device`` (not the execution
    device); updates ``v`` in place. False when the block overflows."""
    return _block_step(data, i, device, start)(v) <= data.caps[device]


def _block_step(data: _Data, i: int, device: int, start: bool) -> Callable[[list[int]], int]:
    """:func:`_on_block` for node ``i``, ``device`` and ``start`` as a function of the label alone,
    returning the block's load (:func:`_b_load`) for the caller to compare with its cap."""
    runtime = data.runtime
    members = (i, *data.followers_of.get(i, ()))  # tied copies sit here too; their inputs come later
    weight = sum(data.w[node] for node in members)
    own_ns = sum(data.t_on[node][device] for node in members)
    kv_slot = BKV if data.split else BADD
    kv = sum(data.kv[node] for node in members) if runtime else 0
    pre = max((data.work[node] for node in members if data.before[node]), default=0) if runtime else 0
    work = max((data.work[node] for node in members if not data.before[node]), default=0) if runtime else 0
    chain = data.cut[i] if start else 0
    chain_ns = data.cut_t[i][device]
    consumes = tuple((prev, size, ns[device]) for _bit, prev, size, ns in data.consumes[i])
    reserve = data.reserve[device] if runtime else 0

    def step(v: list[int]) -> int:
        if start:
            v[BADD], v[BWORK], v[BSTAGE], v[BSTART], v[BKV], v[BPRE] = 0, 0, 0, i, 0, 0
        v[BADD] += weight
        t = own_ns
        if chain:
            t += _receive(data, v, BADD, chain, chain_ns)
        for prev, size, ns in consumes:  # an edge reaches the block once, at its first consumer there
            if prev < v[BSTART]:
                t += _receive(data, v, BADD, size, ns)
        v[kv_slot] += kv
        if v[BPRE] < pre:  # noqa: PLR1730
            v[BPRE] = pre
        if v[BWORK] < work:  # noqa: PLR1730
            v[BWORK] = work
        v[TIME] += t
        v[BSTAGE] += t
        b_kv = v[BKV] + v[BWORK]
        return v[BADD] + (v[BPRE] if v[BPRE] > b_kv else b_kv) + reserve  # noqa: FURB136

    return step


def _close(data: _Data, v: list[int], device: int, i: int, anchors: tuple[int, ...]) -> bool:
    """Fold the open block on ``device`` (not the execution device), which ends before node ``i``,
    into the measures. The tied copies of its anchors that come later receive their inputs from
    outside the block: charged now. False when that overflows the block."""
    for group, where in enumerate(anchors):
        if where != device:
            continue
        for f in data.followers_of[data.anchors[group]]:
            if f < i:
                continue
            _receive_inputs(data, v, f, device, before=v[BSTART], after=i)
    load = _b_load(data, v, device)
    fits = load <= data.caps[device]
    if data.caps[device]:
        v[MUTIL] = max(v[MUTIL], -(-UTILISATION_SCALE * load // data.caps[device]))
    v[MSTAGE] = max(v[MSTAGE], v[BSTAGE])
    v[BADD] = v[BWORK] = v[BSTAGE] = v[BSTART] = v[BKV] = v[BPRE] = 0
    return fits


def _x_load(v: Sequence[int]) -> int:
    """What the execution device holds (:mod:`layerplan.solver.accounting`), its reserve once it computes."""
    return v[XADD] + max(v[XPRE], v[XKV] + v[XWORK]) + v[XSTREAM]


def _b_load(data: _Data, v: Sequence[int], device: int) -> int:
    """What the open block's accelerator ``device`` holds, its reserve included (runtime memory)."""
    return v[BADD] + max(v[BPRE], v[BKV] + v[BWORK]) + (data.reserve[device] if data.runtime else 0)


def _x_util(data: _Data, v: Sequence[int]) -> int:
    cap = data.caps[data.x]
    return -(-UTILISATION_SCALE * _x_load(v) // cap) if cap else 0


def _measures(data: _Data, v: Sequence[int], open_device: int | None) -> dict[Measure, int]:
    """Lower bounds of every measure from a label (the values, once every node is placed)."""
    util = max(v[MUTIL], _x_util(data, v))
    if open_device is not None and data.caps[open_device]:
        load = _b_load(data, v, open_device)
        util = max(util, -(-UTILISATION_SCALE * load // data.caps[open_device]))
    return {
        Measure.OFFLOAD_COST: v[OFF],
        Measure.TRANSFER_BYTES: v[TR],
        Measure.TIME_NS: v[TIME],
        Measure.BOTTLENECK_NS: max(v[MSTAGE], v[XSTAGE], v[BSTAGE]),
        Measure.MAX_UTILISATION: util,
    }


# -- the DP ----------------------------------------------------------------------------------------
#: A state: (in device order: the index in ``_Data.others`` of the last block on another
#: accelerator, -1 for none; in free order: the members of each ``_Data.groups_free`` group used so
#: far and the group of the open block, -1 for none;
#: the execution device's block: 0 none yet, 1 open, 2 closed; "x", "o" or None: what node
#: ``i - 1`` is on: the execution device's block, the other accelerator's block, offloaded).
_State = tuple[int, int, str | None, tuple[int, ...]]  # ..., the device of each tied group's anchor (-1: not yet)


def _initial_key(data: _Data) -> object:
    return ((0,) * len(data.groups_free), -1) if data.free else -1


def _open_device(data: _Data, key: object) -> int:
    """The device of the open block on another accelerator (state ``on == "o"``)."""
    if not data.free:
        return data.others[key]
    used, group = key
    return data.groups_free[group][used[group] - 1]


def _closed_key(data: _Data, key: object) -> object:
    return (key[0], -1) if data.free else key


def _starts(data: _Data, key: object, xs: int) -> list[tuple[object, int]]:
    """``(key, device)`` of each block that may start next on another accelerator: any later one
    in device order (the next member of a run of interchangeable ones only right after the one
    before it: :func:`_run_starts`); in free order, the next unused member of any group. Those
    interchangeable with the execution device start only once its block did (``xs`` > 0:
    :func:`_x_group`)."""
    if not data.free:
        return [(m, data.others[m]) for m in range(key + 1, len(data.others))
                if (m == key + 1 or data.run_start[m]) and (xs or m or data.x_group != 0)]
    used = key[0]
    return [((used[:g] + (used[g] + 1,) + used[g + 1:], g), members[used[g]])
            for g, members in enumerate(data.groups_free) if used[g] < len(members) and (xs or g != data.x_group)]


def _room_left(data: _Data, key: object, i: int, *, with_kv: bool = False) -> tuple[int, int]:
    """The weight bytes the other accelerators no block has used yet can take from nodes ``i..``,
    in all and on the roomiest one: each its cap less, with runtime memory, its reserve and the
    least working set of a node with weights still to come (one of which it would hold). With
    ``with_kv``, the weight and KV-cache bytes they can take: a ``before_kv_cache`` node's working
    set then counts 0 (it needs no room beside the KV cache)."""
    less = (data.least_kv_work_after if with_kv else data.least_work_after)[i] if data.runtime else 0
    cached = data.memo.get((key, less))
    if cached is not None:
        return cached
    unused = (data.others[key + 1:] if not data.free
              else [d for g, members in enumerate(data.groups_free) for d in members[key[0][g]:]])
    if not data.runtime:
        rooms = [data.caps[d] for d in unused]
    else:
        rooms = [max(0, data.caps[d] - data.reserve[d] - less) for d in unused]
    data.memo[(key, less)] = found = (sum(rooms), max(rooms, default=0))
    return found


def solve_blocks(
    problem: PlacementProblem,
    goal: Goal,
    cost: CostModel | None,
    *,
    deadline: float | None = None,
) -> tuple[int, ...] | None:
    """The optimal placement of ``problem`` for ``goal``, exactly (see the module docstring).

    The goal's measures are minimised one after the other, as CP-SAT's phases do: each phase is a
    DP run that minimises one measure with the earlier ones bounded by their optimum. The largest
    utilisation is not carried in the labels (a max over devices would keep a front of labels per
    state): it is found by bisection, each probe a DP run with every computing device's cap cut to
    that utilisation (``ceil(SCALE * load / cap) <= u`` exactly when ``load <= u * cap // SCALE``).

    Args:
        problem: a problem :func:`applies` accepts.
        goal: the lexicographic measures to minimise.
        cost: the cost model (needed by timed goals; when None, times count 0).
        deadline: ``time.perf_counter()`` value past which :class:`OutOfTime` is raised.

    Returns:
        The assignment (device index per node), or None when no placement is valid.

    Raises:
        OutOfTime: past ``deadline``; it carries the best placement found so far, if any.
        OutOfLabels: a state needed more than :data:`MAX_LABELS` labels (the problem has too many
            trade-offs for this method; CP-SAT handles it).
    """
    data = _data(problem, cost)
    limits: dict[Measure, int] = {}
    best: tuple[tuple[int, ...], int] | None = None
    previous = None
    for at, measure in enumerate(goal.measures):
        if measure in limits:  # minimised with the phase before (``then``)
            continue
        then = goal.measures[at + 1] if at + 1 < len(goal.measures) else None
        if then is not Measure.MAX_UTILISATION or _bisect_utilisation(data):
            then = None
        try:
            if measure is Measure.MAX_UTILISATION and _bisect_utilisation(data):
                assert best is not None and previous is not None  # no goal starts with it
                data, best = _least_utilisation(problem, data, best, previous, limits, deadline)
                continue
            # The optimum of the earlier measures is a placement within their limits: its value
            # bounds this phase (the quick pass may still find a better one).
            incumbent = score(problem, best[0], measure, cost) if best is not None else None
            found = _phase(data, measure, limits, deadline, incumbent, then=then)
        except OutOfTime as exc:
            placement = exc.placement or (best[0] if best is not None else None)
            raise OutOfTime(placement, limits.get(goal.headline)) from None
        if found is None:
            return None
        best, previous = found[:2], measure
        limits[measure] = best[1]
        if len(found) == 3:  # ``then`` was minimised too, among the optima of ``measure``
            limits[then] = found[2]
            previous = then
    assert best is not None
    return best[0]


def _bisect_utilisation(data: _Data) -> bool:
    """Whether to find the least utilisation by bisection rather than as a label entry.

    Measured (benchmarks/plan_time.py): when the GPUs can hold the weights, the labels of a
    utilisation entry form a front per state (the largest load so far against the open block's),
    and a dozen bisection probes with few labels each are faster; when offloading is needed, the
    offload trade-offs keep many labels anyway and one run with the entry beats a dozen probes.
    """
    return sum(data.w) <= sum(data.caps[d] for d in (data.x, *data.others))


def _phase(
    data: _Data, objective: Measure, limits: dict[Measure, int], deadline: float | None,
    incumbent: int | None = None, then: Measure | None = None,
) -> tuple[tuple[int, ...], int] | tuple[tuple[int, ...], int, int] | None:
    """``(assignment, value)`` minimising ``objective`` with each measure in ``limits`` at most
    its limit, or None. ``incumbent``, the value of a placement known to keep the limits (the
    earlier phases' optimum), bounds the exact pass; without one (the first phase), a quick pass
    keeping a few labels per state finds one, and is the answer when proven exact
    (:func:`_quick_is_exact`). Measured on the catalog models (``benchmarks/plan_time.py``), a
    quick pass under the limits of later phases rarely improves on their incumbent: it costs
    more than the tighter bound saves (about 10 % over every goal and device set).

    With ``then`` (the next measure: the utilisation, when it is a label entry), the exact pass
    keeps its entries too and returns ``(assignment, value, then's value)``: the next phase's
    answer, as that phase would find it (its labels keep the same entries, and an optimal
    placement's label is kept or dominated by one as good in both), for about the cost of this
    phase alone (measured: the utilisation entry adds few labels; its own pass cost as much again).
    A quick pass proven exact comes back alone, and the next phase runs as usual; so does this
    one where the extra entries cost it its label limit (:class:`OutOfLabels`)."""
    quick = None
    bound = incumbent
    if incumbent is None:
        dropped: list[int] = []
        quick = _run(data, objective, limits, max_labels=QUICK_MAX_LABELS, deadline=deadline, bound=None,
                     dropped=dropped)
        if _quick_is_exact(quick, dropped):
            return quick
        bound = None if quick is None else quick[1]
    if then is not None:
        try:
            return _exact(data, objective, limits, deadline, bound, retry=quick is None, then=then)
        except OutOfLabels:
            pass
    return _exact(data, objective, limits, deadline, bound, retry=quick is None)


def _exact(
    data: _Data, objective: Measure, limits: dict[Measure, int], deadline: float | None, bound: int | None, *,
    retry: bool, then: Measure | None = None,
) -> tuple[tuple[int, ...], int] | tuple[tuple[int, ...], int, int] | None:
    """The exact pass of :func:`_phase` from ``bound``, run again without it when it finds nothing
    and ``retry`` (the bound was an incumbent's, which can be too optimistic for the DP's accounting)."""
    found = _run(data, objective, limits, max_labels=None, deadline=deadline, bound=bound, then=then)
    if found is None and bound is not None and retry:
        found = _run(data, objective, limits, max_labels=None, deadline=deadline, bound=None, then=then)
    return found


def _quick_is_exact(quick: tuple[tuple[int, ...], int] | None, dropped: list[int]) -> bool:
    """Whether the quick pass's result is the exact pass's: it dropped no label to its
    truncation (it was then the exact pass without a bound), or every label it dropped had a lower
    bound on the objective above the value it found, so that no completion of one does better.

    The second holds as the exact pass's own pruning does: following an optimal placement along
    the pass, its label is kept, or dominated by a kept or dropped label (one as good), or dropped
    with a lower bound at most the optimum; so the optimum is at least ``min(found, dropped)``.
    """
    if not dropped:
        return True
    return quick is not None and quick[1] < min(dropped)


def _least_utilisation(
    problem: PlacementProblem, data: _Data, best: tuple[tuple[int, ...], int], previous: Measure,
    limits: dict[Measure, int], deadline: float | None,
) -> tuple[_Data, tuple[tuple[int, ...], int]]:
    """The least utilisation ``u`` at which the earlier measures keep their optimum (bisection over
    ``floor..u(best)``, :func:`_utilisation_floor`), with the data capped at ``u`` and a placement
    that reaches it."""
    high = max_utilisation(problem, best[0])
    low = min(_utilisation_floor(problem), high)
    while low < high:
        middle = (low + high) // 2
        # ``limits`` already bounds ``previous`` by its optimum: no quick pass needed for a bound.
        try:
            found = _run(_capped(data, middle), previous, limits, max_labels=None, deadline=deadline, bound=None)
        except OutOfTime:
            raise OutOfTime(best[0]) from None
        if found is None:
            low = middle + 1
        else:
            best = found
            high = min(middle, max_utilisation(problem, found[0]))
    return _capped(data, high), best


def _utilisation_floor(problem: PlacementProblem) -> int:
    """A lower bound on ``max_utilisation`` over every placement: the bytes every placement charges
    to the devices that compute (the KV cache always, the weights too when nothing can be
    offloaded), over their caps together, since the largest ``load / cap`` is at least
    ``sum(load) / sum(cap)``. Probes below it fail, often slowly on long chains (16k layers over 8
    GPUs: 1.2-1.5 s each)."""
    balance = [d for d in problem.computing_devices if problem.devices[d].cap_bytes > 0]
    room = sum(problem.devices[d].cap_bytes for d in balance)
    if not room:
        return 0
    forced = sum(node.kv_bytes for node in problem.nodes) if problem.has_runtime_memory else 0
    if all(device.is_accelerator for device in problem.devices):
        forced += sum(node.size_bytes for node in problem.nodes)
    return -(-UTILISATION_SCALE * forced // room)


def _capped(data: _Data, utilisation: int) -> _Data:
    """``data`` with every computing device's cap cut to ``utilisation`` (1/SCALE of its cap)."""
    caps = list(data.caps)
    for d in (data.x, *data.others):
        caps[d] = min(caps[d], utilisation * caps[d] // UTILISATION_SCALE)
    return dataclasses.replace(data, caps=caps, memo={})


def _run(
    data: _Data, objective: Measure, limits: dict[Measure, int], *, max_labels: int | None,
    deadline: float | None, bound: int | None, dropped: list[int] | None = None, then: Measure | None = None,
) -> tuple[tuple[int, ...], int] | None:
    """One pass of the DP (``max_labels``: truncated, for an incumbent; None: exact). With
    ``dropped``, the truncation appends there the least objective bound of the labels it drops.
    With ``then``, the labels keep that measure too, and of the optimal placements the pass
    returns one with the least ``then``, as ``(assignment, value, then's value)``."""
    start = [0] * (USED + len(data.offs) + len(data.last_use))
    start[XIDLE] = start[NOXB] = 1
    for b in range(len(data.last_use)):
        start[USED + len(data.offs) + b] = 1
    run = _Pass.of(objective, limits, max_labels=max_labels, bound=bound, dropped=dropped, then=then)
    states: dict[_State, list[_Label]] = {(_initial_key(data), 0, None, (-1,) * len(data.anchors)): [_Label(tuple(start), None, -1)]}
    for i in range(data.n + 1):
        if deadline is not None and time.perf_counter() > deadline:
            raise OutOfTime
        states = {state: kept for state, labels in states.items()
                  if (kept := _settle(data, run, labels, i, state))}
        if len(states) > 1:
            states = _across_used(data, states)
        if i < data.n:
            states = _advance(data, i, states)
    finals = []
    for state, labels in states.items():
        for label in labels:
            v = list(label.vec)
            if state[2] == "o" and not _close(data, v, _open_device(data, state[0]), data.n, state[3]):
                continue
            if v[OFFANY] and v[NOXB]:  # offloaded nodes would run elsewhere (problem.py: execution device)
                continue
            measures = _measures(data, v, None)
            finals.append(((measures[objective], measures[then] if then is not None else 0), label))
    if not finals:
        return None
    best = min(key for key, _ in finals)
    # Of the optimal placements found, the one that fills the lower device indices first, as
    # accelerate fills GPU 0 first.
    assignment = min(_assignment(data.n, label) for key, label in finals if key == best)
    return (assignment, best[0]) if then is None else (assignment, best[0], best[1])


def _assignment(n: int, label: _Label) -> tuple[int, ...]:
    """The device of each node, read back along the parents of a final label."""
    assignment = [0] * n
    for i in range(n - 1, -1, -1):
        assignment[i] = label.device
        label = label.parent
    return tuple(assignment)


def _advance(data: _Data, i: int, states: dict[_State, list[_Label]]) -> dict[_State, list[_Label]]:
    """The candidate labels at position ``i + 1``: node ``i`` placed every way it may be."""
    if i in data.groups and data.anchors[data.groups[i]] != i:
        return _follow(data, i, states)
    x = data.x
    pin = data.pins.get(i)
    group = data.groups.get(i)  # i anchors a tied group: the state records where it goes
    out: dict[_State, list[_Label]] = {}
    memo = data.steps  # node i's transitions, built when first used, for every pass

    def x_step(stored: int, charge: bool) -> Callable[[list[int]], int]:
        found = memo.get(("x", i, stored, charge))
        if found is None:
            memo["x", i, stored, charge] = found = _x_step(data, i, stored, charge)
        return found

    def block_step(device: int, start: bool) -> Callable[[list[int]], int]:
        found = memo.get(("block", i, device, start))
        if found is None:
            memo["block", i, device, start] = found = _block_step(data, i, device, start)
        return found

    def put(state: _State, labels: list[_Label], step: Callable[[list[int]], int], cap: int, device: int,
            slot: int | None = None) -> None:
        """Each of ``labels`` with node ``i`` on ``device`` (stored on offload ``slot``, if any)
        that fits ``cap``, into ``state`` (made when its first label comes, as states are ordered)."""
        if group is not None:
            state = (*state[:3], (*state[3][:group], device, *state[3][group + 1:]))
        bucket = None
        w, room = data.w[i], (data.caps[device] - data.w[i] if slot is not None else 0)
        for label in labels:
            if slot is not None and label.vec[USED + slot] > room:
                continue
            v = list(label.vec)
            if slot is not None:
                v[USED + slot] += w
            if step(v) <= cap:
                if bucket is None:
                    bucket = out.setdefault(state, [])
                bucket.append(_Label(tuple(v), label, device))

    for (last, xs, on, anchors), labels in states.items():
        closed = labels
        if on == "o":  # what follows another block, or an offload, sees that block closed
            closed = []
            for label in labels:
                v = list(label.vec)
                if _close(data, v, _open_device(data, last), i, anchors):
                    closed.append(_Label(tuple(v), label.parent, label.device))
        after = (_closed_key(data, last), 2 if xs == 1 else xs, None, anchors)
        charge = on == "o"  # node i-1 computes on another accelerator than the execution device
        # Extend the open block.
        if on == "x" and pin in (None, x):
            put((last, 1, "x", anchors), labels, x_step(x, False), data.caps[x], x)
        if on == "o" and pin in (None, _open_device(data, last)):
            device = _open_device(data, last)
            put((last, xs, "o", anchors), labels, block_step(device, False), data.caps[device], device)
        # Offload: an inline-offloadable node keeps the execution device's open block open (it
        # computes there, between the block's nodes); any other closes it.
        offloaded = (last, 1, "x", anchors) if on == "x" and data.inline[i] else after
        hosted = data.hosted[i]  # computes where node i - 1 does: on its block, or on x
        for slot, o in enumerate(data.offs):
            if pin not in (None, o) or (hosted and on == "o"):
                continue
            put(offloaded, closed, x_step(o, charge), data.caps[x], o, slot)
        # Start the execution device's block: first of all (ordered) or anywhere (free order).
        if xs == 0 and (data.free or last == -1) and pin in (None, x) and not (hosted and on == "o"):
            put((after[0], 1, "x", anchors), closed, x_step(x, charge), data.caps[x], x)
        # Start a block on another accelerator: any later one (ordered) or the next (free order).
        for key, device in ([] if hosted else _starts(data, last, xs)):
            if pin not in (None, device):
                continue
            put((key, after[1], "o", anchors), closed, block_step(device, True), data.caps[device], device)
    return out


def _across_used(data: _Data, states: dict[_State, list[_Label]]) -> dict[_State, list[_Label]]:
    """The labels no label of another state dominates, where states that differ only in how many
    interchangeable GPUs they used are compared with those counts as entries too: in free order
    the members of each group used; in device order the last accelerator used, within its run of
    interchangeable ones (:func:`_run_starts`).

    A state that used no more of them can finish every way the other can (on the ones it has not
    used yet, the same measures; in device order, shifted down the run), so a label of it that is
    also no larger dominates. Without this, every count of used GPUs a position can be reached
    with (dozens, over 64 GPUs) would be its own state."""
    by_rest: dict[tuple, list[_State]] = {}
    for state in states:
        last = state[0]
        rest = (last[1], *state[1:]) if data.free else (data.run_of[last] if last >= 0 else -1, *state[1:])
        by_rest.setdefault(rest, []).append(state)
    used = (lambda state: state[0][0]) if data.free else (lambda state: (state[0],))
    out = dict(states)
    for members in by_rest.values():
        if len(members) < 2:
            continue
        rows = sorted(((label.vec + used(state), state, label) for state in members for label in states[state]),
                      key=lambda row: row[0])
        kept = {id(rows[r][2]) for r in _front([row[0] for row in rows])}
        for state in members:
            labels = [label for label in states[state] if id(label) in kept]
            if labels:
                out[state] = labels
            else:
                del out[state]
    return out


def _follow(data: _Data, f: int, states: dict[_State, list[_Label]]) -> dict[_State, list[_Label]]:
    """Node ``f`` is a tied copy: it goes where its anchor went and the state does not change
    (contiguity is over the other nodes). On the execution device or offloaded, it is charged now;
    on another accelerator its bytes and time were charged with its anchor, and its inputs are
    charged now if that block is still open (else they were when it closed)."""
    out: dict[_State, list[_Label]] = {}
    group = data.groups[f]
    for state, labels in states.items():
        last, _xs, on, anchors = state
        device = anchors[group]
        kept = out.setdefault(state, [])
        for label in labels:
            v = list(label.vec)
            if device == data.x or device in data.offs:
                if device != data.x:
                    slot = USED + data.offs.index(device)
                    if v[slot] + data.w[f] > data.caps[device]:
                        continue
                    v[slot] += data.w[f]
                if not _on_x(data, f, v, device, on == "o"):
                    continue
            elif on == "o" and _open_device(data, last) == device:
                _receive_inputs(data, v, f, device, before=v[BSTART], after=data.n)
                if _b_load(data, v, device) > data.caps[device]:
                    continue
            kept.append(_Label(tuple(v), label, device))
    return out


@dataclass(frozen=True, slots=True)
class _Pass:
    """What one DP pass minimises and keeps, as :func:`_settle` reads it."""

    measures: frozenset[Measure]  # the objective and the bounded earlier measures (kept in the labels)
    codes: tuple[int, ...]  # the objective, then the limited measures (``_BOUND_CODES``)
    checks: tuple[tuple[int, int], ...]  # (index in ``codes``, most allowed): the bound and the limits
    max_labels: int | None  # labels kept per state (quick pass); None: exact
    dropped: list[int] | None  # where the truncation notes the least bound it drops (:func:`_quick_is_exact`)

    @classmethod
    def of(
        cls, objective: Measure, limits: dict[Measure, int], *, max_labels: int | None, bound: int | None,
        dropped: list[int] | None = None, then: Measure | None = None,
    ) -> _Pass:
        caps = (bound, *limits.values())
        return cls(measures=frozenset({objective, *limits, *([then] if then is not None else [])}),
                   codes=tuple(_BOUND_CODES[m] for m in (objective, *limits)),
                   checks=tuple((at, cap) for at, cap in enumerate(caps) if cap is not None), max_labels=max_labels,
                   dropped=dropped)


def _settle(data: _Data, run: _Pass, labels: list[_Label], i: int, state: _State) -> list[_Label]:
    """A state's labels at position ``i``: normalised, deduplicated, bounded (the pass's bound on
    the objective and limits on earlier measures), Pareto-filtered and (quick pass) truncated."""
    normal = _normaliser(data, i, run.measures, state)
    unique: dict[tuple[int, ...], _Label] = {}
    for label in labels:
        unique.setdefault(normal(label.vec), label)
    checks = run.checks
    lower = _completion_bounds(data, i, state, run.codes)
    keyed = []
    for vec, label in unique.items():
        values = lower(vec)
        if values is None:
            continue
        for at, cap in checks:
            if values[at] > cap:
                break
        else:
            keyed.append((values[0], vec, label))
    keyed.sort()  # least objective bound first, then by vector (unique here: labels are never compared)
    kept = _front([entry[1] for entry in keyed])
    out = []
    for r in kept:  # a candidate label is its own object (made by _advance or _follow): it takes its normal form
        _, vec, label = keyed[r]
        label.vec = vec
        out.append(label)
    if run.max_labels is not None:
        if len(out) > run.max_labels and run.dropped is not None:  # the least bound it drops comes first
            run.dropped.append(keyed[kept[run.max_labels]][0])
        return out[:run.max_labels]
    if len(out) > MAX_LABELS:
        raise OutOfLabels
    return out


def _offload_room(data: _Data) -> tuple[tuple[int, ...], tuple[tuple[int, int, int], ...], int]:
    """The offload devices' fill slots, ``(slot, cap, cost per byte)`` cheapest first, and their
    caps together (offload caps are never cut by :func:`_capped`: kept with the steps)."""
    found = data.steps.get("offload")
    if found is None:
        offs = data.offs
        data.steps["offload"] = found = (
            tuple(USED + s for s in range(len(offs))),
            tuple((USED + s, data.caps[offs[s]], data.offload_cost[offs[s]]) for s in data.by_offload_cost),
            sum(data.caps[o] for o in offs),
        )
    return found


#: The measures as :func:`_completion_bounds` tells them apart (ints compare faster than enum members).
_TIME, _OFFLOAD, _TRANSFER, _BOTTLENECK, _UTILISATION = range(5)
_BOUND_CODES = {Measure.TIME_NS: _TIME, Measure.OFFLOAD_COST: _OFFLOAD, Measure.TRANSFER_BYTES: _TRANSFER,
                Measure.BOTTLENECK_NS: _BOTTLENECK, Measure.MAX_UTILISATION: _UTILISATION}


def _completion_bounds(
    data: _Data, i: int, state: _State, codes: tuple[int, ...]
) -> Callable[[Sequence[int]], tuple[int, ...] | None]:
    """A function of a label at position ``i`` in ``state``: lower bounds on the measures of any
    completion of it (``codes``: which, as :data:`_BOUND_CODES` numbers them), or None when no
    completion fits.

    The weight bytes still to place beyond what the accelerators can still take must be offloaded
    (fractional knapsack: the cheapest offload room first for the offload cost, the fastest for
    the streaming time, which runs on the execution device). With runtime memory, a node on an
    accelerator also brings its KV cache, and an offloaded one leaves its KV cache on the execution
    device: the offloaded weight bytes are also at least the weight and KV-cache bytes still to
    place beyond the room of those accelerators and of the execution device. Every node still to
    place costs at least its fastest compute time. What does not depend on the label is computed
    once per state.
    """
    last, xs, on = state[:3]
    x = data.x
    cap_x = data.caps[x]
    x_room = xs == 1 or (xs == 0 and (data.free or last == -1))  # the execution device may still take nodes
    open_device = _open_device(data, last) if on == "o" else None
    cap_b = data.caps[open_device] if open_device is not None else 0
    reserve_b = data.reserve[open_device] if open_device is not None and data.runtime else 0
    reserve_x = data.reserve[x] if data.runtime else 0  # charged when it first computes (``XIDLE``)
    room_left, roomiest = _room_left(data, last, i)  # the other accelerators not used yet
    # Room for weight and KV-cache bytes: more than for weights alone where a before_kv_cache
    # working set is charged in place of the KV cache (its load grows by less than the KV bytes).
    kv_room_left, kv_roomiest = _room_left(data, last, i, with_kv=True) if data.split else (room_left, roomiest)
    # With nowhere to offload, what the execution device and the open block cannot take needs new
    # blocks, each holding at most ``roomiest`` and receiving at least the least cut.
    to_place = data.remaining_footprint[i] if data.runtime else data.remaining_free[i]
    block_room = kv_roomiest if data.runtime else roomiest
    cut_bytes, cut_ns = data.least_cut_after[i]
    base_overflow = data.remaining_free[i] - room_left
    footprint = data.remaining_footprint[i] - kv_room_left if data.runtime and data.offs else None
    time_after = data.min_time_after[i]
    rate = data.min_stream_ns_per_byte
    scale = UTILISATION_SCALE
    runtime = data.runtime
    used, cheapest, free_room = _offload_room(data)
    no_offs = not data.offs
    one_off = len(used) == 1
    time_only = codes == (_TIME,)

    def lower(v: Sequence[int]) -> tuple[int, ...] | None:
        idle = reserve_x if v[XIDLE] else 0
        x_kv = v[XKV] + v[XWORK]
        x_load = v[XADD] + (v[XPRE] if v[XPRE] > x_kv else x_kv) + v[XSTREAM]  # noqa: FURB136 (_x_load)
        x_free = cap_x - x_load - idle
        if x_free < 0:  # noqa: PLR1730
            x_free = 0
        # room for weights + KV: a load without the before-cache working set grows by both
        x_kv_free = cap_x - (v[XADD] + x_kv + v[XSTREAM] + idle)
        if x_kv_free < 0:  # noqa: PLR1730
            x_kv_free = 0
        room = x_free if x_room else 0
        kv_room = x_kv_free if x_room else 0
        if open_device is not None:
            b_kv = v[BKV] + v[BWORK]
            b_load = v[BADD] + (v[BPRE] if v[BPRE] > b_kv else b_kv) + reserve_b  # noqa: FURB136 (_b_load)
            if cap_b > b_load:
                room += cap_b - b_load
            if cap_b > v[BADD] + b_kv + reserve_b:
                kv_room += cap_b - (v[BADD] + b_kv + reserve_b)
        overflow = base_overflow - room
        if footprint is not None:  # the execution device takes the offloaded nodes' KV cache
            kv_overflow = footprint - kv_room - (0 if x_room else x_kv_free)
            if kv_overflow > overflow:  # noqa: PLR1730
                overflow = kv_overflow
        stream = offload = blocks = 0
        placed_room = kv_room if runtime else room
        if no_offs and block_room and to_place > placed_room:
            blocks = -(-(to_place - placed_room) // block_room)
        if overflow > 0:
            if free_room - (v[used[0]] if one_off else sum(v[u] for u in used)) < overflow:
                return None
            left = overflow
            for slot, cap, per_byte in cheapest:
                take = cap - v[slot]
                if take > left:  # noqa: PLR1730
                    take = left
                offload += take * per_byte
                left -= take
            stream = int(overflow * rate)
        if time_only:
            return (v[TIME] + time_after + stream + blocks * cut_ns,)
        out = []
        for code in codes:
            if code == _TIME:
                out.append(v[TIME] + time_after + stream + blocks * cut_ns)
            elif code == _OFFLOAD:
                out.append(v[OFF] + offload)
            elif code == _TRANSFER:
                out.append(v[TR] + blocks * cut_bytes)
            elif code == _BOTTLENECK:
                out.append(max(v[MSTAGE], v[XSTAGE] + stream, v[BSTAGE]))
            else:  # MAX_UTILISATION
                util = v[MUTIL]
                if cap_x and -(-scale * x_load // cap_x) > util:
                    util = -(-scale * x_load // cap_x)
                if cap_b and -(-scale * b_load // cap_b) > util:
                    util = -(-scale * b_load // cap_b)
                out.append(util)
        return tuple(out)

    return lower


def _normaliser(
    data: _Data, i: int, measures: frozenset[Measure], state: _State
) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    """:func:`_normalise` for position ``i`` and ``state``, built once (it reads no accelerator's
    cap but the execution device's, where it folds that device's utilisation in: then per cap)."""
    closed_x = state[1] == 2 and not data.offs and not data.anchors
    key = ("normal", i, measures, closed_x, data.caps[data.x] if closed_x else None)
    found = data.steps.get(key)
    if found is None:
        data.steps[key] = found = _normalise(data, i, measures, closed_x=closed_x)
    return found


def _normalise(
    data: _Data, i: int, measures: frozenset[Measure], *, closed_x: bool
) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    """A function of a label's vector at position ``i`` in ``state``: the vector with the entries
    that no longer matter set to a canonical value: measures the goal does not minimise; the
    execution device's load once its block is closed and no offload device exists (nothing can
    compute there any more: its utilisation and stage are final); an offload device with room for
    every node still to come needs no exact fill; the bit of a tensor no later node reads is moot;
    a before-cache working set no larger than the KV cache and working set beside it is moot (both
    only grow); and a block's first node only matters through the producers and consumers it comes
    after (``_Data.thresholds``). ``closed_x``: the execution device's block is closed and no
    offload device or tied group exists. What does not depend on the label is worked out once."""
    utilisation = Measure.MAX_UTILISATION in measures
    zeroed = tuple(slot for measure, slots in _MEASURE_SLOTS if measure not in measures for slot in slots)
    left = data.remaining[i]
    # Fills below ``cap - left`` are equivalent: the device has room for every node still to come
    # (a fill is never negative, so a floor of 0 or less changes nothing).
    floors = tuple((USED + s, data.caps[o] - left) for s, o in enumerate(data.offs) if data.caps[o] > left)
    dead = data.dead_bits[i]
    bits = range(USED + len(data.offs), USED + len(data.offs) + len(data.last_use))
    marks = data.thresholds[i]

    def normal(vec: tuple[int, ...]) -> tuple[int, ...]:
        v = list(vec)
        if closed_x and (v[XADD] or v[XKV] or v[XPRE] or v[XSTAGE]):
            if utilisation:
                v[MUTIL] = max(v[MUTIL], _x_util(data, v))
            v[MSTAGE] = max(v[MSTAGE], v[XSTAGE])
            v[XADD] = v[XWORK] = v[XSTREAM] = v[XSTAGE] = v[XKV] = v[XPRE] = 0
            for slot in bits:
                v[slot] = 0
        if v[XPRE] and v[XPRE] <= v[XKV] + v[XWORK]:
            v[XPRE] = 0
        if v[BPRE] and v[BPRE] <= v[BKV] + v[BWORK]:
            v[BPRE] = 0
        for slot in zeroed:
            v[slot] = 0
        for slot, floor in floors:
            if v[slot] < floor:  # noqa: PLR1730
                v[slot] = floor
        for slot in dead:
            v[slot] = 0
        if v[BSTART]:
            at = bisect.bisect_left(marks, v[BSTART])  # marks[at - 1] < BSTART <= marks[at]
            v[BSTART] = marks[at - 1] + 1 if at else 0
        return tuple(v)

    return normal


def _front(vecs: list[tuple[int, ...]]) -> list[int]:
    """Indices of the vectors no earlier vector is <= in every entry (``vecs`` sorted so that a
    dominating vector comes first, and without duplicates), in their order."""
    if len(vecs) <= 1:
        return list(range(len(vecs)))
    columns = [c for c in zip(*vecs) if c.count(c[0]) != len(c)]  # the entries that vary
    if len(columns) == 1:  # the least comes first and dominates the rest
        return [0]
    if len(columns) == 2:  # a sweep in order of the first entry keeps the strict minima of the second
        kept, least = [], None
        for r in sorted(range(len(vecs)), key=lambda r: (columns[0][r], columns[1][r])):
            if least is None or columns[1][r] < least:
                kept.append(r)
                least = columns[1][r]
        return sorted(kept)
    try:
        rows = np.array(columns, dtype=np.int64).T
    except OverflowError:  # an entry past 2**63 (offload costs of huge models): exact Python ints
        rows = np.array(columns, dtype=object).T
    # Dominance is transitive and a dominating vector comes first, so the front is the set of
    # vectors no other one is <= in every entry: all pairs at once, in chunks of rows.
    dominated = np.zeros(len(vecs), dtype=bool)
    for at in range(0, len(vecs), _FRONT_CHUNK):
        chunk = rows[at: at + _FRONT_CHUNK]
        below = (chunk[:, None, :] <= rows[None, :, :]).all(axis=2)  # [q - at, r]: row q <= row r
        below[np.arange(len(chunk)), np.arange(at, at + len(chunk))] = False
        dominated |= below.any(axis=0)
    return np.flatnonzero(~dominated).tolist()
