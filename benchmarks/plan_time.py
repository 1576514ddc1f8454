"""Planning time: layerplan (trace + CP-SAT) vs accelerate's ``infer_auto_device_map``, same run.

For each catalog model and device set, on the same meta model and the same caps:

* ``build``: building the model on the meta device (shared by both tools, reported apart);
* ``trace``: layerplan's meta forward into a LayerGraph;
* ``solve``: CP-SAT (with the chain-DP hint) to a proven optimum or the time limit;
* ``accelerate``: ``infer_auto_device_map(model, max_memory, no_split_module_classes, dtype)``.

Usage::

    python benchmarks/plan_time.py                  # default models and device sets
    python benchmarks/plan_time.py --models gpt2 llama-2-70b --time-limit 10
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from accelerate import infer_auto_device_map  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from layerplan.planner.model import catalog  # noqa: E402
from layerplan.planner.api import plan_graph  # noqa: E402
from layerplan.planner.model.meta import build_meta_model  # noqa: E402
from layerplan.planner.spec.sizes import parse_dtype, parse_max_memory  # noqa: E402
from layerplan.planner.model.trace import no_split_classes, trace_model  # noqa: E402
from layerplan.planner.model.workload import Workload  # noqa: E402
from layerplan.planner.spec import PlanSpec  # noqa: E402
from layerplan.solver import InfeasiblePlanError, format_bytes  # noqa: E402

DEVICE_SETS = {
    "4x40GiB+cpu": {0: "40GiB", 1: "40GiB", 2: "40GiB", 3: "40GiB", "cpu": "1TiB"},
    "8x80GiB+cpu": {i: "80GiB" for i in range(8)} | {"cpu": "2TiB"},
    "2x24GiB+cpu+disk": {0: "24GiB", 1: "24GiB", "cpu": "64GiB", "disk": "4TiB"},
}
DEFAULT_MODELS = ["gpt2-xl", "mistral-7b", "llama-2-70b", "mixtral-8x7b", "t5-large", "llama-3.1-405b"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--devices", nargs="+", default=list(DEVICE_SETS), choices=list(DEVICE_SETS))
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--time-limit", type=float, default=30.0)
    args = parser.parse_args()

    console = Console(width=max(Console().width, 120))  # the table reads badly when wrapped
    table = Table(title="Planning time, layerplan vs accelerate infer_auto_device_map (seconds)")
    for col in ("model", "devices", "build", "trace", "solve", "status", "layerplan", "accelerate", "ratio"):
        table.add_column(col, justify="left" if col in ("model", "devices", "status") else "right")
    with console.status("benchmarking ...") as status:
        for name in args.models:
            entry = catalog.lookup(name)
            assert entry is not None, name
            t0 = time.perf_counter()
            dtype = parse_dtype(entry.config.get("dtype") or "bfloat16")
            model = build_meta_model(entry.to_config()).to(dtype)
            build_s = time.perf_counter() - t0
            status.update(f"{name}: tracing")
            t0 = time.perf_counter()
            workload = Workload.from_lengths(model_context=None, seq_len=args.seq_len, dtype=dtype)
            graph = trace_model(model, name=name, workload=workload, allow_cast=True)
            trace_s = time.perf_counter() - t0
            for devices in args.devices:
                status.update(f"{name} on {devices}: solving")
                t0 = time.perf_counter()
                try:
                    spec = PlanSpec.from_kwargs(graph, max_memory=DEVICE_SETS[devices], offload_folder="/tmp/offload",
                                                time_limit_s=args.time_limit)
                    result = plan_graph(graph, spec)
                    state = result.status
                except InfeasiblePlanError:
                    state = "infeasible"
                solve_s = time.perf_counter() - t0
                status.update(f"{name} on {devices}: accelerate")
                t0 = time.perf_counter()
                infer_auto_device_map(model, max_memory=parse_max_memory(DEVICE_SETS[devices]),
                                      no_split_module_classes=list(no_split_classes(model)), dtype=dtype)
                accel_s = time.perf_counter() - t0
                ours = trace_s + solve_s
                table.add_row(name, devices, f"{build_s:.2f}", f"{trace_s:.2f}", f"{solve_s:.2f}", state,
                              f"{ours:.2f}", f"{accel_s:.2f}", f"{ours / accel_s:.1f}x")
            console.log(f"{name}: {len(graph.nodes)} nodes, {format_bytes(graph.total_bytes)}")
    console.print(table)
    console.print("layerplan = trace + solve; ratio = layerplan / accelerate; build (meta model) is shared. "
                  f"torch {torch.__version__}, {os.cpu_count()} CPUs.")


if __name__ == "__main__":
    main()
