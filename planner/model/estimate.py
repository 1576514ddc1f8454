"""Analytic per-layer memory from a config: the fallback when a model cannot run on meta.

Formulas (bytes):

* KV cache per attention layer = ``2 * n_kv_heads * head_dim * kv_dtype_bytes * tokens`` with
  ``tokens = min(context, sliding_window)`` on sliding-window layers (vLLM ``kv_cache_interface.py``:
  ``FullAttentionSpec.page_size_bytes = 2 * block_size * num_kv_heads * head_size * dtype_size``).
* Working set of a decoder layer in prefill ~ the MLP's widest point: ``batch * prompt_len *
  (2 * intermediate_size + hidden_size) * dtype_bytes`` (gate and up projections live together in
  a gated MLP, then the output), plus, with eager attention, the score matrix ``batch * n_heads *
  prompt_len**2 * dtype_bytes``. This is a rough upper bound used only when measuring fails; the
  report names every node it was used for.

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

__all__ = ["AttentionShape", "attention_shape", "kv_bytes_per_token", "estimate_layer_bytes",
           "estimate_forward_flops"]


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


def attention_shape(config: PretrainedConfig) -> AttentionShape:
    """Heads, KV heads (GQA/MQA aware), head dim and window from a transformers config."""
    n_heads = _first(config, "num_attention_heads", "n_head", "num_heads")
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    assert n_heads and hidden, "config without heads or hidden size"
    n_kv = _first(config, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if getattr(config, "model_type", "") == "falcon" and not getattr(config, "new_decoder_architecture", False):
        n_kv = 1 if getattr(config, "multi_query", True) else n_heads
    head_dim = _first(config, "head_dim", "d_kv") or hidden // n_heads
    window = _first(config, "sliding_window")
    if getattr(config, "use_sliding_window", True) is False:
        window = None
    return AttentionShape(n_heads=n_heads, n_kv_heads=n_kv or n_heads, head_dim=head_dim, sliding_window=window)


def kv_bytes_per_token(config: PretrainedConfig, *, dtype_bytes: int) -> int:
    """KV-cache bytes one token adds to one full-attention layer: ``2 * n_kv_heads * head_dim * dtype_bytes``."""
    shape = attention_shape(config)
    return 2 * shape.n_kv_heads * shape.head_dim * dtype_bytes


def estimate_layer_bytes(config: PretrainedConfig, workload: Workload, *, layer_type: str | None = None) -> tuple[int, int]:
    """``(kv_bytes, work_bytes)`` of one decoder layer at ``workload`` (see the module docstring).

    Args:
        config: the model's config.
        workload: batch, lengths, dtypes.
        layer_type: ``"sliding_attention"`` caps the KV tokens at the window; ``None`` reads
            ``config.sliding_window`` as applying to every layer when ``layer_types`` is absent.
    """
    shape = attention_shape(config)
    tokens = workload.prompt_len if workload.phase is Phase.PREFILL else workload.context_len
    sliding = layer_type == "sliding_attention" or (layer_type is None and shape.sliding_window is not None)
    if sliding and shape.sliding_window is not None:
        tokens = min(tokens, shape.sliding_window)
    kv = 2 * shape.n_kv_heads * shape.head_dim * workload.kv_dtype.itemsize * tokens * workload.batch_size
    hidden = _first(config, "hidden_size", "n_embd", "d_model") or 0
    intermediate = _first(config, "intermediate_size", "ffn_dim", "d_ff", "n_inner") or 4 * hidden
    tokens_in = workload.prompt_len * workload.batch_size
    work = tokens_in * (2 * intermediate + hidden) * workload.dtype.itemsize
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
    if not kv_tokens:
        return matmuls
    shape = attention_shape(config)
    return matmuls + 2 * 2 * batch_size * shape.n_heads * shape.head_dim * q_tokens * kv_tokens
