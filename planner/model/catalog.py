"""Built-in catalog of real, published model configs: plan without downloading anything.

Each entry holds the fields of the model's released ``config.json`` on the Hugging Face Hub that
change shapes or behaviour (sizes, heads, KV heads, positions, RoPE, sliding window, tying, MoE,
checkpoint dtype, architectures, and each family's own names), copied from the file; the Hub repo
id is given per entry. A field the file does not set but that decides a shape (e.g. GPT-2's tied
head, T5's ``feed_forward_proj``) is pinned to the value transformers' default has and marked
``# not in the file``, so that a change of default in transformers cannot silently change a
model. Fields that only matter for remote code (``auto_map``), generation or training dropout are
left out.

The checkpoint dtype is kept under transformers 5's name ``dtype``: the files say ``torch_dtype``,
which transformers 5 deprecates (it logs a warning whenever a config is given or asked for it), so
no entry holds that key.

Every entry also carries an official parameter count from a source independent of this project
(the checkpoint's safetensors metadata, the model card or the paper; ``params_source`` says
which), never a number counted on a model built by layerplan. ``tests/test_catalog.py`` builds
every entry on the meta device and checks its count against that figure.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from layerplan.solver.errors import InvalidSpecError

__all__ = ["CATALOG", "CatalogEntry", "catalog_names", "closest_names", "lookup"]

# Config keys whose value must survive AutoConfig.for_model unchanged (read back under the same
# name). transformers 5 maps some published names on purpose (BLOOM's ``n_embed`` -> ``hidden_size``, Llama's ``rope_theta`` -> ``rope_parameters``, Qwen2's
# ``sliding_window`` -> None when ``use_sliding_window`` is false); those are not listed here.
_SHAPE_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
    "num_local_experts", "num_experts_per_tok",
    "n_embd", "n_layer", "n_head", "n_positions",  # GPT-2 / BLOOM
    "ffn_dim", "word_embed_proj_dim", "do_layer_norm_before", "enable_bias",  # OPT
    "new_decoder_architecture", "num_kv_heads", "parallel_attn", "bias", "alibi",  # Falcon
    "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",  # T5
    "feed_forward_proj", "relative_attention_num_buckets", "is_encoder_decoder",
    "query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping",  # Gemma 2
)


@dataclass(frozen=True, kw_only=True, slots=True)
class CatalogEntry:
    """One published model: its config fields and its official parameter count.

    Attributes:
        name: short lower-case catalog name, e.g. ``"llama-2-70b"``.
        hub_id: the Hub repository the config was copied from, e.g. ``"meta-llama/Llama-2-70b-hf"``.
        config: the published ``config.json`` fields (``model_type`` and ``architectures``
            included); read-only.
        published_params: the official parameter count (a number of parameters, not bytes).
        params_source: where ``published_params`` comes from and how it was derived.
        params_rounding: the unit the published figure is rounded to: 1 for an exact count,
            ``10**9`` for a figure published as e.g. "13B". The true count lies within half a unit.
        counts_tied_copies: the published figure counts a tied matrix once per name it is stored
            under in the checkpoint (e.g. Falcon-40B stores ``lm_head.weight`` next to the input
            embedding it is tied to), whereas the built model holds it once.
        aliases: other names accepted by :func:`lookup` (e.g. a former Hub id).
        notes: anything surprising about the entry.
    """

    name: str
    hub_id: str
    config: Mapping[str, Any]
    published_params: int
    params_source: str
    params_rounding: int = 1
    counts_tied_copies: bool = False
    aliases: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or not self.name:
            raise InvalidSpecError(f"catalog name {self.name!r} must be non-empty and lower-case")
        for key in ("model_type", "architectures"):
            if key not in self.config:
                raise InvalidSpecError(
                    f"catalog entry {self.name!r} lacks {key!r}; copy it from the published config.json"
                )
        if self.published_params <= 0:
            raise InvalidSpecError(f"catalog entry {self.name!r} has published_params={self.published_params!r} <= 0")
        if self.params_rounding < 1:
            raise InvalidSpecError(f"catalog entry {self.name!r} has params_rounding={self.params_rounding!r} < 1")
        if "torch_dtype" in self.config:
            raise InvalidSpecError(
                f"catalog entry {self.name!r} has torch_dtype={self.config['torch_dtype']!r}; write it as "
                "dtype, transformers 5's name (torch_dtype is deprecated and logs a warning)"
            )
        # Freeze a private deep copy: callers get a read-only view and to_config() copies again.
        object.__setattr__(self, "config", MappingProxyType(copy.deepcopy(dict(self.config))))

    @property
    def model_type(self) -> str:
        """The transformers ``model_type`` of the entry, e.g. ``"llama"``."""
        return str(self.config["model_type"])

    def to_config(self) -> PretrainedConfig:
        """A fresh transformers config built from the published fields.

        ``architectures`` and every size and switch in ``_SHAPE_KEYS`` are read back from the
        result, so a field that transformers dropped or renamed is an error here rather than a
        silently different model.

        Returns:
            The config from ``AutoConfig.for_model(model_type, **fields)``; ``architectures`` is
            set, so the intended class (e.g. ``BloomForCausalLM``) is built from it.

        Raises:
            InvalidSpecError: transformers does not read back a published field.
        """
        fields = copy.deepcopy(dict(self.config))
        model_type = fields.pop("model_type")
        config = AutoConfig.for_model(model_type, **fields)
        for key in ("architectures", *_SHAPE_KEYS):
            if key in fields and _read_back(config, key) != fields[key]:
                raise InvalidSpecError(
                    f"catalog entry {self.name!r}: published {key}={fields[key]!r} but transformers' "
                    f"{type(config).__name__} reads back {_read_back(config, key)!r}; fix the catalog "
                    "field name for this transformers version"
                )
        return config


def _read_back(config: PretrainedConfig, key: str) -> object:
    """``config.<key>``; where a composite config has no such field, its text config's: transformers
    5 moves the text fields of a flat file (Qwen2-VL's ``hidden_size``, ``num_hidden_layers``, ...)
    into ``text_config`` (``Qwen2VLConfig.__post_init__``)."""
    missing = object()
    value = getattr(config, key, missing)
    if value is missing and hasattr(config, "get_text_config"):
        value = getattr(config.get_text_config(), key, missing)
    return None if value is missing else value


# Llama 2 ------------------------------------------------------------------------------------------
# The Llama-2 *-hf checkpoints were converted with transformers 4.31.0.dev0, which still saved each
# layer's rotary ``inv_freq`` buffer (head_dim/2 = 64 float32 values, 256 bytes per layer); the
# index's total_size includes them, so they are subtracted before dividing by 2 bytes (float16).
_LLAMA2_COMMON: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "dtype": "float16",
    "vocab_size": 32000,
}

# Llama 3 / 3.1 ------------------------------------------------------------------------------------
_LLAMA3_COMMON: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "vocab_size": 128256,
}

_QWEN25_COMMON: dict[str, Any] = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 152064,
}

_GEMMA2_COMMON: dict[str, Any] = {
    "model_type": "gemma2",
    "architectures": ["Gemma2ForCausalLM"],
    "attention_bias": False,
    "attn_logit_softcapping": 50.0,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": 1,
    "final_logit_softcapping": 30.0,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 8192,
    "pad_token_id": 0,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": True,  # not in the file: Gemma2Config's default; the head is the embedding
    "vocab_size": 256000,
}

_GPT2_COMMON: dict[str, Any] = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "activation_function": "gelu_new",
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "layer_norm_epsilon": 1e-05,
    "n_ctx": 1024,
    "n_positions": 1024,
    "tie_word_embeddings": True,  # not in the file: GPT2Config's default; lm_head is wte
    "vocab_size": 50257,
}

# openai/gpt-oss-120b and openai/gpt-oss-20b config.json: identical but for the depth and the
# expert count. The MoE experts are stored in MXFP4 (its quantization_config), everything else in bf16.
_GPT_OSS_COMMON = {
    "model_type": "gpt_oss",
    "architectures": ["GptOssForCausalLM"],
    "attention_bias": True,
    "attention_dropout": 0.0,
    "eos_token_id": 200002,
    "experts_per_token": 4,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2880,
    "initial_context_length": 4096,
    "intermediate_size": 2880,
    "max_position_embeddings": 131072,
    "num_attention_heads": 64,
    "num_experts_per_tok": 4,
    "num_key_value_heads": 8,
    "output_router_logits": False,
    "pad_token_id": 199999,
    "quantization_config": {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
                                   "lm_head"],
        "quant_method": "mxfp4",
    },
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000,
    "router_aux_loss_coef": 0.9,
    "sliding_window": 128,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "vocab_size": 201088,
}


# Qwen/Qwen3-8B and Qwen/Qwen3-30B-A3B config.json: the shared fields.
_QWEN3_COMMON: dict[str, Any] = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def _alternating(layers: int) -> list[str]:
    """gpt-oss ``layer_types``: sliding-window and full attention, alternating from layer 0."""
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]


# Multimodal, speech, state-space, DeepSeek ------------------------------------------------------
_LLAVA15_7B: dict[str, Any] = {  # llava-hf/llava-1.5-7b-hf config.json
    "model_type": "llava",
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 32000,
    "image_seq_length": 576,
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "tie_word_embeddings": False,
    "dtype": "float16",
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "text_config": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096,
                    "rms_norm_eps": 1e-05, "vocab_size": 32064, "dtype": "float16"},
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                      "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
                      "patch_size": 14, "projection_dim": 768},
}

_GEMMA3_27B: dict[str, Any] = {  # google/gemma-3-27b-it config.json
    "model_type": "gemma3",
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "eos_token_id": [1, 106],
    "image_token_index": 262144,
    "mm_tokens_per_image": 256,
    "dtype": "bfloat16",
    "text_config": {"model_type": "gemma3_text", "head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504,
                    "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16,
                    "query_pre_attn_scalar": 168, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 896,
                      "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
}

# llava-hf/llava-v1.6-mistral-7b-hf config.json (transformers_version 4.39.0.dev0), checked field by field
# against the copy in NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_llava_next.py
# (LLAVA_NEXT_7B_CONFIG, quoted whole but for vision_config.num_hidden_layers, cut there to 2 for the test:
# "24 layers for full model", as here).
_LLAVA_NEXT_MISTRAL_7B: dict[str, Any] = {
    "model_type": "llava_next",
    "architectures": ["LlavaNextForConditionalGeneration"],
    "ignore_index": -100,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_token_index": 32000,
    "projector_hidden_act": "gelu",
    "tie_word_embeddings": False,  # not in the file: LlavaNextConfig's default
    "dtype": "float16",
    "use_image_newline_parameter": True,
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
    "text_config": {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "intermediate_size": 14336,
                    "max_position_embeddings": 32768, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
                    "rope_theta": 1000000.0, "sliding_window": None, "dtype": "bfloat16", "vocab_size": 32064,
                    # not in the file: MistralConfig's defaults (Mistral-7B's shapes)
                    "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32},
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                      "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
                      "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
}

# A flat file (text fields at the top, as Qwen2-7B's): transformers 5 moves them into text_config.
# Qwen/Qwen2-VL-7B-Instruct config.json (transformers_version 4.41.2), checked field by field against the
# copy quoted whole in mindspore-lab/mindone mindone/transformers/models/qwen2_vl/modeling_qwen2_vl.py
# (its __main__ block, "Qwen2-VL-7B-Instruct config.json"); initializer_range and use_cache left out.
_QWEN2_VL_7B: dict[str, Any] = {
    "model_type": "qwen2_vl",
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "use_sliding_window": False,
    "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                      "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
                      "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}

_WHISPER_LARGE_V3: dict[str, Any] = {  # openai/whisper-large-v3 config.json
    "model_type": "whisper",
    "architectures": ["WhisperForConditionalGeneration"],
    "activation_function": "gelu",
    "bos_token_id": 50257,
    "d_model": 1280,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "decoder_layers": 32,
    "decoder_start_token_id": 50258,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "encoder_layers": 32,
    "eos_token_id": 50257,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "num_mel_bins": 128,
    "pad_token_id": 50256,
    "scale_embedding": False,
    "dtype": "float16",
    "vocab_size": 51866,
}

# deepseek-ai/DeepSeek-V3 config.json (the MTP layer is not built). rope_scaling checked against the copy in
# NVIDIA-NeMo/Megatron-Bridge tests/unit_tests/models/deepseek/test_deepseek_bridges.py (fixture ds_v3_config:
# transformers_version 4.33.1, DeepSeek-V3's; V3-0324's file says 4.46.3), which agrees with every other field
# here; published as ``"type": "yarn"``, which transformers 5 reads as ``rope_parameters["rope_type"]``.
_DEEPSEEK_V3: dict[str, Any] = {
    "model_type": "deepseek_v3",
    "architectures": ["DeepseekV3ForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 1,
    "first_k_dense_replace": 3,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "moe_intermediate_size": 2048,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "topk_group": 4,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

_MAMBA_28B: dict[str, Any] = {  # state-spaces/mamba-2.8b-hf config.json
    "model_type": "mamba",
    "architectures": ["MambaForCausalLM"],
    "conv_kernel": 4,
    "expand": 2,
    "hidden_size": 2560,
    "num_hidden_layers": 64,
    "pad_vocab_size_multiple": 8,
    "state_size": 16,
    "vocab_size": 50280,
}


_ENTRIES: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="gpt-oss-120b",
        hub_id="openai/gpt-oss-120b",
        config={**_GPT_OSS_COMMON, "num_hidden_layers": 36, "num_local_experts": 128, "layer_types": _alternating(36)},
        published_params=116_830_000_000,
        params_rounding=10_000_000,
        params_source="gpt-oss model card (arXiv 2508.10925), Table 1: 116.83B total, 5.13B active; checkpoint 60.8 GiB",
    ),
    CatalogEntry(
        name="gpt-oss-20b",
        hub_id="openai/gpt-oss-20b",
        config={**_GPT_OSS_COMMON, "num_hidden_layers": 24, "num_local_experts": 32, "layer_types": _alternating(24)},
        published_params=20_910_000_000,
        params_rounding=10_000_000,
        params_source="gpt-oss model card (arXiv 2508.10925), Table 1: 20.91B total, 3.61B active; checkpoint 12.8 GiB",
    ),
    CatalogEntry(
        name="llama-2-7b",
        hub_id="meta-llama/Llama-2-7b-hf",
        config={**_LLAMA2_COMMON, "hidden_size": 4096, "intermediate_size": 11008,
                "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32},
        published_params=6_738_415_616,
        params_source=(
            "safetensors index total_size 13,476,839,424 B, minus 32 layers x 64 float32 rotary "
            "inv_freq buffers (8,192 B) listed in its weight_map, / 2 B (float16)"
        ),
    ),
    CatalogEntry(
        name="llama-2-13b",
        hub_id="meta-llama/Llama-2-13b-hf",
        config={**_LLAMA2_COMMON, "hidden_size": 5120, "intermediate_size": 13824,
                "num_attention_heads": 40, "num_hidden_layers": 40, "num_key_value_heads": 40},
        published_params=13_000_000_000,
        params_rounding=1_000_000_000,
        params_source="Llama 2 paper and model card: 13B (rounded; no exact figure found)",
    ),
    CatalogEntry(
        name="llama-2-70b",
        hub_id="meta-llama/Llama-2-70b-hf",
        config={**_LLAMA2_COMMON, "hidden_size": 8192, "intermediate_size": 28672,
                "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8},
        published_params=68_976_648_192,
        params_source=(
            "safetensors index total_size 137,953,316,864 B, minus 80 layers x 64 float32 rotary "
            "inv_freq buffers (20,480 B), / 2 B (float16)"
        ),
    ),
    CatalogEntry(
        name="llama-3-8b",
        hub_id="meta-llama/Meta-Llama-3-8B",
        config={**_LLAMA3_COMMON, "hidden_size": 4096, "intermediate_size": 14336,
                "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8},
        published_params=8_030_261_248,
        params_source="safetensors index total_size 16,060,522,496 B / 2 B (bfloat16)",
    ),
    CatalogEntry(
        name="llama-3-70b",
        hub_id="meta-llama/Meta-Llama-3-70B",
        config={**_LLAMA3_COMMON, "hidden_size": 8192, "intermediate_size": 28672,
                "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8},
        published_params=70_553_706_496,
        params_source=(
            "safetensors index total_size 141,107,412,992 B / 2 B (bfloat16), as published for "
            "meta-llama/Llama-3.1-70B, whose tensors have the same shapes"
        ),
    ),
    CatalogEntry(
        name="llama-3.1-405b",
        hub_id="meta-llama/Llama-3.1-405B",
        aliases=("meta-llama/Meta-Llama-3.1-405B",),
        config={
            **_LLAMA3_COMMON,
            "attention_dropout": 0.0,
            "hidden_size": 16384,
            "intermediate_size": 53248,
            "max_position_embeddings": 131072,
            "mlp_bias": False,
            "num_attention_heads": 128,
            "num_hidden_layers": 126,
            "num_key_value_heads": 8,
            "rope_scaling": {
                "factor": 8.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
        },
        published_params=405_853_388_800,
        params_source=(
            "safetensors total 811,706,777,600 B / 2 B (bfloat16) of the BF16 checkpoint "
            "(recorded for its unsloth/Meta-Llama-3.1-405B re-upload); Meta's label: 405B"
        ),
        notes=(
            "This BF16 checkpoint has 8 KV heads; Meta's FP8 release of 3.1-405B was first published "
            "with 16 (each duplicated, for 8-way tensor parallelism), which doubles the KV cache."
        ),
    ),
    CatalogEntry(
        name="llama-3.3-70b",
        hub_id="meta-llama/Llama-3.3-70B-Instruct",
        config={**_LLAMA3_COMMON, "hidden_size": 8192, "intermediate_size": 28672, "max_position_embeddings": 131072,
                "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8,
                "eos_token_id": [128001, 128008, 128009],
                "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
        published_params=70_553_706_496,
        params_source=(
            "safetensors index total_size 141,107,412,992 B / 2 B (bfloat16); the tensors have "
            "Llama-3.1-70B's shapes (Meta's label: 70B)"
        ),
    ),
    CatalogEntry(
        name="llava-1.5-7b",
        hub_id="llava-hf/llava-1.5-7b-hf",
        config=_LLAVA15_7B,
        published_params=7_060_000_000,
        params_rounding=10_000_000,
        params_source="Hub safetensors parameter count of llava-hf/llava-1.5-7b-hf: 7.06B",
        notes="Each 336 px image is 576 prompt tokens (24 x 24 patches of CLIP ViT-L/14, CLS dropped).",
    ),
    CatalogEntry(
        name="gemma-3-27b",
        hub_id="google/gemma-3-27b-it",
        config=_GEMMA3_27B,
        published_params=27_400_000_000,
        params_rounding=100_000_000,
        params_source="Hub safetensors parameter count of google/gemma-3-27b-it: 27.4B (SigLIP tower included)",
        notes="Five of every six text layers attend over a 1024-token window; each image is 256 prompt tokens.",
    ),
    CatalogEntry(
        name="llava-v1.6-mistral-7b",
        hub_id="llava-hf/llava-v1.6-mistral-7b-hf",
        config=_LLAVA_NEXT_MISTRAL_7B,
        # unverified: no stored copy of the llava-hf/llava-v1.6-mistral-7b-hf model page (nor of its
        # safetensors index total_size) was found, so the exact count is not confirmed. What was found agrees
        # with 7.57B: the Hub pages of same-shape fine-tunes of LLaVA-v1.6-Mistral-7B (e.g.
        # https://huggingface.co/rbojja/llava-v1.6-mistral-med, FP16) say 7.57B params; the repo's file listing
        # at commit f71b5f1 (https://huggingface.co/llava-hf/llava-v1.6-mistral-7b-hf/tree/f71b5f1, as stored)
        # has shards of 4.92 + 4.92 + 4.92 + 0.38 GB = 15.14 GB, i.e. 7.57B x 2 B (float16); its collection
        # page (https://huggingface.co/collections/llava-hf/llava-next) rounds it to 8B.
        published_params=7_570_000_000,
        params_rounding=10_000_000,
        params_source=(
            "Hub safetensors parameter count: 7.57B (unverified for this repo's own page; shown for same-shape "
            "fine-tunes, and its float16 shards total 15.14 GB)"
        ),
        aliases=("llava-next-mistral-7b",),
        notes=("LLaVA-NeXT: each image is the 336 px base and its best-fit anyres grid of 336 px tiles; a 672 x 672 "
               "image (the default) is 2928 prompt tokens (576 base + 48 x 48 unpadded + 48 newlines)."),
    ),
    CatalogEntry(
        name="qwen2-vl-7b",
        hub_id="Qwen/Qwen2-VL-7B-Instruct",
        config=_QWEN2_VL_7B,
        # Sources: a public PaddlePaddle script that re-saves the Qwen2-VL-7B-Instruct shards with qkv fused
        # copies the index's metadata as {"total_size": "16582751232"} (= 8,291,375,616 x 2 B, bfloat16); a
        # public survey note quotes "8,291,375,616 parameters per its HF safetensors metadata" for
        # Qwen2-VL-7B-Instruct (both found with the code-search tool; neither names its repository there).
        published_params=8_291_375_616,
        params_source=(
            "safetensors index total_size 16,582,751,232 B / 2 B (bfloat16), ViT included; Hub label: 8.29B"
        ),
        notes=("An image is one token per 28 x 28 pixels after smart_resize (14 px patches merged 2 x 2): 576 tokens "
               "at 672 x 672 (the default); M-RoPE positions over (time, height, width)."),
    ),
    CatalogEntry(
        name="whisper-large-v3",
        hub_id="openai/whisper-large-v3",
        config=_WHISPER_LARGE_V3,
        published_params=1_540_000_000,
        params_rounding=10_000_000,
        params_source="Hub safetensors parameter count of openai/whisper-large-v3: 1.54B (paper: 1550M for large)",
        notes="The decoder's context is its 448 max_target_positions; the encoder reads 30 s = 1500 frames.",
    ),
    CatalogEntry(
        name="deepseek-v3",
        hub_id="deepseek-ai/DeepSeek-V3",
        config=_DEEPSEEK_V3,
        published_params=671_000_000_000,
        params_rounding=1_000_000_000,
        params_source="DeepSeek-V3 technical report (arXiv 2412.19437): 671B total, 37B activated per token",
        notes=("The checkpoint's 685B include the 14B multi-token-prediction module, which transformers does "
               "not build; weights are FP8 e4m3 with a scale per 128 x 128 block."),
    ),
    CatalogEntry(
        name="mamba-2.8b",
        hub_id="state-spaces/mamba-2.8b-hf",
        config=_MAMBA_28B,
        published_params=2_800_000_000,
        params_rounding=100_000_000,
        params_source="Mamba paper (arXiv 2312.00752), the 2.8B model of its scaling table",
        notes="A recurrent state per sequence (conv + SSM state), no per-token KV cache.",
    ),
    CatalogEntry(
        name="mistral-7b",
        hub_id="mistralai/Mistral-7B-v0.1",
        config={
            "model_type": "mistral",
            "architectures": ["MistralForCausalLM"],
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "max_position_embeddings": 32768,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "sliding_window": 4096,
            "tie_word_embeddings": False,
            "dtype": "bfloat16",
            "vocab_size": 32000,
        },
        published_params=7_241_732_096,
        params_source="safetensors index total_size 14,483,464,192 B / 2 B (bfloat16)",
    ),
    CatalogEntry(
        name="mixtral-8x7b",
        hub_id="mistralai/Mixtral-8x7B-v0.1",
        config={
            "model_type": "mixtral",
            "architectures": ["MixtralForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "max_position_embeddings": 32768,
            "num_attention_heads": 32,
            "num_experts_per_tok": 2,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "num_local_experts": 8,
            "output_router_logits": False,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000.0,
            "router_aux_loss_coef": 0.02,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "dtype": "bfloat16",
            "vocab_size": 32000,
        },
        published_params=46_702_792_704,
        params_source=(
            "safetensors index total_size 93,405,585,408 B / 2 B (bfloat16); Mistral AI: 46.7B "
            "total, 12.9B active per token"
        ),
    ),
    CatalogEntry(
        name="qwen3-8b",
        hub_id="Qwen/Qwen3-8B",
        config={**_QWEN3_COMMON, "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 4096,
                "intermediate_size": 12288, "max_window_layers": 36, "num_attention_heads": 32,
                "num_hidden_layers": 36, "num_key_value_heads": 8},
        published_params=8_200_000_000,
        params_rounding=100_000_000,
        params_source="Qwen3-8B model card: 8.2B parameters, 6.95B non-embedding",
    ),
    CatalogEntry(
        name="qwen3-30b-a3b",
        hub_id="Qwen/Qwen3-30B-A3B",
        config={**_QWEN3_COMMON, "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
                "decoder_sparse_step": 1, "hidden_size": 2048, "intermediate_size": 6144, "max_window_layers": 48,
                "mlp_only_layers": [], "moe_intermediate_size": 768, "norm_topk_prob": True,
                "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
                "num_key_value_heads": 4, "output_router_logits": False, "router_aux_loss_coef": 0.001},
        published_params=30_500_000_000,
        params_rounding=100_000_000,
        params_source="Qwen3-30B-A3B model card: 30.5B parameters in total, 3.3B activated, 29.9B non-embedding",
    ),
    CatalogEntry(
        name="qwen2.5-7b",
        hub_id="Qwen/Qwen2.5-7B",
        config={**_QWEN25_COMMON, "hidden_size": 3584, "intermediate_size": 18944,
                "max_window_layers": 28, "num_attention_heads": 28, "num_hidden_layers": 28,
                "num_key_value_heads": 4, "rms_norm_eps": 1e-06},
        published_params=7_615_616_512,
        params_source=(
            "safetensors index total_size 15,231,233,024 B / 2 B (bfloat16) of Qwen2.5-7B-Instruct "
            "(same tensor shapes); model card: 7.61B"
        ),
    ),
    CatalogEntry(
        name="qwen2.5-72b",
        hub_id="Qwen/Qwen2.5-72B",
        config={**_QWEN25_COMMON, "hidden_size": 8192, "intermediate_size": 29568,
                "max_window_layers": 80, "num_attention_heads": 64, "num_hidden_layers": 80,
                "num_key_value_heads": 8, "rms_norm_eps": 1e-05},
        published_params=72_706_203_648,
        params_source=(
            "safetensors index total_size 145,412,407,296 B / 2 B (bfloat16) of Qwen2.5-72B-Instruct "
            "(same tensor shapes); model card: 72.7B"
        ),
    ),
    CatalogEntry(
        name="gemma-2-9b",
        hub_id="google/gemma-2-9b",
        config={**_GEMMA2_COMMON, "head_dim": 256, "hidden_size": 3584, "intermediate_size": 14336,
                "num_attention_heads": 16, "num_hidden_layers": 42, "num_key_value_heads": 8,
                "query_pre_attn_scalar": 256, "dtype": "float32"},
        published_params=9_241_705_984,
        params_source=(
            "Hub safetensors parameter count of google/gemma-2-9b (KerasHub preset gemma2_9b_en "
            "lists the same); Gemma 2 report: 8,324,201,984 non-embedding"
        ),
        notes=(
            "Published in float32 (8 shards, ~37 GB), unlike the bfloat16 27B. The Gemma 2 report's "
            "embedding count (917,962,752) has 256,128 rows; the checkpoint has vocab_size 256,000."
        ),
    ),
    CatalogEntry(
        name="gemma-2-27b",
        hub_id="google/gemma-2-27b",
        config={**_GEMMA2_COMMON, "head_dim": 128, "hidden_size": 4608, "intermediate_size": 36864,
                "num_attention_heads": 32, "num_hidden_layers": 46, "num_key_value_heads": 16,
                "query_pre_attn_scalar": 144, "dtype": "bfloat16"},
        published_params=27_227_128_320,
        params_source=(
            "Hub safetensors parameter count of google/gemma-2-27b; Gemma 2 report: "
            "26,047,480,320 non-embedding"
        ),
        notes=(
            "query_pre_attn_scalar is 144 = hidden_size / num_attention_heads, not head_dim (128): "
            "a config that uses head_dim**-0.5 scales attention wrongly."
        ),
    ),
    CatalogEntry(
        name="phi-3-mini",
        hub_id="microsoft/Phi-3-mini-4k-instruct",
        config={
            "model_type": "phi3",
            "architectures": ["Phi3ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "hidden_act": "silu",
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "max_position_embeddings": 4096,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 32,
            "original_max_position_embeddings": 4096,
            "pad_token_id": 32000,
            "rms_norm_eps": 1e-05,
            "rope_scaling": None,
            "rope_theta": 10000.0,
            "sliding_window": 2047,
            "tie_word_embeddings": False,
            "dtype": "bfloat16",
            "vocab_size": 32064,
        },
        published_params=3_821_079_552,
        params_source=(
            "Hub safetensors parameter count (BF16) of microsoft/Phi-3-mini-4k-instruct (KerasHub "
            "preset phi3_mini_4k_instruct_en lists the same); model card: 3.8B"
        ),
    ),
    CatalogEntry(
        name="gpt2",
        hub_id="openai-community/gpt2",
        aliases=("gpt2-small",),
        config={**_GPT2_COMMON, "n_embd": 768, "n_head": 12, "n_layer": 12},
        published_params=124_439_808,
        params_source=(
            "KerasHub preset gpt2_base_en: 124,439,808; OpenAI's gpt-2 README: 124M (the paper's "
            "117M was a counting error)"
        ),
        notes=(
            "The Hub's safetensors count (137M) also counts the 12 causal-mask buffers "
            "h.*.attn.bias (1024 x 1024 each), which are not parameters."
        ),
    ),
    CatalogEntry(
        name="gpt2-xl",
        hub_id="openai-community/gpt2-xl",
        config={**_GPT2_COMMON, "n_embd": 1600, "n_head": 25, "n_layer": 48},
        published_params=1_557_611_200,
        params_source=(
            "KerasHub preset gpt2_extra_large_en: 1,557,611,200; OpenAI's gpt-2 README: 1558M "
            "(the paper's 1542M was a counting error)"
        ),
    ),
    CatalogEntry(
        name="opt-13b",
        hub_id="facebook/opt-13b",
        config={
            "model_type": "opt",
            "architectures": ["OPTForCausalLM"],
            "_remove_final_layer_norm": False,
            "activation_function": "relu",
            "bos_token_id": 2,
            "do_layer_norm_before": True,
            "enable_bias": True,  # not in the file: OPTConfig's default
            "eos_token_id": 2,
            "ffn_dim": 20480,
            "hidden_size": 5120,
            "max_position_embeddings": 2048,
            "num_attention_heads": 40,
            "num_hidden_layers": 40,
            "pad_token_id": 1,
            "tie_word_embeddings": True,  # not in the file: OPTConfig's default; lm_head is embed_tokens
            "dtype": "float16",
            "vocab_size": 50272,
            "word_embed_proj_dim": 5120,
        },
        published_params=13_000_000_000,
        params_rounding=1_000_000_000,
        params_source=(
            "OPT paper (Zhang et al. 2022) Table 1 and model card: 13B (rounded; the checkpoint is "
            "pickle only, with no safetensors count)"
        ),
        notes="Learned positions have 2 extra rows (2050 x 5120): OPT offsets position ids by 2.",
    ),
    CatalogEntry(
        name="falcon-40b",
        hub_id="tiiuae/falcon-40b",
        config={
            "model_type": "falcon",
            "architectures": ["FalconForCausalLM"],
            "alibi": False,
            "apply_residual_connection_post_layernorm": False,
            "attention_dropout": 0.0,
            "bias": False,
            "bos_token_id": 11,
            "eos_token_id": 11,
            "hidden_dropout": 0.0,
            "hidden_size": 8192,
            "layer_norm_epsilon": 1e-05,
            "new_decoder_architecture": True,
            "num_attention_heads": 128,
            "num_hidden_layers": 60,
            "num_kv_heads": 8,
            "parallel_attn": True,
            "tie_word_embeddings": True,  # not in the file: FalconConfig's default
            "dtype": "bfloat16",
            "vocab_size": 65024,
        },
        published_params=41_835_970_560,
        counts_tied_copies=True,
        params_source=(
            "Hub safetensors parameter count of tiiuae/falcon-40b, which stores lm_head.weight as "
            "well as the word embedding it is tied to; model card label: 40B"
        ),
        notes=(
            "The checkpoint stores lm_head.weight as a tensor of its own, but from_pretrained ties "
            "it to transformer.word_embeddings, so the loaded model has 65024 x 8192 = 532,676,608 "
            "parameters fewer than the Hub count (41.30B)."
        ),
    ),
    CatalogEntry(
        name="t5-large",
        hub_id="google-t5/t5-large",
        config={
            "model_type": "t5",
            "architectures": ["T5ForConditionalGeneration"],
            "d_ff": 4096,
            "d_kv": 64,
            "d_model": 1024,
            "decoder_start_token_id": 0,
            "eos_token_id": 1,
            "feed_forward_proj": "relu",  # not in the file: T5Config's default (T5 v1.0 uses ReLU)
            "is_encoder_decoder": True,
            "layer_norm_epsilon": 1e-06,
            "n_positions": 512,
            "num_decoder_layers": 24,  # not in the file: defaults to num_layers
            "num_heads": 16,
            "num_layers": 24,
            "pad_token_id": 0,
            "relative_attention_num_buckets": 32,
            "tie_word_embeddings": True,  # not in the file: T5Config's default; v1.0 shares all three
            "vocab_size": 32128,
        },
        published_params=737_668_096,
        params_source=(
            "KerasNLP preset t5_large: 737,668,096; Hub page: 738M (safetensors, float32). The T5 "
            "paper's 770M counts the shared embedding once more"
        ),
        notes=(
            "shared, encoder.embed_tokens, decoder.embed_tokens and lm_head are one matrix; "
            "770,567,168 = 737,668,096 + 32128 x 1024, i.e. the paper's 770M counts it twice."
        ),
    ),
    CatalogEntry(
        name="t5-11b",
        hub_id="google-t5/t5-11b",
        config={
            "model_type": "t5",
            "architectures": ["T5ForConditionalGeneration"],
            # Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
            # Transformer", JMLR 2020, section 3.7: the 11B model has d_model = 1024, d_ff = 65,536,
            # d_kv = 128, 128 heads and 24 layers in the encoder and in the decoder.
            "d_ff": 65536,
            "d_kv": 128,
            "d_model": 1024,
            "decoder_start_token_id": 0,
            "eos_token_id": 1,
            "feed_forward_proj": "relu",  # T5 v1.0 (T5Config's default)
            "is_encoder_decoder": True,
            "layer_norm_epsilon": 1e-06,
            "n_positions": 512,
            "num_decoder_layers": 24,
            "num_heads": 128,
            "num_layers": 24,
            "pad_token_id": 0,
            "relative_attention_num_buckets": 32,
            "tie_word_embeddings": True,
            "vocab_size": 32128,
        },
        published_params=11_000_000_000,
        params_rounding=1_000_000_000,
        params_source="T5 paper (Raffel et al., JMLR 2020), section 3.7 and Table 14: 11B",
        notes="same layout as t5-large (one shared embedding matrix); 128 heads of 128 each.",
    ),
    CatalogEntry(
        name="bloom-176b",
        hub_id="bigscience/bloom",
        aliases=("bloom",),
        config={
            "model_type": "bloom",
            "architectures": ["BloomForCausalLM"],
            "apply_residual_connection_post_layernorm": False,
            "attention_dropout": 0.0,
            "attention_softmax_in_fp32": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_dropout": 0.0,
            "layer_norm_epsilon": 1e-05,
            "masked_softmax_fusion": True,
            "n_embed": 14336,  # the file's old name; BloomConfig reads it as hidden_size
            "n_layer": 70,
            "num_attention_heads": 112,  # mapped to n_head by BloomConfig.attribute_map
            "pad_token_id": 3,
            "pretraining_tp": 4,
            "slow_but_exact": False,
            "tie_word_embeddings": True,  # not in the file: BloomConfig's default
            "dtype": "bfloat16",  # not in the file (removed in bigscience/bloom#35): the card's dtype
            "vocab_size": 250880,
        },
        published_params=176_247_271_424,
        params_source=(
            "BLOOM model card: 176,247,271,424 parameters (a 176B-shaped safetensors index, "
            "TurkuNLP/bloom-finnish-176b, has total_size 352,494,542,848 B = 2 B each)"
        ),
        notes=(
            "The file still uses the 2022 names n_embed and num_attention_heads, and its "
            "architectures field was added as ['BloomModel'] (bigscience/bloom#21); the checkpoint "
            "is the causal LM with a tied head, so the catalog names BloomForCausalLM."
        ),
    ),
)

CATALOG: Mapping[str, CatalogEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


def _spellings(entry: CatalogEntry) -> set[str]:
    """Short name, Hub id, the Hub id's repo part (``"Llama-2-70b-hf"``) and aliases, lower-cased."""
    return {s.lower() for s in (entry.name, entry.hub_id, entry.hub_id.rsplit("/", 1)[-1], *entry.aliases)}


# Every accepted spelling, lower-cased -> short name.
_INDEX: Mapping[str, str] = MappingProxyType({s: e.name for e in _ENTRIES for s in _spellings(e)})
assert len(_INDEX) == sum(len(_spellings(e)) for e in _ENTRIES), "two catalog entries share a spelling"


def catalog_names() -> list[str]:
    """The short names of all catalog entries, sorted."""
    return sorted(CATALOG)


def lookup(name: str) -> CatalogEntry | None:
    """The entry for ``name``, or ``None``.

    ``name`` is a short name (``"llama-2-70b"``), a Hub id (``"meta-llama/Llama-2-70b-hf"``), the
    Hub id without its owner (``"Llama-2-70b-hf"``) or an alias; case and surrounding blanks are
    ignored.
    """
    short = _INDEX.get(name.strip().lower())
    return None if short is None else CATALOG[short]


def closest_names(name: str, n: int = 3) -> list[str]:
    """Up to ``n`` short names that look like ``name``, best first, for "did you mean" errors.

    Matches against every spelling :func:`lookup` accepts with :func:`difflib.get_close_matches`
    (ratio >= 0.6) and reports each entry once, by its short name.

    Raises:
        InvalidSpecError: ``n < 1``.
    """
    if n < 1:
        raise InvalidSpecError(f"closest_names needs n >= 1, got n={n!r}")
    # Ask difflib for more than n: several spellings of one entry may rank first.
    matches = difflib.get_close_matches(name.strip().lower(), list(_INDEX), n=3 * n, cutoff=0.6)
    result: list[str] = []
    for match in matches:
        short = _INDEX[match]
        if short not in result:
            result.append(short)
    return result[:n]
