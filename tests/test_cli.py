"""The CLI: exit codes, one-line errors without tracebacks, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli_helpers import one_line as _one_clear_line
from tests.cli_helpers import run


BAD_INPUT = [
    # (argv after MODEL, expected exit code, words the message must contain)
    (["--max-memory", "gpu7=10GB"], 2, ["unknown device 'gpu7'"]),
    (["--max-memory", "0=lots"], 2, ["max_memory['0']='lots' is not a size"]),
    (["--max-memory", "0=-5GB"], 2, ["negative"]),
    (["--max-memory", "0"], 2, ["not KEY=VALUE"]),
    (["--max-memory", "cpu=300KB", "disk=1GB"], 2, ["offload_folder", "disk"]),
    (["--max-memory", "0=1GB", "--pin", "model.nonexistent=0"], 2, ["'model.nonexistent' matches no module"]),
    (["--max-memory", "0=1GB", "--pin", "lm_head=5"], 2, ["device 5, which is not in max_memory"]),
    (["--max-memory", "0=1GB", "1=1GB", "--pin", "lm_head=0", "model.embed_tokens=1"], 2,
     ["tied", "pin them to the same"]),
    (["--max-memory", "0=10KB", "cpu=10KB"], 3, ["missing"]),
    (["--max-memory", "0=1GB", "--batch-size", "0"], 2, ["batch_size=0"]),
    (["--max-memory", "0=1GB", "--dtype", "float13"], 2, ["unknown dtype 'float13'"]),
]


@pytest.mark.parametrize(("args", "code", "words"), BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_gets_one_clear_line_and_the_exit_code(args, code, words, tiny_tied_llama_dir, capsys):
    got, out, err = run(["plan", tiny_tied_llama_dir, "--seq-len", "8", *args], capsys)
    message = _one_clear_line(err)
    assert got == code, message
    for word in words:
        assert word in message
    assert out == ""


def test_unknown_catalog_name_suggests_the_closest(capsys):
    code, _, err = run(["plan", "llama2-70b", "--max-memory", "0=40GiB"], capsys)
    assert code == 2
    assert "llama-2-70b" in _one_clear_line(err)


def test_hub_id_offline_says_to_use_the_catalog_or_a_local_path(capsys):
    code, _, err = run(["plan", "some-org/some-model-7b", "--max-memory", "0=40GiB"], capsys)
    message = _one_clear_line(err)
    assert code == 2
    assert "not in the local Hugging Face cache" in message and "catalog" in message


def test_json_output_has_the_contract_fields(tiny_llama_dir, capsys):
    code, out, _ = run(["plan", tiny_llama_dir, "--seq-len", "8", "--max-memory", "0=500KB", "1=500KB",
                        "--reserve", "0", "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    for key in ("device_map", "max_memory", "status", "objective", "devices"):
        assert key in data
    assert data["status"] == "optimal"
    assert {d["device"] for d in data["devices"]} == {0, 1}
    assert sum(d["weights_bytes"] for d in data["devices"]) == data["total_bytes"]
    for d in data["devices"]:
        parts = ("weights_bytes", "kv_bytes", "activation_bytes", "streaming_bytes", "reserve_bytes")
        assert d["used_bytes"] == sum(d[p] for p in parts) <= d["cap_bytes"]
        assert d["free_bytes"] == d["cap_bytes"] - d["used_bytes"]
    # The KV cache of every layer lands on some GPU, the workload it was planned for is stated.
    assert sum(d["kv_bytes"] for d in data["devices"]) > 0
    assert data["workload"]["prompt_len"] + data["workload"]["max_new_tokens"] == 8


def test_table_output_and_output_file(tiny_llama_dir, tmp_path, capsys):
    target = tmp_path / "plan.txt"
    code, out, _ = run(["plan", tiny_llama_dir, "--seq-len", "8", "--max-memory", "0=500KB", "1=500KB",
                        "--reserve", "0", "-o", str(target)], capsys)
    assert code == 0 and out == ""
    text = target.read_text()
    assert "model.layers" in text and "optimal" in text


def test_trace_then_plan_the_graph_json(tiny_llama_dir, tmp_path, capsys):
    graph_file = tmp_path / "graph.json"
    assert run(["trace", tiny_llama_dir, "--seq-len", "8", "-o", str(graph_file)], capsys)[0] == 0
    code, out, _ = run(["plan", str(graph_file), "--max-memory", "cpu=1GB", "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out)["device_map"] == {"": "cpu"}


def test_models_lists_the_catalog(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0
    for name in ("llama-2-70b", "bloom-176b", "t5-large", "mixtral-8x7b"):
        assert name in out


def test_console_script_help_runs_without_traceback():
    result = subprocess.run([sys.executable, "-m", "layerplan.planner.cli", "plan", "--help"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0
    assert "--max-memory" in result.stdout and "exit codes" in result.stdout
