"""Build a Hugging Face model on PyTorch's meta device, with tied weights tied.

Why not accelerate's ``init_empty_weights``: in transformers 5, a model class constructed under it
does not tie its weights (BLOOM-176B then counts 179.8B parameters instead of 176.2B), whereas
building under ``torch.device("meta")`` and calling ``tie_weights()`` keeps ``lm_head.weight`` the
same Parameter as the input embedding, exactly as ``from_pretrained`` would.

The model is built under transformers' own ``no_init_weights`` (``transformers/initialization.py``),
as ``from_pretrained`` builds it: initialising meta tensors computes nothing, but each
``kaiming_uniform_`` still dispatches through the meta device mode, which was half the build time
of a deep model (6 of 11.5 s for 4096 Llama layers).
"""

from __future__ import annotations

import torch
import transformers
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig
from transformers.initialization import no_init_weights
from transformers.models.auto import modeling_auto

from layerplan.solver.errors import TraceError

__all__ = ["auto_class_for", "build_meta_model"]


def auto_class_for(config: PretrainedConfig) -> type:
    """The class ``from_pretrained`` builds for ``config``: the published ``architectures[0]``
    (``BertForSequenceClassification``, ``LlavaForConditionalGeneration``, ...) when transformers
    has that class for this config type, so that the device_map keys are the head model's (its
    ``lm_head``, ``classifier``, ``language_model.`` prefix); else an ``AutoModel*`` class:
    seq2seq LM for encoder-decoder types (T5), causal LM for decoder types (Llama, GPT-2, ...),
    the bare ``AutoModel`` otherwise (BERT / MiniLM encoders).
    """
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        published = getattr(transformers, architectures[0], None)
        if isinstance(published, type) and getattr(published, "config_class", None) is type(config):
            return published
    model_type = config.model_type
    if model_type in modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForSeq2SeqLM
    if model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(
        config, "is_encoder_decoder", False
    ):
        if not architectures or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
            return AutoModelForCausalLM
    return AutoModel


def build_meta_model(
    config: PretrainedConfig, *, auto_class: type | None = None, attn_implementation: str | None = None
) -> nn.Module:
    """Instantiate ``config``'s model with every parameter on the meta device (no memory used).

    Args:
        config: a transformers config.
        auto_class: the ``AutoModel*`` class to build with; default :func:`auto_class_for`.
        attn_implementation: ``"sdpa"`` or ``"eager"``; default transformers' choice.

    Returns:
        The model in eval mode, parameters on ``torch.device("meta")``, tied weights tied.

    Raises:
        TraceError: transformers cannot build this config.
    """
    cls = auto_class or auto_class_for(config)
    try:
        with torch.device("meta"), no_init_weights():
            # Auto classes build with ``from_config``, concrete model classes with ``_from_config``
            build = cls.from_config if hasattr(cls, "from_config") else cls._from_config
            kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
            model = build(config, **kwargs)
    except Exception as exc:  # transformers raises many types here; we report them all as one
        raise TraceError(
            f"cannot build model_type={config.model_type!r} with {cls.__name__}: {exc}"
        ) from exc
    model.tie_weights()
    return model.eval()
