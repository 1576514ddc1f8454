"""Calibration: plans loaded and run for real on the CPU, predicted vs measured memory per device
(the torch profiler's allocator events, not our fake-tensor tracker), the calibration profile's
round trip, and planning with a profile changing the cost model's figures and nothing else.

Tolerances are what the accounting achieves on these workloads (measured on this CPU, the
numbers in ``FAMILIES``), not targets: weights and KV cache are exact; "activations" (everything
live at the peak besides weights and KV) are each node's working set plus the bytes live at its
entry (``inputs_embeds``, the layer's input hidden states, rotary cos/sin: issue 11), within 2% in
the decoder-only models and MiniLM. T5's peak is in the encoder, before any KV cache exists: its
encoder nodes are marked ``before_kv_cache``, so a device is charged the larger of the encoder's
working set and KV cache + the other working sets (issue 11), not their sum.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

import layerplan
from layerplan.planner import cli
from layerplan.planner.calibrate import (
    CalibrationProfile,
    LayerTime,
    ProfileEntry,
    calibrate,
    calibrated_hardware,
    with_calibration,
)
from layerplan.planner.calibrate.apply import device_type
from layerplan.planner.cli_calibrate import add_calibrate_parser
from layerplan.solver import InvalidSpecError

CPU = {"cpu": "2GiB"}


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory) -> str:
    """A 3-layer Mixtral (4 experts, 2 per token) with random weights."""
    config = AutoConfig.for_model("mixtral", hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=3, num_local_experts=4,
                                  num_experts_per_tok=2, vocab_size=128, max_position_embeddings=256)
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("tiny-moe")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return str(path)


# family -> (fixture, workload, |activation error| bound, |peak error| bound).
# Measured (predicted - measured) / measured on this CPU, float32, 4 decode steps (before issue 11's
# live-at-entry bytes: llama -22.9% / -6.5%, minilm -18.3% / -0.4%, t5 +30.8% / +10.6%, mixtral
# -8.6% / -4.1%, activations / peak):
#   llama   batch 2, prompt 64: activations +1.6% (337.5 vs 332.0 KiB), peak +0.5%
#   minilm  batch 2, seq 64:    activations -0.0% (2113 vs 2114 KiB),   peak -0.0% (weights dominate)
#   t5      batch 2, prompt 48: activations -1.4% (119.8 vs 121.5 KiB), peak -0.5% (before the encoder mark:
#           activations +41.3%, 171.8 KiB, peak +14.3%: the KV cache charged beside the encoder's working set)
#   mixtral batch 2, prompt 64: activations +1.2% (376.5 vs 372.1 KiB), peak +0.6%
FAMILIES = {
    "llama": ("tiny_llama_dir", {"batch_size": 2, "prompt_len": 64, "max_new_tokens": 8}, 0.05, 0.02),
    "minilm": ("minilm_dir", {"batch_size": 2, "seq_len": 64}, 0.02, 0.01),
    "t5": ("tiny_t5_dir", {"batch_size": 2, "prompt_len": 48, "max_new_tokens": 8}, 0.05, 0.02),
    "mixtral": ("tiny_moe_dir", {"batch_size": 2, "prompt_len": 64, "max_new_tokens": 8}, 0.05, 0.02),
}


@pytest.fixture(scope="module")
def results(request) -> dict:
    """One calibration per family, run once for the module."""
    out = {}
    for family, (fixture, workload, _, _) in FAMILIES.items():
        folder = request.getfixturevalue(fixture)
        out[family] = calibrate(folder, max_memory=CPU, dtype="float32", **workload)
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_measured_memory_matches_the_prediction_within_the_stated_tolerance(family, results):
    _, _, activation_bound, peak_bound = FAMILIES[family]
    result = results[family]
    (cpu,) = result.devices
    assert cpu.device == "cpu"
    assert cpu.weights.predicted == cpu.weights.measured > 0  # every parameter and buffer, tied ones once
    assert cpu.kv.predicted == cpu.kv.measured  # 2 x kv_heads x head_dim x 4 B x context, per layer
    assert (cpu.kv.measured > 0) == (family != "minilm")  # an encoder keeps no cache
    assert abs(cpu.activations.error) <= activation_bound, cpu.activations
    assert abs(cpu.peak.error) <= peak_bound, cpu.peak
    assert result.max_peak_error == abs(cpu.peak.error)
    assert result.verdict.startswith(f"peak within {100 * abs(cpu.peak.error):.1f}% on every device")


def test_decode_steps_are_capped_and_said(results):
    llama = results["llama"]
    assert llama.workload["max_new_tokens"] == 4 and llama.declared_new_tokens == 8
    assert any("ran 4 of the 8 declared decode steps" in n for n in llama.notes)
    assert llama.decode_step_s.measured is not None and llama.decode_step_s.measured > 0
    assert results["minilm"].decode_step_s.measured is None  # one plain forward


def test_json_carries_max_peak_error_and_every_component(results):
    data = json.loads(results["mixtral"].to_json())
    assert data["max_peak_error"] == pytest.approx(results["mixtral"].max_peak_error, abs=1e-6)
    device = data["devices"][0]
    assert set(device) == {"device", "weights", "kv", "activations", "peak"}
    assert device["kv"]["relative_error"] == 0.0
    assert {n["node"] for n in data["nodes"]} >= {"model.layers.0", "lm_head"}


def test_profile_holds_what_was_measured_and_round_trips(results, tmp_path):
    llama, minilm = results["llama"].profile, results["minilm"].profile
    entry = llama.entry("cpu", "float32")
    assert entry is not None and entry.measured == ("flops_per_s", "mem_bytes_per_s")
    assert entry.layer_time_s["LlamaDecoderLayer"].decode_s > 0
    assert minilm.entry("cpu", "float32").measured == ("flops_per_s",)  # no decode step: no bandwidth
    path = tmp_path / "profile.json"
    llama.save(path)
    assert CalibrationProfile.load(path) == llama
    merged = llama.merged(CalibrationProfile(entries=(ProfileEntry(device_type="h100-sxm", dtype="bfloat16",
                                                                   flops_per_s=5e14, read_bytes_per_s=2.5e10),)))
    assert CalibrationProfile.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged
    assert {(e.device_type, e.dtype) for e in merged.entries} == {("cpu", "float32"), ("h100-sxm", "bfloat16")}


def test_planning_with_a_profile_changes_the_cost_model_and_nothing_else(tiny_llama_dir, tmp_path):
    spec = layerplan.PlanSpec.from_kwargs(tiny_llama_dir, max_memory={"cpu": "2MiB", "disk": "1GiB"},
                                          offload_folder=str(tmp_path), dtype="float32",
                                          batch_size=2, prompt_len=64, max_new_tokens=8)
    # hand-made figures: 1 GFLOP/s and 1 GB/s on the cpu, 100 MB/s from disk
    profile = CalibrationProfile(entries=(
        ProfileEntry(device_type="cpu", dtype="float32", flops_per_s=1e9, mem_bytes_per_s=1e9),
        ProfileEntry(device_type="disk", dtype="float32", read_bytes_per_s=1e8),
    ))
    before = layerplan.plan(spec)
    after = layerplan.plan(with_calibration(spec, profile, dtype="float32"))
    assert after.device_map == before.device_map
    assert after.usage == before.usage
    assert after.timing.per_token_s != before.timing.per_token_s
    hardware = calibrated_hardware(["cpu", "disk"], dtype="float32", devices=spec.devices, profile=profile)
    assert (hardware.device("cpu").flops_per_s, hardware.device("cpu").mem_bytes_per_s) == (1e9, 1e9)
    assert hardware.device("disk").read_bytes_per_s == 1e8
    assert any("measured figures for device 'cpu'" in n for n in hardware.notes)
    # another dtype has no entry: the presets stay, and no note claims otherwise
    bf16 = calibrated_hardware(["cpu"], dtype="bfloat16", devices=spec.devices, profile=profile)
    assert not any("calibration" in n for n in bf16.notes)


def test_the_users_own_overrides_win_over_the_profile(tiny_llama_dir):
    spec = layerplan.PlanSpec.from_kwargs(tiny_llama_dir, max_memory=CPU, overrides={"cpu": {"flops_per_s": 7e9}})
    profile = CalibrationProfile(entries=(ProfileEntry(device_type="cpu", dtype="float32", flops_per_s=1e9,
                                                       mem_bytes_per_s=2e9),))
    calibrated = with_calibration(spec, profile, dtype="float32")
    assert calibrated.devices.overrides == {"cpu": {"flops_per_s": 7e9, "mem_bytes_per_s": 2e9}}


def test_a_gpu_entry_gives_its_host_link_to_the_offload_path():
    profile = CalibrationProfile(entries=(ProfileEntry(device_type="h100-sxm", dtype="bfloat16", flops_per_s=6e14,
                                                       read_bytes_per_s=2.2e10),))
    devices = layerplan.DevicesSpec(max_memory={0: "80GiB", "cpu": "100GiB"}, types={0: "h100-sxm"})
    hardware = calibrated_hardware([0, "cpu"], dtype="bfloat16", devices=devices, profile=profile)
    assert hardware.device(0).flops_per_s == 6e14
    assert hardware.link(0, "cpu") == 2.2e10
    assert device_type(0, reported_names={0: "NVIDIA H100 80GB HBM3"}) == "h100-sxm"


def test_a_config_without_weights_runs_with_random_weights_of_its_shapes(tmp_path):
    LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64).save_pretrained(tmp_path)
    result = calibrate(str(tmp_path), max_memory=CPU, dtype="float32", batch_size=1, prompt_len=16,
                       max_new_tokens=2)
    assert result.random_weights
    assert result.devices[0].weights.predicted == result.devices[0].weights.measured


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"decode_steps": -1}, "decode_steps=-1"),
        ({"decode_steps": 2.5}, "decode_steps=2.5"),
        ({"model_dir": "/nonexistent/model"}, "holds no config.json"),
    ],
)
def test_bad_calibrate_arguments_are_one_clear_error(bad, match, tiny_llama_dir):
    with pytest.raises(InvalidSpecError, match=match):
        calibrate(tiny_llama_dir, max_memory=CPU, seq_len=16, **bad)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "is not JSON"),
        ('{"format": "something else"}', "not a layerplan calibration profile"),
        ('{"format": "layerplan-calibration", "version": 9, "devices": {}}', "version 9"),
        ('{"format": "layerplan-calibration", "version": 1, "devices": {"cpu": {"float32": {"flops_per_s": -1}}}}',
         "flops_per_s=-1"),
        ('{"format": "layerplan-calibration", "version": 1, "devices": {"cpu": {"float32": {"flops": 1}}}}',
         "unknown key 'flops'"),
    ],
)
def test_a_bad_profile_file_is_one_clear_error(text, match, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InvalidSpecError, match=match) as info:
        CalibrationProfile.load(path)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidSpecError, match="cannot read calibration profile"):
        CalibrationProfile.load(tmp_path / "missing.json")


def test_layer_times_refuse_negative_seconds():
    with pytest.raises(InvalidSpecError, match="prefill_s=-1"):
        LayerTime(prefill_s=-1)


# -- the CLI subcommand (wired here as cli.build_parser will wire it) -------------------------------
@pytest.fixture
def main(monkeypatch):
    built = cli.build_parser

    def with_calibrate() -> argparse.ArgumentParser:
        parser = built()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "calibrate" not in sub.choices:
            add_calibrate_parser(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", with_calibrate)
    return cli.main


def test_cli_calibrate_prints_json_and_writes_a_profile(main, tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "profile.json"
    code = main(["calibrate", tiny_llama_dir, "--max-memory", "cpu=2GiB", "--dtype", "float32", "--batch-size", "1",
                 "--prompt-len", "16", "--max-new-tokens", "4", "--decode-steps", "2", "--format", "json",
                 "--calibration-out", str(out)])
    assert code == cli.EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["workload"]["max_new_tokens"] == 2 and "max_peak_error" in data
    assert CalibrationProfile.load(out).entry("cpu", "float32") is not None


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--decode-steps", "-3"], "--decode-steps -3"),
        (["--model-dir", "/nonexistent/dir"], "is not a folder"),
        (["--calibration-out", "/nonexistent/dir/p.json"], "does not exist"),
    ],
)
def test_cli_bad_input_is_exit_2_before_any_work(main, flags, match, capsys):
    assert main(["calibrate", "llama-2-7b", *flags]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_a_node_inside_another_is_not_timed_twice() -> None:
    """A MoE layer's experts node runs inside its layer's forward: the layer's time is its own only,
    so the node times add up to no more than the forward's (nested intervals; with the experts'
    time counted in both, the sum would be about twice the forward's)."""
    import time as _time

    from torch import nn

    from layerplan.planner.calibrate.timing import NodeTimer

    class Inner(nn.Module):
        def forward(self, x):
            _time.sleep(0.02)
            return x

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = Inner()

        def forward(self, x):
            return self.experts(x) + 1

    model = nn.Sequential(Outer())
    with NodeTimer(model=model, nodes={"0": model[0], "0.experts": model[0].experts}) as timer:
        model(torch.zeros(2))
    times = timer.times()
    assert times.node_prefill_s["0.experts"] >= 0.02
    assert 0 <= times.node_prefill_s["0"] < times.node_prefill_s["0.experts"]
    assert sum(times.node_prefill_s.values()) <= times.prefill_s
