"""The declarative CLI: spec file + flags, the same plan from file, flags and Python, and every kind
of bad input answered with one line and exit 2 before anything is traced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import layerplan
from layerplan.planner.spec import PlanSpec
from tests.cli_helpers import one_line, run


def spec_file(tmp_path: Path, model: str, extra: str = "") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(f"""\
        [model]
        source = {json.dumps(model)}

        [devices]
        max_memory = {{ 0 = "400KB", 1 = "400KB", cpu = "10MB" }}
        types = {{ "0,1" = "a100-40gb" }}
        reserve = 0

        [workload]
        batch_size = 2
        prompt_len = 12
        max_new_tokens = 4

        [solve]
        strategy = "auto"
        objective = "latency"
        time_limit_s = 30
        pins = {{ lm_head = 1 }}
    """) + extra)
    return path


FLAGS = ["--max-memory", "0=400KB", "1=400KB", "cpu=10MB", "--device-type", "0,1=a100-40gb", "--reserve", "0",
         "--batch-size", "2", "--prompt-len", "12", "--max-new-tokens", "4", "--strategy", "auto",
         "--objective", "latency", "--pin", "lm_head=1"]


def test_file_flags_and_python_give_the_same_plan(tiny_llama_dir, tmp_path, capsys):
    path = spec_file(tmp_path, tiny_llama_dir)
    code, from_file, _ = run(["plan", str(path), "--format", "json"], capsys)
    assert code == 0
    code, from_flags, _ = run(["plan", tiny_llama_dir, *FLAGS, "--format", "json"], capsys)
    assert code == 0
    from_python = layerplan.plan(PlanSpec.from_toml(path))
    by_kwargs = layerplan.plan(tiny_llama_dir, max_memory={0: "400KB", 1: "400KB", "cpu": "10MB"},
                               device_types={"0,1": "a100-40gb"}, reserve=0, batch_size=2, prompt_len=12,
                               max_new_tokens=4, objective="latency", pins={"lm_head": 1})
    maps = [json.loads(from_file)["device_map"], json.loads(from_flags)["device_map"],
            from_python.device_map, by_kwargs.device_map]
    assert all(m == maps[0] for m in maps), maps
    assert maps[0]["lm_head"] == 1  # the pin held
    assert len(set(maps[0].values())) > 1  # 400 KB GPUs cannot hold the tiny model alone: it is split


def test_flags_override_the_file_and_the_plan_json_reproduces_itself(tiny_llama_dir, tmp_path, capsys):
    path = spec_file(tmp_path, tiny_llama_dir)
    code, out, _ = run(["plan", str(path), "--batch-size", "3", "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["workload"]["batch_size"] == 3 and data["spec"]["workload"]["batch_size"] == 3
    # The plan's own JSON carries its spec: planning that spec again gives the same device_map.
    again = layerplan.plan(PlanSpec.from_dict(data["spec"]))
    assert again.device_map == data["device_map"]


def test_a_spec_error_exits_2_without_importing_torch(tmp_path):
    path = spec_file(tmp_path, "llama-3.1-405b").read_text().replace('"400KB"', '"80GiBB"', 1)
    (tmp_path / "spec.toml").write_text(path)
    code = ("import sys; from layerplan.planner.cli import main; rc = main(['plan', 'spec.toml']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "'80GiBB' is not a size" in one_line(result.stderr)


BAD_CLI = [
    (["--max-memory", "0=80GiBB"], ["max_memory['0']='80GiBB' is not a size"]),
    (["--max-memroy", "0=80GiB"], ["unrecognized arguments: --max-memroy", "did you mean --max-memory"]),
    (["--strategy", "balancd"], ["unknown strategy 'balancd'", "did you mean 'balanced'"]),
    (["--objective", "fast"], ["unknown objective 'fast'"]),
    (["--format", "yml"], ["format='yml'"]),
    (["--max-memory", "0=1GiB", "--max-memory", "0=2GiB"], ["--max-memory gives 0 twice", "'1GiB'", "'2GiB'"]),
    (["--pin", "lm_head=0", "--pin", "lm_head=1"], ["--pin gives lm_head twice"]),
    (["--max-memory", "0=1GiB", "--pin", "lm_head=3"], ["device 3, which is not in max_memory"]),
    (["--max-memory", "0=1GiB", "--device-type", "1=l4"], ["types names device 1"]),
    (["--device-type", "0=a100-40gb", "0=h100-sxm"], ["--device-type gives 0 twice"]),
    (["--device-type", "0,1=a100-40gb", "1=h100-sxm"], ["two device types"]),
    (["--interconnect", "infiniband"], ["interconnect='infiniband'"]),
    (["--host-link", "pcie9"], ["host_link"]),
    (["--batch-size", "0"], ["batch_size=0"]),
    (["--seq-len", "8", "--prompt-len", "8"], ["prompt_len=8 leaves no room"]),
    (["--max-memory", "0=99999999999TiB"], ["PiB"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_flags_exit_2_with_one_line(args, words, capsys):
    # llama-3.1-405b: had any of these been noticed only after tracing, this test would take minutes.
    code, out, err = run(["plan", "llama-3.1-405b", *args], capsys)
    message = one_line(err)
    assert code == 2, message
    for word in words:
        assert word in message
    assert out == ""


def test_the_same_mistake_gets_the_same_exit_code_from_pin_device_map_and_spec(tmp_path, capsys):
    mapping = tmp_path / "map.json"
    mapping.write_text('{"lm_head": 7}')
    spec = tmp_path / "spec.toml"
    spec.write_text('[model]\nsource = "gpt2"\n[devices]\nmax_memory = { 0 = "1GiB" }\n[solve]\npins = { lm_head = 7 }\n')
    codes = [
        run(["plan", "gpt2", "--max-memory", "0=1GiB", "--pin", "lm_head=7"], capsys)[0],
        run(["plan", "gpt2", "--max-memory", "0=1GiB", "--device-map", str(mapping)], capsys)[0],
        run(["plan", str(spec)], capsys)[0],
    ]
    assert codes == [2, 2, 2]


def test_output_paths_are_checked_before_tracing(tmp_path, capsys):
    spec = spec_file(tmp_path, "llama-3.1-405b")
    cases = [
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "missing" / "plan.json"), "does not exist"),
        (str(spec), "is also an input"),
    ]
    for target, words in cases:
        code, _, err = run(["plan", str(spec), "-o", target], capsys)
        assert code == 2 and words in one_line(err)
    assert "source" in spec.read_text()  # the input was not overwritten


def test_context_longer_than_the_models_positions_is_refused(tiny_llama_dir, capsys):
    # The tiny Llama has max_position_embeddings=128.
    code, _, err = run(["plan", tiny_llama_dir, "--seq-len", "129", "--max-memory", "0=1GiB"], capsys)
    assert code == 2 and "exceeds" in one_line(err) and "128" in one_line(err)


def test_a_config_file_of_any_name_is_read_as_a_config(tiny_llama_dir, tmp_path, capsys):
    renamed = tmp_path / "llama.json"
    renamed.write_text((Path(tiny_llama_dir) / "config.json").read_text())
    code, out, _ = run(["plan", str(renamed), "--seq-len", "8", "--max-memory", "cpu=1GB", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["model_class"] == "LlamaForCausalLM"
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    code, _, err = run(["plan", str(other), "--max-memory", "cpu=1GB"], capsys)
    assert code == 2 and "neither a transformers config" in one_line(err)


def _graph_json(tiny_llama_dir: str, tmp_path: Path, capsys) -> dict:
    target = tmp_path / "graph.json"
    assert run(["trace", tiny_llama_dir, "--seq-len", "8", "-o", str(target)], capsys)[0] == 0
    return json.loads(target.read_text())


def _broken_graphs(graph: dict) -> list[tuple[str, dict, str]]:
    nodes, edges = graph["nodes"], graph["edges"]
    out = [
        ("missing nodes", {k: v for k, v in graph.items() if k != "nodes"}, "has no field 'nodes'"),
        ("empty nodes", {**graph, "nodes": [], "edges": []}, "nodes is empty"),
        ("string size", {**graph, "nodes": [{**nodes[0], "weight_bytes": "12"}, *nodes[1:]]}, "weight_bytes"),
        ("duplicate name", {**graph, "nodes": [nodes[0], nodes[0], *nodes[1:]]}, "repeats the name"),
        ("unknown producer", {**graph, "edges": [{**edges[0], "producer": "nope"}, *edges[1:]]}, "producer 'nope'"),
        ("unknown consumer", {**graph, "edges": [{**edges[0], "consumers": ["nope"]}, *edges[1:]]}, "consumer 'nope'"),
        ("node missing field", {**graph, "nodes": [{k: v for k, v in nodes[0].items() if k != "kind"}, *nodes[1:]]},
         "has no field 'kind'"),
        ("bad format", {**graph, "format_version": 99}, "format_version=99"),
    ]
    return out


def test_hand_edited_graph_json_gets_one_line_naming_the_field(tiny_llama_dir, tmp_path, capsys):
    graph = _graph_json(tiny_llama_dir, tmp_path, capsys)
    for label, broken, words in _broken_graphs(graph):
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        code, _, err = run(["plan", str(path), "--max-memory", "cpu=1GB"], capsys)
        assert code == 2, label
        assert words in one_line(err), (label, err)
    (tmp_path / "broken.json").write_text('{"nodes": [')
    code, _, err = run(["plan", str(tmp_path / "broken.json"), "--max-memory", "cpu=1GB"], capsys)
    assert code == 2 and "not JSON" in one_line(err)


def test_a_workload_flag_that_contradicts_the_graph_json_is_an_error(tiny_llama_dir, tmp_path, capsys):
    graph = _graph_json(tiny_llama_dir, tmp_path, capsys)
    path = tmp_path / "graph.json"
    code, _, err = run(["plan", str(path), "--max-memory", "cpu=1GB", "--batch-size", "4"], capsys)
    assert code == 2 and "batch_size=4" in one_line(err) and "traced at batch_size=1" in one_line(err)
    same = str(graph["workload"]["batch_size"])
    assert run(["plan", str(path), "--max-memory", "cpu=1GB", "--batch-size", same], capsys)[0] == 0


def test_library_and_cli_raise_the_same_error_for_the_same_mistake(capsys):
    with pytest.raises(layerplan.InvalidSpecError) as info:
        layerplan.plan("llama-3.1-405b", max_memory={"0": "80GiBB"})
    code, _, err = run(["plan", "llama-3.1-405b", "--max-memory", "0=80GiBB"], capsys)
    assert code == 2 and str(info.value) in one_line(err)


def test_unknown_keyword_suggests_the_closest(capsys):
    with pytest.raises(layerplan.InvalidSpecError, match="did you mean 'max_memory'"):
        layerplan.plan("gpt2", max_memroy={0: "1GiB"})


def test_library_warnings_never_reach_the_terminal(tiny_llama_dir):
    # -W always: every warning raised anywhere would be printed; planning must print none of them.
    argv = [sys.executable, "-W", "always", "-m", "layerplan.planner.cli", "plan", tiny_llama_dir, "--seq-len", "8",
            "--max-memory", "cpu=1GB", "--format", "json"]
    result = subprocess.run(argv, capture_output=True, text=True, env={**__import__("os").environ,
                                                                       "TRANSFORMERS_VERBOSITY": "info"})
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr
    assert json.loads(result.stdout)["device_map"] == {"": "cpu"}
