"""Checkpoint sizes: layerplan's predicted weight bytes per catalog model and quantization method,
against published checkpoint sizes, with KV cache per token and trace time.

For each catalog model (its own dtype, or its checkpoint's quantization) and each method asked for
(``--methods``: ``none`` plus any of ``layerplan.planner.spec.quantization.METHODS``):

* ``weights``: the summed weight bytes of the traced graph's nodes (``none``: the checkpoint as
  published; otherwise the model as if loaded with that method, ``--quantization``);
* ``published`` / ``ratio``: the size of a published checkpoint of that model and method where one is
  known (``PUBLISHED`` below, each with its source), else the published parameter count times the
  dtype's bytes for unquantized bf16/fp16 checkpoints;
* ``KV/token``: KV-cache bytes one token of context adds over all layers (batch 1; recurrent state is
  per sequence and not in it);
* ``trace s``: one trace (``planner.trace`` never reads the graph cache).

Usage::

    python benchmarks/checkpoints.py                          # every catalog model, none + nf4 + gptq-4bit
    python benchmarks/checkpoints.py --models llama-2-13b gpt-oss-120b --methods none gptq-4bit awq-4bit
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from layerplan import planner  # noqa: E402
from layerplan.planner import api  # noqa: E402
from layerplan.planner.model import catalog  # noqa: E402
from layerplan.planner.quiet import quiet  # noqa: E402

#: (catalog name, method) -> (bytes, source) of published checkpoints.
PUBLISHED: dict[tuple[str, str], tuple[float, str]] = {
    ("llama-2-13b", "gptq-4bit"): (7.26e9, "TheBloke/Llama-2-13B-GPTQ main (4-bit, g128): 7.26 GB"),
    ("gpt-oss-120b", "none"): (60.8 * 2**30, "gpt-oss model card: 60.8 GiB (MXFP4 experts)"),
    ("gpt-oss-20b", "none"): (12.8 * 2**30, "gpt-oss model card: 12.8 GiB (MXFP4 experts)"),
}
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def _published(name: str, method: str, dtype: str) -> tuple[float | None, str]:
    if (name, method) in PUBLISHED:
        return PUBLISHED[name, method]
    entry = catalog.lookup(name)
    if method == "none" and "quantization_config" not in entry.config and dtype in _DTYPE_BYTES:
        return entry.published_params * _DTYPE_BYTES[dtype], f"{entry.params_source[:40]}... x {dtype}"
    return None, ""


def _context(name: str, wanted: int) -> int:
    """``wanted`` tokens, or the model's own context where it is shorter (Whisper's decoder: 448)."""
    return min(wanted, api._model_context(catalog.lookup(name).to_config()) or wanted)


def row(name: str, method: str, context: int) -> list[str]:
    context = _context(name, context)
    started = time.perf_counter()
    with quiet():
        graph, _ = planner.trace(name, seq_len=context, quantization=None if method == "none" else method)
    trace_s = time.perf_counter() - started
    weights = sum(n.weight_bytes for n in graph.nodes)
    published, _ = _published(name, method, graph.dtype)
    with quiet():
        half, _ = planner.trace(name, seq_len=context // 2, quantization=None if method == "none" else method)
    per_token = (sum(n.kv_bytes for n in graph.nodes) - sum(n.kv_bytes for n in half.nodes)) / (context - context // 2)
    return [name, method, graph.quantization.split(" (")[0] or graph.dtype, f"{weights / 2**30:.2f} GiB",
            f"{published / 2**30:.2f} GiB" if published else "-", f"{weights / published:.3f}" if published else "-",
            f"{per_token / 1024:.1f} KiB", f"{trace_s:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=catalog.catalog_names())
    parser.add_argument("--methods", nargs="*", default=["none", "nf4", "gptq-4bit"])
    parser.add_argument("--context", type=int, default=1024, help="tokens of context traced (default 1024)")
    args = parser.parse_args()
    console = Console(width=160)
    table = Table(title=f"Predicted weight bytes vs published checkpoints (context {args.context})")
    for col in ("model", "method", "stored as", "weights", "published", "ratio", "KV/token", "trace s"):
        table.add_column(col, justify="right" if col not in ("model", "method", "stored as") else "left")
    for name in args.models:
        for method in args.methods:
            cells = row(name, method, args.context)
            table.add_row(*cells)
            console.log(" | ".join(cells))
    console.print(table)
    for (name, method), (_, source) in PUBLISHED.items():
        console.print(f"  {name} / {method}: {source}")


if __name__ == "__main__":
    main()
