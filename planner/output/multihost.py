"""A pipeline-engine export of a plan whose GPUs are on several hosts: what to run on each host.

A GPU's key in a multi-host spec is global (``0``-``15`` over two 8-GPU hosts); on its host it is
numbered by its place among that host's GPUs in declared order (``8``-``15`` on ``node-b`` are its
GPUs ``0``-``7``), which is what ``CUDA_VISIBLE_DEVICES`` lists there.

* **vLLM** runs multi-host pipelines on a Ray cluster (``--distributed-executor-backend ray``):
  ``ray start --head`` on the host of the first stage, ``ray start --address=HEAD:6379`` on the
  others, then ``vllm serve`` on the head. Ranks follow ``sort_by_driver_then_worker_ip``
  (``vllm/v1/executor/ray_executor.py``): the driver's host first, then hosts with fewer workers,
  then by IP address; within a host the GPU ids in ascending order. Environment variables
  (the layer partition) are copied from the driver to the workers.
* **SGLang** runs one ``launch_server`` per host with ``--nnodes H --node-rank R --dist-init-addr
  HEAD:PORT``; host ``R`` holds pipeline ranks ``R * pp_size // nnodes`` onwards
  (``python/sglang/srt/entrypoints/engine.py``, ``pp_size_per_node``), so every host must hold the
  same number of stages, on its GPUs ``0, 1, ...`` (``base_gpu_id`` + local rank).
"""

from __future__ import annotations

from typing import Any

from layerplan.solver import InvalidSpecError

__all__ = ["RAY_PORT", "SGLANG_PORT", "host_launch"]

#: Ray's default GCS port (``ray start --head --port``).
RAY_PORT = 6379
#: The port SGLang's ``--dist-init-addr`` examples use.
SGLANG_PORT = 5000


def _local_ids(plan: Any) -> dict[str, tuple[str, int]]:
    """Accelerator name -> (host, its index among that host's GPUs in declared order)."""
    out: dict[str, tuple[str, int]] = {}
    count: dict[str, int] = {}
    for u in plan.usage:
        if u.device in ("cpu", "disk"):
            continue
        host = plan.hosts[u.device]
        out[str(u.device)] = (host, count.get(host, 0))
        count[host] = count.get(host, 0) + 1
    return out


def _host_runs(stages: list[dict[str, Any]], local: dict[str, tuple[str, int]]) -> list[tuple[str, list[int]]]:
    """``[(host, stage indices)]`` in stage order; refuses a host that comes back after another."""
    runs: list[tuple[str, list[int]]] = []
    for index, stage in enumerate(stages):
        host = local[stage["device"]][0]
        if runs and runs[-1][0] == host:
            runs[-1][1].append(index)
            continue
        if any(h == host for h, _ in runs):
            order = " -> ".join(local[s["device"]][0] for s in stages)
            raise InvalidSpecError(
                f"the plan's stages go {order}: host {host!r} comes back after another host, but the engines run "
                "each host's ranks together; plan with --strategy sequential and the GPUs listed host by host"
            )
        runs.append((host, [index]))
    return runs


def host_launch(
    plan: Any, engine: str, stages: list[dict[str, Any]], env: dict[str, str], args: tuple[str, ...]
) -> tuple[tuple[dict[str, Any], ...], list[str]]:
    """Per host, in stage order: ``{"host", "stages", "gpus", "env", "commands"}``, and the notes.

    Args:
        stages: the export's stages (global GPU names), from
            :func:`layerplan.planner.output.export.layer_stages`.
        env: the variables every host sets (the layer partition).
        args: the engine's arguments (pipeline size, workload limits).

    Raises:
        InvalidSpecError: the stages leave a host and come back to it.
    """
    local = _local_ids(plan)
    runs = _host_runs(stages, local)
    head = runs[0][0]
    hosts, notes = [], []
    for rank, (host, indices) in enumerate(runs):
        gpus = [local[stages[i]["device"]][1] for i in indices]
        host_env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        if engine == "vllm":
            start = "--head --port=" if rank == 0 else f"--address={head}:"
            commands = [f"ray start {start}{RAY_PORT}"]
        else:
            host_env.update(env)
            launch = ("python -m sglang.launch_server --model-path $MODEL", *args, "--nnodes", str(len(runs)),
                      "--node-rank", str(rank), "--dist-init-addr", f"{head}:{SGLANG_PORT}")
            commands = [" ".join(launch)]
        hosts.append({"host": host, "stages": indices, "gpus": gpus, "env": host_env, "commands": commands})
        if gpus != sorted(gpus):
            notes.append(f"{engine} gives the ranks of {host} its GPUs in ascending order; the plan has stages on "
                         f"GPUs {gpus} there, so renumber them (CUDA_VISIBLE_DEVICES lists them in stage order)")
    if engine == "vllm":
        hosts[0]["env"].update(env)
        hosts[0]["commands"].append(" ".join(("vllm serve $MODEL", *args, "--distributed-executor-backend ray")))
        notes += _vllm_order_notes(runs)
    else:
        counts = {len(indices) for _, indices in runs}
        if len(counts) > 1:
            notes.append(f"sglang puts pp_size / nnodes stages on every host, but this plan has "
                         f"{[len(i) for _, i in runs]} stages on {[h for h, _ in runs]}: plan with equal GPUs per host")
    return tuple(hosts), notes


def _vllm_order_notes(runs: list[tuple[str, list[int]]]) -> list[str]:
    """Where vLLM's rank order (driver host first, then fewer workers, then IP) may differ from the plan's."""
    rest = [(host, len(indices)) for host, indices in runs[1:]]
    notes = []
    for (a, na), (b, nb) in zip(rest, rest[1:]):
        if na > nb:
            notes.append(f"vLLM ranks hosts with fewer workers first: {b} ({nb} stages) would come before {a} "
                         f"({na}); the partition would land on other layers than planned")
        elif na == nb:
            notes.append(f"{a} and {b} hold {na} stages each: vLLM orders them by IP address, so {a} needs the "
                         "lower one")
    return notes
