"""The plan cache: a second identical plan reads its placement from disk instead of solving; any
input of the solve changes the key; only proven optima are kept; a bad entry is solved again."""

from __future__ import annotations

import json

import pytest

import layerplan
from layerplan.planner import api
from layerplan.solver import Status

OPTIONS = {"max_memory": {0: "400KB", 1: "400KB", "cpu": "10MB"}, "reserve": 0, "seq_len": 16}


@pytest.fixture
def solves(monkeypatch):
    """Counts the solver calls made by plans."""
    calls = []
    real = api.solve

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "solve", counting)
    return calls


def _entries(folder):
    return sorted((folder / "plans").glob("*.json"))


def test_the_second_plan_reads_its_placement_from_the_cache(tiny_llama_dir, tmp_path, solves):
    first = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    second = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert solves == [1] and len(_entries(tmp_path)) == 1 and first.status == "optimal"
    assert second.device_map == first.device_map and second.solution.assignment == first.solution.assignment
    assert second.solution.values == first.solution.values and second.timing == first.timing
    assert (second.solution.bound, second.solution.solver) == (first.solution.bound, first.solution.solver)
    assert any("plan cache" in note for note in second.hardware_notes)
    assert not any("plan cache" in note for note in first.hardware_notes)


def test_other_caps_or_another_objective_solve_again(tiny_llama_dir, tmp_path, solves):
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **{**OPTIONS, "max_memory": {0: "500KB", "cpu": "10MB"}})
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), objective="transfers", **OPTIONS)
    assert solves == [1, 1, 1] and len(_entries(tmp_path)) == 3


def test_no_cache_neither_reads_nor_writes_plans(tiny_llama_dir, tmp_path, solves):
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), cache=False, **OPTIONS)
    assert solves == [1, 1] and len(_entries(tmp_path)) == 1


@pytest.mark.parametrize("entry", ["not json", '{"assignment": [0], "bound": 0, "solver": "dp"}',
                                   '{"assignment": "x"}'])
def test_a_bad_entry_is_solved_again_and_replaced(tiny_llama_dir, tmp_path, solves, entry):
    first = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    (path,) = _entries(tmp_path)
    path.write_text(entry)
    again = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert solves == [1, 1] and again.device_map == first.device_map
    assert json.loads(path.read_text())["assignment"] == list(first.solution.assignment)


def test_a_placement_that_breaks_the_rules_is_not_served(tiny_llama_dir, tmp_path, solves):
    first = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    (path,) = _entries(tmp_path)
    entry = json.loads(path.read_text())
    entry["assignment"] = [0] * len(entry["assignment"])  # everything on GPU 0: over its 400 KB cap
    path.write_text(json.dumps(entry))
    again = layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert solves == [1, 1] and again.solution.assignment == first.solution.assignment


def test_a_time_limited_feasible_plan_is_not_kept(tiny_llama_dir, tmp_path, monkeypatch):
    real = api.solve

    def unproven(*args, **kwargs):
        import dataclasses

        return dataclasses.replace(real(*args, **kwargs), status=Status.FEASIBLE)

    monkeypatch.setattr(api, "solve", unproven)
    layerplan.plan(tiny_llama_dir, cache_dir=str(tmp_path), **OPTIONS)
    assert _entries(tmp_path) == []
