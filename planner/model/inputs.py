"""What the traced forwards feed a model: the tensors its processor and ``generate()`` would.

* **Text decoders** (Llama, GPT-2, ...): ``input_ids`` of ``prompt_len`` tokens in prefill; decode
  fills the cache with ``context - 1`` tokens, then runs one.
* **Text encoder-decoders** (T5): the encoder reads the prompt, the decoder starts from the one
  ``decoder_start_token_id`` token (transformers ``GenerationMixin.
  _prepare_decoder_input_ids_for_generation``) and its cache grows by ``max_new_tokens``.
* **Speech encoder-decoders** (Whisper: ``main_input_name == "input_features"``): the encoder reads
  one 30 s window of log-mel features, ``(batch, num_mel_bins, 2 * max_source_positions)`` as
  ``WhisperFeatureExtractor`` pads every input to (``nb_max_frames = 3000``; the encoder's two
  convolutions halve it to ``max_source_positions`` frames, transformers ``modeling_whisper.py``);
  the decoder reads the ``prompt_len`` decoder-prompt tokens and its cache grows to the context.
* **Image models** (``main_input_name == "pixel_values"``: ViT, ConvNeXt classifiers): ``batch``
  images of ``num_channels x image_size x image_size``, nothing else; one forward, no decode.
* **Vision-language decoders** (a config with ``vision_config`` and an image token, a model with
  ``get_image_features``: LLaVA, Gemma 3, PaliGemma, ...): ``pixel_values`` of ``batch *
  images_per_prompt`` images of ``num_channels x image_size x image_size`` (the size the image
  processor resizes to), and ``input_ids`` of ``prompt_len`` tokens, which *include* the image
  placeholders the processor expands each image into (``LlavaProcessor``: one per image feature).
  The vision tower runs in prefill only; decode steps read text tokens against the cache.

Inputs are shapes only: the forwards run on meta or fake tensors. transformers checks the
placeholder count against the image features with ``torch_compilable_check``, which reads tensor
*values* (``Tensor.item()``) that such tensors do not have; :func:`unchecked` turns those checks off
with transformers' own switch, ``TRANSFORMERS_DISABLE_TORCH_CHECK=1``, for our forwards only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from layerplan.planner.model.workload import Phase, Workload

__all__ = ["Feed", "feed_for", "image_tokens_per_image", "is_vision_language", "kv_tokens", "unchecked"]


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """transformers' data-dependent input checks off (``TRANSFORMERS_DISABLE_TORCH_CHECK``), then
    the variable restored as it was."""
    name = "TRANSFORMERS_DISABLE_TORCH_CHECK"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _config(model: nn.Module) -> object | None:
    return getattr(model, "config", None)


def _image_token(config: object) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def is_vision_language(model: nn.Module) -> bool:
    """A decoder that reads images through placeholders in its prompt: its config has a
    ``vision_config`` and an image token, the model a ``get_image_features``."""
    config = _config(model)
    return (getattr(config, "vision_config", None) is not None and _image_token(config) is not None
            and callable(getattr(model, "get_image_features", None)))


def _image_shape(model: nn.Module, images: int, vision: object | None = None) -> tuple[int, ...]:
    vision = _config(model).vision_config if vision is None else vision
    size = getattr(vision, "image_size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)[:2]
    return (images, getattr(vision, "num_channels", 3), height, width)


def image_tokens_per_image(model: nn.Module, dtype: torch.dtype) -> int | None:
    """Prompt tokens one image expands to: the image features the model's ``get_image_features``
    returns for one ``image_size`` image (on fake tensors, nothing computed), e.g. 576 for LLaVA-1.5
    (24 x 24 patches of 14 pixels at 336 px); None when the model is not vision-language or its
    image path cannot run on shapes alone (then only its text decoder is traced)."""
    if not is_vision_language(model):
        return None
    try:
        with torch.no_grad(), unchecked(), FakeTensorMode(allow_non_fake_inputs=True):
            pixels = torch.zeros(_image_shape(model, 1), dtype=dtype, device="meta")
            out = model.get_image_features(pixel_values=pixels)
    except Exception:  # noqa: BLE001 -- an image path that needs more than pixel_values (sizes, grids)
        return None
    features = getattr(out, "pooler_output", out)
    if isinstance(features, list | tuple):
        return sum(f.shape[0] if f.dim() == 2 else f.shape[-2] for f in features)
    if isinstance(features, torch.Tensor) and features.dim() >= 2:
        return features.shape[-2] if features.dim() == 3 else features.shape[0]
    return None


def _speech_frames(model: nn.Module) -> tuple[int, int] | None:
    config = _config(model)
    if getattr(model, "main_input_name", None) != "input_features":
        return None
    bins, positions = getattr(config, "num_mel_bins", None), getattr(config, "max_source_positions", None)
    return (bins, 2 * positions) if isinstance(bins, int) and isinstance(positions, int) else None


@dataclass(frozen=True, slots=True)
class Feed:
    """The inputs of one model's prefill, cache-filling and decode-step forwards at a workload.

    Attributes:
        batch: sequences per forward.
        prompt_len: tokens of the prompt (image placeholders included), tokens.
        encoder_decoder: the model has an encoder whose output the decoder attends to.
        features: the non-token input and its shape, ``("pixel_values", (images, channels, height,
            width))`` or ``("input_features", (batch, mel bins, frames))``; None for text only.
        feature_dtype: dtype of ``features``.
        image_only: the model reads ``pixel_values`` alone (an image classifier: ViT, ConvNeXt).
    """

    batch: int
    prompt_len: int
    encoder_decoder: bool = False
    features: tuple[str, tuple[int, ...]] | None = None
    feature_dtype: torch.dtype = torch.float32

    image_only: bool = False

    @property
    def speech(self) -> bool:
        return self.features is not None and self.features[0] == "input_features"

    def _ids(self, length: int, device: str) -> torch.Tensor:
        return torch.zeros((self.batch, max(length, 1)), dtype=torch.long, device=device)

    def _features(self, device: str) -> dict[str, torch.Tensor]:
        if self.features is None:
            return {}
        name, shape = self.features
        return {name: torch.zeros(shape, dtype=self.feature_dtype, device=device)}

    def prefill(self, device: str) -> dict[str, object]:
        """The prefill forward's inputs (see the module docstring)."""
        if self.image_only:
            return self._features(device)
        if self.speech:
            return {**self._features(device), "decoder_input_ids": self._ids(self.prompt_len, device)}
        inputs: dict[str, object] = {"input_ids": self._ids(self.prompt_len, device), **self._features(device)}
        if self.encoder_decoder:
            inputs["decoder_input_ids"] = self._ids(1, device)
        return inputs

    def fill(self, device: str, kv_tokens: int) -> dict[str, object]:
        """The forward that fills the cache so that one more token makes ``kv_tokens`` of context:
        a text decoder's ``kv_tokens - 1`` tokens; an encoder-decoder's encoder input and decoder
        tokens up to ``kv_tokens - prompt_len - 1`` (text) or ``kv_tokens - 1`` (speech). Images
        are not read again: the cache holds their tokens like any other."""
        if self.speech:
            return {**self._features(device), "decoder_input_ids": self._ids(kv_tokens - 1, device)}
        if self.encoder_decoder:
            decoder_tokens = max(kv_tokens - self.prompt_len, 1)
            return {"input_ids": self._ids(self.prompt_len, device), "decoder_input_ids": self._ids(decoder_tokens - 1, device)}
        return {"input_ids": self._ids(kv_tokens - 1, device)}

    def step(self, device: str, filled: object) -> dict[str, object]:
        """One decode step after :meth:`fill` (whose output is ``filled``): one new token, an
        encoder-decoder's encoder output handed in as ``generate()`` does."""
        if self.encoder_decoder:
            return {"encoder_outputs": (filled.encoder_last_hidden_state,), "decoder_input_ids": self._ids(1, device)}
        return {"input_ids": self._ids(1, device)}


def feed_for(model: nn.Module, workload: Workload) -> Feed:
    """The :class:`Feed` of ``model`` at ``workload`` (``workload.images_per_prompt`` images per
    prompt for a vision-language model whose image path runs on shapes)."""
    config = _config(model)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    features = None
    frames = _speech_frames(model)
    if getattr(model, "main_input_name", None) == "pixel_values":
        shape = _image_shape(model, workload.batch_size, vision=config)
        return Feed(batch=workload.batch_size, prompt_len=workload.prompt_len, features=("pixel_values", shape),
                    feature_dtype=workload.dtype, image_only=True)
    if frames is not None:
        features = ("input_features", (workload.batch_size, *frames))
    elif workload.images_per_prompt and is_vision_language(model):
        features = ("pixel_values", _image_shape(model, workload.batch_size * workload.images_per_prompt))
    return Feed(batch=workload.batch_size, prompt_len=workload.prompt_len, encoder_decoder=encoder_decoder,
                features=features, feature_dtype=workload.dtype)


def kv_tokens(workload: Workload) -> int:
    """Context the decode step's cache reaches: the prompt in a prefill-only workload, else the whole context."""
    return workload.prompt_len if workload.phase is Phase.PREFILL else workload.context_len
