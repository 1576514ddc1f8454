"""The workload a plan is made for: batch, prompt and generated tokens, dtypes, attention, phase."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layerplan.planner.graph import TracedWorkload
from layerplan.planner.spec.sections import Phase
from layerplan.solver import InvalidSpecError

__all__ = ["Phase", "Workload", "DEFAULT_MAX_CONTEXT", "DEFAULT_MAX_NEW_TOKENS"]

#: Default context (prompt + new tokens): the model's own context, capped here (tokens).
DEFAULT_MAX_CONTEXT = 4096
#: Default tokens generated after the prompt when only a context length is known.
DEFAULT_MAX_NEW_TOKENS = 256


_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """What will run on the placed model.

    Attributes:
        batch_size: sequences per forward pass.
        prompt_len: tokens in each prompt (prefill length).
        max_new_tokens: tokens generated after the prompt (decode steps).
        dtype: weight and activation dtype.
        kv_dtype: KV-cache dtype (``dtype`` unless the cache is quantised, e.g. fp8).
        attn_implementation: ``"sdpa"`` or ``"eager"`` (eager materialises the
            ``batch x heads x q_len x kv_len`` score matrix).
        phase: see :class:`Phase`.
        prefill_logits: keep logits for every prompt position during prefill (as a training-style
            forward does) instead of only the last one, as ``generate()`` does with
            ``logits_to_keep=1``.
        images_per_prompt: images each prompt carries (vision-language models; 0: text only).
        image_tokens: the prompt tokens those images expand to (``images_per_prompt`` times the
            model's tokens per image, :func:`layerplan.planner.model.inputs.image_tokens_per_image`);
            part of ``prompt_len``, as the processor's expanded ``input_ids`` are.

    Raises:
        InvalidSpecError: a length or batch < 1 (``max_new_tokens`` may be 0), or an unknown
            attention implementation.
    """

    batch_size: int = 1
    prompt_len: int
    max_new_tokens: int = 0
    dtype: torch.dtype = torch.float16
    kv_dtype: torch.dtype | None = None
    attn_implementation: str = "sdpa"
    phase: Phase = Phase.GENERATE
    prefill_logits: bool = False
    images_per_prompt: int = 0
    image_tokens: int = 0

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("prompt_len", 1), ("max_new_tokens", 0), ("images_per_prompt", 0),
                          ("image_tokens", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidSpecError(f"{name}={value!r}; expected an integer >= {low}")
        if self.attn_implementation not in _ATTENTION:
            raise InvalidSpecError(
                f"attn_implementation={self.attn_implementation!r}; expected one of {', '.join(_ATTENTION)}"
            )
        if self.kv_dtype is None:
            object.__setattr__(self, "kv_dtype", self.dtype)
        if not isinstance(self.phase, Phase):
            try:
                object.__setattr__(self, "phase", Phase(self.phase))
            except ValueError:
                raise InvalidSpecError(
                    f"phase={self.phase!r}; expected one of {', '.join(p.value for p in Phase)}"
                ) from None

    @property
    def context_len(self) -> int:
        """Tokens the KV cache holds at the end: ``prompt_len + max_new_tokens``."""
        return self.prompt_len + self.max_new_tokens

    @classmethod
    def from_lengths(
        cls,
        *,
        model_context: int | None,
        seq_len: int | None = None,
        prompt_len: int | None = None,
        max_new_tokens: int | None = None,
        **rest,
    ) -> Workload:
        """Fill in lengths the way a user expects.

        ``seq_len`` is the total context (prompt + new tokens). Missing values default to: context =
        the model's context capped at :data:`DEFAULT_MAX_CONTEXT`; ``max_new_tokens`` =
        :data:`DEFAULT_MAX_NEW_TOKENS` (at most a quarter of the context); the prompt takes the rest.

        Raises:
            InvalidSpecError: the lengths contradict each other.
        """
        if seq_len is not None and prompt_len is not None and max_new_tokens is not None:
            if prompt_len + max_new_tokens != seq_len:
                raise InvalidSpecError(
                    f"seq_len={seq_len} but prompt_len + max_new_tokens = {prompt_len} + {max_new_tokens} = "
                    f"{prompt_len + max_new_tokens}; give seq_len or the two lengths, not all three"
                )
        if prompt_len is not None and max_new_tokens is None:
            max_new_tokens = seq_len - prompt_len if seq_len is not None else DEFAULT_MAX_NEW_TOKENS
        context = seq_len
        if context is None:
            if prompt_len is not None:
                context = prompt_len + (max_new_tokens or 0)
            else:
                context = min(model_context or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        if max_new_tokens is None:
            max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, context // 4)
        if prompt_len is None:
            prompt_len = context - max_new_tokens
        if prompt_len < 1:
            raise InvalidSpecError(
                f"max_new_tokens={max_new_tokens} leaves prompt_len={prompt_len} of a {context}-token context; "
                "lower --max-new-tokens or raise --seq-len"
            )
        return cls(prompt_len=prompt_len, max_new_tokens=max_new_tokens, **rest)

    def to_traced(self) -> TracedWorkload:
        """The torch-free form a :class:`~layerplan.planner.graph.LayerGraph` keeps."""
        return TracedWorkload.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_size": self.batch_size,
            "prompt_len": self.prompt_len,
            "max_new_tokens": self.max_new_tokens,
            "context_len": self.context_len,
            "dtype": str(self.dtype).removeprefix("torch."),
            "kv_dtype": str(self.kv_dtype).removeprefix("torch."),
            "attn_implementation": self.attn_implementation,
            "phase": self.phase.value,
            "prefill_logits": self.prefill_logits,
            "images_per_prompt": self.images_per_prompt,
            "image_tokens": self.image_tokens,
        }
