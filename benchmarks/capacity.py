"""Capacity questions: how long each takes, how many plans it needs, and how its answers differ
from the rule of thumb of ``accelerate estimate-memory`` ("add up to 20% for inference").

Three tables, in one run:

1. **Fewest GPUs** (no offload) per model x GPU type: layerplan's proven N, the plans it solved
   and its wall time (tracing included), against the +20% rule, ``ceil(1.2 x weights / memory)``,
   with the weights as ``accelerate estimate-memory`` computes them (``calculate_maximum_sizes``
   on the empty model, halved for 16-bit dtypes as its ``gather_data`` does).
2. **Largest batch** at the context ``--seq-len`` on ``max(8, N)`` GPUs of each type: layerplan's
   (traced at every probed batch, proven at the next) against the rule plus the textbook KV cache
   per sequence, ``floor((GPUs x memory - 1.2 x weights) / (2 x layers x kv_heads x head_dim x
   seq_len x 2 bytes))`` -- what web VRAM calculators do.
3. **Cheapest setup** per model with and without a latency target (default prices).

Usage::

    python benchmarks/capacity.py                                   # every model and type
    python benchmarks/capacity.py --models llama-2-70b --types h100-sxm l4 --no-cheapest
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("LAYERPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="layerplan-bench-capacity-"))

from accelerate.commands.estimate import calculate_maximum_sizes  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import layerplan  # noqa: E402
from layerplan.planner.capacity import Setup, cheapest, max_batch, min_devices  # noqa: E402
from layerplan.planner.hardware.presets import lookup_accelerator  # noqa: E402
from layerplan.planner.model import catalog  # noqa: E402
from layerplan.planner.model.meta import build_meta_model  # noqa: E402
from layerplan.planner.quiet import quiet  # noqa: E402

MODELS = ("llama-2-70b", "mixtral-8x7b", "llama-3.1-405b")
TYPES = ("h100-sxm", "a100-80gb", "l4", "rtx-4090")
RULE = 1.2  # accelerate estimate-memory: "add up to 20% for inference"


def accelerate_weights(name: str) -> int:
    """Weights in bytes as ``accelerate estimate-memory`` reports them for float16/bfloat16."""
    config = catalog.lookup(name).to_config()
    with quiet():
        model = build_meta_model(config)
        total, _ = calculate_maximum_sizes(model)
    # accelerate's empty model is float32 and gather_data halves it for 16-bit dtypes; this one may
    # already be built in the checkpoint's 16-bit dtype.
    itemsize = next(model.parameters()).element_size()
    return int(total * 2 // itemsize)


def textbook_kv_per_sequence(name: str, seq_len: int) -> int:
    """``2 x layers x kv_heads x head_dim x seq_len x 2`` bytes (16-bit K and V of every layer)."""
    c = catalog.lookup(name).to_config().get_text_config(decoder=True)
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", heads) * head_dim * seq_len * 2


def _spec(name: str, batch: int, seq_len: int) -> layerplan.PlanSpec:
    return layerplan.PlanSpec.from_dict({"model": {"source": name}, "workload": {"batch_size": batch, "seq_len": seq_len}})


def fewest_table(models, types, batch: int, seq_len: int, console: Console) -> dict:  # noqa: ANN001
    table = Table(title=f"Fewest GPUs, no offload (batch {batch}, seq_len {seq_len})", title_justify="left")
    for col in ("model", "type", "layerplan N", "proof of N-1", "plans", "seconds", "+20% rule N", "rule - layerplan"):
        table.add_column(col, justify="left" if col in ("model", "type", "proof of N-1") else "right")
    found: dict = {}
    for name in models:
        weights = accelerate_weights(name)
        for gpu in types:
            started = time.perf_counter()
            result = min_devices(_spec(name, batch, seq_len), [gpu], offload=False)
            seconds = time.perf_counter() - started
            (answer,) = result.answers
            rule = math.ceil(RULE * weights / lookup_accelerator(gpu).memory_bytes)
            below = [p.verdict for p in answer.probes if answer.num_devices and p.value == answer.num_devices - 1]
            n = answer.num_devices
            found[name, gpu] = n
            table.add_row(name, gpu, str(n or "-"), below[0] if below else ("one GPU" if n == 1 else "-"),
                          str(result.plans_solved), f"{seconds:.2f}", str(rule), f"{rule - n:+d}" if n else "-")
    console.print(table)
    return found


def batch_table(models, types, fewest: dict, seq_len: int, console: Console) -> None:  # noqa: ANN001
    table = Table(title=f"Largest batch at seq_len {seq_len} on max(8, N) GPUs", title_justify="left")
    for col in ("model", "setup", "layerplan batch", "proven", "plans", "seconds", "rule + textbook KV", "ratio"):
        table.add_column(col, justify="left" if col in ("model", "setup") else "right")
    for name in models:
        weights, kv = accelerate_weights(name), textbook_kv_per_sequence(name, seq_len)
        for gpu in types:
            count = max(8, fewest.get((name, gpu)) or 8)
            setup = Setup(((gpu, count),))
            started = time.perf_counter()
            result = max_batch(_spec(name, 1, seq_len), setup=setup, limit=4096)
            seconds = time.perf_counter() - started
            rule = max(0, math.floor((count * lookup_accelerator(gpu).memory_bytes - RULE * weights) / kv))
            ratio = f"{rule / result.value:.2f}x" if result.value else "-"
            table.add_row(name, setup.name, str(result.value or "none"), str(result.proven), str(len(result.probes)),
                          f"{seconds:.2f}", str(rule), ratio)
    console.print(table)


def cheapest_table(models, batch: int, seq_len: int, target_ms: float, console: Console) -> None:  # noqa: ANN001
    table = Table(title=f"Cheapest setup (<= 8 GPUs, up to 2 types; batch {batch}, seq_len {seq_len})",
                  title_justify="left")
    for col in ("model", "target", "cheapest", "$/h", "ms/token", "runner-up", "plans", "tried", "seconds"):
        table.add_column(col, justify="left" if col in ("model", "target", "cheapest", "runner-up") else "right")
    for name in models:
        for target in (None, target_ms):
            started = time.perf_counter()
            r = cheapest(_spec(name, batch, seq_len), max_ms_per_token=target, max_devices=8, mix=2)
            seconds = time.perf_counter() - started
            solved = sum(1 for c in r.candidates if c.probe.verdict not in ("bound", "slow"))
            best = r.best
            table.add_row(name, r.target, best.setup.name if best else "none",
                          f"{best.price_per_hour:.2f}" if best else "-",
                          f"{best.probe.ms_per_token:.1f}" if best else "-",
                          r.runner_up.setup.name if r.runner_up else "-", str(solved), str(len(r.candidates)),
                          f"{seconds:.2f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--types", nargs="*", default=list(TYPES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--target-ms", type=float, default=100.0, help="latency target of the cheapest table")
    parser.add_argument("--no-batch", action="store_true")
    parser.add_argument("--no-cheapest", action="store_true")
    args = parser.parse_args()
    console = Console(width=160)
    fewest = fewest_table(args.models, args.types, args.batch_size, args.seq_len, console)
    if not args.no_batch:
        batch_table(args.models, args.types, fewest, args.seq_len, console)
    if not args.no_cheapest:
        cheapest_table(args.models, args.batch_size, args.seq_len, args.target_ms, console)


if __name__ == "__main__":
    main()
