"""Tracing on the meta device: node set, execution order, bytes, edges, tied groups, JSON round trip."""

from __future__ import annotations

import torch
from accelerate.utils import compute_module_sizes
from transformers import AutoConfig, LlamaConfig

import planner
from layerplan.planner.graph import LayerGraph
from layerplan.planner.model.meta import build_meta_model


def test_tiny_llama_nodes_follow_execution_not_registration(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", batch_size=2, prompt_len=16)
    names = [n.name for n in graph.nodes]
    # rotary_emb is registered after model.norm but runs before the first decoder layer
    assert names == [
        "model.embed_tokens", "model.rotary_emb", "model.layers.0", "model.layers.1",
        "model.layers.2", "model.layers.3", "model.norm", "lm_head",
    ]
    assert [n.kind for n in graph.nodes if n.name.startswith("model.layers.")] == ["block"] * 4
    assert all(n.executed for n in graph.nodes)


def test_node_bytes_add_up_to_accelerates_module_sizes(tiny_llama_dir):
    graph, meta = planner.trace(tiny_llama_dir, dtype="bfloat16", seq_len=16)
    sizes = compute_module_sizes(meta, dtype=torch.bfloat16)
    assert graph.total_bytes == sizes[""]
    # one Llama layer by hand: q,o 64x64; k,v 64x32 (2 KV heads x 16); gate,up,down 64x128; 2 norms of 64
    layer_params = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    node = graph.nodes[graph.index("model.layers.2")]
    assert node.weight_bytes == layer_params * 2  # bfloat16


def test_hidden_state_edges_have_batch_x_seq_x_hidden_bytes(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float16", batch_size=3, prompt_len=10, max_new_tokens=4)
    edge = next(e for e in graph.edges if e.producer == "model.layers.1")
    assert edge.consumers == ("model.layers.2",)
    assert edge.shape == (3, 10, 64)
    assert edge.size_bytes == 3 * 10 * 64 * 2  # fp16
    # the rotary (cos, sin) tensors reach every decoder layer: one tensor, many consumers
    rotary = [e for e in graph.edges if e.producer == "model.rotary_emb"]
    assert rotary and all(len(e.consumers) == 4 for e in rotary)


def test_t5_encoder_output_feeds_every_decoder_block(tiny_t5_dir):
    graph, _ = planner.trace(tiny_t5_dir, seq_len=8)
    enc_out = [e for e in graph.edges if e.producer == "encoder.final_layer_norm"]
    assert len(enc_out) == 1
    assert set(enc_out[0].consumers) == {"decoder.block.0", "decoder.block.1"}
    order = [n.name for n in graph.nodes]
    assert order.index("encoder.block.1") < order.index("decoder.block.0")
    # shared, encoder/decoder embed_tokens and lm_head hold one tied tensor: one group
    assert set(graph.tied_groups[0]) == {"shared", "encoder.embed_tokens", "decoder.embed_tokens", "lm_head"}


def test_tied_lm_head_is_grouped_with_the_embedding_and_counted_once(tiny_tied_llama_dir):
    graph, meta = planner.trace(tiny_tied_llama_dir, dtype="float32", seq_len=8)
    assert meta.lm_head.weight is meta.model.embed_tokens.weight
    assert graph.tied_groups == (("model.embed_tokens", "lm_head"),)
    assert graph.nodes[graph.index("lm_head")].size_bytes == 0
    assert graph.nodes[graph.index("model.embed_tokens")].weight_bytes == 256 * 64 * 4


def test_graph_json_round_trip_plans_identically(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, seq_len=16)
    again = LayerGraph.from_json(graph.to_json())
    assert again == graph
    # Room for half the weights plus the KV cache and working sets: the model splits over both.
    caps = {0: graph.total_bytes // 2 + 65536, 1: graph.total_bytes // 2 + 65536}
    first = planner.plan(graph, max_memory=caps, reserve=0)
    assert set(first.device_map.values()) == {0, 1}
    assert planner.plan(again, max_memory=caps, reserve=0).device_map == first.device_map


def test_user_module_is_not_modified(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    plan = planner.plan(model, max_memory={"cpu": "1GB"})
    assert plan.device_map == {"": "cpu"}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_failed_meta_forward_falls_back_and_says_so():
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_key_value_heads=2)
            self.a = torch.nn.Linear(8, 8)
            self.b = torch.nn.Linear(8, 8)

        def forward(self, **kwargs):  # noqa: ANN003
            raise RuntimeError("no meta kernel for this op")

    with torch.device("meta"):
        module = Broken()
    graph, _ = planner.trace(module, prompt_len=4)
    assert [n.name for n in graph.nodes] == ["a", "b"]
    assert "meta forward failed" in graph.notes[0]
    # the two Linear leaves' FLOPs come from the config (2 x parameters x tokens); nothing else is said
    assert graph.notes[1:] == ("FLOPs of 2 nodes estimated from the config (planner/estimate.py): a, b",)
    assert graph.edges[0].size_bytes == 1 * 4 * 8 * 4  # batch x prompt_len x hidden x fp32


def test_minilm_meta_build_matches_the_real_checkpoint(minilm_dir):
    from pathlib import Path

    from safetensors import safe_open

    # oracle: the tensors stored in the published model.safetensors
    with safe_open(str(Path(minilm_dir) / "model.safetensors"), framework="pt") as fh:
        stored = {k: fh.get_slice(k).get_shape() for k in fh.keys()}
    model = build_meta_model(AutoConfig.from_pretrained(minilm_dir))
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == sum(
        torch.Size(shape).numel() for k, shape in stored.items() if k in params
    )
    assert set(params) <= set(stored)
