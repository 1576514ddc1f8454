"""MoE experts: their bytes are reported apart, checked against a real model's expert parameters."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from layerplan import planner

TINY_MOE = {
    "mixtral": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                "num_hidden_layers": 3, "num_local_experts": 4, "num_experts_per_tok": 2, "vocab_size": 128},
    "qwen2_moe": {"hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
                  "shared_expert_intermediate_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "num_hidden_layers": 3, "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 128},
}


@pytest.mark.parametrize("model_type", sorted(TINY_MOE))
def test_expert_bytes_are_the_real_models_expert_parameters(model_type, tmp_path):
    config = AutoConfig.for_model(model_type, **TINY_MOE[model_type])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path)
    graph, _ = planner.trace(str(tmp_path), seq_len=16)
    real = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if ".experts." in name)
    assert real > 0 and graph.total_expert_bytes == real
    # float32 grouped expert matmuls fail on meta and are measured in bfloat16: the weights stay float32
    assert sum(n.weight_bytes for n in graph.nodes) == sum(p.numel() * p.element_size() for p in model.parameters())
    per_layer = [n.expert_bytes for n in graph.nodes if n.kind == "experts"]  # planner/model/experts.py
    assert len(per_layer) == 3 and len(set(per_layer)) == 1  # each layer's experts are one node
    assert all(n.expert_bytes == 0 for n in graph.nodes if n.kind == "block")
    plan = planner.plan(graph, max_memory={"cpu": "1GB"})
    assert json.loads(json.dumps(plan.to_dict()))["expert_bytes"] == real


def test_a_dense_model_has_no_expert_bytes(tiny_llama_dir):
    graph, _ = planner.trace(tiny_llama_dir, seq_len=16)
    assert graph.total_expert_bytes == 0
