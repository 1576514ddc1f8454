"""Property: for random tiny configs of many families, the predicted weight bytes are the bytes of
the parameters ``from_pretrained`` loads from a saved checkpoint (tied weights counted once)."""

from __future__ import annotations

import tempfile

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, AutoModelForSeq2SeqLM

from layerplan import planner


FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "mixtral", "gpt2", "opt", "bert")


@st.composite
def tiny_configs(draw, family: str) -> AutoConfig:  # noqa: ANN001
    """A config of ``family`` with small random sizes (heads divide the hidden size)."""
    heads = draw(st.sampled_from([2, 4]))
    hidden = heads * draw(st.sampled_from([8, 16]))
    layers = draw(st.integers(1, 3))
    vocab = draw(st.integers(64, 160))
    tied = draw(st.booleans())
    ffn = draw(st.sampled_from([2, 4])) * hidden
    common = {"vocab_size": vocab, "tie_word_embeddings": tied, "pad_token_id": 0, "bos_token_id": 1,
              "eos_token_id": 2}
    decoder = {**common, "hidden_size": hidden, "intermediate_size": ffn, "num_attention_heads": heads,
               "num_key_value_heads": draw(st.sampled_from([1, heads])), "num_hidden_layers": layers,
               "max_position_embeddings": 64}
    if family == "gpt2":
        fields = {**common, "n_embd": hidden, "n_head": heads, "n_layer": layers, "n_positions": 64}
        return AutoConfig.for_model("gpt2", architectures=["GPT2LMHeadModel"], **fields)
    if family == "opt":
        fields = {**common, "hidden_size": hidden, "ffn_dim": ffn, "num_attention_heads": heads,
                  "num_hidden_layers": layers, "word_embed_proj_dim": hidden, "max_position_embeddings": 64}
        return AutoConfig.for_model("opt", architectures=["OPTForCausalLM"], **fields)
    if family == "bert":
        fields = {k: v for k, v in decoder.items() if k not in ("num_key_value_heads", "tie_word_embeddings")}
        return AutoConfig.for_model("bert", architectures=["BertForMaskedLM"], **fields)
    if family == "mixtral":
        decoder = {**decoder, "num_local_experts": draw(st.integers(2, 4)), "num_experts_per_tok": 2}
    if family == "qwen3":
        decoder = {**decoder, "head_dim": hidden // heads}
    cls = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
           "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM", "mixtral": "MixtralForCausalLM"}[family]
    return AutoConfig.for_model(family, architectures=[cls], **decoder)


def _loaded_bytes(path: str, architecture: str) -> int:
    model = getattr(transformers, architecture).from_pretrained(path)
    return sum(p.numel() * p.element_size() for p in model.parameters())  # a tied Parameter once


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_predicted_weight_bytes_equal_the_loaded_parameters(family, data) -> None:  # noqa: ANN001
    config = data.draw(tiny_configs(family))
    architecture = config.architectures[0]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as path:
        getattr(transformers, architecture)(config).save_pretrained(path)
        graph, _ = planner.trace(path, seq_len=16)
        assert sum(n.weight_bytes for n in graph.nodes) == _loaded_bytes(path, architecture), config.model_type


def test_keep_in_fp32_modules_are_sized_as_loaded(tiny_t5_dir):
    # T5's _keep_in_fp32_modules = ["wo"]: from_pretrained(dtype=float16) loads those in float32
    graph, _ = planner.trace(tiny_t5_dir, seq_len=8, dtype="float16")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir, dtype=torch.float16)
    assert {p.dtype for n, p in loaded.named_parameters() if n.endswith("wo.weight")} == {torch.float32}
    assert sum(n.weight_bytes for n in graph.nodes) == sum(p.numel() * p.element_size() for p in loaded.parameters())
