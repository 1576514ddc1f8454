"""The graph cache: a second plan of the same model and workload reads the traced graph from disk
(no trace), and anything the graph depends on changes the key."""

from __future__ import annotations

import pytest

import layerplan
from layerplan.planner import api
from layerplan.planner.model import cache

OPTIONS = {"max_memory": {0: "400KB", 1: "400KB", "cpu": "10MB"}, "reserve": 0, "seq_len": 16}


@pytest.fixture
def traces(monkeypatch):
    """Counts the real traces (each call of the trace step)."""
    calls = []
    real = api._trace_source

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_trace_source", counting)
    return calls


def test_the_second_plan_reads_the_graph_from_the_cache(tiny_llama_dir, tmp_path, traces):
    first = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    second = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert traces == [1]  # traced once
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert second.device_map == first.device_map
    assert second.graph.nodes == first.graph.nodes and second.graph.edges == first.graph.edges
    assert any("from the cache" in note for note in second.graph.notes)


def test_another_workload_or_dtype_is_another_entry(tiny_llama_dir, tmp_path, traces):
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **{**OPTIONS, "seq_len": 32})
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), dtype="bfloat16", **OPTIONS)
    assert traces == [1, 1, 1]
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_new_library_versions_miss(tiny_llama_dir, tmp_path, traces, monkeypatch):
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    monkeypatch.setattr(cache, "library_versions", lambda: {"torch": "9.9"})
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert traces == [1, 1]


def test_a_change_to_the_tracing_code_misses(tiny_llama_dir, tmp_path, traces, monkeypatch):
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    monkeypatch.setattr(cache, "_tracing_code_digest", lambda: "edited")  # same versions, other code
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert traces == [1, 1]


def test_the_code_digest_covers_the_trace_module():
    assert len(cache._tracing_code_digest()) == 64
    files = sorted(p.name for p in cache.Path(cache.__file__).resolve().parent.glob("*.py"))
    assert "trace.py" in files and "inputs.py" in files


def test_images_per_prompt_is_part_of_the_key(tmp_path):
    key = lambda images: cache.graph_key({"model_type": "llava"}, dtype="float16", workload={"images_per_prompt": images},  # noqa: E731
                                         no_split=())
    assert key(1) != key(2)


def test_no_cache_neither_reads_nor_writes(tiny_llama_dir, tmp_path, traces):
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), cache=False, **OPTIONS)
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), cache=False, **OPTIONS)
    assert traces == [1, 1]
    assert not list(tmp_path.glob("*"))


def test_a_corrupt_entry_is_traced_again_and_replaced(tiny_llama_dir, tmp_path, traces):
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text('{"nodes": [')
    again = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert traces == [1, 1]
    assert not any("from the cache" in note for note in again.graph.notes)
    assert layerplan.LayerGraph.from_json(entry.read_text()).nodes == again.graph.nodes


def test_cli_cache_flags(tiny_llama_dir, tmp_path, capsys):
    import json

    from tests.cli_helpers import run

    argv = ["plan", tiny_llama_dir, "--seq-len", "16", "--max-memory", "cpu=1GB", "--format", "json",
            "--cache-dir", str(tmp_path)]
    notes = []
    for extra in ([], [], ["--no-cache"]):
        code, out, _ = run([*argv, *extra], capsys)
        assert code == 0
        notes.append(any("from the cache" in n for n in json.loads(out)["notes"]))
    assert notes == [False, True, False]


def test_a_trace_past_its_time_limit_falls_back_to_the_estimate_and_is_not_cached(tiny_llama_dir, tmp_path):
    # A limit no forward can meet: every op after the first checks it (planner/model/budget.py).
    plan = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), trace_time_limit_s=1e-9, **OPTIONS)
    assert any("time limit" in note for note in plan.graph.notes), plan.graph.notes
    assert any(n.estimated for n in plan.graph.nodes)
    assert plan.device_map  # still a plan, from the config estimate
    assert not list(tmp_path.glob("*.json"))
    full = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert not any(n.estimated for n in full.graph.nodes)
