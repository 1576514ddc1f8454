"""The built-in catalog: every published config builds the intended class with its official count.

Each entry is built on the meta device (no memory is used, so BLOOM-176B and Llama-3.1-405B are
as cheap as GPT-2) and its parameters are counted with ``model.parameters()``, which yields a tied
parameter once. The expected counts are the entries' ``published_params`` (safetensors metadata,
model cards, papers), never a count taken from a model built here.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from functools import cache

import pytest
import torch
import transformers.utils.logging as hf_logging
from torch import nn

from layerplan.planner.model.catalog import CATALOG, CatalogEntry, catalog_names, closest_names, lookup
from layerplan.planner.model.meta import build_meta_model
from layerplan.solver.errors import InvalidSpecError

# Models whose released checkpoint ties the output head to the input embedding.
TIED = ("gpt2", "gpt2-xl", "gemma-2-9b", "gemma-2-27b", "t5-large", "t5-11b", "bloom-176b", "opt-13b", "falcon-40b",
         "gemma-3-27b", "mamba-2.8b", "whisper-large-v3")


@cache
def _built(name: str) -> nn.Module:
    """The entry's model on the meta device, built once per test session."""
    return build_meta_model(CATALOG[name].to_config())


def _unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _params_per_name(model: nn.Module) -> int:
    """Count a tied matrix once per name, as a checkpoint that stores every name does."""
    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


@pytest.mark.parametrize("name", catalog_names())
def test_built_model_has_the_published_parameter_count(name):
    entry = CATALOG[name]
    model = _built(name)
    measured = _params_per_name(model) if entry.counts_tied_copies else _unique_params(model)
    # Tolerance: a figure published exactly (params_rounding == 1: a safetensors total divided by
    # the dtype's bytes, or a model card's exact count) must match exactly. A figure published
    # rounded ("13B": params_rounding == 10**9) only says the true count is within half a unit of
    # it, so that is all we may assert (Llama-2-13B: 13.016B; OPT-13B: 12.853B).
    tolerance = entry.params_rounding // 2
    assert abs(measured - entry.published_params) <= tolerance, (
        f"{name}: built {measured:,} parameters, published {entry.published_params:,} "
        f"(+-{tolerance:,}; {entry.params_source})"
    )


def test_exact_published_counts_are_the_rule():
    rounded = sorted(name for name, entry in CATALOG.items() if entry.params_rounding > 1)
    # t5-11b: the T5 paper gives "11B" only, and its checkpoint is not available offline to count.
    assert rounded == ["deepseek-v3", "gemma-3-27b", "gpt-oss-120b", "gpt-oss-20b", "llama-2-13b", "llava-1.5-7b",
                       "llava-v1.6-mistral-7b", "mamba-2.8b", "opt-13b", "qwen3-30b-a3b", "qwen3-8b",
                       "t5-11b", "whisper-large-v3"]


def test_falcon_checkpoint_stores_a_copy_of_its_tied_head():
    # The Hub count of tiiuae/falcon-40b (41,835,970,560) counts lm_head.weight beside the word
    # embedding; the loaded model shares them, so it holds 65024 x 8192 = 532,676,608 fewer.
    model = _built("falcon-40b")
    assert _params_per_name(model) - _unique_params(model) == 65024 * 8192
    assert [name for name, entry in CATALOG.items() if entry.counts_tied_copies] == ["falcon-40b"]


@pytest.mark.parametrize(
    ("name", "non_embedding"),
    [
        # Gemma 2 report (arXiv:2408.00118), Table 1, "Non-embedding parameters".
        ("gemma-2-9b", 8_324_201_984),
        ("gemma-2-27b", 26_047_480_320),
    ],
)
def test_gemma2_non_embedding_count_matches_the_report_exactly(name, non_embedding):
    # The report's embedding rows are 256,128 (padded); the checkpoint's are 256,000, so only the
    # non-embedding part can be compared exactly. The head is tied: the embedding counts once.
    model = _built(name)
    assert _unique_params(model) - model.get_input_embeddings().weight.numel() == non_embedding


@pytest.mark.parametrize("name", catalog_names())
def test_builds_the_class_the_config_names(name):
    assert type(_built(name)).__name__ == CATALOG[name].config["architectures"][0]


@pytest.mark.parametrize("name", catalog_names())
def test_head_is_tied_exactly_where_the_checkpoint_ties_it(name):
    model = _built(name)
    head = model.get_output_embeddings().weight
    embedding = model.get_input_embeddings().weight
    if name in TIED:
        assert head is embedding
    else:
        assert head is not embedding


def test_tied_heads_are_the_input_embedding_by_name():
    assert _built("gpt2").lm_head.weight is _built("gpt2").transformer.wte.weight
    assert _built("gemma-2-9b").lm_head.weight is _built("gemma-2-9b").model.embed_tokens.weight
    assert _built("bloom-176b").lm_head.weight is _built("bloom-176b").transformer.word_embeddings.weight
    t5 = _built("t5-large")
    assert t5.lm_head.weight is t5.shared.weight
    assert t5.encoder.embed_tokens.weight is t5.shared.weight
    assert t5.decoder.embed_tokens.weight is t5.shared.weight


def test_to_config_reads_each_familys_own_field_names():
    gpt2_xl = CATALOG["gpt2-xl"].to_config()
    assert (gpt2_xl.n_layer, gpt2_xl.num_hidden_layers, gpt2_xl.n_embd, gpt2_xl.hidden_size) == (48, 48, 1600, 1600)
    assert gpt2_xl.n_head == 25 and gpt2_xl.n_positions == 1024

    bloom = CATALOG["bloom-176b"].to_config()  # published as n_embed / num_attention_heads
    assert (bloom.hidden_size, bloom.n_head, bloom.n_layer, bloom.vocab_size) == (14336, 112, 70, 250880)

    t5 = CATALOG["t5-large"].to_config()
    assert (t5.d_model, t5.d_kv, t5.d_ff, t5.num_layers, t5.num_decoder_layers, t5.num_heads) == (
        1024, 64, 4096, 24, 24, 16
    )
    assert t5.feed_forward_proj == "relu" and t5.relative_attention_num_buckets == 32

    opt = CATALOG["opt-13b"].to_config()
    assert (opt.ffn_dim, opt.word_embed_proj_dim, opt.do_layer_norm_before) == (20480, 5120, True)

    falcon = CATALOG["falcon-40b"].to_config()
    assert falcon.new_decoder_architecture and falcon.parallel_attn
    assert (falcon.num_kv_heads, falcon.bias, falcon.alibi) == (8, False, False)

    gemma = CATALOG["gemma-2-27b"].to_config()
    assert (gemma.head_dim, gemma.query_pre_attn_scalar, gemma.sliding_window) == (128, 144, 4096)
    assert (gemma.attn_logit_softcapping, gemma.final_logit_softcapping) == (50.0, 30.0)

    mixtral = CATALOG["mixtral-8x7b"].to_config()
    assert (mixtral.num_local_experts, mixtral.num_experts_per_tok) == (8, 2)
    assert CATALOG["mistral-7b"].to_config().sliding_window == 4096

    llama31 = CATALOG["llama-3.1-405b"].to_config()
    rope = llama31.rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["rope_theta"]) == ("llama3", 8.0, 500000.0)
    assert llama31.num_key_value_heads == 8 and llama31.max_position_embeddings == 131072


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("llama-2-70b", torch.float16),
        ("llama-3.1-405b", torch.bfloat16),
        ("gemma-2-9b", torch.float32),  # the 9B is published in float32, the 27B in bfloat16
        ("gemma-2-27b", torch.bfloat16),
        ("bloom-176b", torch.bfloat16),
    ],
)
def test_published_torch_dtype_becomes_transformers5_dtype(name, dtype):
    assert CATALOG[name].to_config().dtype == dtype


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_building_every_catalog_config_says_nothing_about_torch_dtype():
    # transformers 5 logs "`torch_dtype` is deprecated! Use `dtype` instead!" through
    # logger.warning_once (cached per process: cleared here) when a config is given or asked for
    # torch_dtype; other deprecations would come as warnings. Both are captured.
    assert not [name for name, entry in CATALOG.items() if "torch_dtype" in entry.config]
    root = hf_logging.get_logger()  # the "transformers" logger, which does not propagate
    records, level = _Records(), root.level
    root.addHandler(records)
    root.setLevel(logging.WARNING)  # conftest sets TRANSFORMERS_VERBOSITY=error
    hf_logging.warning_once.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for name, entry in CATALOG.items():
                config = entry.to_config()
                config.to_dict()
                config.to_json_string()
                published = entry.config.get("dtype")  # None when the file gives none (GPT-2, T5)
                assert config.dtype == (getattr(torch, published) if published else None), name
        said = [m for m in records.messages if "torch_dtype" in m]
        said += [str(w.message) for w in caught if "torch_dtype" in str(w.message)]
        assert said == []
        # the capture works: asking a config for torch_dtype is reported
        hf_logging.warning_once.cache_clear()
        CATALOG["gpt2"].to_config().torch_dtype  # noqa: B018
        assert any("torch_dtype" in m for m in records.messages)
    finally:
        root.removeHandler(records)
        root.setLevel(level)


def test_to_config_returns_a_fresh_config_each_time():
    first = CATALOG["llama-3.1-405b"].to_config()
    first.rope_parameters["factor"] = 1.0
    first.num_hidden_layers = 1
    second = CATALOG["llama-3.1-405b"].to_config()
    assert second.rope_parameters["factor"] == 8.0 and second.num_hidden_layers == 126


def test_entry_config_is_read_only():
    with pytest.raises(TypeError):
        CATALOG["gpt2"].config["n_layer"] = 1  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG["gpt2"].published_params = 1  # type: ignore[misc]


def test_to_config_rejects_a_field_transformers_does_not_read_back():
    # T5Config maps head_dim onto d_kv, so a stray head_dim silently changes d_kv: caught.
    entry = CATALOG["t5-large"]
    bad = dataclasses.replace(entry, config={**entry.config, "head_dim": 32})
    with pytest.raises(InvalidSpecError, match="d_kv=64"):
        bad.to_config()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Llama-X"}, "lower-case"),
        ({"name": ""}, "lower-case"),
        ({"config": {"architectures": ["LlamaForCausalLM"]}}, "model_type"),
        ({"config": {"model_type": "llama"}}, "architectures"),
        ({"published_params": 0}, "published_params=0"),
        ({"params_rounding": 0}, "params_rounding=0"),
        ({"config": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}},
         "torch_dtype='bfloat16'; write it as dtype"),
    ],
)
def test_invalid_entries_are_rejected(change, message):
    fields = {
        "name": "x", "hub_id": "org/x", "config": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
        "published_params": 1, "params_source": "test",
    }
    with pytest.raises(InvalidSpecError, match=message):
        CatalogEntry(**{**fields, **change})


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("llama-2-70b", "llama-2-70b"),
        ("meta-llama/Llama-2-70b-hf", "llama-2-70b"),
        ("META-LLAMA/llama-2-70B-HF", "llama-2-70b"),
        ("  mistralai/Mixtral-8x7B-v0.1 ", "mixtral-8x7b"),
        ("Llama-2-70b-hf", "llama-2-70b"),  # the Hub id without its owner
        ("meta-llama/Meta-Llama-3.1-405B", "llama-3.1-405b"),  # the repo's former name
        ("bigscience/bloom", "bloom-176b"),
        ("openai-community/gpt2", "gpt2"),
        ("google-t5/t5-large", "t5-large"),
    ],
)
def test_lookup_by_name_hub_id_or_alias(spelling, name):
    entry = lookup(spelling)
    assert entry is not None and entry.name == name


@pytest.mark.parametrize("spelling", ["llama2-70b", "meta-llama/Llama-2-70b", "", "gpt3"])
def test_lookup_of_unknown_names_is_none(spelling):
    assert lookup(spelling) is None


def test_closest_names_suggests_the_catalog_spelling():
    assert closest_names("llama2-70b")[0] == "llama-2-70b"
    assert closest_names("qwen-72b")[0] == "qwen2.5-72b"
    assert closest_names("Meta-Llama-3-70", n=1) == ["llama-3-70b"]
    assert closest_names("zzzz") == []
    with pytest.raises(InvalidSpecError):
        closest_names("llama", n=0)


def test_every_entry_names_its_hub_repo_and_count_source():
    assert len(CATALOG) >= 19
    for name, entry in CATALOG.items():
        assert entry.name == name and catalog_names().count(name) == 1
        assert entry.hub_id.count("/") == 1, entry.hub_id
        assert entry.params_source
        assert lookup(entry.hub_id) is entry


def test_deepseek_v3_reads_its_published_yarn_scaling():
    # config.json: {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
    # "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}, rope_theta 10000; 40 x 4096 = 163,840 positions
    config = CATALOG["deepseek-v3"].to_config()
    rope = config.rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["rope_theta"]) == ("yarn", 40, 10000)
    assert (rope["original_max_position_embeddings"], rope["beta_fast"], rope["beta_slow"]) == (4096, 32, 1)
    assert (rope["mscale"], rope["mscale_all_dim"]) == (1.0, 1.0)
    assert config.max_position_embeddings == 40 * 4096
