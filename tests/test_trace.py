"""Tracing on the meta device: node set, execution order, bytes, edges, tied groups, JSON round trip."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from accelerate.utils import compute_module_sizes
from layerplan import planner
from layerplan.planner.graph import LayerGraph
from layerplan.planner.model.meta import build_meta_model
from torch.utils._pytree import tree_flatten
from transformers import AutoConfig, LlamaConfig, T5Config, T5ForConditionalGeneration


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


def _tensors(value) -> list[torch.Tensor]:  # noqa: ANN001
    """Tensors in a module call's arguments or output, looking one level into transformers objects."""
    found = []
    for leaf in tree_flatten(value)[0]:
        if isinstance(leaf, torch.Tensor):
            found.append(leaf)
        elif hasattr(leaf, "__dict__") and type(leaf).__module__.startswith("transformers"):
            found += [v for v in vars(leaf).values() if isinstance(v, torch.Tensor)]
    return found


def _handed_over(model: torch.nn.Module, nodes: list[str], run) -> dict[str, list[list[tuple]]]:  # noqa: ANN001
    """Per node and per call, ``(producer, shape, bytes)`` of each tensor it receives that is, as
    it is, the output of another node (same storage and shape): a real eager run, hooks only."""
    modules = dict(model.named_modules())
    made: dict[tuple, str] = {}
    calls: dict[str, list[list[tuple]]] = defaultdict(list)
    handles = []
    for name in nodes:
        def pre(module, args, kwargs, name=name):  # noqa: ANN001, ANN202
            got = [(made[t.data_ptr(), t.shape], tuple(t.shape), t.nbytes) for t in _tensors((args, kwargs))
                   if made.get((t.data_ptr(), t.shape), name) != name]
            calls[name].append(sorted(got))

        def post(module, args, kwargs, output, name=name):  # noqa: ANN001, ANN202
            made.update({(t.data_ptr(), t.shape): name for t in _tensors(output)})

        handles += [modules[name].register_forward_pre_hook(pre, with_kwargs=True),
                    modules[name].register_forward_hook(post, with_kwargs=True)]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def test_t5_decoder_edges_match_what_generate_hands_the_decoder_blocks():
    # Oracle: a real random-weight T5 on CPU runs generate(); hooks record, for each decoder block,
    # the tensors it receives from other nodes in the prefill call (the encoder over the 10-token
    # prompt, the decoder over its start token) and in the last decode step (4 decoder tokens).
    # Before the fix the graph sized the decoder's hidden states and position biases with the prompt.
    torch.manual_seed(0)
    config = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=3,
                      num_heads=4, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    batch, prompt, new = 2, 10, 4
    graph, _ = planner.trace(model, dtype="float32", batch_size=batch, prompt_len=prompt, max_new_tokens=new)
    input_ids = torch.randint(1, config.vocab_size, (batch, prompt))
    calls = _handed_over(model, [n.name for n in graph.nodes], lambda: model.generate(
        input_ids, max_new_tokens=new, min_new_tokens=new, do_sample=False))
    blocks = [f"decoder.block.{i}" for i in range(3)]
    for block in blocks:
        assert len(calls[block]) == new  # prefill, then new - 1 decode steps
        edges = [e for e in graph.edges if block in e.consumers]
        assert sorted((e.producer, e.shape, e.size_bytes) for e in edges) == calls[block][0]
        assert sorted((e.producer, e.decode_size_bytes) for e in edges) == [(p, b) for p, _, b in calls[block][-1]]
    # the hidden states between decoder blocks: batch x 1 token x d_model x fp32
    hidden = next(e for e in graph.edges if e.producer == "decoder.block.0" and e.shape[-1] == 32)
    assert hidden.size_bytes == 2 * 1 * 32 * 4
    # the encoder output reaches every decoder block with all prompt tokens
    enc_out = next(e for e in graph.edges if e.producer == "encoder.final_layer_norm")
    assert set(blocks) <= set(enc_out.consumers) and enc_out.shape == (2, 10, 32)


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


def test_failed_meta_forward_sizes_decoder_edges_with_one_token():
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = T5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=2,
                                   num_decoder_layers=2, num_heads=2)
            self.encoder = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)])
            self.decoder = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)])

        def can_generate(self) -> bool:
            return True

        def forward(self, **kwargs):  # noqa: ANN003
            raise RuntimeError("no meta kernel for this op")

    with torch.device("meta"):
        module = Broken()
    graph, _ = planner.trace(module, dtype="float32", batch_size=3, prompt_len=4, max_new_tokens=2,
                             no_split_module_classes=("Linear",))
    assert "meta forward failed" in graph.notes[0]
    # registration order; the encoder's tensors hold the 4 prompt tokens (its last one is what the
    # decoder reads), the decoder's the 1 decoder_start token: batch x tokens x hidden x fp32
    assert [(e.producer, e.consumers, e.size_bytes) for e in graph.edges] == [
        ("encoder.0", ("encoder.1",), 3 * 4 * 8 * 4),
        ("encoder.1", ("decoder.0",), 3 * 4 * 8 * 4),
        ("decoder.0", ("decoder.1",), 3 * 1 * 8 * 4),
    ]


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


def test_the_before_kv_cache_mark_round_trips_and_old_graphs_read_without_it(tiny_t5_dir):
    import json

    graph, _ = planner.trace(tiny_t5_dir, prompt_len=8, max_new_tokens=4, dtype="float32")
    assert any(n.before_kv_cache for n in graph.nodes) and not all(n.before_kv_cache for n in graph.nodes)
    assert LayerGraph.from_json(graph.to_json()) == graph
    # a graph written before the mark existed (same format, no field) reads as unmarked: its
    # encoder is charged beside the KV cache, as it was planned then
    data = json.loads(graph.to_json())
    for node in data["nodes"]:
        del node["before_kv_cache"]
    old = LayerGraph.from_dict(data)
    assert not any(n.before_kv_cache for n in old.nodes)
    assert [n.work_bytes for n in old.nodes] == [n.work_bytes for n in graph.nodes]
    data["nodes"][1]["before_kv_cache"] = 1
    with pytest.raises(planner.InvalidSpecError, match="node 1 field 'before_kv_cache' = 1 is not a bool"):
        LayerGraph.from_dict(data)
