"""Hypothesis strategies for placement problems shaped like traced transformers.

A problem is drawn from a handful of numbers, not from one draw per node, so a 10k-node, 64-device
problem costs the same few draws as a 10-node one (no ``data_too_large`` health check): node ``i``
of ``n`` takes its size from a short drawn *pattern* (an embedding, repeated layers, a head), the
chain edges carry one hidden-state size, and a few drawn broadcast or skip edges reach every
``step``-th node (rotary tables, an encoder output). Caps are drawn as a share of the model's
bytes, so problems range from roomy to infeasible. Arguments are checked when the strategy is
made, as Hypothesis' own are (``hypothesis.errors.InvalidArgument``).
"""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from layerplan.solver.problem import Device, DeviceKind, Edge, Node, PlacementProblem

__all__ = ["device_sets", "problems"]

#: Shares of the model's bytes that the caps add up to, in percent (below 100: surely infeasible).
_CAP_PERCENTS = (125, 110, 150, 100, 200, 80, 400)


def _check_range(name_min: str, low: int, name_max: str, high: int, *, floor: int) -> None:
    for name, value in ((name_min, low), (name_max, high)):
        if not isinstance(value, int) or isinstance(value, bool) or value < floor:
            raise InvalidArgument(f"{name}={value!r}; expected an int >= {floor}")
    if low > high:
        raise InvalidArgument(f"{name_min}={low} > {name_max}={high}; expected {name_min} <= {name_max}")


def _check_flag(name: str, value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r}; expected True, False or None (either, drawn)")


def device_sets(
    *,
    total_bytes: int = 1000,
    min_accelerators: int = 1,
    max_accelerators: int = 4,
    offload_tiers: bool | None = None,
    identical: bool | None = None,
    max_reserve_bytes: int = 0,
) -> st.SearchStrategy[tuple[Device, ...]]:
    """Device sets for a model of ``total_bytes``: accelerators ``"0"``, ``"1"``, ... then at most
    one ``"cpu"`` and one ``"disk"``, as in accelerate's ``max_memory``.

    Args:
        total_bytes: the bytes the caps are drawn against (their sum is a drawn 80-400 % of it).
        min_accelerators, max_accelerators: how many accelerators (0 allowed: a cpu-only set).
        offload_tiers: True: a cpu (and maybe a disk) always; False: none; None: drawn.
        identical: True: every accelerator has one cap (interchangeable GPUs); None: drawn.
        max_reserve_bytes: each accelerator's reserve (CUDA context) is drawn in ``0..`` this.

    Raises:
        InvalidArgument: an argument out of range (named in the message).
    """
    _check_range("min_accelerators", min_accelerators, "max_accelerators", max_accelerators, floor=0)
    _check_range("total_bytes", total_bytes, "total_bytes", total_bytes, floor=0)
    _check_range("max_reserve_bytes", max_reserve_bytes, "max_reserve_bytes", max_reserve_bytes, floor=0)
    _check_flag("offload_tiers", offload_tiers)
    _check_flag("identical", identical)
    if max_accelerators == 0 and offload_tiers is False:
        raise InvalidArgument("max_accelerators=0 with offload_tiers=False leaves no device; allow one of them")
    return _device_sets(total_bytes, min_accelerators, max_accelerators, offload_tiers, identical, max_reserve_bytes)


@st.composite
def _device_sets(draw: st.DrawFn, total: int, low: int, high: int, tiers: bool | None, identical: bool | None,
                 max_reserve: int) -> tuple[Device, ...]:
    gpus = draw(st.integers(low, high))
    with_tiers = draw(st.booleans()) if tiers is None else tiers
    with_tiers = with_tiers or gpus == 0
    disk = with_tiers and draw(st.booleans())
    same = draw(st.booleans()) if identical is None else identical
    percent = draw(st.sampled_from(_CAP_PERCENTS))
    count = gpus + with_tiers + disk
    weights = [draw(st.integers(1, 10))] * gpus if same else [draw(st.integers(0, 10)) for _ in range(gpus)]
    weights += [draw(st.integers(0, 10)) for _ in range(count - gpus)]
    share = total * percent // 100
    caps = [-(-share * w // max(1, sum(weights))) for w in weights]
    reserve = draw(st.integers(0, max_reserve))
    devices = [Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=caps[g] + reserve, reserve_bytes=reserve)
               for g in range(gpus)]
    if with_tiers:
        devices.append(Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=caps[gpus]))
    if disk:
        devices.append(Device(name="disk", kind=DeviceKind.DISK, cap_bytes=max(caps[-1], total)))
    return tuple(devices)


def problems(
    *,
    min_nodes: int = 1,
    max_nodes: int = 12,
    min_accelerators: int = 1,
    max_accelerators: int = 4,
    offload_tiers: bool | None = None,
    identical: bool | None = None,
    broadcast_edges: bool = True,
    tied: bool | None = None,
    pins: bool | None = None,
    runtime_memory: bool | None = None,
    before_kv_cache: bool | None = False,
    offload_inline: bool | None = False,
    ordered: bool | None = None,
    max_layer_bytes: int = 100,
) -> st.SearchStrategy[PlacementProblem]:
    """Placement problems shaped like a traced transformer (module docstring).

    Args:
        min_nodes, max_nodes: the node count (1 or more; 10_000 and more is fine).
        min_accelerators, max_accelerators, offload_tiers, identical: as :func:`device_sets`.
        broadcast_edges: also draw up to 2 edges that reach many later nodes.
        tied: True: the first and last node are tied (a tied ``lm_head``); None: drawn.
        pins: True: up to 2 nodes are pinned; None: drawn; False: none.
        runtime_memory: True: nodes have KV-cache and working-set bytes and accelerators
            reserves; None: drawn.
        before_kv_cache: True: from 3 nodes on, the nodes after the first up to a drawn one are an
            encoder (T5's ``encoder.block.*``): no KV cache, a working set of their own (up to
            half of ``max_layer_bytes``, with runtime memory) that peaks before any KV cache
            exists (:attr:`layerplan.solver.Node.before_kv_cache`); None: drawn; False (the
            default): no such nodes, and no draw for them (so existing suites keep their examples).
        offload_inline: True: the nodes at a drawn offset in every drawn ``step``-th position
            (1-3; the embedding and the head excluded from 3 nodes on; at least one) may be offloaded inside the
            execution device's block, as a MoE layer's experts
            (:attr:`layerplan.solver.Node.offload_inline`); None: drawn; False (the default): none,
            and no draw for them.
        ordered: accelerator blocks in device order (True), in any order (False), or drawn (None).
        max_layer_bytes: the largest node size in bytes.

    Raises:
        InvalidArgument: an argument out of range or of the wrong type (named in the message).
    """
    _check_range("min_nodes", min_nodes, "max_nodes", max_nodes, floor=1)
    _check_range("max_layer_bytes", max_layer_bytes, "max_layer_bytes", max_layer_bytes, floor=0)
    for name, value in (("offload_tiers", offload_tiers), ("identical", identical), ("tied", tied),
                        ("pins", pins), ("runtime_memory", runtime_memory), ("before_kv_cache", before_kv_cache),
                        ("offload_inline", offload_inline), ("ordered", ordered)):
        _check_flag(name, value)
    if not isinstance(broadcast_edges, bool):
        raise InvalidArgument(f"broadcast_edges={broadcast_edges!r}; expected True or False")
    device_sets(min_accelerators=min_accelerators, max_accelerators=max_accelerators,
                offload_tiers=offload_tiers, identical=identical)  # checks those arguments
    return _problems(low=min_nodes, high=max_nodes, gpus=(min_accelerators, max_accelerators), tiers=offload_tiers,
                     identical=identical, broadcast=broadcast_edges, tied=tied, pins=pins, runtime=runtime_memory,
                     before=before_kv_cache, inline=offload_inline, ordered=ordered, size=max_layer_bytes)


def _maybe(draw: st.DrawFn, flag: bool | None) -> bool:
    return draw(st.booleans()) if flag is None else flag


@st.composite
def _problems(draw: st.DrawFn, *, low: int, high: int, gpus: tuple[int, int], tiers: bool | None,
              identical: bool | None, broadcast: bool, tied: bool | None, pins: bool | None,
              runtime: bool | None, before: bool | None, inline: bool | None, ordered: bool | None,
              size: int) -> PlacementProblem:
    n = draw(st.integers(low, high))
    pattern = draw(st.lists(st.integers(0, size), min_size=1, max_size=3))
    ends = (draw(st.integers(0, size)), draw(st.integers(0, size)))  # embedding, head
    sizes = [pattern[i % len(pattern)] for i in range(n)]
    if n >= 3:
        sizes[0], sizes[-1] = ends
    with_runtime = _maybe(draw, runtime)
    kv, work = (draw(st.integers(0, max(1, size // 10))), draw(st.integers(0, max(1, size // 5)))) if with_runtime \
        else (0, 0)
    nodes = tuple(Node(name=f"layers.{i}", size_bytes=s, kv_bytes=kv if 0 < i < n - 1 else 0, work_bytes=work)
                  for i, s in enumerate(sizes))
    if _maybe(draw, before) and n >= 3:  # an encoder after the embedding: nodes 1..last
        last = draw(st.integers(1, n - 2))
        encoder_work = draw(st.integers(0, max(1, size // 2))) if with_runtime else 0
        nodes = tuple(Node(name=f"encoder.{i}", size_bytes=x.size_bytes, work_bytes=encoder_work, before_kv_cache=True)
                      if 1 <= i <= last else x for i, x in enumerate(nodes))
    if inline is not False and _maybe(draw, inline):  # experts: every step-th node from offset on
        interior = range(1, n - 1) if n >= 3 else range(n)
        step = draw(st.integers(1, 3))
        offset = draw(st.integers(0, min(step, len(interior)) - 1))
        nodes = tuple(dataclasses.replace(x, offload_inline=True) if i in interior and (i - interior[0]) % step == offset
                      else x for i, x in enumerate(nodes))
    hidden = draw(st.integers(0, max(1, size // 10)))
    edges = [Edge(producer=i, consumers=(i + 1,), size_bytes=hidden) for i in range(n - 1)]
    for _ in range(draw(st.integers(0, 2)) if broadcast and n >= 3 else 0):
        producer = draw(st.integers(0, n - 2))
        step = draw(st.integers(1, max(1, (n - producer) // 2)))
        consumers = tuple(range(producer + 1 + draw(st.integers(0, step - 1)) % (n - producer - 1), n, step))
        edges.append(Edge(producer=producer, consumers=consumers, size_bytes=draw(st.integers(0, max(1, size // 10)))))
    total = sum(sizes) + (kv * n if with_runtime else 0)
    devices = draw(_device_sets(total, *gpus, tiers, identical, max(1, size // 20) if with_runtime else 0))
    groups = ((0, n - 1),) if n >= 2 and _maybe(draw, tied) else ()
    pinned: list[tuple[int, int]] = []
    if _maybe(draw, pins):
        for node in sorted(set(draw(st.lists(st.integers(0, n - 1), max_size=2)))):
            pinned.append((node, draw(st.integers(0, len(devices) - 1))))
        if groups and len([p for p in pinned if p[0] in groups[0]]) > 1:  # pins must not split a tied group
            pinned = [p for p in pinned if p[0] != n - 1]
    return PlacementProblem(nodes=nodes, edges=tuple(edges), devices=devices, tied_groups=groups,
                            pins=tuple(pinned), ordered=_maybe(draw, ordered))
