"""Plans for a workload: the KV cache and activations are budgeted, plans never exceed a cap.

Oracle for "never over a cap": the by-hand accounting of ``tests/test_runtime_memory.py`` on the
plan's own problem, and accelerate-style weights-only placement as the counterexample.
"""

from __future__ import annotations

import pytest
from layerplan import planner
from layerplan.planner.spec.sizes import DEFAULT_RESERVE_BYTES, parse_reserve
from layerplan.solver import InfeasiblePlanError, InvalidSpecError, device_loads

from tests.test_runtime_memory import by_hand


def test_kv_cache_that_fits_no_gpu_is_refused_with_the_missing_bytes(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, batch_size=64, seq_len=128)
    kv = graph.total_kv_bytes
    caps = {0: kv // 4, 1: kv // 4, "cpu": "1GB"}
    with pytest.raises(InfeasiblePlanError, match="KV cache") as caught:
        planner.plan(graph, max_memory=caps, reserve=0)
    # Offloading moves weights, never the cache: at least half of the KV cache is missing.
    assert caught.value.missing_bytes >= kv // 2


def test_kv_cache_pushes_weights_off_the_gpu_and_the_plan_stays_under_every_cap(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, batch_size=16, seq_len=128)
    weights, kv = graph.total_bytes, graph.total_kv_bytes
    work = max(n.work_bytes for n in graph.nodes)
    largest = max(n.size_bytes for n in graph.nodes)
    # Room for half the weights, all the KV cache, one working set and one streamed layer.
    cap = weights - weights // 2 + kv + work + largest
    assert weights // 2 > largest  # so that weights + KV + working set alone overflow the cap
    result = planner.plan(graph, max_memory={0: cap, "cpu": "1GB"}, reserve=0)

    assert result.offloaded_bytes >= weights // 2 - largest
    held = by_hand(result.problem, result.solution.assignment)
    for device in result.problem.devices:
        assert held[device.name] <= device.cap_bytes
    assert held["0"] == result.usage[0].used_bytes
    # accelerate's weights-only view puts everything on GPU 0 (the weights fit) and overflows it.
    everything_on_gpu = (0,) * len(graph.nodes)
    assert weights <= cap < device_loads(result.problem, everything_on_gpu)[0].total


def test_the_default_reserve_is_charged_on_each_gpu_that_runs_something(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, seq_len=16)
    roomy = 2 * DEFAULT_RESERVE_BYTES
    result = planner.plan(graph, max_memory={0: roomy, 1: roomy, "cpu": "1GB"})
    assert result.usage[0].reserve_bytes == DEFAULT_RESERVE_BYTES  # everything runs on GPU 0
    assert result.usage[1].reserve_bytes == 0 and not result.usage[1].nodes
    assert result.usage[2].reserve_bytes == 0  # never on the cpu while a GPU is the execution device
    # Below the reserve the GPU cannot run anything: the plan refuses and says so.
    with pytest.raises(InfeasiblePlanError, match="reserve 1.00 GiB"):
        planner.plan(graph, max_memory={0: DEFAULT_RESERVE_BYTES})


def test_reserve_given_per_device_or_for_all():
    devices = [0, 1, "cpu"]
    assert parse_reserve(None, devices) == {0: 2**30, 1: 2**30, "cpu": 0}
    assert parse_reserve("2GiB", devices) == {0: 2 * 2**30, 1: 2 * 2**30, "cpu": 0}
    assert parse_reserve({1: "512MiB"}, devices) == {0: 2**30, 1: 512 * 2**20, "cpu": 0}
    with pytest.raises(InvalidSpecError, match=r"reserve\[5\] names a device not in max_memory"):
        parse_reserve({5: "1GiB"}, devices)
    with pytest.raises(InvalidSpecError, match="negative"):
        parse_reserve("-1GiB", devices)


def test_the_workload_changes_only_runtime_bytes(tiny_llama_dir):
    small, _ = planner.trace(tiny_llama_dir, batch_size=1, seq_len=32)
    large, _ = planner.trace(tiny_llama_dir, batch_size=4, seq_len=128)
    assert [n.size_bytes for n in small.nodes] == [n.size_bytes for n in large.nodes]
    # 4x the batch and 4x the context: 16x the KV cache (it is linear in both).
    assert large.total_kv_bytes == 16 * small.total_kv_bytes
    assert max(n.work_bytes for n in large.nodes) > max(n.work_bytes for n in small.nodes)
