"""Hypothesis generators of placement problems (pure integers; no torch).

Sizes are drawn from a few distinct values, as in a transformer (one size for the embedding, one
for the repeated layers, one for the head): that keeps the offload knapsack realistic and the exact
solvers fast. Caps are drawn relative to the total bytes so that problems range from roomy to
infeasible.
"""

from __future__ import annotations

import dataclasses
import itertools
from functools import partial

import pytest
from hypothesis import strategies as st
from layerplan.solver import (
    Device,
    DeviceKind,
    Edge,
    InfeasiblePlanError,
    Node,
    PlacementProblem,
    Solution,
    Status,
    device_loads,
    evaluate,
    violations,
)
from layerplan.solver import solve as _solve_any
from layerplan.testing import check_plan

# These tests are CP-SAT's (tests/test_block_dp.py checks the block DP that solve() tries first).
solve = partial(_solve_any, method="cp-sat")

__all__ = [
    "assert_cpsat_matches_brute_force",
    "before_cache_problems",
    "blocks_needed",
    "brute_force",
    "chain_of",
    "chain_problems",
    "check_placement",
    "gpus",
    "identical_gpu_problems",
    "runtime_problems",
    "small_problems",
]

GiB = 2**30


def chain_of(
    *sizes: int,
    edge_bytes: int = 1,
    devices: tuple[Device, ...],
    pins: tuple[tuple[int, int], ...] = (),
    names: tuple[str, ...] | None = None,
    ordered: bool = True,
) -> PlacementProblem:
    """A chain problem: nodes of the given sizes, one ``edge_bytes`` edge between neighbours."""
    names = names or tuple(f"layers.{i}" for i in range(len(sizes)))
    return PlacementProblem(
        nodes=tuple(Node(name=name, size_bytes=s) for name, s in zip(names, sizes)),
        edges=tuple(
            Edge(producer=i, consumers=(i + 1,), size_bytes=edge_bytes) for i in range(len(sizes) - 1)
        ),
        devices=devices,
        pins=pins,
        ordered=ordered,
    )


def gpus(*caps: int, cpu: int | None = None, disk: int | None = None) -> tuple[Device, ...]:
    """Accelerators "0", "1", ... with the given caps, then optionally "cpu" and "disk"."""
    out = [Device(name=str(i), kind=DeviceKind.ACCELERATOR, cap_bytes=c) for i, c in enumerate(caps)]
    if cpu is not None:
        out.append(Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=cpu))
    if disk is not None:
        out.append(Device(name="disk", kind=DeviceKind.DISK, cap_bytes=disk))
    return tuple(out)


def check_placement(problem: PlacementProblem, assignment: tuple[int, ...]) -> None:
    """Assert every placement rule: with :func:`layerplan.testing.check_plan` (the checker users'
    suites import), then directly, not through :func:`violations`."""
    n, k = len(problem.nodes), len(problem.devices)
    assert len(assignment) == n, "every node is placed exactly once"
    assert all(isinstance(d, int) and 0 <= d < k for d in assignment)
    check_plan(assignment, problem)
    for d, device in enumerate(problem.devices):
        held = sum(node.size_bytes for node, on in zip(problem.nodes, assignment) if on == d)
        assert held <= device.cap_bytes, f"device {device.name!r} over its cap"
    chain = [assignment[i] for i in range(n) if not problem.is_follower(i)]
    for d in problem.accelerators:
        where = [t for t, on in enumerate(chain) if on == d]
        if where:
            assert where == list(range(where[0], where[-1] + 1)), f"accelerator {d} holds one block"
    for group in problem.tied_groups:
        assert len({assignment[m] for m in group}) == 1
    for node, d in problem.pins:
        assert assignment[node] == d


@st.composite
def _devices(
    draw: st.DrawFn, *, total_bytes: int, max_devices: int, one_per_tier: bool
) -> tuple[Device, ...]:
    """1..max_devices devices, accelerators first (named "0", "1", ...), then cpu and disk tiers.

    With ``one_per_tier`` there is at most one cpu and one disk, as in accelerate's ``max_memory``
    (several tight offload devices of one cost make the exact DP's label sets grow fast).
    """
    tiers = [DeviceKind.ACCELERATOR] * 3 + [DeviceKind.CPU, DeviceKind.DISK]
    kinds = draw(st.lists(st.sampled_from(tiers), min_size=1, max_size=max_devices))
    if one_per_tier:
        kinds = [k for i, k in enumerate(kinds) if k is DeviceKind.ACCELERATOR or k not in kinds[:i]]
    kinds.sort(key=lambda kind: kind is not DeviceKind.ACCELERATOR)
    # The caps add up to a drawn multiple of the bytes (below 1: surely infeasible), shared out by
    # drawn weights, so roomy, tight and infeasible problems all occur.
    percent = draw(st.sampled_from([125, 110, 150, 100, 200, 80, 400]))
    weights = [draw(st.integers(0, 10)) for _ in kinds]
    if not any(weights):
        weights = [1] * len(kinds)
    caps = [-(-total_bytes * percent * w // (100 * max(1, sum(weights)))) for w in weights]
    devices = []
    for index, (kind, cap) in enumerate(zip(kinds, caps)):
        if kind is DeviceKind.ACCELERATOR:
            devices.append(Device(name=str(index), kind=kind, cap_bytes=cap))
        else:
            cost = draw(st.sampled_from([-1, -1, 0, 1, 3, 8]))  # -1: the default for the kind
            devices.append(Device(name=f"{kind.value}{index}", kind=kind, cap_bytes=cap, offload_cost=cost))
    return tuple(devices)


@st.composite
def _sizes(draw: st.DrawFn, *, num_nodes: int, max_size: int) -> list[int]:
    values = draw(st.lists(st.integers(0, max_size), min_size=1, max_size=3))
    return [draw(st.sampled_from(values)) for _ in range(num_nodes)]


@st.composite
def _pins(draw: st.DrawFn, *, num_nodes: int, num_devices: int, max_pins: int) -> tuple[tuple[int, int], ...]:
    pinned = draw(st.lists(st.integers(0, num_nodes - 1), max_size=max_pins, unique=True))
    return tuple((node, draw(st.integers(0, num_devices - 1))) for node in pinned)


@st.composite
def chain_problems(
    draw: st.DrawFn, *, max_nodes: int = 40, max_devices: int = 6, max_size: int = 20
) -> PlacementProblem:
    """Chains (edges ``i -> i + 1`` only, some absent or doubled), ordered, no tied groups."""
    n = draw(st.integers(1, max_nodes))
    sizes = draw(_sizes(num_nodes=n, max_size=max_size))
    edges = []
    for i in range(n - 1):
        for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2]))):
            edges.append(Edge(producer=i, consumers=(i + 1,), size_bytes=draw(st.integers(0, 50))))
    devices = draw(_devices(total_bytes=sum(sizes), max_devices=max_devices, one_per_tier=True))
    pins = draw(_pins(num_nodes=n, num_devices=len(devices), max_pins=2)) if draw(st.booleans()) else ()
    return PlacementProblem(
        nodes=tuple(Node(name=f"layers.{i}", size_bytes=s) for i, s in enumerate(sizes)),
        edges=tuple(edges),
        devices=devices,
        pins=pins,
        ordered=True,
    )


@st.composite
def small_problems(
    draw: st.DrawFn, *, max_nodes: int = 7, max_devices: int = 3, chain: bool = False
) -> PlacementProblem:
    """Problems small enough to enumerate: DAG edges with several consumers, tied groups, pins.

    With ``chain=True``: chain edges, ordered, no tied groups (what the DP accepts).
    """
    n = draw(st.integers(1, max_nodes))
    sizes = [draw(st.integers(0, 12)) for _ in range(n)]
    edges = []
    for producer in range(n - 1):
        if chain:
            consumers: tuple[int, ...] = (producer + 1,)
        else:
            consumers = tuple(draw(st.sets(st.integers(producer + 1, n - 1), min_size=1, max_size=3)))
        if draw(st.integers(0, 4)):
            edges.append(Edge(producer=producer, consumers=consumers, size_bytes=draw(st.integers(0, 9))))
    devices = draw(_devices(total_bytes=sum(sizes), max_devices=max_devices, one_per_tier=False))
    tied: tuple[tuple[int, ...], ...] = ()
    if not chain and n >= 2 and draw(st.booleans()):
        members = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=3, unique=True))
        tied = (tuple(members),)
    pins = draw(_pins(num_nodes=n, num_devices=len(devices), max_pins=2)) if draw(st.booleans()) else ()
    if tied:  # Pins that split the group are invalid input; keep at most one pin in the group.
        inside = [p for p in pins if p[0] in tied[0]]
        pins = tuple(p for p in pins if p[0] not in tied[0]) + tuple(inside[:1])
    return PlacementProblem(
        nodes=tuple(Node(name=f"n{i}", size_bytes=s) for i, s in enumerate(sizes)),
        edges=tuple(edges),
        devices=devices,
        tied_groups=tied,
        pins=pins,
        ordered=True if chain else draw(st.booleans()),
    )


@st.composite
def runtime_problems(draw: st.DrawFn, *, max_nodes: int = 6, max_devices: int = 3) -> PlacementProblem:
    """:func:`small_problems` with runtime memory: KV and working-set bytes, device reserves."""
    base = draw(small_problems(max_nodes=max_nodes, max_devices=max_devices))
    nodes = tuple(
        dataclasses.replace(x, kv_bytes=draw(st.integers(0, 4)), work_bytes=draw(st.integers(0, 6)))
        for x in base.nodes
    )
    devices = tuple(
        dataclasses.replace(d, cap_bytes=d.cap_bytes + draw(st.integers(0, 12)), reserve_bytes=draw(st.integers(0, 3)))
        for d in base.devices
    )
    return dataclasses.replace(base, nodes=nodes, devices=devices)


@st.composite
def before_cache_problems(draw: st.DrawFn, *, max_nodes: int = 6, max_devices: int = 3) -> PlacementProblem:
    """:func:`runtime_problems` with some nodes whose working set peaks before any KV cache exists
    (``before_kv_cache``, an encoder under ``generate()``): up to half of them (at least one),
    drawn anywhere (an encoder is a prefix, but the rule does not depend on the order), with a
    working set up to 14 bytes and mostly no KV cache of their own; the other nodes' KV caches are
    redrawn up to 6 bytes, so that a device often holds both and the larger of its two peaks
    decides. Caps get up to 8 more bytes or, three times in four, are drawn for a drawn placement
    (blocks in device order): between what each device holds in it and what it would hold were
    every working set charged beside the KV cache, so that the flag often decides whether it fits."""
    base = draw(runtime_problems(max_nodes=max_nodes, max_devices=max_devices))
    n = len(base.nodes)
    flagged = set(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=max(1, n // 2))))
    nodes = tuple(
        dataclasses.replace(x, before_kv_cache=True, work_bytes=draw(st.integers(0, 14)),
                            kv_bytes=x.kv_bytes if draw(st.integers(0, 3)) == 0 else 0)
        if i in flagged else dataclasses.replace(x, kv_bytes=draw(st.integers(0, 6)))
        for i, x in enumerate(base.nodes)
    )
    problem = dataclasses.replace(base, nodes=nodes)
    if draw(st.integers(0, 3)):
        placement = sorted(draw(st.integers(0, len(base.devices) - 1)) for _ in range(n))  # blocks in order
        plain = dataclasses.replace(problem, nodes=tuple(dataclasses.replace(x, before_kv_cache=False) for x in nodes))
        low = [load.total for load in device_loads(problem, placement)]
        high = [load.total for load in device_loads(plain, placement)]
        caps = [draw(st.integers(a, b)) if b else d.cap_bytes for a, b, d in zip(low, high, base.devices)]
    else:
        caps = [d.cap_bytes + draw(st.integers(0, 8)) for d in base.devices]
    devices = tuple(dataclasses.replace(d, cap_bytes=cap) for d, cap in zip(base.devices, caps))
    return dataclasses.replace(problem, devices=devices)


def blocks_needed(sizes: list[int], cap_bytes: int) -> int:
    """Fewest contiguous blocks of at most ``cap_bytes`` that hold ``sizes`` in order (first fit,
    which is optimal for this: a block closed earlier never lets a later one hold more)."""
    blocks, load = 1, 0
    for size in sizes:
        if load + size > cap_bytes:
            blocks, load = blocks + 1, 0
        load += size
    return blocks


@st.composite
def identical_gpu_problems(
    draw: st.DrawFn, *, max_nodes: int = 5, max_gpus: int = 4, chain: bool = False
) -> PlacementProblem:
    """Problems on identical GPUs ("0", "1", ... with one cap), more of them than the model needs.

    The cap is at least half the bytes, so at most 3 blocks are ever needed, and at least one GPU
    more than the fewest blocks is declared (up to ``max_gpus``). Sometimes a cpu follows. Edges
    as in :func:`small_problems` (``chain=True``: chain edges, ordered, no tied groups).
    """
    n = draw(st.integers(2, max_nodes))
    sizes = draw(_sizes(num_nodes=n, max_size=12))
    total = sum(sizes)
    cap = draw(st.integers(max(max(sizes), -(-total // 2), 1), max(total, 1)))
    needed = blocks_needed(sizes, cap)
    num_gpus = draw(st.integers(needed + 1, max(needed + 1, max_gpus)))
    edges = []
    for producer in range(n - 1):
        if chain:
            consumers: tuple[int, ...] = (producer + 1,)
        else:
            consumers = tuple(draw(st.sets(st.integers(producer + 1, n - 1), min_size=1, max_size=2)))
        edges.append(Edge(producer=producer, consumers=consumers, size_bytes=draw(st.integers(0, 9))))
    tied: tuple[tuple[int, ...], ...] = ()
    if not chain and draw(st.booleans()):
        tied = (tuple(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))),)
    cpu = draw(st.one_of(st.none(), st.integers(0, total)))
    return PlacementProblem(
        nodes=tuple(Node(name=f"n{i}", size_bytes=s) for i, s in enumerate(sizes)),
        edges=tuple(edges),
        devices=gpus(*[cap] * num_gpus, cpu=cpu),
        tied_groups=tied,
        ordered=True if chain else draw(st.booleans()),
    )


def brute_force(problem: PlacementProblem) -> tuple[int, int] | None:
    """The best objective tuple over every assignment (``k ** n`` of them), None if none is valid.

    Independent of the solvers: it only uses :func:`violations` and :func:`evaluate`.
    """
    best = None
    k = len(problem.devices)
    for assignment in itertools.product(range(k), repeat=len(problem.nodes)):
        if not violations(problem, assignment):
            value = evaluate(problem, assignment).as_tuple()
            if best is None or value < best:
                best = value
    return best


def assert_cpsat_matches_brute_force(problem: PlacementProblem, *, use_hint: bool) -> Solution | None:
    """CP-SAT proves the brute-force optimum, or refuses exactly when brute force finds nothing.

    Returns the solution (None when infeasible) for further checks."""
    best = brute_force(problem)
    if best is None:
        with pytest.raises(InfeasiblePlanError):
            solve(problem, num_workers=2, use_hint=use_hint)
        return None
    solution = solve(problem, num_workers=2, use_hint=use_hint)
    assert solution.status is Status.OPTIMAL
    check_placement(problem, solution.assignment)
    assert solution.objective.as_tuple() == best
    return solution
