"""A MoE layer's experts as their own node (planner/model/experts.py): sized as the real model's
parameters, flagged for the solver, written into a device_map accelerate loads, exported to
llama.cpp, and worth it on the catalog's Mixtral.

Oracles: the real model's parameters, accelerate's ``check_device_map``, the unsplit model's greedy
tokens, llama.cpp's override rule restated (first regex found decides), and the same solver on the
graph with the experts left inside their layers (its every placement is one of the split graph's).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from accelerate.utils import check_device_map
from rich.console import Console
from transformers import AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM

import layerplan
from layerplan import planner
from layerplan.planner.model import trace as trace_module
from layerplan.planner.model.experts import merge_experts
from layerplan.planner.model.meta import build_meta_model
from layerplan.planner.output.report import render_plan

LAYERS = 3


@pytest.fixture(scope="module")
def tiny_mixtral(tmp_path_factory) -> str:
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64)
    path = tmp_path_factory.mktemp("mixtral")
    MixtralForCausalLM(config).eval().save_pretrained(path)
    return str(path)


def _bytes_under(model, prefix: str, *, but: str | None = None) -> int:
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters()
               if name.startswith(prefix + ".") and not (but and name.startswith(but + ".")))


def _covered(parts: tuple[str, ...], name: str) -> bool:
    return any(name == part or name.startswith(part + ".") for part in parts)


def test_each_layer_is_followed_by_its_experts_node_sized_as_the_real_parameters(tiny_mixtral) -> None:
    graph, _ = planner.trace(tiny_mixtral, seq_len=16)
    model = AutoModelForCausalLM.from_pretrained(tiny_mixtral)
    names = [n.name for n in graph.nodes]
    for i in range(LAYERS):
        layer_name, experts_name = f"model.layers.{i}", f"model.layers.{i}.mlp.experts"
        k = names.index(layer_name)
        layer, experts = graph.nodes[k], graph.nodes[k + 1]
        assert (experts.name, experts.kind, layer.kind) == (experts_name, "experts", "block")
        assert experts.size_bytes == experts.expert_bytes == _bytes_under(model, experts_name) > 0
        assert layer.size_bytes == _bytes_under(model, layer_name, but=experts_name) > 0
        # the parts cover every parameter of the layer but the experts', and none of the experts'
        inside = [n for n, _ in model.named_parameters() if n.startswith(layer_name + ".")]
        assert [n for n in inside if _covered(layer.parts, n)] == [n for n in inside if not n.startswith(experts_name)]
        # the experts hand the layer's output on: the next node reads it from them
        assert any(e.producer == experts_name and names[k + 2] in e.consumers for e in graph.edges)
    assert sum(n.weight_bytes for n in graph.nodes) == sum(p.numel() * p.element_size() for p in model.parameters())
    plan = layerplan.plan(graph, max_memory={"cpu": "1GB"})
    flagged = [n.name for n in plan.problem.nodes if n.offload_inline]
    assert flagged == [f"model.layers.{i}.mlp.experts" for i in range(LAYERS)]
    assert plan.device_map == {"": "cpu"}  # one device: the split does not show


def _greedy(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=8,
                              do_sample=False, pad_token_id=0)


def test_a_plan_with_the_experts_on_disk_inside_cpu_layers_loads_and_generates_the_unsplit_tokens(
        tiny_mixtral, tmp_path) -> None:
    graph, _ = planner.trace(tiny_mixtral, seq_len=16)
    pins = {f"model.layers.{i}.mlp.experts": "disk" for i in range(LAYERS)}
    plan = layerplan.plan(graph, max_memory={"cpu": "1GB", "disk": "1GB"}, pins=pins, offload_folder=str(tmp_path))
    device_map = plan.device_map
    for i in range(LAYERS):
        assert device_map[f"model.layers.{i}.mlp.experts"] == "disk"
        assert device_map[f"model.layers.{i}.self_attn"] == "cpu"
        assert f"model.layers.{i}" not in device_map  # accelerate refuses the nested map
    meta = build_meta_model(MixtralConfig.from_pretrained(tiny_mixtral))
    check_device_map(meta, device_map)

    reference = AutoModelForCausalLM.from_pretrained(tiny_mixtral).eval()
    split = AutoModelForCausalLM.from_pretrained(tiny_mixtral, **plan.from_pretrained_kwargs()).eval()
    assert split.hf_device_map == device_map
    assert all(p.device.type == "meta" for p in split.model.layers[0].mlp.experts.parameters())  # streamed in
    input_ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    want = _greedy(reference, input_ids)
    assert want.shape[1] == input_ids.shape[1] + 8
    assert torch.equal(_greedy(split, input_ids), want)
    # the map read back onto the graph is the plan's placement
    again = layerplan.plan(graph, max_memory={"cpu": "1GB", "disk": "1GB"}, device_map=device_map,
                           offload_folder=str(tmp_path))
    assert again.solution.assignment == plan.solution.assignment


def _mixtral_plans(monkeypatch) -> tuple:
    caps = {"max_memory": {0: "24GiB", "cpu": "200GiB"}, "cache": False}
    split = layerplan.plan("mixtral-8x7b", **caps)
    with monkeypatch.context() as patch:
        patch.setattr(trace_module, "split_experts", lambda graph, *args: graph)
        whole = layerplan.plan("mixtral-8x7b", **caps)
    return split, whole


def test_experts_apart_make_the_catalog_mixtral_on_one_24gib_gpu_faster(monkeypatch) -> None:
    split, whole = _mixtral_plans(monkeypatch)
    assert not any(n.kind == "experts" for n in whole.graph.nodes)
    assert merge_experts(split.graph) == whole.graph and merge_experts(whole.graph) is whole.graph
    assert split.status == whole.status == "optimal"
    # every placement of the whole layers is one of the split graph's, at the same cost
    assert split.timing.total_ns < whole.timing.total_ns
    apart = [n.name for n, d, prev in zip(split.graph.nodes[1:], split.solution.assignment[1:],
                                          split.solution.assignment) if n.kind == "experts" and d != prev]
    assert apart  # the gain comes from a layer split from its experts
    console = Console(record=True, width=200)
    render_plan(split, console)
    assert f"MoE experts placed apart from their layer in {len(apart)} layer(s)" in console.export_text()

    out = split.export("llama.cpp")
    readable = {f"CUDA{k}": int(g) for k, g in enumerate(out.env["CUDA_VISIBLE_DEVICES"].split(","))} | {"CPU": "cpu"}
    for node, d in zip(split.graph.nodes, split.solution.assignment):
        match = re.fullmatch(r"model\.layers\.(\d+)(\.mlp\.experts)?", node.name)
        if not match:
            continue
        planned = split.problem.devices[d].name
        planned = int(planned) if planned.isdigit() else "cpu"
        tensors = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] if match[2] else ["attn_q", "ffn_gate_inp"]
        for tensor in tensors:
            name = f"blk.{match[1]}.{tensor}.weight"
            buffer = next(buf for pattern, buf in out.overrides if re.search(pattern, name))
            assert readable[buffer] == planned, name
    with pytest.raises(layerplan.InvalidSpecError, match="experts placed apart|offloaded"):
        split.export("vllm")


def test_the_experts_flops_are_what_the_flop_counter_counts_inside_the_expert_module(tiny_mixtral) -> None:
    """Counted on the real model's CPU forward by torch's FlopCounterMode, with the formula for the
    grouped matmul of transformers' MoE kernels and the CPU SDPA kernel that torch's registry lacks, and by
    the textbook count: each of the 2 x 8 tokens through top_k = 2 experts' three
    hidden x intermediate projections, 2 FLOPs per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode

    graph, _ = planner.trace(tiny_mixtral, dtype="float32", batch_size=2, prompt_len=8, max_new_tokens=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_mixtral).eval()
    def grouped_mm(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:  # (rows, K) x (experts, K, N)
        return 2 * math.prod(a_shape[:-1]) * a_shape[-1] * b_shape[-1]

    ops = [torch.ops.aten._grouped_mm, *([torch.ops.transformers.grouped_mm_fallback]
                                         if hasattr(torch.ops.transformers, "grouped_mm_fallback") else [])]
    mapping = dict.fromkeys(ops, grouped_mm)
    def sdpa(q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:  # Q K^T and A V, per query head
        batch, heads, queries, dim = q_shape
        return 2 * 2 * batch * heads * queries * k_shape[-2] * dim

    mapping[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = sdpa
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(input_ids=torch.randint(0, 128, (2, 8)), use_cache=False)
    root = type(model).__name__
    counted = {name.removeprefix(root).removeprefix("."): sum(ops.values())
               for name, ops in counter.get_flop_counts().items()}
    for i in range(LAYERS):
        layer, experts = graph.nodes[graph.index(f"model.layers.{i}")], graph.nodes[graph.index(f"model.layers.{i}.mlp.experts")]
        assert experts.prefill_flops == counted[experts.name] == 2 * (2 * 8) * 2 * (3 * 32 * 64)
        assert layer.prefill_flops + experts.prefill_flops == counted[layer.name]
        assert 0 < experts.decode_flops < experts.prefill_flops
