"""FLOPs per node (prefill and one decode step) and edge sizes in decode.

Oracle: real CPU forwards counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, and
hand arithmetic from the config. The real forwards use *eager* attention: on CPU, SDPA runs
``aten._scaled_dot_product_flash_attention_for_cpu``, which torch 2.13's flop registry lacks, so
FlopCounterMode counts 0 for attention there (9,502,720 instead of 10,027,008 FLOPs for the tiny Llama
below); eager attention's two matmuls are the two batched matmuls ``sdpa_flop_count`` counts.
"""

from __future__ import annotations

import json

import pytest
import torch
from layerplan import planner
from layerplan.planner.graph import LayerGraph
from layerplan.planner.model.meta import build_meta_model
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, AutoModelForCausalLM, LlamaConfig, MixtralConfig, T5Config
from transformers.cache_utils import DynamicCache


def _counted(model: torch.nn.Module, run) -> tuple[int, dict[str, int]]:  # noqa: ANN001
    """Total FLOPs of ``run()`` and FLOPs per module name, from FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    root = type(model).__name__
    per_module = {name.removeprefix(root).removeprefix("."): sum(ops.values())
                  for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def _assert_nodes_match(graph: LayerGraph, field: str, per_module: dict[str, int]) -> None:
    for node in graph.nodes:
        if node.kind != "parameter":
            assert getattr(node, field) == per_module.get(node.name, 0), (node.name, field)


def test_tiny_llama_flops_match_flop_counter_mode_on_real_forwards(tiny_llama_dir):
    batch, prompt, new = 2, 16, 8
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", batch_size=batch, prompt_len=prompt, max_new_tokens=new)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()

    # prefill: the inputs measure.py feeds (no cache, logits for the last position)
    ids = torch.randint(0, 256, (batch, prompt))
    total, per_module = _counted(model, lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1))
    assert total == 10_027_008  # 4 layers x 2,490,368 (hand-computed below) + lm_head 2 x 2 x 64 x 256
    assert sum(n.prefill_flops for n in graph.nodes) == total
    _assert_nodes_match(graph, "prefill_flops", per_module)

    # one decode step against a real cache of context - 1 tokens
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 256, (batch, prompt + new - 1)), past_key_values=cache, use_cache=True)
    step = torch.randint(0, 256, (batch, 1))
    total, per_module = _counted(model, lambda: model(input_ids=step, past_key_values=cache, use_cache=True,
                                                      logits_to_keep=1))
    assert sum(n.decode_flops for n in graph.nodes) == total
    _assert_nodes_match(graph, "decode_flops", per_module)


def test_sdpa_and_eager_traces_count_the_same_flops(tiny_llama_dir):
    sdpa, _ = planner.trace(tiny_llama_dir, dtype="float32", prompt_len=12, max_new_tokens=4)
    eager, _ = planner.trace(tiny_llama_dir, dtype="float32", prompt_len=12, max_new_tokens=4,
                             attn_implementation="eager")
    assert [(n.prefill_flops, n.decode_flops) for n in sdpa.nodes] == \
        [(n.prefill_flops, n.decode_flops) for n in eager.nodes]


def _llama_layer(graph: LayerGraph) -> planner.graph.GraphNode:
    return graph.nodes[graph.index("model.layers.1")]


def test_decoder_layer_flops_by_hand():
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    heads, head_dim = 4, 16
    # matmul weights of one layer: q,o 64x64; k,v 64x32 (2 KV heads x 16); gate,up,down 64x128
    matmul_params = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128  # 36,864
    norm_params = 2 * 64  # the two RMSNorm weights: elementwise, no FLOPs counted
    prompt, new = 16, 8

    def expected(batch: int, q_tokens: int, kv_tokens: int) -> int:
        attention = 2 * 2 * batch * heads * head_dim * q_tokens * kv_tokens  # Q K^T and A V
        return 2 * matmul_params * batch * q_tokens + attention

    by_batch = {}
    for batch in (1, 3):
        graph, _ = planner.trace(build_meta_model(cfg), dtype="float32", batch_size=batch, prompt_len=prompt,
                                 max_new_tokens=new)
        layer = _llama_layer(graph)
        # prefill: 2 x 36,864 x 16 tokens x batch + 4 x batch x 4 x 16 x 16 x 16
        assert layer.prefill_flops == expected(batch, prompt, prompt)
        # decode: one token per sequence against the full context of 24 tokens
        assert layer.decode_flops == expected(batch, 1, prompt + new)
        by_batch[batch] = layer
        # Kaplan et al.'s 2N per token, N = all the layer's parameters, is off by less than the attention term
        attention = 2 * 2 * batch * heads * head_dim * prompt * prompt
        all_params = matmul_params + norm_params
        assert abs(layer.prefill_flops - 2 * all_params * batch * prompt) <= attention
    assert by_batch[3].decode_flops == 3 * by_batch[1].decode_flops
    assert by_batch[3].prefill_flops == 3 * by_batch[1].prefill_flops
    assert by_batch[1].decode_flops * 10 < by_batch[1].prefill_flops


def test_mixtral_counts_the_routed_experts_only():
    # The experts run as one torch._grouped_mm over batch x tokens x top_k rows (no entry in torch's
    # flop registry; measure.py counts it as one mm).
    cfg = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
    model = build_meta_model(cfg).to(torch.bfloat16)  # grouped_mm takes bfloat16 only
    graph, _ = planner.trace(model, dtype="bfloat16", batch_size=2, prompt_len=8, max_new_tokens=4)
    # per token: q,o 32x32; k,v 32x16; router 32x4; 2 of the 4 experts, each gate/up/down 32x48
    active = 2 * 32 * 32 + 2 * 32 * 16 + 32 * 4 + 2 * 3 * 32 * 48
    layer = graph.nodes[graph.index("model.layers.0")]
    experts = graph.nodes[graph.index("model.layers.0.mlp.experts")]  # its own node (planner/model/experts.py)
    assert layer.prefill_flops + experts.prefill_flops == 2 * active * 2 * 8 + 2 * 2 * 2 * 4 * 8 * 8 * 8
    assert layer.decode_flops + experts.decode_flops == 2 * active * 2 + 2 * 2 * 2 * 4 * 8 * 1 * 12
    assert experts.prefill_flops == 2 * (2 * 3 * 32 * 48) * 2 * 8
    assert [n.split(":")[0] for n in graph.notes] == ["MoE experts"]


def test_hidden_state_edge_carries_one_token_in_decode(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float16", batch_size=3, prompt_len=10, max_new_tokens=4)
    edge = next(e for e in graph.edges if e.producer == "model.layers.1")
    assert edge.size_bytes == 3 * 10 * 64 * 2
    assert edge.decode_size_bytes == 3 * 1 * 64 * 2  # batch x 1 token x hidden x fp16
    head = next(e for e in graph.edges if e.consumers == ("lm_head",))
    assert head.decode_size_bytes == head.size_bytes == 3 * 1 * 64 * 2  # logits_to_keep=1 in both phases


def test_prefill_phase_has_no_decode_flops_or_decode_edges(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", prompt_len=8, max_new_tokens=4, phase="prefill")
    assert all(n.decode_flops == 0 for n in graph.nodes) and any(n.prefill_flops for n in graph.nodes)
    assert all(e.decode_size_bytes == 0 for e in graph.edges)


def test_t5_decode_edges_are_measured_not_derived():
    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                   decoder_start_token_id=0)
    graph, _ = planner.trace(build_meta_model(cfg), dtype="float32", batch_size=2, prompt_len=12, max_new_tokens=4)
    # every decode step hands the whole encoder output (2 x 12 x 32 fp32) to the decoder blocks
    enc_out = next(e for e in graph.edges if e.producer == "encoder.final_layer_norm")
    assert enc_out.decode_size_bytes == enc_out.size_bytes == 2 * 12 * 32 * 4
    # the encoder does not run in decode: nothing crosses between its blocks
    assert all(e.decode_size_bytes == 0 for e in graph.edges if e.consumers[0].startswith("encoder."))
    # ... nor does it compute
    assert all(n.decode_flops == 0 for n in graph.nodes if n.name.startswith("encoder."))
    hidden = next(e for e in graph.edges if e.producer == "decoder.block.1")
    assert hidden.decode_size_bytes == 2 * 1 * 32 * 4


def test_minilm_encoder_has_no_decode_and_matches_flop_counter_mode(minilm_dir):
    graph, _ = planner.trace(minilm_dir, dtype="float32", batch_size=2, seq_len=64)
    assert all(n.decode_flops == 0 for n in graph.nodes)
    assert all(e.decode_size_bytes == 0 for e in graph.edges)
    model = AutoModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    ids = torch.randint(0, 1000, (2, 64))
    total, per_module = _counted(model, lambda: model(input_ids=ids))
    assert total > 0
    assert sum(n.prefill_flops for n in graph.nodes) == total
    _assert_nodes_match(graph, "prefill_flops", per_module)


def test_json_round_trip_keeps_flops_and_decode_sizes(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", prompt_len=8, max_new_tokens=4)
    data = json.loads(graph.to_json())
    assert data["format_version"] == 7
    assert data["workload"]["images_per_prompt"] == 0
    assert data["nodes"][2]["prefill_flops"] > 0 and data["nodes"][2]["decode_flops"] > 0
    assert all("decode_size_bytes" in e for e in data["edges"])
    assert LayerGraph.from_json(graph.to_json()) == graph


def _as_version_2(graph: LayerGraph) -> dict:
    data = json.loads(graph.to_json())
    data["format_version"] = 2
    for n in data["nodes"]:
        del n["prefill_flops"], n["decode_flops"]
    for e in data["edges"]:
        del e["decode_size_bytes"]
    return data


def test_version_2_graph_loads_with_derived_decode_sizes_and_a_note(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", batch_size=2, prompt_len=8, max_new_tokens=4)
    old = LayerGraph.from_json(json.dumps(_as_version_2(graph)))
    assert all(n.prefill_flops == n.decode_flops == 0 for n in old.nodes)
    assert any("predates FLOP counting" in note for note in old.notes)
    hidden = next(e for e in old.edges if e.producer == "model.layers.0")
    assert hidden.shape == (2, 8, 64) and hidden.decode_size_bytes == 2 * 1 * 64 * 4
    head = next(e for e in old.edges if e.consumers == ("lm_head",))
    assert head.decode_size_bytes == head.size_bytes  # (2, 1, 64): no prompt_len dimension
    assert [e.decode_size_bytes for e in old.edges] == [e.decode_size_bytes for e in graph.edges]


def test_a_version_5_graph_without_image_fields_loads_as_text_only(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", prompt_len=8, max_new_tokens=4)
    data = json.loads(graph.to_json())
    data["format_version"] = 5
    del data["workload"]["images_per_prompt"], data["workload"]["image_tokens"]
    assert LayerGraph.from_json(json.dumps(data)) == graph


@pytest.mark.parametrize("version", [1, 8, "7"])
def test_unknown_graph_versions_are_rejected(tiny_llama_dir, version):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", prompt_len=4, max_new_tokens=2)
    data = json.loads(graph.to_json())
    data["format_version"] = version
    with pytest.raises(planner.InvalidSpecError, match="format_version"):
        LayerGraph.from_json(json.dumps(data))


def test_version_3_edge_without_decode_size_is_rejected(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, dtype="float32", prompt_len=4, max_new_tokens=2)
    data = json.loads(graph.to_json())
    del data["edges"][0]["decode_size_bytes"]
    with pytest.raises(planner.InvalidSpecError, match="not a layerplan graph"):
        LayerGraph.from_json(json.dumps(data))


def test_failed_forward_estimates_flops_from_the_config():
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.layers = torch.nn.ModuleList([torch.nn.Linear(64, 64) for _ in range(2)])

        def can_generate(self) -> bool:
            return True

        def forward(self, **kwargs):  # noqa: ANN003
            raise RuntimeError("no meta kernel")

    with torch.device("meta"):
        module = Broken()
    graph, _ = planner.trace(module, dtype="float32", prompt_len=10, max_new_tokens=6,
                             no_split_module_classes=("Linear",))
    params = 64 * 64 + 64  # one Linear(64, 64) block, bias included
    # 2 x params x tokens (Kaplan et al. 2020) + 2 x 2 x batch x 4 heads x 16 head_dim x q x kv
    assert [n.prefill_flops for n in graph.nodes] == [2 * params * 10 + 4 * 4 * 16 * 10 * 10] * 2
    assert [n.decode_flops for n in graph.nodes] == [2 * params * 1 + 4 * 4 * 16 * 1 * 16] * 2
    assert all(n.estimated for n in graph.nodes)
    assert graph.edges[0].decode_size_bytes == 1 * 1 * 64 * 4  # batch x 1 token x hidden x fp32
