"""Exports to pipeline engines (vLLM, SGLang), checked against the engines' own partition rule.

vLLM and SGLang are not installed here; the oracle is their ``get_pp_indices`` rule as written in
``vllm/distributed/utils.py`` / ``python/sglang/srt/distributed/utils.py`` (re-stated in
:func:`_engine_layer_range`), applied to the exported variable and compared with the accelerate
device_map of the same plan.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings

import layerplan
from layerplan.testing import layer_graphs
from tests.cli_helpers import one_line, run


def _engine_layer_range(partition: str, num_hidden_layers: int, pp_rank: int, pp_size: int) -> tuple[int, int]:
    """The engines' rule: comma-separated ints, one per stage, summing to the layer count."""
    partitions = [int(layer) for layer in partition.split(",")]
    if len(partitions) != pp_size:
        raise ValueError(f"{len(partitions)=} does not match {pp_size=}.")
    if sum(partitions) != num_hidden_layers:
        raise ValueError(f"{sum(partitions)=} does not match {num_hidden_layers=}.")
    start = sum(partitions[:pp_rank])
    return start, start + partitions[pp_rank]


def _device_of(device_map: dict, name: str):
    key = max((k for k in device_map if k == "" or name == k or name.startswith(f"{k}.")), key=len)
    return device_map[key]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=layer_graphs(min_layers=4, max_layers=24))
def test_each_stage_gets_the_layers_the_device_map_gives_its_gpu(engine, graph) -> None:
    third = (graph.total_bytes + graph.total_kv_bytes) // 3
    room = max(n.work_bytes for n in graph.nodes) + 2 * max(e.size_bytes for e in graph.edges) + (1 << 16)
    plan = layerplan.plan(graph, max_memory={g: int(1.2 * third) + room for g in range(3)}, reserve=0)
    out = plan.export(engine)
    variable = {"vllm": "VLLM_PP_LAYER_PARTITION", "sglang": "SGLANG_PP_LAYER_PARTITION"}[engine]
    pp_size = int(out.args[out.args.index("--pipeline-parallel-size") + 1])
    gpus = out.env["CUDA_VISIBLE_DEVICES"].split(",")
    assert len(gpus) == pp_size
    layers = [n.name for n in graph.nodes if n.kind == "block"]
    for rank, gpu in enumerate(gpus):
        start, end = _engine_layer_range(out.env[variable], len(layers), rank, pp_size)
        assert {str(_device_of(plan.device_map, name)) for name in layers[start:end]} == {gpu}
    assert json.loads(json.dumps(out.to_dict()))["env"] == out.env


def test_a_head_the_plan_offloads_is_noted_as_moved_to_the_last_stage() -> None:
    """With one block per GPU, only an offloaded embedding or head can sit off the engine's stage
    for it: vLLM would load the head on the last stage's GPU, which the note says."""
    from hypothesis import find

    graph = find(layer_graphs(min_layers=6, max_layers=6, tied=False), lambda g: g.nodes[-1].size_bytes > 0)
    half = (graph.total_bytes + graph.total_kv_bytes) // 2
    room = max(n.work_bytes for n in graph.nodes) + 2 * max(e.size_bytes for e in graph.edges)
    plan = layerplan.plan(graph, max_memory={0: int(0.8 * half) + room, 1: int(1.5 * half) + room, "cpu": "1GB"},
                          reserve=0, pins={"lm_head": "cpu"}, objective="transfers")  # offload the least
    out = plan.export("vllm")
    assert len(out.stages) == 2  # GPU 0 holds 80 % of half the model: the layers need both
    assert _device_of(plan.device_map, "lm_head") == "cpu"
    assert [note for note in out.notes if "lm_head" in note and "last stage" in note and "cpu" in note]


def test_offloaded_layers_and_two_stacks_are_refused() -> None:
    from hypothesis import find

    graph = find(layer_graphs(min_layers=4, max_layers=4), lambda g: True)
    room = max(n.work_bytes for n in graph.nodes) + 2 * max(e.size_bytes for e in graph.edges) + graph.total_kv_bytes
    offloaded = layerplan.plan(graph, max_memory={0: graph.nodes[2].size_bytes + room, "cpu": "1GB"}, reserve=0)
    assert any(_device_of(offloaded.device_map, f"model.layers.{i}") == "cpu" for i in range(4))
    with pytest.raises(layerplan.InvalidSpecError, match="offloaded to cpu/disk"):
        offloaded.export("vllm")
    renamed = tuple(dataclasses.replace(n, name=re.sub(r"^model\.layers\.([01])$", r"encoder.block.\1", n.name))
                    for n in graph.nodes)
    edges = tuple(dataclasses.replace(e, producer=_renamed(e.producer), consumers=tuple(map(_renamed, e.consumers)))
                  for e in graph.edges)
    two = dataclasses.replace(graph, nodes=renamed, edges=edges)
    with pytest.raises(layerplan.InvalidSpecError, match="encoder.block, model.layers"):
        layerplan.plan(two, max_memory={0: "1GB"}, reserve=0).export("sglang")
    expected = "expected one of vllm, sglang, pipelining, llama.cpp, deepspeed"
    with pytest.raises(layerplan.InvalidSpecError, match=expected):
        layerplan.plan(graph, max_memory={0: "1GB"}, reserve=0).export("tensorrt-llm")


def _renamed(name: str) -> str:
    return re.sub(r"^model\.layers\.([01])$", r"encoder.block.\1", name)


def test_cli_export_prints_shell_lines_or_json(capsys) -> None:
    argv = ["plan", "llama-3-8b", "--max-memory", "0=10GiB", "1=10GiB", "--reserve", "0"]
    code, out, err = run([*argv, "--export", "vllm"], capsys)
    assert code == 0, err
    assert re.search(r"^export VLLM_PP_LAYER_PARTITION=\d+,\d+$", out, re.M)
    assert "--pipeline-parallel-size 2" in out
    code, out, err = run([*argv, "--export", "sglang", "--format", "json"], capsys)
    assert code == 0, err
    assert sum(map(int, json.loads(out)["env"]["SGLANG_PP_LAYER_PARTITION"].split(","))) == 32  # Llama-3-8B's layers
    code, out, err = run([*argv, "--export", "llamacpp"], capsys)
    assert code == 2 and "llamacpp" in one_line(err)


def test_the_pipelining_split_runs_a_tiny_llama_with_the_unsplit_logits(tmp_path) -> None:
    """torch.distributed.pipelining splits a real tiny Llama at the exported points (on CPU): one
    stage module per planned stage, and the split program gives the unsplit model's logits."""
    import torch
    from torch.distributed.pipelining import pipeline
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=6, vocab_size=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path)
    graph, _ = layerplan.trace(str(tmp_path), seq_len=8)
    third = graph.total_bytes // 3
    room = max(n.work_bytes for n in graph.nodes) + 2 * max(e.size_bytes for e in graph.edges) + graph.total_kv_bytes
    plan = layerplan.plan(graph, max_memory={g: int(1.1 * third) + room for g in range(3)}, reserve=0)
    out = plan.export("pipelining")
    assert len(out.stages) >= 2 and len(out.split_spec) == len(out.stages) - 1
    for stage, name in zip(out.stages[1:], out.split_spec):
        assert stage["first"] == name and _device_of(plan.device_map, name) != _device_of(
            plan.device_map, graph.nodes[graph.index(name) - 1].name)  # a device change starts each stage
    ids = torch.randint(0, 128, (1, 8))
    pipe = pipeline(model, mb_args=(), mb_kwargs={"input_ids": ids, "use_cache": False},
                    split_spec=out.torch_split_spec())
    assert pipe.num_stages == len(out.stages)
    placeholders = [n.target for n in pipe.split_gm.graph.nodes if n.op == "placeholder"]
    with torch.no_grad():  # the split program calls the stage modules in order, routing their tensors
        split = torch.fx.Interpreter(pipe.split_gm).run(*[{"input_ids": ids, "use_cache": False}[p] for p in placeholders])
        logits = split[0] if isinstance(split, tuple | list) else split
        assert torch.equal(logits, model(input_ids=ids, use_cache=False).logits)


_GGUF_LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                       "ffn_down")


def _llamacpp_buffer(overrides, name: str) -> str | None:
    """llama.cpp's rule: the first override whose regex is found in the tensor name decides."""
    return next((buf for pattern, buf in overrides if re.search(pattern, name)), None)


def _llamacpp_layer_gpu(split: list[int], i: int) -> int:
    """llama.cpp's rule: layer i goes to the first GPU whose cumulative share exceeds i / n_layer."""
    total, cumulative = sum(split), 0.0
    for k, share in enumerate(split):
        cumulative += share / total
        if cumulative > i / total:
            return k
    return len(split) - 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=layer_graphs(min_layers=4, max_layers=24, tied=False))
def test_llamacpp_overrides_put_every_gguf_tensor_where_the_plan_put_its_module(graph) -> None:
    quarter = (graph.total_bytes + graph.total_kv_bytes) // 4
    room = max(n.work_bytes for n in graph.nodes) + 2 * max(e.size_bytes for e in graph.edges) + graph.total_kv_bytes
    plan = layerplan.plan(graph, max_memory={0: quarter + room, 1: quarter + room, "cpu": "1GB"}, reserve=0,
                          objective="transfers")  # offload the least: half the model on the GPUs, the rest on cpu
    out = plan.export("llama.cpp")
    visible = out.env["CUDA_VISIBLE_DEVICES"].split(",")
    readable = {f"CUDA{k}": gpu for k, gpu in enumerate(visible)} | {"CPU": "cpu"}
    layers = [n.name for n in graph.nodes if n.kind == "block"]
    for i, name in enumerate(layers):
        planned = str(_device_of(plan.device_map, name))
        for tensor in _GGUF_LAYER_TENSORS:
            assert readable[_llamacpp_buffer(out.overrides, f"blk.{i}.{tensor}.weight")] == planned
        if planned != "cpu":  # its KV cache follows --tensor-split
            assert visible[_llamacpp_layer_gpu(list(out.tensor_split), i)] == planned
    assert readable[_llamacpp_buffer(out.overrides, "output.weight")] == str(_device_of(plan.device_map, "lm_head"))
    assert _llamacpp_buffer(out.overrides, "token_embd.weight") is None  # llama.cpp's input device: the CPU
    assert sum(out.tensor_split) == len(layers)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=layer_graphs(min_layers=4, max_layers=24))
def test_the_engine_limits_are_the_planned_workload(engine, graph) -> None:
    """Context, sequences and, for vLLM, the KV bytes every worker reserves: those of the stage whose
    layers hold the most KV cache, summed here from the graph and the device_map."""
    room = graph.total_bytes + graph.total_kv_bytes + max(n.work_bytes for n in graph.nodes) + (1 << 20)
    plan = layerplan.plan(graph, max_memory={g: room for g in range(3)}, reserve=0, objective="balanced")
    out = plan.export(engine)
    flags = dict(zip(out.args[::2], out.args[1::2]))
    w = graph.workload
    if engine == "sglang":
        assert (int(flags["--context-length"]), int(flags["--max-running-requests"])) == (w.context_len, w.batch_size)
        return
    assert (int(flags["--max-model-len"]), int(flags["--max-num-seqs"])) == (w.context_len, w.batch_size)
    gpus = out.env["CUDA_VISIBLE_DEVICES"].split(",")
    blocks = [n for n in graph.nodes if n.kind == "block"]
    kv = {gpu: sum(n.kv_bytes for n in blocks if str(_device_of(plan.device_map, n.name)) == gpu) for gpu in gpus}
    assert int(flags.get("--kv-cache-memory-bytes", 0)) == max(kv.values()) and (len(gpus) > 1 or len(kv) == 1)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=layer_graphs(min_layers=4, max_layers=24))
def test_deepspeed_parts_cut_the_layer_list_where_the_device_map_changes_gpu(graph) -> None:
    """DeepSpeed's rule (deepspeed/runtime/pipe/module.py ``_partition_layers``): ``num_stages + 1``
    increasing boundaries from 0 to the list's length; stage ``s`` builds ``layers[parts[s]:parts[s+1]]``.
    Each stage's decoder layers must be the ones the device_map puts on its GPU, the embedding on the
    first stage and the norm and head on the last."""
    room = graph.total_bytes + graph.total_kv_bytes + max(n.work_bytes for n in graph.nodes) + (1 << 20)
    plan = layerplan.plan(graph, max_memory={g: room for g in range(3)}, reserve=0, objective="balanced")
    out = plan.export("deepspeed")
    parts, names = out.parts, out.layer_list
    assert len(parts) == out.num_stages + 1 and parts[0] == 0 and parts[-1] == len(names)
    assert all(a < b for a, b in itertools.pairwise(parts))
    assert names[0] == "model.embed_tokens" and names[-1] in ("lm_head", "model.norm")
    blocks = [n.name for n in graph.nodes if n.kind == "block"]
    assert [n for n in names if n in blocks] == blocks
    gpus = []
    for s in range(out.num_stages):
        mine = {str(_device_of(plan.device_map, n)) for n in names[parts[s]:parts[s + 1]] if n in blocks}
        assert len(mine) == 1
        gpus += mine
    assert len(set(gpus)) == len(gpus) == out.num_stages
    assert "self.parts = " + str(list(parts)) in out.shell()
