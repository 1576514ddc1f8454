"""Planning time: layerplan cold and warm vs accelerate and transformers, in one run, same caps.

Two tables (issue 9's benchmark):

1. **Catalog models x device sets.** For each row, on the same config and the same ``max_memory``:

   * ``cold``: ``layerplan.plan(name, cache=False)``: meta build, trace, solve, plan, checks;
   * ``warm``: ``layerplan.plan(name)`` with the graph already in a (temporary) graph cache, solved
     again (the plan cache emptied first);
   * ``again``: the same call once more, the placement read from the plan cache
     (:mod:`layerplan.planner.plan_cache`: what a loader pays on its second load);
   * ``status`` / ``solver``: the plan's proof (``optimal`` or ``feasible`` with its gap) and which
     method found it (``dp``: the exact block DP; ``cp-sat``);
   * ``hf``: transformers' ``from_pretrained`` planning path (meta build, ``get_balanced_memory``,
     ``infer_auto_device_map``: :func:`layerplan.planner.baselines.accelerate.accelerate_device_map`);
   * ``map``: accelerate's ``get_balanced_memory`` + ``infer_auto_device_map`` on an already built
     meta model (what ``device_map="auto"`` costs once the model exists);
   * ratios: ``cold / hf`` (target <= 3), ``warm / map`` (target <= 1) and ``again / map``.

2. **Synthetic depth sweep**: a Llama with tiny layers (hidden 64) and 256 ... 16k layers over 8 or
   64 GPUs that must share it (each GPU holds ~1.3x its share). Each point runs in a fresh
   process, so ``peak RSS`` is that point's own: trace and solve seconds, status, and accelerate's
   ``infer_auto_device_map`` on the same meta model.

Usage::

    python benchmarks/plan_time.py                                # both tables, default sizes
    python benchmarks/plan_time.py --models llama-2-70b --devices 2x40GiB+cpu --depths
    python benchmarks/plan_time.py --models --depths 256 1024 4096 16384 --gpus 8 64
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
logging.getLogger("accelerate.utils.modeling").setLevel(logging.ERROR)  # the declared GPUs are absent here

import torch  # noqa: E402
from accelerate.utils import get_balanced_memory, infer_auto_device_map  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import layerplan  # noqa: E402
from layerplan.planner.baselines.accelerate import accelerate_device_map  # noqa: E402
from layerplan.planner.model import catalog  # noqa: E402
from layerplan.planner.model.meta import build_meta_model  # noqa: E402
from layerplan.planner.model.trace import no_split_classes  # noqa: E402
from layerplan.planner.quiet import quiet  # noqa: E402
from layerplan.planner.spec.sizes import parse_dtype, parse_max_memory  # noqa: E402
from layerplan.solver import InfeasiblePlanError  # noqa: E402

DEVICE_SETS = {
    "2x40GiB+cpu": {0: "40GiB", 1: "40GiB", "cpu": "1TiB"},
    "4x24GiB+cpu": {0: "24GiB", 1: "24GiB", 2: "24GiB", 3: "24GiB", "cpu": "1TiB"},
    "8x80GiB": {i: "80GiB" for i in range(8)},
    "8x80GiB+cpu": {i: "80GiB" for i in range(8)} | {"cpu": "2TiB"},
    "2x80+2x24GiB": {0: "80GiB", 1: "80GiB", 2: "24GiB", 3: "24GiB"},
}
DEFAULT_MODELS = ["llama-3-8b", "llama-2-70b", "mixtral-8x7b", "qwen2.5-72b", "llama-3.1-405b", "t5-11b"]
OFFLOAD = os.path.join(tempfile.gettempdir(), "layerplan-bench-offload")


def _timed(fn):  # noqa: ANN001, ANN202
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _layerplan(name: str, caps: dict, **options) -> tuple[str, str, float]:  # noqa: ANN003
    """(status, solver, seconds) of one layerplan.plan call."""
    started = time.perf_counter()
    try:
        result = layerplan.plan(name, max_memory=caps, offload_folder=OFFLOAD, **options)
    except InfeasiblePlanError:
        return "infeasible", "-", time.perf_counter() - started
    except Exception as exc:  # a benchmark reports a failure in its row and goes on
        return f"error: {type(exc).__name__}: {str(exc)[:60]}", "-", time.perf_counter() - started
    status = result.status if result.status == "optimal" else f"{result.status} (gap {result.solution.gap:.1%})"
    return status, result.solution.solver, time.perf_counter() - started


def _accelerate_map(model: torch.nn.Module, caps: dict, dtype: torch.dtype) -> None:
    no_split = list(no_split_classes(model))
    budget = get_balanced_memory(model, max_memory=parse_max_memory(caps), no_split_module_classes=no_split, dtype=dtype)
    infer_auto_device_map(model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)


def catalog_table(console: Console, models: list[str], device_sets: list[str], cache_dir: str) -> Table:
    table = Table(title="Planning time (seconds): layerplan cold / warm vs transformers from_pretrained / accelerate")
    for col in ("model", "devices", "cold", "warm", "again", "status", "solver", "hf", "map", "cold/hf", "warm/map",
                "again/map"):
        table.add_column(col, justify="left" if col in ("model", "devices", "status", "solver") else "right")
    for name in models:
        entry = catalog.lookup(name)
        dtype = parse_dtype(entry.config.get("dtype") or entry.config.get("torch_dtype") or "bfloat16")
        with quiet():
            meta = build_meta_model(entry.to_config()).to(dtype)
        for devices in device_sets:
            caps = DEVICE_SETS[devices]
            with console.status(f"{name} on {devices}"), quiet():
                status, solver, cold = _layerplan(name, caps, cache=False)
                _layerplan(name, caps, cache_dir=cache_dir)  # fills the graph cache
                shutil.rmtree(os.path.join(cache_dir, "plans"), ignore_errors=True)  # solve again
                _, _, warm = _layerplan(name, caps, cache_dir=cache_dir)
                _, _, again = _layerplan(name, caps, cache_dir=cache_dir)  # the plan cache answers
                _, hf = _timed(lambda: accelerate_device_map(meta, max_memory=caps, strategy="auto", dtype=dtype))
                _, accel = _timed(lambda: _accelerate_map(meta, caps, dtype))
            table.add_row(name, devices, f"{cold:.2f}", f"{warm:.2f}", f"{again:.3f}", status, solver, f"{hf:.2f}",
                          f"{accel:.2f}", f"{cold / hf:.1f}x", f"{warm / accel:.1f}x", f"{again / accel:.1f}x")
            console.log(f"{name} on {devices}: cold {cold:.2f} s, warm {warm:.2f} s, {status} ({solver})")
    return table


# -- synthetic depth sweep -----------------------------------------------------------------------
_TINY = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
         "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 4096,
         "dtype": "bfloat16"}


def sweep_point(layers: int, gpus: int) -> dict:
    """One sweep point, run in this (fresh) process: trace, solve, accelerate, peak RSS."""
    from transformers import AutoConfig

    from layerplan.planner.model.trace import trace_model
    from layerplan.planner.model.workload import Workload

    config = AutoConfig.for_model(**{**_TINY, "num_hidden_layers": layers})
    with quiet():
        model, build_s = _timed(lambda: build_meta_model(config).to(torch.bfloat16))
        workload = Workload.from_lengths(model_context=4096, seq_len=1024, dtype=torch.bfloat16)
        graph, trace_s = _timed(lambda: trace_model(model, name=f"llama-{layers}", workload=workload, allow_cast=True))
    share = sum(n.weight_bytes + n.buffer_bytes + n.kv_bytes for n in graph.nodes) // gpus
    # ~1.3x its share of weights and KV, plus room for the reserve and the largest working set and inputs
    room = max(n.prefill_work_bytes for n in graph.nodes) + 2 * max(e.size_bytes for e in graph.edges)
    caps = {g: int(share * 1.3) + (64 << 20) + room for g in range(gpus)}
    try:
        with quiet():
            result, solve_s = _timed(lambda: layerplan.plan(graph, max_memory=caps, reserve="64MiB", time_limit_s=60))
        status = result.status if result.status == "optimal" else f"{result.status} (gap {result.solution.gap:.1%})"
        solver = result.solution.solver
    except InfeasiblePlanError as exc:
        status, solver, solve_s = f"infeasible ({str(exc)[:40]})", "-", 0.0
    _, accel_s = _timed(lambda: infer_auto_device_map(model, max_memory=caps, dtype=torch.bfloat16,
                                                      no_split_module_classes=list(no_split_classes(model))))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"nodes": len(graph.nodes), "build": build_s, "trace": trace_s, "solve": solve_s, "status": status, "solver": solver,
            "accelerate": accel_s, "rss_mib": rss}


def sweep_table(console: Console, depths: list[int], gpu_counts: list[int]) -> Table:
    table = Table(title="Synthetic depth sweep (tiny Llama layers; each point in a fresh process)")
    for col in ("layers", "GPUs", "nodes", "build s", "trace s", "solve s", "status", "solver", "peak RSS", "accelerate s",
                "ours/acc"):
        table.add_column(col, justify="left" if col in ("status", "solver") else "right")
    for layers in depths:
        for gpus in gpu_counts:
            with console.status(f"{layers} layers over {gpus} GPUs"):
                out = subprocess.run([sys.executable, __file__, "--point", str(layers), str(gpus)],
                                     capture_output=True, text=True, timeout=3600)
            if out.returncode != 0:
                table.add_row(str(layers), str(gpus), "-", "-", "-", "-", f"failed: {out.stderr.strip()[-60:]}", "-", "-", "-", "-")
                continue
            point = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr, from our own child
            ours = point["trace"] + point["solve"]
            table.add_row(str(layers), str(gpus), str(point["nodes"]), f"{point['build']:.2f}", f"{point['trace']:.2f}", f"{point['solve']:.2f}",
                          point["status"], point["solver"], f"{point['rss_mib']:.0f} MiB", f"{point['accelerate']:.2f}",
                          f"{ours / point['accelerate']:.1f}x")
            console.log(f"{layers} layers / {gpus} GPUs: {point}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS, help="catalog models (none: skip table 1)")
    parser.add_argument("--devices", nargs="+", default=[d for d in DEVICE_SETS if d != "8x80GiB+cpu"],
                        choices=list(DEVICE_SETS))
    parser.add_argument("--depths", nargs="*", type=int, default=[256, 1024], help="sweep depths (none: skip table 2)")
    parser.add_argument("--gpus", nargs="+", type=int, default=[8, 64], help="sweep GPU counts")
    parser.add_argument("--point", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(repr(sweep_point(*args.point)))
        return
    console = Console(width=max(Console().width, 140))
    tables = []
    if args.models:
        with tempfile.TemporaryDirectory() as cache_dir:
            tables.append(catalog_table(console, args.models, args.devices, cache_dir))
    if args.depths:
        tables.append(sweep_table(console, args.depths, args.gpus))
    for table in tables:
        console.print(table)
    console.print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; ratios below 1 mean layerplan is faster.")


if __name__ == "__main__":
    main()
