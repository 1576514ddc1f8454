"""Do plans fit at generate() time? accelerate's ``"auto"`` vs layerplan, under one accounting.

For each catalog model x hardware setting x workload, on the same meta model and the same caps:

* **accelerate**: ``infer_auto_device_map(model, max_memory, no_split_module_classes, dtype)``, what
  ``device_map="auto"`` runs; its map is read back as a placement of layerplan's nodes.
* **layerplan**: ``plan_graph`` with the default 1 GiB reserve per GPU.

Both placements are then charged by :func:`solver.device_loads` (weights + KV cache + activations +
streaming buffer + reserve per device, see ``solver/accounting.py``). A plan *overflows* when some
device holds more than its cap; the overflow is the largest excess. accelerate is judged twice:
with layerplan's 1 GiB reserve and with no reserve at all (only KV cache and activations), so the
reserve alone cannot explain its overflows. layerplan must never overflow; it may refuse
(``infeasible``) when nothing fits, and says by how much.

Usage::

    python benchmarks/fits.py                                  # every catalog model, defaults below
    python benchmarks/fits.py --models llama-2-70b mistral-7b --hardware 2x24GiB+cpu+disk
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# accelerate warns that the declared GPUs are absent on this machine: planning is what is measured.
logging.getLogger("accelerate.utils.modeling").setLevel(logging.ERROR)

import torch  # noqa: E402
from accelerate import infer_auto_device_map  # noqa: E402
from layerplan import planner  # noqa: E402
from layerplan.planner.api import plan_graph  # noqa: E402
from layerplan.planner.graph import LayerGraph  # noqa: E402
from layerplan.planner.model import catalog  # noqa: E402
from layerplan.planner.model.trace import no_split_classes  # noqa: E402
from layerplan.planner.spec import PlanSpec  # noqa: E402
from layerplan.planner.spec.sizes import build_devices, parse_max_memory  # noqa: E402
from layerplan.solver import InfeasiblePlanError, PlacementProblem, device_loads, format_bytes  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

HARDWARE = {
    "1x24GiB+cpu+disk": {0: "24GiB", "cpu": "512GiB", "disk": "4TiB"},
    "2x24GiB+cpu+disk": {0: "24GiB", 1: "24GiB", "cpu": "512GiB", "disk": "4TiB"},
    "4x40GiB+cpu+disk": {0: "40GiB", 1: "40GiB", 2: "40GiB", 3: "40GiB", "cpu": "1TiB", "disk": "4TiB"},
    "8x80GiB+cpu+disk": {i: "80GiB" for i in range(8)} | {"cpu": "2TiB", "disk": "4TiB"},
}
#: Only checked, never written: the plans are not loaded here.
OFFLOAD_FOLDER = "/tmp/layerplan-fits-offload"
#: (label "batch/context", batch size, total context); the context is capped at the model's own.
WORKLOADS = [("b1/4k", 1, 4096), ("b8/4k", 8, 4096), ("b32/2k", 32, 2048)]


def accelerate_assignment(graph: LayerGraph, device_map: dict[str, int | str], devices: list[str]) -> tuple[int, ...]:
    """The device index of each graph node under accelerate's ``device_map``.

    A node takes the device of the longest ``device_map`` key that is the node or one of its
    parents; when accelerate split the node more finely, the device holding most of its entries.
    """
    index = {name: i for i, name in enumerate(devices)}
    out = []
    for node in graph.nodes:
        owners = [k for k in device_map if k == "" or node.name == k or node.name.startswith(k + ".")]
        if owners:
            out.append(index[str(device_map[max(owners, key=len)])])
            continue
        inside = [str(v) for k, v in device_map.items() if k.startswith(node.name + ".")]
        out.append(index[max(set(inside), key=inside.count)])
    return tuple(out)


def overflow(problem: PlacementProblem, assignment: tuple[int, ...]) -> int:
    """The largest excess over a cap (0 when every device fits), bytes."""
    loads = device_loads(problem, assignment)
    return max(0, *(load.total - d.cap_bytes for load, d in zip(loads, problem.devices)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=catalog.catalog_names())
    parser.add_argument("--hardware", nargs="+", default=list(HARDWARE), choices=list(HARDWARE))
    parser.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT limit per plan (s)")
    args = parser.parse_args()

    console = Console(width=max(Console().width, 120))  # the table reads badly when wrapped
    table = Table(title="Plans that overflow a device at the declared workload (layerplan's accounting)")
    for col in ("model", "hardware", "workload", "accelerate", "+1GiB reserve", "layerplan", "offloaded"):
        table.add_column(col, justify="left" if col in ("model", "hardware", "workload") else "right")
    counts = {"cases": 0, "accelerate": 0, "accelerate_reserve": 0, "layerplan": 0, "refused": 0}
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("tracing", total=len(args.models) * len(WORKLOADS))
        for name in args.models:
            for label, batch, context in WORKLOADS:
                progress.update(task, description=f"{name} {label}: tracing")
                model_context = catalog.lookup(name).config.get("max_position_embeddings") or context
                graph, meta = planner.trace(name, batch_size=batch, seq_len=min(context, int(model_context)))
                no_split = list(no_split_classes(meta))
                for hardware in args.hardware:
                    progress.update(task, description=f"{name} {label} on {hardware}")
                    caps = parse_max_memory(HARDWARE[hardware])
                    devices = build_devices(caps, None)
                    problem = graph.to_problem(devices=[d.to_solver() for d in devices])
                    bare = dataclasses.replace(
                        problem, devices=tuple(dataclasses.replace(d, reserve_bytes=0) for d in problem.devices)
                    )
                    auto = infer_auto_device_map(meta, max_memory=dict(caps), no_split_module_classes=no_split,
                                                 dtype=meta.dtype)
                    theirs = accelerate_assignment(graph, auto, [d.name for d in problem.devices])
                    over_bare, over_reserve = overflow(bare, theirs), overflow(problem, theirs)
                    try:
                        spec = PlanSpec.from_kwargs(graph, max_memory=caps, offload_folder=OFFLOAD_FOLDER,
                                                    time_limit_s=args.time_limit)
                        ours = plan_graph(graph, spec)
                        over_ours = overflow(ours.problem, ours.solution.assignment)
                        ours_cell = format_bytes(over_ours) if over_ours else "fits"
                        offloaded = format_bytes(ours.offloaded_bytes)
                    except InfeasiblePlanError as error:
                        over_ours = 0
                        counts["refused"] += 1
                        ours_cell = f"refused ({format_bytes(error.missing_bytes)} short)"
                        offloaded = "-"
                    counts["cases"] += 1
                    counts["accelerate"] += over_bare > 0
                    counts["accelerate_reserve"] += over_reserve > 0
                    counts["layerplan"] += over_ours > 0
                    table.add_row(name, hardware, label,
                                  format_bytes(over_bare) if over_bare else "fits",
                                  format_bytes(over_reserve) if over_reserve else "fits",
                                  ours_cell, offloaded,
                                  style="red" if over_ours else None)
                progress.advance(task)
    console.print(table)
    console.print(
        f"{counts['cases']} cases: accelerate \"auto\" overflows in {counts['accelerate']} (KV cache + "
        f"activations only) and in {counts['accelerate_reserve']} with a 1 GiB reserve per GPU; layerplan "
        f"overflows in {counts['layerplan']} and refuses {counts['refused']} (no placement fits). "
        f"{time.perf_counter() - started:.0f} s, torch {torch.__version__}, {os.cpu_count()} CPUs."
    )


if __name__ == "__main__":
    main()
