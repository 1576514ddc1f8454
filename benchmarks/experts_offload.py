"""MoE experts offloaded inside their layers: layerplan with experts as nodes, with whole layers, and
accelerate's ``device_map="auto"``, on GPUs too small for the model, under one accounting.

For each catalog MoE model and setup (one GPU + host RAM), three device_maps are measured by
:func:`layerplan.evaluate_map` (KV cache, activations, streaming, reserve; the cost model's time per
decode step and of the prefill, :mod:`layerplan.solver.cost`; ``fits``: under every cap with
the KV cache and activations counted, which accelerate's map does not check):

* ``accelerate auto``: ``from_pretrained(device_map="auto", max_memory=...)``'s greedy map
  (:mod:`layerplan.planner.baselines.accelerate`);
* ``whole layers``: layerplan on the graph with each layer's experts inside it
  (:func:`layerplan.planner.model.experts.merge_experts`), as before experts were nodes;
* ``experts apart``: layerplan on the traced graph, where a layer's experts may be offloaded while
  its attention stays on the GPU (:mod:`layerplan.planner.model.experts`).

accelerate streams offloaded weights to the GPU on every forward, so the gain is the finer packing
of the GPU (fewer bytes streamed per step), not llama.cpp's CPU compute of the experts.

Usage::

    python benchmarks/experts_offload.py
    python benchmarks/experts_offload.py --models mixtral-8x7b --gpus 24GiB 48GiB
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("LAYERPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="layerplan-bench-experts-"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import layerplan  # noqa: E402
from layerplan.planner.baselines.compare import compare_strategy  # noqa: E402
from layerplan.planner.model.experts import merge_experts  # noqa: E402
from layerplan.solver import InfeasiblePlanError, format_bytes  # noqa: E402

MODELS = ("mixtral-8x7b", "qwen3-30b-a3b", "gpt-oss-20b")
GPUS = ("24GiB", "48GiB")


def _row(plan) -> list[str]:  # noqa: ANN001
    if plan is None:
        return ["-", "-", "-", "-", "-", "-"]
    gpu = sum(u.weights_bytes for u in plan.usage if u.device not in ("cpu", "disk"))
    assignment = plan.solution.assignment
    apart = sum(assignment[experts] != assignment[layer] for experts, layer in plan.graph.experts_layers().items())
    fits = "yes" if plan.fits and not plan.violations else "no"
    decode_ms = plan.timing.decode_ns / 1e6 if plan.timing else float("nan")  # one decode step
    prefill_s = plan.timing.prefill_ns / 1e9 if plan.timing else float("nan")
    return [fits, f"{prefill_s:,.2f}", f"{decode_ms:,.0f}", format_bytes(gpu), format_bytes(plan.offloaded_bytes),
            str(apart)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--gpus", nargs="*", default=list(GPUS), help="cap of the one GPU (max_memory[0])")
    parser.add_argument("--gpu-type", default="rtx-4090", help="hardware preset of the GPU")
    parser.add_argument("--cpu", default="256GiB", help="host RAM cap")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=4096)
    args = parser.parse_args()
    console = Console(width=160)
    table = Table(title=f"Experts offloaded inside their layers, batch {args.batch_size}, seq_len {args.seq_len}, "
                        f"one {args.gpu_type} + cpu", title_justify="left")
    for col in ("model", "GPU cap", "device_map", "status", "fits", "prefill s", "ms/decode step", "GPU weights",
                "offloaded", "layers split"):
        table.add_column(col, justify="left" if col in ("model", "device_map", "status", "fits") else "right")
    for model in args.models:
        for cap in args.gpus:
            spec = layerplan.PlanSpec.from_dict({
                "model": {"source": model},
                "devices": {"max_memory": {"0": cap, "cpu": args.cpu}, "types": {"0": args.gpu_type}},
                "workload": {"batch_size": args.batch_size, "seq_len": args.seq_len},
            })
            graph, meta = layerplan.trace(spec)
            ours, theirs = compare_strategy(graph, meta, spec, strategy="auto")
            try:
                whole = layerplan.plan_graph(merge_experts(graph), spec)
            except InfeasiblePlanError:
                whole = None
            for name, plan in (("accelerate auto", theirs.plan), ("whole layers", whole), ("experts apart", ours.plan)):
                status = plan.status if plan is not None else "refused"
                table.add_row(model, cap, name, status, *_row(plan))
    console.print(table)


if __name__ == "__main__":
    main()
