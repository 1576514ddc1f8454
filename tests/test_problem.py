"""PlacementProblem validation, evaluate and violations: hand-computed values, invalid inputs."""

from __future__ import annotations

import re

import pytest

from layerplan.solver import (
    Device,
    DeviceKind,
    Edge,
    InvalidSpecError,
    Node,
    PlacementProblem,
    Rule,
    evaluate,
    format_bytes,
    violations,
)

GPU, CPU, DISK = DeviceKind.ACCELERATOR, DeviceKind.CPU, DeviceKind.DISK


def nodes(*sizes: int) -> tuple[Node, ...]:
    return tuple(Node(name=f"n{i}", size_bytes=s) for i, s in enumerate(sizes))


def devices(*caps: int, cpu: int | None = None, disk: int | None = None) -> tuple[Device, ...]:
    out = [Device(name=str(i), kind=GPU, cap_bytes=c) for i, c in enumerate(caps)]
    if cpu is not None:
        out.append(Device(name="cpu", kind=CPU, cap_bytes=cpu))
    if disk is not None:
        out.append(Device(name="disk", kind=DISK, cap_bytes=disk))
    return tuple(out)


def chain(*sizes: int, edge_bytes: int = 1) -> tuple[Edge, ...]:
    return tuple(Edge(producer=i, consumers=(i + 1,), size_bytes=edge_bytes) for i in range(len(sizes) - 1))


# -- invalid input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Node(name="a", size_bytes=-1), "size_bytes=-1"),
        (lambda: Node(name="a", size_bytes=1.5), "size_bytes=1.5"),
        (lambda: Node(name="a", size_bytes=1, before_kv_cache=1), "before_kv_cache=1; expected True or False"),
        (lambda: Node(name="a", size_bytes=1, before_kv_cache="yes"), "before_kv_cache='yes'"),
        (lambda: Device(name="0", kind=GPU, cap_bytes=-5), "cap_bytes=-5"),
        (lambda: Device(name="0", kind="gpu", cap_bytes=5), "kind='gpu'"),
        (lambda: Device(name="0", kind=GPU, cap_bytes=5, offload_cost=2), "offload_cost=0"),
        (lambda: Device(name="cpu", kind=CPU, cap_bytes=5, offload_cost=-3), "offload_cost=-3"),
        (lambda: Device(name="cpu", kind=CPU, cap_bytes=5, offload_cost=1.5), "offload_cost=1.5"),
        (lambda: Edge(producer=2, consumers=(), size_bytes=1), "no consumers"),
        (lambda: Edge(producer=2, consumers=(1,), size_bytes=1), "goes backwards"),
        (lambda: Edge(producer=2, consumers=(2,), size_bytes=1), "goes backwards"),
        (lambda: Edge(producer=0, consumers=(1,), size_bytes=-1), "size_bytes=-1"),
        (lambda: PlacementProblem(nodes=nodes(1), devices=()), "no devices"),
        (lambda: PlacementProblem(nodes=(Node(name="a", size_bytes=1),) * 2, devices=devices(5)), "'a' appears twice"),
        (
            lambda: PlacementProblem(
                nodes=nodes(1), devices=(Device(name="0", kind=GPU, cap_bytes=1),) * 2
            ),
            "'0' appears twice",
        ),
        (
            lambda: PlacementProblem(
                nodes=nodes(1, 1), edges=(Edge(producer=0, consumers=(2,), size_bytes=1),), devices=devices(5)
            ),
            "outside 0..1",
        ),
        (lambda: PlacementProblem(nodes=nodes(1, 1), devices=devices(5), tied_groups=((0, 2),)), "outside 0..1"),
        (
            lambda: PlacementProblem(nodes=nodes(1, 1, 1), devices=devices(5), tied_groups=((0, 1), (1, 2))),
            "two tied groups",
        ),
        (
            lambda: PlacementProblem(nodes=nodes(1, 1, 1), devices=devices(5), tied_groups=((0, 1), (2, 0))),
            "two tied groups",
        ),
        (lambda: PlacementProblem(nodes=nodes(1), devices=devices(5), pins=((1, 0),)), "node 1 outside"),
        (lambda: PlacementProblem(nodes=nodes(1), devices=devices(5), pins=((0, 3),)), "device 3 outside"),
        (
            lambda: PlacementProblem(nodes=nodes(1), devices=devices(5, 5), pins=((0, 0), (0, 1))),
            "pinned to two devices",
        ),
        (
            lambda: PlacementProblem(
                nodes=nodes(1, 1, 1), devices=devices(5, 5), tied_groups=((0, 2),), pins=((0, 0), (2, 1))
            ),
            "tied parameters must share a device",
        ),
    ],
)
def test_invalid_input_is_rejected_with_the_value_and_the_fix(build, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=re.escape(message)):
        build()


def test_invalid_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Node(name="a", size_bytes=-1)


def test_normalisation_sorts_and_deduplicates() -> None:
    problem = PlacementProblem(
        nodes=nodes(1, 1, 1, 1),
        edges=(Edge(producer=0, consumers=(3, 1, 3), size_bytes=2),),
        devices=devices(10),
        tied_groups=((3, 0), (2,), (1, 1)),
        pins=((1, 0), (1, 0)),
    )
    assert problem.edges[0].consumers == (1, 3)
    assert problem.tied_groups == ((0, 3),)  # singletons dropped
    assert problem.pins == ((1, 0),)
    assert problem.anchor_of(3) == 0 and problem.is_follower(3) and not problem.is_follower(0)


def test_default_offload_costs_make_disk_dearer_than_cpu() -> None:
    cpu = Device(name="cpu", kind=CPU, cap_bytes=1)
    disk = Device(name="disk", kind=DISK, cap_bytes=1)
    assert (cpu.offload_cost, disk.offload_cost) == (1, 8)


def test_execution_device_is_first_accelerator_else_first_cpu() -> None:
    gpus_last = (Device(name="cpu", kind=CPU, cap_bytes=1), Device(name="1", kind=GPU, cap_bytes=1))
    assert PlacementProblem(nodes=nodes(1), devices=gpus_last).execution_device == 1
    host_only = (Device(name="disk", kind=DISK, cap_bytes=1), Device(name="cpu", kind=CPU, cap_bytes=1))
    assert PlacementProblem(nodes=nodes(1), devices=host_only).execution_device == 1


# -- evaluate ------------------------------------------------------------------------------------
def test_evaluate_counts_offload_bytes_times_tier_cost() -> None:
    # Sizes 10, 20, 30 on GPU 0, cpu (cost 1), disk (cost 8): 20*1 + 30*8 = 260.
    problem = PlacementProblem(nodes=nodes(10, 20, 30), devices=devices(100, cpu=100, disk=100))
    assert evaluate(problem, (0, 1, 2)).offload_cost == 260


def test_evaluate_offloaded_nodes_compute_on_the_execution_device() -> None:
    # n0 on GPU 0, n1 on cpu (computes on GPU 0): edge 0->1 stays on GPU 0, 0 bytes. n2 on GPU 1:
    # edge 1->2 goes GPU 0 -> GPU 1, 7 bytes.
    problem = PlacementProblem(nodes=nodes(1, 1, 1), edges=chain(1, 1, 1, edge_bytes=7), devices=devices(5, 5, cpu=5))
    assert evaluate(problem, (0, 2, 1)).transfer_bytes == 7
    # n1 on cpu after a GPU 1 node: edge 0->1 goes GPU 1 -> GPU 0 (7); edge 1->2 GPU 0 -> GPU 0 (0).
    assert evaluate(problem, (1, 2, 0)).transfer_bytes == 7


def test_evaluate_counts_a_tensor_once_per_destination_device() -> None:
    # n0 (GPU 0) feeds n1, n2 (GPU 1) and n3 (GPU 2): 5 bytes to GPU 1 once, 5 to GPU 2: 10.
    problem = PlacementProblem(
        nodes=nodes(1, 1, 1, 1),
        edges=(Edge(producer=0, consumers=(1, 2, 3), size_bytes=5),),
        devices=devices(5, 5, 5),
    )
    assert evaluate(problem, (0, 1, 1, 2)).transfer_bytes == 10
    assert evaluate(problem, (0, 0, 0, 0)).transfer_bytes == 0


# -- violations ----------------------------------------------------------------------------------
def test_violations_empty_for_a_valid_assignment() -> None:
    problem = PlacementProblem(nodes=nodes(10, 10, 10, 10), edges=chain(1, 1, 1, 1), devices=devices(20, 20))
    assert violations(problem, (0, 0, 1, 1)) == []


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ((0, 0), [(Rule.COVERAGE, "assignment has 2 entries for 4 nodes")]),
        ((0, 0, 1, 5), [(Rule.COVERAGE, "assignment uses a device index outside 0..2")]),
        ((0, 0, 0, 1), [(Rule.CAP, "device '0' holds 30 bytes > cap 20")]),
        ((0, 1, 0, 1), [(Rule.CONTIGUITY, "accelerator '0' holds 2 separate blocks"),
                       (Rule.CONTIGUITY, "accelerator '1' holds 2 separate blocks")]),
        ((0, 2, 0, 1), [(Rule.CONTIGUITY, "accelerator '0' holds 2 separate blocks")]),  # a cpu node splits GPU 0
        ((1, 1, 0, 0), [(Rule.ORDER, "accelerator blocks are not in device order")]),
    ],
)
def test_violations_name_each_broken_rule(assignment: tuple[int, ...], expected: list[tuple[Rule, str]]) -> None:
    problem = PlacementProblem(nodes=nodes(10, 10, 10, 10), edges=chain(1, 1, 1, 1), devices=devices(20, 20, cpu=40))
    assert [(v.rule, str(v)) for v in violations(problem, assignment)] == expected


def test_violations_unordered_allows_any_block_order() -> None:
    problem = PlacementProblem(nodes=nodes(10, 10, 10, 10), devices=devices(20, 20), ordered=False)
    assert violations(problem, (1, 1, 0, 0)) == []


def test_violations_tied_followers_are_exempt_from_contiguity_but_not_from_the_group() -> None:
    # lm_head (n3) tied to the embedding (n0): on GPU 0 after GPU 1's block is fine...
    problem = PlacementProblem(nodes=nodes(5, 5, 5, 5), devices=devices(20, 20), tied_groups=((0, 3),))
    assert violations(problem, (0, 1, 1, 0)) == []
    # ... but not apart from its anchor.
    assert [(v.rule, str(v)) for v in violations(problem, (0, 1, 1, 1))] == [
        (Rule.TIES, "tied group (0, 3) is split across devices")]


def test_violations_reports_unmet_pins() -> None:
    problem = PlacementProblem(nodes=nodes(1, 1), devices=devices(5, 5), pins=((1, 0),))
    assert [(v.rule, str(v)) for v in violations(problem, (0, 1))] == [(Rule.PINS, "node 'n1' is not on its pinned device")]


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1717986918, "1.60 GiB"), (20 * 2**30, "20.00 GiB")],
)
def test_format_bytes(num_bytes: int, text: str) -> None:
    assert format_bytes(num_bytes) == text
