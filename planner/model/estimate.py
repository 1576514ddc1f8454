"""Analytic per-layer memory from a config: the fallback when a model cannot run on meta.

Formulas (bytes):

* KV cache per attention layer = ``2 * n_kv_heads * head_dim * kv_dtype_bytes * tokens`` (vLLM
  ``kv_cache_interface.py``: ``FullAttentionSpec.page_size_bytes = 2 * block_size * num_kv_heads *
  head_size * dtype_size``) with ``tokens`` the context, and on sliding-window layers
  ``max(min(context, sliding_window), prompt_len)``: transformers' ``DynamicSlidingWindowLayer``
  keeps after the prompt a window-long view of the whole prompt's K/V, whose storage is held until
  the first decode step (what the trace measures, :mod:`layerplan.planner.model.measure`).
* Working set of a decoder layer in prefill ~ the MLP's widest point: ``batch * prompt_len *
  (2 * intermediate_size + hidden_size) * dtype_bytes`` (gate and up projections live together in
  a gated MLP, then the output), plus, with eager attention, the score matrix ``batch * n_heads *
  prompt_len**2 * dtype_bytes``. This is a rough upper bound used only when measuring fails; the
  report names every node it was used for.

Recurrent layers (``layer_types`` entry ``"linear_attention"``: Mamba, Mamba-2, gated-DeltaNet
linear attention) hold a fixed per-sequence state instead of a per-token KV cache, as transformers'
``cache_utils.LinearAttentionLayer`` stores it: a conv state ``batch * conv_dim * conv_kernel`` in the
model dtype and a recurrent state in float32 (the dtype transformers' reference scans keep it in):

* Mamba (``modeling_mamba.py``): ``conv_dim = intermediate_size``, state ``batch * intermediate_size * state_size``;
* Mamba-2 (``modeling_mamba2.py``): ``conv_dim = intermediate + 2 * n_groups * state_size`` with
  ``intermediate = expand * hidden_size``, state ``batch * num_heads * head_dim * state_size``;
* gated DeltaNet (``modeling_qwen3_next.py``): ``conv_dim = 2 * key_heads * key_head_dim + value_heads *
  value_head_dim``, state ``batch * value_heads * key_head_dim * value_head_dim``.

FLOPs of one forward (a multiply-add counts 2, as ``torch.utils.flop_counter`` counts):

* ``2 * parameters * tokens`` for the matmuls of a layer's weights (Kaplan et al. 2020, "Scaling
  Laws for Neural Language Models", section 2.1: ``C_forward ~ 2N`` per token);
* plus, per attention layer, ``2 * 2 * batch * n_heads * head_dim * q_tokens * kv_tokens`` for
  ``Q K^T`` and ``A V`` (the same two batched matmuls ``torch.utils.flop_counter.sdpa_flop_count``
  counts; causal masking is not discounted, as there).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from layerplan.planner.model.workload import Phase, Workload

__all__ = ["AttentionShape", "attention_shape", "estimate_forward_flops", "estimate_layer_bytes",
           "has_recurrent_layers", "is_recurrent", "kv_bytes_per_token", "recurrent_state_bytes"]


@dataclass(frozen=True, kw_only=True, slots=True)
class AttentionShape:
    """What sizes one attention layer's cache: heads, head dim, window (tokens, or None)."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    sliding_window: int | None


def _first(config: PretrainedConfig, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def attention_shape(config: PretrainedConfig) -> AttentionShape | None:
    """Heads, KV heads (GQA/MQA aware), head dim and window from a transformers config; None for a
    config without attention heads (a pure state-space model) or without a hidden size."""
    config = _text_config(config)
    n_heads = _first(config, "num_attention_heads", "n_head", "num_heads")
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    if not n_heads or not hidden or getattr(config, "model_type", "") in _PURE_RECURRENT:
        return None
    n_kv = _first(config, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if getattr(config, "model_type", "") == "falcon" and not getattr(config, "new_decoder_architecture", False):
        n_kv = 1 if getattr(config, "multi_query", True) else n_heads
    head_dim = _first(config, "head_dim", "d_kv") or hidden // n_heads
    window = _first(config, "sliding_window")
    if getattr(config, "use_sliding_window", True) is False:
        window = None
    return AttentionShape(n_heads=n_heads, n_kv_heads=n_kv or n_heads, head_dim=head_dim, sliding_window=window)


def kv_bytes_per_token(config: PretrainedConfig, *, dtype_bytes: int) -> int:
    """KV-cache bytes one token adds to one full-attention layer: ``2 * n_kv_heads * head_dim *
    dtype_bytes`` (0 without attention)."""
    shape = attention_shape(config)
    return 2 * shape.n_kv_heads * shape.head_dim * dtype_bytes if shape is not None else 0


#: Model types whose every layer is recurrent (no attention layer, whatever ``num_heads`` means there).
_PURE_RECURRENT = frozenset({"mamba", "falcon_mamba", "mamba2"})


def _text_config(config: PretrainedConfig) -> PretrainedConfig:
    """A multimodal config's text decoder config (transformers' ``get_text_config``), else itself."""
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def is_recurrent(config: PretrainedConfig | None, layer_type: str | None = None) -> bool:
    """Whether a layer of ``config`` (of ``layer_type``, when the config lists them) is recurrent."""
    if config is None:
        return False
    config = _text_config(config)
    if layer_type is not None:
        return layer_type == "linear_attention"
    return getattr(config, "model_type", "") in _PURE_RECURRENT


def has_recurrent_layers(config: PretrainedConfig | None) -> bool:
    """Whether any layer of ``config`` is recurrent (see the module docstring)."""
    if config is None:
        return False
    types = getattr(_text_config(config), "layer_types", None)
    return is_recurrent(config) or (isinstance(types, list | tuple) and "linear_attention" in types)


def recurrent_state_bytes(config: PretrainedConfig, workload: Workload) -> int | None:
    """Bytes of one recurrent layer's state for ``workload.batch_size`` sequences (see the module
    docstring), or None when the config's family is not one of those formulas."""
    config = _text_config(config)
    b, d, f32 = workload.batch_size, workload.dtype.itemsize, 4
    hidden = _first(config, "hidden_size", "d_model") or 0
    kernel = _first(config, "conv_kernel", "linear_conv_kernel_dim", "mamba_d_conv")
    if _first(config, "linear_num_value_heads") is not None:  # gated DeltaNet
        vh, kh = config.linear_num_value_heads, _first(config, "linear_num_key_heads") or config.linear_num_value_heads
        kd, vd = config.linear_key_head_dim, config.linear_value_head_dim
        return b * (2 * kh * kd + vh * vd) * (kernel or 4) * d + b * vh * kd * vd * f32
    state = _first(config, "state_size", "ssm_state_size", "mamba_d_state")
    if state is None or kernel is None:
        return None
    heads, head_dim = _first(config, "mamba_n_heads"), _first(config, "mamba_d_head")
    if getattr(config, "model_type", "") == "mamba2":
        heads, head_dim = _first(config, "num_heads"), _first(config, "head_dim")
    if heads and head_dim:  # Mamba-2 and its hybrids
        groups = _first(config, "n_groups", "mamba_n_groups") or 1
        inner = heads * head_dim
        return b * (inner + 2 * groups * state) * kernel * d + b * heads * head_dim * state * f32
    inner = _first(config, "intermediate_size") or 2 * hidden
    return b * inner * kernel * d + b * inner * state * f32


def estimate_layer_bytes(config: PretrainedConfig, workload: Workload, *, layer_type: str | None = None) -> tuple[int, int]:
    """``(kv_bytes, work_bytes)`` of one decoder layer at ``workload`` (see the module docstring).

    Args:
        config: the model's config.
        workload: batch, lengths, dtypes.
        layer_type: ``"sliding_attention"`` caps the KV tokens at the window (or the prompt, when
            longer: module docstring); ``None`` reads
            ``config.sliding_window`` as applying to every layer when ``layer_types`` is absent.
    """
    shape = attention_shape(config)
    text = _text_config(config)
    hidden = _first(text, "hidden_size", "n_embd", "d_model") or 0
    intermediate = _first(text, "intermediate_size", "ffn_dim", "d_ff", "n_inner") or 4 * hidden
    tokens_in = workload.prompt_len * workload.batch_size
    work = tokens_in * (2 * intermediate + hidden) * workload.dtype.itemsize
    if is_recurrent(config, layer_type) or shape is None:
        return (recurrent_state_bytes(config, workload) or 0) if has_recurrent_layers(config) else 0, work
    tokens = workload.prompt_len if workload.phase is Phase.PREFILL else workload.context_len
    sliding = layer_type == "sliding_attention" or (layer_type is None and shape.sliding_window is not None)
    if sliding and shape.sliding_window is not None:  # the prompt's storage, behind the window's view
        tokens = max(min(tokens, shape.sliding_window), min(workload.prompt_len, tokens))
    kv = 2 * shape.n_kv_heads * shape.head_dim * workload.kv_dtype.itemsize * tokens * workload.batch_size
    if workload.attn_implementation == "eager":
        work += workload.batch_size * shape.n_heads * workload.prompt_len**2 * workload.dtype.itemsize
    return kv, work


def estimate_forward_flops(
    config: PretrainedConfig,
    *,
    num_parameters: int,
    batch_size: int,
    q_tokens: int,
    kv_tokens: int = 0,
) -> int:
    """FLOPs of one forward of a layer (see the module docstring).

    Args:
        config: the model's config (heads and head dim of the attention term).
        num_parameters: the layer's parameters, all assumed to sit in matmuls (for an MoE layer
            every expert counts, though only the routed ones run: an upper bound).
        batch_size: sequences.
        q_tokens: tokens each sequence feeds through the layer (``prompt_len`` in prefill, 1 per
            decode step).
        kv_tokens: tokens each query attends to (self plus cross attention); 0 for a layer without
            attention.

    Returns:
        ``2 * num_parameters * batch_size * q_tokens + 2 * 2 * batch_size * n_heads * head_dim *
        q_tokens * kv_tokens``.
    """
    matmuls = 2 * num_parameters * batch_size * q_tokens
    shape = attention_shape(config)
    if not kv_tokens or shape is None:
        return matmuls
    return matmuls + 2 * 2 * batch_size * shape.n_heads * shape.head_dim * q_tokens * kv_tokens
