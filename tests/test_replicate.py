"""Tracing one layer per signature (planner/model/replicate.py): the graph is the full trace's.

The oracle is ``trace_model(..., replicate=False)``, which traces every layer. Each test also checks
that the replicated path ran and traced fewer layers than the model has, so that an equality cannot
come from a silent fall-back to the full trace.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoConfig, PretrainedConfig

from layerplan.planner.graph import LayerGraph
from layerplan.planner.model import trace
from layerplan.planner.model.catalog import CATALOG, catalog_names
from layerplan.planner.model.inputs import image_tokens_per_image
from layerplan.planner.model.meta import build_meta_model
from layerplan.planner.model.replicate import plan_replication
from layerplan.planner.model.workload import Workload
from layerplan.planner.spec.sizes import parse_dtype

# One catalog entry per family, shrunk to 6 layers (hidden 32, 4 heads, vocab 256): the published
# switches (Gemma-2's softcapping and sliding window, Falcon's new decoder architecture, T5's relu
# feed-forward) stay as published.
_TEXT = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
         "num_key_value_heads": 2, "num_hidden_layers": 6, "vocab_size": 256, "pad_token_id": 0}
_TINY: dict[str, dict[str, object]] = {
    "bloom-176b": {"n_embed": 32, "n_layer": 6, "num_attention_heads": 4},
    "falcon-40b": {"hidden_size": 32, "num_attention_heads": 4, "num_kv_heads": 2, "num_hidden_layers": 6},
    "gemma-2-9b": {"head_dim": 8, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "num_hidden_layers": 6, "query_pre_attn_scalar": 8,
                   "sliding_window": 16},
    "gpt2": {"n_embd": 32, "n_head": 4, "n_layer": 6, "n_positions": 128, "n_ctx": 128},
    "gpt-oss-20b": {"hidden_size": 32, "intermediate_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "head_dim": 8, "num_hidden_layers": 6, "num_local_experts": 4, "num_experts_per_tok": 2,
                    "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"] * 3},
    "llama-2-70b": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "num_hidden_layers": 6},
    "mistral-7b": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "num_hidden_layers": 6, "sliding_window": 16},
    "mixtral-8x7b": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "num_hidden_layers": 6, "num_local_experts": 4},
    "opt-13b": {"ffn_dim": 64, "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 6,
                "word_embed_proj_dim": 32, "max_position_embeddings": 128},
    "phi-3-mini": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                   "num_key_value_heads": 4, "num_hidden_layers": 6, "sliding_window": 16},
    "qwen2.5-7b": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "num_hidden_layers": 6, "max_window_layers": 6},
    "qwen3-8b": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "head_dim": 8, "num_hidden_layers": 6, "max_window_layers": 6},
    "qwen3-30b-a3b": {"hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 4,
                      "num_experts_per_tok": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                      "num_hidden_layers": 6, "max_window_layers": 6},
    "t5-large": {"d_ff": 64, "d_kv": 8, "d_model": 32, "num_heads": 4, "num_layers": 6,
                 "num_decoder_layers": 6, "vocab_size": 128},
    # multimodal and speech: both stacks (vision tower or audio encoder, and text decoder) shrunk
    "llava-1.5-7b": {"image_token_index": 255, "text_config": _TEXT, "vision_config": {
        "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
        "num_hidden_layers": 6, "image_size": 32, "patch_size": 16}},
    # LLaVA-NeXT: pinpoints scaled with the tower (32 px tiles): a 672 x 672 image is a 1 x 2 grid, 10 tokens
    "llava-v1.6-mistral-7b": {"image_token_index": 255, "image_grid_pinpoints": [[32, 64], [64, 32]],
                              "text_config": {**_TEXT, "model_type": "mistral", "sliding_window": None},
                              "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32,
                                                "intermediate_size": 64, "num_attention_heads": 4,
                                                "num_hidden_layers": 6, "image_size": 32, "patch_size": 16}},
    # Qwen2-VL (a flat file: text fields at the top): 112 px patches, so a 672 x 672 image is 9 tokens
    "qwen2-vl-7b": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "num_hidden_layers": 6, "max_window_layers": 6, "image_token_id": 255, "video_token_id": 254,
                    "vision_start_token_id": 253, "vision_end_token_id": 252, "vision_token_id": 251,
                    "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]},
                    "vision_config": {"depth": 6, "embed_dim": 32, "hidden_size": 32, "num_heads": 4,
                                      "patch_size": 112, "spatial_merge_size": 2, "temporal_patch_size": 2}},
    "gemma-3-27b": {"image_token_index": 255, "boi_token_index": 253, "eoi_token_index": 254, "mm_tokens_per_image": 4,
                    "text_config": {**_TEXT, "model_type": "gemma3_text", "head_dim": 8, "query_pre_attn_scalar": 8,
                                    "sliding_window": 16},
                    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                                      "num_attention_heads": 4, "num_hidden_layers": 6, "image_size": 64,
                                      "patch_size": 16, "vision_use_head": False}},
    "whisper-large-v3": {"d_model": 32, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 4,
                         "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                         "num_mel_bins": 16, "max_source_positions": 30, "max_target_positions": 64,
                         "decoder_start_token_id": 1},
    "deepseek-v3": {"hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16, "num_hidden_layers": 6,
                    "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
                    "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 24,
                    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8, "quantization_config": None},
}
_STACKS = {"t5-large": 2, "llava-1.5-7b": 2, "llava-v1.6-mistral-7b": 2, "qwen2-vl-7b": 2, "gemma-3-27b": 2,
           "whisper-large-v3": 2}  # others: 1
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")  # published ids exceed the tiny vocabulary


def _tiny_config(name: str, **changes: object) -> PretrainedConfig:
    fields = {k: 0 if k in _TOKEN_IDS else v for k, v in CATALOG[name].config.items()}
    fields = {**fields, "vocab_size": 256, "pad_token_id": 0, **_TINY[name], **changes}
    fields = {k: v for k, v in fields.items() if v is not None}
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def _workload(model: torch.nn.Module, dtype: torch.dtype) -> Workload:
    """32 tokens; one image, whose placeholders are among them, for a vision-language model."""
    workload = Workload.from_lengths(model_context=None, seq_len=32, dtype=dtype)
    per_image = image_tokens_per_image(model, dtype)
    if per_image is None:
        return workload
    return dataclasses.replace(workload, images_per_prompt=1, image_tokens=per_image)


def _replicated_trace(model: torch.nn.Module, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch):
    """``(replication, graph)`` of ``trace_model``; asserts that it took the replicated path (a spy
    on ``_measure_replicated``, which returns None when it falls back to the full trace)."""
    workload = _workload(model, dtype)
    specs = trace._find_nodes(model, trace.no_split_classes(model))
    replication = plan_replication(model, {s.name for s in specs if s.kind == "block"})
    assert replication is not None and replication.num_traced < replication.num_layers
    results = []
    measure = trace._measure_replicated

    def spy(*args):
        results.append(measure(*args))
        return results[-1]

    monkeypatch.setattr(trace, "_measure_replicated", spy)
    graph = trace.trace_model(model, name="tiny", workload=workload)
    monkeypatch.undo()
    assert len(results) == 1 and results[0] is not None  # replicated, no fall-back
    return replication, graph


def _full_trace(model: torch.nn.Module, dtype: torch.dtype) -> LayerGraph:
    """The oracle: every layer traced."""
    return trace.trace_model(model, name="tiny", workload=_workload(model, dtype), replicate=False)


def test_every_traced_catalog_family_is_covered():
    # state-space models are not traced at all (their recurrent scans): nothing to replicate
    families = {CATALOG[name].model_type for name in catalog_names()} - {"mamba"}
    assert families == {CATALOG[name].model_type for name in _TINY}


@pytest.mark.parametrize("name", sorted(_TINY))
def test_replicated_trace_equals_the_full_trace(name, monkeypatch):
    dtype = parse_dtype(CATALOG[name].config.get("dtype") or "float32")
    model = build_meta_model(_tiny_config(name)).to(dtype)
    replication, replicated = _replicated_trace(model, dtype, monkeypatch)
    assert replicated.to_dict() == _full_trace(model, dtype).to_dict()
    # 6 layers: the first and the last two are traced on their own, layers 1-3 share one (Gemma-2
    # and gpt-oss alternate sliding and global layers: 1 and 3 share, 2 is a sliding one); T5: in both stacks
    expected = (0, 1, 2, 1, 4, 5) if model.config.model_type in ("gemma2", "gpt_oss") else (0, 1, 1, 1, 4, 5)
    assert [s.representative for s in replication.stacks] == [expected] * _STACKS.get(name, 1)
    if model.config.model_type in ("llava", "llava_next", "qwen2_vl", "gemma3"):  # traced with its image: the tower ran
        assert replicated.workload.images_per_prompt == 1
        tower = [n for n in replicated.nodes if "vision_tower" in n.name or ".visual." in n.name]
        assert tower and all(n.executed for n in tower)


def test_layers_that_differ_get_their_own_representatives(monkeypatch):
    # Qwen2 with sliding windows from layer 3 on: layer_types = 3 x full, then 5 x sliding
    config = _tiny_config("qwen2.5-7b", num_hidden_layers=8, use_sliding_window=True, max_window_layers=3,
                          sliding_window=16)
    model = build_meta_model(config)
    replication, replicated = _replicated_trace(model, torch.float32, monkeypatch)
    assert replicated == _full_trace(model, torch.float32)
    (stack,) = replication.stacks
    assert stack.representative == (0, 1, 1, 3, 3, 3, 6, 7)
    # the sliding layers end with a 16-token window of the 32-token context, but hold the storage of
    # the 24-token prompt behind their window's view until the first decode step: 3/4 of the KV cache
    kv = {n.name: n.kv_bytes for n in replicated.nodes}
    assert kv["model.layers.4"] * 4 == kv["model.layers.2"] * 3 > 0


def test_layers_of_different_shapes_get_their_own_representatives(monkeypatch):
    # DeepSeek-V3: the first 2 layers have a dense MLP, the others routed experts (other parameters)
    config = AutoConfig.for_model(
        "deepseek_v3", architectures=["DeepseekV3ForCausalLM"], vocab_size=256, hidden_size=32,
        intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=7, num_attention_heads=4,
        num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
        n_shared_experts=1, first_k_dense_replace=2, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=8, pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )
    model = build_meta_model(config).to(torch.bfloat16)
    replication, replicated = _replicated_trace(model, torch.bfloat16, monkeypatch)
    assert replicated == _full_trace(model, torch.bfloat16)
    (stack,) = replication.stacks
    assert stack.representative == (0, 1, 2, 2, 2, 5, 6)
    flops = {n.name: n.prefill_flops for n in replicated.nodes}
    assert flops["model.layers.1"] != flops["model.layers.3"]


def test_user_model_is_unchanged(monkeypatch):
    model = build_meta_model(_tiny_config("gemma-2-9b"))
    layers = model.model.layers
    children = list(layers)
    layer_types = list(model.config.layer_types)
    _replicated_trace(model, torch.float32, monkeypatch)
    assert model.model.layers is layers and list(layers) == children and list(layers._modules) == [
        str(i) for i in range(6)
    ]
    assert model.config.layer_types == layer_types
    assert [layer.self_attn.layer_idx for layer in layers] == list(range(6))
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_short_stacks_are_traced_whole():
    model = build_meta_model(_tiny_config("llama-2-70b", num_hidden_layers=4))
    specs = trace._find_nodes(model, trace.no_split_classes(model))
    assert plan_replication(model, {s.name for s in specs if s.kind == "block"}) is None


def _tiny_qwen2_5_vl() -> PretrainedConfig:
    """Qwen2.5-VL shrunk: 6 text layers, 8 vision blocks with full attention in blocks 3 and 7 (the
    published 32 have it in 7, 15, 23 and 31, transformers' default ``fullatt_block_indexes``), 112 px
    patches merged 2 x 2 and 448 px windows, so the default 672 x 672 image is 6 x 6 = 36 patches (9
    tokens) in windows of 2 x 2 merged tokens over the 3 x 3 grid: 16, 8, 8 and 4 patches."""
    return AutoConfig.for_model(
        "qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"], image_token_id=255,
        video_token_id=254, vision_start_token_id=253, vision_end_token_id=252,
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "num_hidden_layers": 6, "max_window_layers": 6, "vocab_size": 256, "pad_token_id": 0,
                     "bos_token_id": 0, "eos_token_id": 0,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]}},
        vision_config={"depth": 8, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "out_hidden_size": 32,
                       "patch_size": 112, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 448,
                       "fullatt_block_indexes": [3, 7]},
    )


def test_blocks_named_in_an_index_list_get_their_own_representatives(monkeypatch):
    # Qwen2.5-VL's vision blocks differ only in the tower's forward: `if layer_num in
    # self.fullatt_block_indexes` hands a block the whole image's bounds (cu_seqlens), else the windows'
    # (transformers modeling_qwen2_5_vl.py, Qwen2_5_VisionTransformerPretrainedModel.forward)
    model = build_meta_model(_tiny_qwen2_5_vl())
    replication, replicated = _replicated_trace(model, torch.float32, monkeypatch)
    assert replicated.to_dict() == _full_trace(model, torch.float32).to_dict()
    vision, text = replication.stacks
    assert (vision.path, vision.representative) == ("model.visual.blocks", (0, 1, 1, 3, 1, 1, 6, 7))
    assert text.representative == (0, 1, 1, 1, 4, 5)
    assert model.model.visual.fullatt_block_indexes == [3, 7]  # renumbered on the reduced copy only
    # full attention over 36 patches against windows of 16, 8, 8 and 4: the scores (Q K^T) and their
    # product with V, 2 FLOPs per multiply-add over hidden size 32, per query-key pair
    flops = {n.name: n.prefill_flops for n in replicated.nodes}
    extra = 2 * 2 * 32 * (36**2 - (16**2 + 8**2 + 8**2 + 4**2))  # = 114,688
    assert flops["model.visual.blocks.3"] - flops["model.visual.blocks.2"] == extra
    assert flops["model.visual.blocks.7"] - flops["model.visual.blocks.6"] == extra
