"""State-space and linear-attention layers: a fixed per-sequence state, sized from the config, checked
against the state transformers' own cache holds after a real forward; plans that load."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from layerplan import planner

CONFIGS = {
    "mamba": {"hidden_size": 64, "num_hidden_layers": 3, "vocab_size": 256, "state_size": 16},
    "mamba2": {"hidden_size": 64, "num_hidden_layers": 3, "vocab_size": 256, "state_size": 16, "num_heads": 8,
               "head_dim": 16, "n_groups": 1, "expand": 2},
    "qwen3_next": {"hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 256, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "moe_intermediate_size": 32,
                   "num_experts": 4, "num_experts_per_tok": 2, "shared_expert_intermediate_size": 32,
                   "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 16,
                   "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4, "max_position_embeddings": 64},
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def recurrent_checkpoint(request, tmp_path_factory) -> tuple[str, str]:
    """(model type, folder) of a tiny random-weight recurrent model saved with save_pretrained."""
    config = AutoConfig.for_model(request.param, **CONFIGS[request.param])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return request.param, str(path)


def _cache_bytes(cache) -> int:
    """Bytes of every tensor transformers' cache holds: conv and recurrent states, keys and values."""
    total = 0
    for layer in cache.layers:
        for attr in ("conv_states", "recurrent_states", "keys", "values"):
            value = getattr(layer, attr, None)
            tensors = value.values() if isinstance(value, dict) else [value] if isinstance(value, torch.Tensor) else value or []
            total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_and_kv_bytes_match_the_cache_of_a_real_forward(recurrent_checkpoint, dtype):
    model_type, path = recurrent_checkpoint
    batch, context = 2, 16
    graph, _ = planner.trace(path, dtype=str(dtype).removeprefix("torch."), batch_size=batch, seq_len=context,
                             prompt_len=context - 4, max_new_tokens=4)
    assert any("recurrent" in note for note in graph.notes)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    with torch.no_grad():
        out = model(torch.arange(1, context + 1).repeat(batch, 1), use_cache=True)
    assert sum(n.kv_bytes for n in graph.nodes) == _cache_bytes(out.past_key_values), model_type


def test_recurrent_state_does_not_grow_with_the_context(recurrent_checkpoint):
    model_type, path = recurrent_checkpoint
    short, _ = planner.trace(path, seq_len=32)
    long, _ = planner.trace(path, seq_len=64)
    config = AutoConfig.from_pretrained(path)
    attention_layers = [t for t in getattr(config, "layer_types", None) or [] if t == "full_attention"]
    per_token = 2 * CONFIGS[model_type].get("num_key_value_heads", 0) * CONFIGS[model_type].get("head_dim", 0) * 4
    growth = sum(n.kv_bytes for n in long.nodes) - sum(n.kv_bytes for n in short.nodes)
    assert growth == len(attention_layers) * per_token * (64 - 32)  # only attention layers grow (float32)
    assert sum(n.kv_bytes for n in short.nodes) > 0


def test_recurrent_model_over_cpu_and_disk_gives_the_unsplit_logits(recurrent_checkpoint, tmp_path):
    _, path = recurrent_checkpoint
    graph, _ = planner.trace(path, seq_len=16)
    plan = planner.plan(graph, max_memory={"cpu": graph.total_bytes * 3 // 4, "disk": "1GB"},
                        offload_folder=tmp_path / "offload")
    assert set(plan.device_map.values()) == {"cpu", "disk"}
    reference = AutoModelForCausalLM.from_pretrained(path).eval()
    split = AutoModelForCausalLM.from_pretrained(path, **plan.from_pretrained_kwargs()).eval()
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        torch.testing.assert_close(split(ids).logits, reference(ids).logits)
