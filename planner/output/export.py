"""A plan as a pipeline engine takes it: vLLM's and SGLang's per-stage layer partition, and
``torch.distributed.pipelining``'s split points.

Both engines split one decoder stack into ``pipeline_parallel_size`` stages of contiguous layers,
read from an environment variable of comma-separated layer counts, and check it the same way
(``vllm/distributed/utils.py`` and ``python/sglang/srt/distributed/utils.py``, ``get_pp_indices``):
one count per stage, the counts summing to ``num_hidden_layers``; stage ``r`` holds layers
``sum(counts[:r]) .. sum(counts[:r+1]) - 1``. The first stage also holds the input embedding, the
last one the final norm and the LM head. Stages are GPUs, one per rank in ``CUDA_VISIBLE_DEVICES``
order. :func:`export` checks the plan against those rules and says where the engine will place
something differently from the plan.

``torch.distributed.pipelining.pipeline(module, mb_args, split_spec=...)`` cuts the traced program
before each module named in ``split_spec`` (``SplitPoint.BEGINNING``): :func:`export` with
``"pipelining"`` names the first node of every stage after the first, a stage being a run of
nodes on one GPU in execution order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from layerplan.planner.graph import EXPERTS_KIND
from layerplan.planner.output.llamacpp import LlamaCppExport, llamacpp
from layerplan.solver import InvalidSpecError, format_bytes

__all__ = ["ENGINES", "FORMATS", "EngineExport", "PipeliningExport", "export", "layer_stages"]

#: engine -> the environment variable its ``get_pp_indices`` reads.
ENGINES = {"vllm": "VLLM_PP_LAYER_PARTITION", "sglang": "SGLANG_PP_LAYER_PARTITION"}
#: Every format :func:`export` writes.
FORMATS = (*ENGINES, "pipelining", "llama.cpp", "deepspeed")

_LAYER = re.compile(r"^(?P<stack>.+)\.(?P<index>\d+)$")


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineExport:
    """A plan as a pipeline engine's launch settings.

    Attributes:
        engine: ``"vllm"`` or ``"sglang"``.
        env: environment variables to set (the layer partition, ``CUDA_VISIBLE_DEVICES``).
        args: command-line arguments for the engine: ``--pipeline-parallel-size N`` and the limits of
            the planned workload (:func:`_workload_args`).
        stages: per stage: its GPU, its first and last layer, layer count, and the KV-cache bytes of
            its layers at the planned workload (bytes).
        notes: where the engine's rules place something differently from the plan.
        hosts: for a plan over several hosts, per host in stage order: its ``host``, ``stages``
            (indices), local ``gpus``, ``env`` and the ``commands`` to run there
            (:mod:`layerplan.planner.output.multihost`); empty on one host.
        model: the checkpoint the commands load (``$MODEL`` in them).
    """

    engine: str
    env: dict[str, str]
    args: tuple[str, ...]
    stages: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = field(default=())
    hosts: tuple[dict[str, Any], ...] = field(default=())
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: engine, env, args, stages (bytes in ``kv_bytes``), notes, and hosts when several."""
        out = {"engine": self.engine, "env": dict(self.env), "args": list(self.args),
               "stages": [dict(s) for s in self.stages], "notes": list(self.notes)}
        if self.hosts:
            out["hosts"] = [dict(h) for h in self.hosts]
        return out

    def shell(self) -> str:
        """The settings as shell lines (``export ...`` then the arguments); per host for several."""
        if not self.hosts:
            lines = [f"export {k}={v}" for k, v in self.env.items()]
            return "\n".join([*lines, " ".join(self.args)])
        lines = [f"MODEL={self.model}  # the checkpoint: a Hub id or a path every host can read"]
        for rank, host in enumerate(self.hosts):
            first, last = host["stages"][0], host["stages"][-1]
            lines.append(f"# on {host['host']}{' (head)' if rank == 0 else ''}: stages {first}-{last}")
            lines += [f"export {k}={v}" for k, v in host["env"].items()]
            lines += host["commands"]
        return "\n".join(lines)


@dataclass(frozen=True, kw_only=True, slots=True)
class PipeliningExport:
    """A plan as ``torch.distributed.pipelining`` split points.

    Attributes:
        split_spec: module name -> ``"beginning"``: the first node of each stage after the first
            (:meth:`torch_split_spec` gives the ``SplitPoint`` values ``pipeline`` takes).
        stages: per stage, in order: its device and its first and last node.
        notes: stages that share a GPU (a tied head on the first GPU, after the last stage).
    """

    split_spec: dict[str, str]
    stages: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()

    def torch_split_spec(self) -> dict[str, Any]:
        """``{module name: SplitPoint.BEGINNING}`` for ``torch.distributed.pipelining.pipeline``."""
        from torch.distributed.pipelining import SplitPoint

        return dict.fromkeys(self.split_spec, SplitPoint.BEGINNING)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``split_spec`` (module name -> ``"beginning"``), stages, notes."""
        return {"engine": "pipelining", "split_spec": dict(self.split_spec), "stages": [dict(s) for s in self.stages],
                "notes": list(self.notes)}

    def shell(self) -> str:
        """The split points as Python, for ``pipeline(..., split_spec=split_spec)``."""
        items = ", ".join(f"{name!r}: SplitPoint.BEGINNING" for name in self.split_spec)
        return f"from torch.distributed.pipelining import SplitPoint\nsplit_spec = {{{items}}}"


def export(plan: Any, engine: str) -> EngineExport | PipeliningExport | LlamaCppExport:
    """``plan`` (a :class:`layerplan.Plan`) as ``engine``'s settings (module docstring): ``"vllm"``,
    ``"sglang"``, ``"pipelining"``, ``"llama.cpp"`` (:mod:`layerplan.planner.output.llamacpp`) or
    ``"deepspeed"`` (:mod:`layerplan.planner.output.deepspeed`).

    Raises:
        InvalidSpecError: an unknown engine; for vLLM and SGLang a model without exactly one stack
            of numbered decoder layers (``model.layers.0`` ...), for llama.cpp too; a plan that
            offloads layers to ``cpu`` or ``disk`` (engine stages are GPUs; for pipelining, any
            node; llama.cpp takes it).
    """
    if engine == "pipelining":
        return _pipelining(plan)
    if engine == "deepspeed":
        from layerplan.planner.output.deepspeed import deepspeed

        return deepspeed(plan)
    if engine == "llama.cpp":
        return llamacpp(plan, _decoder_layers(plan.graph))
    if engine not in ENGINES:
        raise InvalidSpecError(f"export format {engine!r}; expected one of {', '.join(FORMATS)}")
    graph = plan.graph
    device, layers, stages = layer_stages(plan, engine)
    counts = [s["layers"] for s in stages]
    env = {ENGINES[engine]: ",".join(map(str, counts)), "CUDA_VISIBLE_DEVICES": ",".join(s["device"] for s in stages)}
    args = ("--pipeline-parallel-size", str(len(stages)), *_workload_args(engine, graph, stages))
    notes = _differences(graph, device, layers, stages, engine)
    hosts: tuple[dict[str, Any], ...] = ()
    if getattr(plan, "multi_host", False):
        from layerplan.planner.output.multihost import host_launch

        del env["CUDA_VISIBLE_DEVICES"]  # global keys: each host lists its own GPUs
        hosts, host_notes = host_launch(plan, engine, stages, env, args)
        notes += host_notes
    return EngineExport(engine=engine, env=env, args=args, stages=tuple(stages), notes=tuple(notes), hosts=hosts,
                        model=_checkpoint(graph.model))


def _checkpoint(model: str) -> str:
    """The Hub id of a catalog model (what an engine loads), else the source as given."""
    from layerplan.planner.model.catalog import lookup

    entry = lookup(model)
    return entry.hub_id if entry is not None else model


def _workload_args(engine: str, graph: Any, stages: list[dict[str, Any]]) -> tuple[str, ...]:
    """The engine's limits sized to the planned workload: the context (vLLM ``--max-model-len``,
    SGLang ``--context-length``), the concurrent sequences (``--max-num-seqs``,
    ``--max-running-requests``) and, for vLLM, the KV cache each GPU reserves
    (``--kv-cache-memory-bytes``, one value for every worker, ``vllm/config/cache.py``): the largest
    stage's KV bytes at the workload, so every stage holds its layers' cache for the whole batch."""
    w = graph.workload
    kv = max(s["kv_bytes"] for s in stages)
    if engine == "vllm":
        sized = ("--max-model-len", str(w.context_len), "--max-num-seqs", str(w.batch_size))
        return (*sized, "--kv-cache-memory-bytes", str(kv)) if kv else sized
    return ("--context-length", str(w.context_len), "--max-running-requests", str(w.batch_size))


def layer_stages(plan: Any, engine: str) -> tuple[list[str], list[int], list[dict[str, Any]]]:
    """``(device name per node, indices of the decoder layers, stages)``: a stage is a run of
    consecutive decoder layers on one GPU (its ``device``, ``first`` and ``last`` layer, ``layers``
    count and ``kv_bytes``), as pipeline engines cut the stack.

    Raises:
        InvalidSpecError: no single stack of numbered decoder layers; a layer offloaded to cpu/disk.
    """
    graph, problem, assignment = plan.graph, plan.problem, plan.solution.assignment
    device = [problem.devices[d].name for d in assignment]
    layers = _decoder_layers(graph)
    off = [graph.nodes[i].name for i in layers if not problem.devices[assignment[i]].is_accelerator]
    if off:
        raise InvalidSpecError(f"{len(off)} decoder layer(s) are offloaded to cpu/disk ({off[0]}, ...); {engine} "
                               "pipeline stages are GPUs: plan without cpu/disk (or use the accelerate device_map)")
    apart = [graph.nodes[layer].name for experts, layer in graph.experts_layers().items()
             if assignment[experts] != assignment[layer]]
    if apart:
        raise InvalidSpecError(f"{len(apart)} layer(s) have their MoE experts placed apart ({apart[0]}, ...); {engine} "
                               "pipeline stages hold whole layers: plan without cpu/disk (or export llama.cpp "
                               "or use the accelerate device_map)")
    stages: list[dict[str, Any]] = []
    for i in layers:
        if not stages or stages[-1]["device"] != device[i]:
            stages.append({"device": device[i], "first": graph.nodes[i].name, "layers": 0, "kv_bytes": 0})
        stages[-1].update(last=graph.nodes[i].name, layers=stages[-1]["layers"] + 1,
                          kv_bytes=stages[-1]["kv_bytes"] + graph.nodes[i].kv_bytes)
    # the engines' own checks: one stage per GPU, the counts summing to the layers
    assert len(stages) == len({s["device"] for s in stages}) and sum(s["layers"] for s in stages) == len(layers)
    return device, layers, stages


def _decoder_layers(graph: Any) -> list[int]:
    """Indices of the nodes of the one stack of numbered blocks (``<stack>.<i>``), in order."""
    stacks: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        match = _LAYER.match(node.name)
        if node.kind == "block" and match:
            stacks.setdefault(match["stack"], []).append(i)
    if len(stacks) != 1:
        found = ", ".join(sorted(stacks)) or "none"
        raise InvalidSpecError(f"a pipeline engine splits one stack of decoder layers; this model has {found}: "
                               "export the accelerate device_map instead")
    return next(iter(stacks.values()))


def _differences(graph: Any, device: list[str], layers: list[int], stages: list[dict], engine: str) -> list[str]:
    """Notes for the nodes outside the stack that the engine places on its first or last stage."""
    notes = []
    first, last = stages[0]["device"], stages[-1]["device"]
    for i, node in enumerate(graph.nodes):
        if i in layers or not node.size_bytes or node.kind == EXPERTS_KIND:  # with their layer
            continue
        wanted = first if i < layers[0] else last
        if device[i] != wanted:
            where = "first" if i < layers[0] else "last"
            notes.append(f"{engine} puts {node.name} ({format_bytes(node.size_bytes)}) on the {where} stage "
                         f"(GPU {wanted}); the plan had it on {device[i]}, so that stage holds more than planned")
    return notes


def _pipelining(plan: Any) -> PipeliningExport:
    graph, problem, assignment = plan.graph, plan.problem, plan.solution.assignment
    off = [n.name for n, d in zip(graph.nodes, assignment) if not problem.devices[d].is_accelerator]
    if off:
        raise InvalidSpecError(f"{len(off)} node(s) are offloaded to cpu/disk ({off[0]}, ...); pipeline stages "
                               "run on one GPU each: plan without cpu/disk (or use the accelerate device_map)")
    stages: list[dict[str, Any]] = []
    for node, d in zip(graph.nodes, assignment):
        name = problem.devices[d].name
        if not stages or stages[-1]["device"] != name:
            stages.append({"device": name, "first": node.name})
        stages[-1]["last"] = node.name
    devices = [s["device"] for s in stages]
    notes = [f"stages {', '.join(str(i) for i, x in enumerate(devices) if x == d)} share GPU {d} (a tied module "
             "there): run them with a schedule that places several stages per rank, or untie the weights"
             for d in dict.fromkeys(devices) if devices.count(d) > 1]
    return PipeliningExport(split_spec={s["first"]: "beginning" for s in stages[1:]}, stages=tuple(stages),
                            notes=tuple(notes))
