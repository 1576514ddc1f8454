"""Pipeline partitions: layerplan's against vLLM's uniform one, under layerplan's accounting.

vLLM (and SGLang) split the decoder stack evenly when no partition is given:
``get_pp_indices`` in ``vllm/distributed/utils.py`` gives each of ``pp`` stages ``layers // pp``
layers and the remainder one each to the stages before the last. This benchmark builds that
partition as a device_map (embedding on the first stage, norm and head on the last, as vLLM loads
them), evaluates it with :func:`layerplan.evaluate_map`, and compares it with layerplan's own plan
(``objective balanced``, ``latency`` and ``throughput``) exported as the engine's partition:

* ``KV tokens``: the KV cache each stage has room for after its weights, largest working set and
  reserve, in tokens of the planned workload's context per sequence, the minimum over stages (a
  pipeline engine allocates the same number of blocks on every worker, so the tightest stage
  decides); ``fits``: the partition holds the declared workload at all;
* ``ms/token``: the cost model's estimate.

Usage::

    python benchmarks/pipeline_partition.py
    python benchmarks/pipeline_partition.py --models llama-2-70b --setups 4x a100-40gb+4x l4

``2x8:h100-sxm*16`` is two hosts of eight H100 SXM (NVLink within a host) joined by InfiniBand NDR
(:data:`HOSTS`); its partitions are what the vLLM export runs on a Ray cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("LAYERPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="layerplan-bench-pp-"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import layerplan  # noqa: E402
from layerplan.planner.api import evaluate_map  # noqa: E402
from layerplan.planner.capacity import parse_setup  # noqa: E402
from layerplan.solver import InfeasiblePlanError  # noqa: E402

MODELS = ("llama-2-70b", "mixtral-8x7b", "llama-3.1-405b")
SETUPS = ("h100-sxm*8", "mixed:a100-40gb*4+l4*4", "2x8:h100-sxm*16")
#: Setups on several hosts: name -> (hosts, inter-host network).
HOSTS = {"2x8": ({"0-7": "node-a", "8-15": "node-b"}, "ib-ndr")}


def uniform_counts(layers: int, stages: int) -> list[int]:
    """vLLM's ``get_pp_indices`` partition: ``layers // stages`` each, the remainder one each to the
    stages before the last (``for i in range(2, remaining + 2): partitions[-i] += 1``)."""
    counts = [layers // stages] * stages
    for i in range(2, layers % stages + 2):
        counts[-i] += 1
    return counts


def uniform_map(graph, gpus: list[int]) -> dict[str, int]:  # noqa: ANN001
    """The uniform partition as a device_map over ``graph``'s nodes."""
    blocks = [i for i, n in enumerate(graph.nodes) if n.kind == "block"]
    owner: dict[int, int] = {}
    start = 0
    for gpu, count in zip(gpus, uniform_counts(len(blocks), len(gpus))):
        owner.update({blocks[k]: gpu for k in range(start, start + count)})
        start += count
    for experts, layer in graph.experts_layers().items():  # a MoE layer's experts node goes with it
        owner[experts] = owner[layer]
    return {n.name: owner.get(i, gpus[0] if i < blocks[0] else gpus[-1]) for i, n in enumerate(graph.nodes)}


def kv_tokens(plan) -> int:  # noqa: ANN001
    """Min over stages of the sequences' worth of KV the free memory holds, in tokens per sequence x batch."""
    w = plan.graph.workload
    per_token = max(plan.graph.total_kv_bytes // max(w.context_len * w.batch_size, 1), 1)
    tokens = []
    for u in plan.usage:
        if u.device in ("cpu", "disk") or not u.kv_bytes:
            continue
        share = u.kv_bytes / plan.graph.total_kv_bytes  # this stage's part of every token's KV
        room = u.cap_bytes - (u.used_bytes - u.kv_bytes)
        tokens.append(int(room / (per_token * share)))
    return min(tokens, default=0)


def _row(name: str, plan) -> list[str]:  # noqa: ANN001
    ms = plan.timing.per_token_s * 1e3 if plan.timing is not None else float("nan")
    counts = [sum(1 for n in u.nodes if n.split(".")[-1].isdigit() and ".layers." in f".{n}") for u in plan.usage]
    return [name, "yes" if plan.fits and not plan.violations else "no", plan.status, ",".join(map(str, counts)),
            f"{kv_tokens(plan):,}", f"{ms:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--setups", nargs="*", default=list(SETUPS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=4096)
    args = parser.parse_args()
    console = Console(width=160)
    table = Table(title=f"Pipeline partitions at batch {args.batch_size}, seq_len {args.seq_len}", title_justify="left")
    for col in ("model", "setup", "partition", "fits", "status", "layers per GPU", "KV tokens (min stage)", "ms/token"):
        table.add_column(col, justify="right" if col in ("KV tokens (min stage)", "ms/token") else "left")
    for model in args.models:
        for text in args.setups:
            setup = parse_setup(text)
            spec = layerplan.PlanSpec.from_dict({"model": {"source": model},
                                                 "workload": {"batch_size": args.batch_size, "seq_len": args.seq_len}})
            devices = setup.devices(spec.devices)
            if setup.name in HOSTS:
                hosts, network = HOSTS[setup.name]
                devices = dataclasses.replace(devices, hosts=hosts, inter_host=network)
            spec = spec.replace(devices=devices)
            graph, _ = layerplan.planner.api.load_graph(spec)
            gpus = list(range(setup.num_gpus))
            rows = [("vLLM uniform", evaluate_map(graph, uniform_map(graph, gpus), spec))]
            for objective in ("balanced", "latency", "throughput"):
                try:
                    plan = layerplan.plan_graph(graph, spec.replace(solve=type(spec.solve)(objective=objective)))
                    rows.append((f"layerplan {objective}", plan))
                except InfeasiblePlanError as exc:
                    console.print(f"{model} on {setup.name}: layerplan {objective}: {str(exc)[:100]}")
            for name, plan in rows:
                table.add_row(model, setup.name, *_row(name, plan))
    console.print(table)


if __name__ == "__main__":
    main()
