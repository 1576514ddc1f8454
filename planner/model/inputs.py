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
  ``get_image_features``): ``batch * images_per_prompt`` images, as the model's image processor
  hands them over (:class:`ImageInputs`), and ``input_ids`` of ``prompt_len`` tokens, which
  *include* the image placeholders the processor expands each image into (one per image feature
  the model's ``get_image_features`` returns). The vision tower runs in prefill only; decode steps
  read text tokens against the cache. Three layouts:

  - *fixed* (LLaVA-1.5, Gemma 3, PaliGemma, ...): ``pixel_values`` of ``images x channels x
    image_size x image_size``, the size the image processor resizes every image to.
  - *anyres* (LLaVA-NeXT: ``image_grid_pinpoints`` in the config, ``image_sizes`` read by
    ``get_image_features``): ``pixel_values`` of ``images x (1 + tiles) x channels x S x S`` and
    ``image_sizes``, as ``LlavaNextImageProcessor._preprocess`` makes them (``S =
    vision_config.image_size``).
  - *grid* (Qwen2-VL, Qwen2.5-VL: ``image_grid_thw`` read by ``get_image_features``):
    ``pixel_values`` of ``sum(t*h*w) x (channels * temporal_patch_size * patch_size**2)`` and
    ``image_grid_thw``, as ``Qwen2VLImageProcessor`` makes them, with the 3-D (M-RoPE)
    ``position_ids`` of shape ``(3, batch, prompt_len)`` that ``Qwen2VLModel.get_rope_index``
    computes, handed in so that the forward does not compute them from token values.

  Images are :data:`DEFAULT_IMAGE_SIZE` pixels unless a size is given.

Inputs are shapes only: the forwards run on meta or fake tensors. transformers checks the
placeholder count against the image features with ``torch_compilable_check``, which reads tensor
*values* (``Tensor.item()``) that such tensors do not have; :func:`unchecked` turns those checks off
with transformers' own switch, ``TRANSFORMERS_DISABLE_TORCH_CHECK=1``, for our forwards only.

A few small integer tensors are not shapes but sizes the model reads back (``image_sizes``,
``image_grid_thw`` and the sequence boundaries derived from them, which transformers turns into
Python ints with ``.tolist()`` to split the vision tower's attention and its output per image).
They are handed in as known values (:class:`_Known`): every op on them alone runs for real, on the
CPU, outside the fake and recording modes (a few dozen integers); every other op sees fake tensors.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map_only

from layerplan.planner.model.workload import Phase, Workload

__all__ = ["DEFAULT_IMAGE_SIZE", "Feed", "ImageInputs", "ImageLayout", "feed_for", "image_inputs",
           "image_tokens_per_image", "is_vision_language", "kv_tokens", "unchecked"]

#: ``(height, width)`` in pixels of each image a prompt carries when no size is given: LLaVA-NeXT
#: v1.6's largest anyres resolution (its ``image_grid_pinpoints`` top out at 672 x 672), so the
#: most prompt tokens one of its images takes (2928: a 2 x 2 grid of 336 px tiles and the base
#: image); and a multiple of Qwen2-VL's 28 px merge unit inside its ``min_pixels`` /
#: ``max_pixels`` (transformers' defaults and the released checkpoints' alike), so ``smart_resize``
#: keeps it: 48 x 48 patches, 576 tokens. Fixed-size models resize every image to their own size.
DEFAULT_IMAGE_SIZE: tuple[int, int] = (672, 672)


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


class _Known(torch.Tensor):
    """An integer CPU tensor whose values the forward may read (``.tolist()``, ``.item()``).

    An op whose only tensor arguments are known runs for real with every dispatch mode off
    (``FakeTensorMode`` hands such a subclass on, "unrecognized subclass", to its own
    ``__torch_dispatch__``), and its tensor results are known again; an op that mixes one with other
    tensors runs on plain copies, so that fake tensors stay fake. ``__torch_function__`` is off, as
    for PyTorch's own dispatch-only subclasses, so results are not re-wrapped at that level.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, value: torch.Tensor) -> _Known:
        known = torch.Tensor._make_subclass(cls, value)
        known._value = value
        return known

    def tolist(self):  # noqa: ANN201 -- torch's tolist refuses subclasses
        return self._value.tolist()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        plain_args, plain_kwargs = tree_map_only(_Known, lambda t: t._value, (args, kwargs))
        if any(isinstance(t, torch.Tensor) and not isinstance(t, _Known) for t in tree_flatten((args, kwargs))[0]):
            return func(*plain_args, **plain_kwargs)
        with _disable_current_modes():
            out = func(*plain_args, **plain_kwargs)
        return tree_map_only(torch.Tensor, lambda t: _Known(t) if type(t) is torch.Tensor else t, out)


def _known(values: list) -> _Known:
    """A known int64 CPU tensor of ``values``, made with every mode off (from inside a fake forward too)."""
    with _disable_current_modes():
        return _Known(torch.tensor(values, dtype=torch.long))


class ImageLayout(Enum):
    """How a vision-language model's processor hands it images (see the module docstring)."""

    FIXED = "fixed"  # every image resized to the tower's image_size (LLaVA-1.5, Gemma 3)
    ANYRES = "anyres"  # a base image and its best-fit grid of tiles, with image_sizes (LLaVA-NeXT)
    GRID = "grid"  # flattened patches of a resized image, with image_grid_thw (Qwen2-VL, Qwen2.5-VL)


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageInputs:
    """What a model's image processor hands it for ``count`` images of one size (see the module
    docstring for the three layouts); plain data, the tensors are made per forward.

    Attributes:
        layout: see :class:`ImageLayout`.
        count: images.
        pixel_shape: shape of ``pixel_values``.
        image_sizes: anyres: each image's ``(height, width)`` before processing, pixels, as the
            processor reports it (``image_sizes``).
        grid_thw: grid: each image's ``(t, h, w)`` in patches (``image_grid_thw``).
        vision_shapes: grid: precomputed inputs of the vision tower that only index or rotate,
            ``name -> shape`` (transformers ``vision_utils``: ``position_ids``, Qwen2.5-VL's
            ``window_index``), handed in as zeros of that shape under the ``image_`` prefix
            (``accepts_precomputed_kwargs``) instead of being built from the grid's values.
        vision_values: grid: precomputed sequence boundaries, ``name -> values`` (Qwen2.5-VL's
            ``cu_window_seqlens``), handed in known.
    """

    layout: ImageLayout
    count: int
    pixel_shape: tuple[int, ...]
    image_sizes: tuple[tuple[int, int], ...] = ()
    grid_thw: tuple[tuple[int, int, int], ...] = ()
    vision_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    vision_values: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def _size_kwargs(self) -> dict[str, object]:
        """The sizes ``get_image_features`` reads besides ``pixel_values`` (known tensors)."""
        if self.layout is ImageLayout.ANYRES:
            return {"image_sizes": _known([list(s) for s in self.image_sizes])}
        if self.layout is ImageLayout.GRID:
            return {"image_grid_thw": _known([list(g) for g in self.grid_thw])}
        return {}

    def vision_kwargs(self, device: str) -> dict[str, object]:
        """``get_image_features``'s inputs besides ``pixel_values``: the sizes and the precomputed ones."""
        out = self._size_kwargs()
        for name, shape in self.vision_shapes:
            out[f"image_{name}"] = torch.zeros(shape, dtype=torch.long, device=device)
        for name, values in self.vision_values:
            out[f"image_{name}"] = _known(list(values))
        return out

    def prompt_kwargs(self, device: str, batch: int, prompt_len: int) -> dict[str, object]:
        """What the whole forward reads besides: a grid layout's M-RoPE ``position_ids``, ``(3,
        batch, prompt_len)`` (``Qwen2VLModel.get_rope_index``'s result, whose values do not change
        a shape)."""
        if self.layout is not ImageLayout.GRID:
            return {}
        return {"position_ids": torch.zeros((3, batch, prompt_len), dtype=torch.long, device=device)}


def _vision(model: nn.Module) -> object:
    return _config(model).vision_config


def _image_features_reads(model: nn.Module) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(model.get_image_features).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _layout(model: nn.Module) -> ImageLayout:
    """The model's :class:`ImageLayout`, from what its ``get_image_features`` reads."""
    reads, vision = _image_features_reads(model), _vision(model)
    sizes = ("patch_size", "temporal_patch_size", "spatial_merge_size")
    if "image_grid_thw" in reads and all(isinstance(getattr(vision, a, None), int) for a in sizes):
        return ImageLayout.GRID
    if "image_sizes" in reads and getattr(_config(model), "image_grid_pinpoints", None):
        return ImageLayout.ANYRES
    return ImageLayout.FIXED


def _fixed_images(model: nn.Module, images: int, vision: object | None = None) -> ImageInputs:
    vision = _vision(model) if vision is None else vision
    size = getattr(vision, "image_size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)[:2]
    return ImageInputs(layout=ImageLayout.FIXED, count=images,
                       pixel_shape=(images, getattr(vision, "num_channels", 3), height, width))


def _anyres_images(model: nn.Module, images: int, image_size: tuple[int, int]) -> ImageInputs:
    """LLaVA-NeXT: each image resized and padded to the grid pinpoint that fits it best
    (``select_best_resolution``), cut into ``S x S`` tiles, after the whole image resized to ``S``
    (transformers ``LlavaNextImageProcessor._get_image_patches``; ``S`` is the processor's
    ``crop_size``, the vision tower's ``image_size``: 336 for v1.6). The tokens it expands to (base
    tile, the unpadded grid's features and one newline per row, ``LlavaNextProcessor.
    _get_number_of_features``) are what the model's ``pack_image_features`` returns."""
    from transformers.image_processing_utils import select_best_resolution

    vision = _vision(model)
    tile = vision.image_size
    best_height, best_width = select_best_resolution(image_size, _config(model).image_grid_pinpoints)
    tiles = (best_height // tile) * (best_width // tile)
    shape = (images, 1 + tiles, getattr(vision, "num_channels", 3), tile, tile)
    return ImageInputs(layout=ImageLayout.ANYRES, count=images, pixel_shape=shape,
                       image_sizes=(tuple(image_size),) * images)


def _grid_images(model: nn.Module, images: int, image_size: tuple[int, int]) -> ImageInputs:
    """Qwen2-VL / Qwen2.5-VL: each image resized by ``smart_resize`` to multiples of ``patch_size *
    spatial_merge_size`` pixels between transformers' ``Qwen2VLImageProcessor`` defaults
    ``min_pixels = 56 * 56`` and ``max_pixels = 28 * 28 * 1280``, cut into ``h x w`` patches of
    ``patch_size``, each repeated ``temporal_patch_size`` times (an image is one temporal patch,
    ``t = 1``; ``Qwen2VLImageProcessor._preprocess``). It expands to ``h * w /
    spatial_merge_size**2`` tokens (``Qwen2VLProcessor.replace_image_token``)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

    vision = _vision(model)
    patch, merge = vision.patch_size, vision.spatial_merge_size
    defaults = Qwen2VLImageProcessorPil.size
    height, width = smart_resize(*image_size, factor=patch * merge, min_pixels=defaults["shortest_edge"],
                                 max_pixels=defaults["longest_edge"])
    grid = ((1, height // patch, width // patch),) * images
    channels = getattr(vision, "in_channels", getattr(vision, "in_chans", 3))
    shape = (images * (height // patch) * (width // patch), channels * vision.temporal_patch_size * patch**2)
    shapes, values = _precomputed(vision, grid)
    return ImageInputs(layout=ImageLayout.GRID, count=images, pixel_shape=shape, grid_thw=grid,
                       vision_shapes=shapes, vision_values=values)


def _precomputed(vision: object, grid: tuple[tuple[int, int, int], ...]) -> tuple[tuple, tuple]:
    """The vision tower inputs transformers' ``vision_utils`` builds from ``image_grid_thw`` with
    ops that fake tensors cannot run (``.tolist()`` of a freshly built tensor), computed here by those
    same helpers on the real grid: ``(name -> shape, name -> values)``. Empty on a transformers
    without ``vision_utils`` (the forward then builds them itself, or fails and is reported)."""
    try:
        from transformers.vision_utils import get_vision_position_ids, get_vision_window_index
    except ImportError:
        return (), ()
    with _disable_current_modes():
        real = torch.tensor(grid, dtype=torch.long)
        shapes = [("position_ids", tuple(get_vision_position_ids(real, vision.spatial_merge_size).shape))]
        values = []
        if isinstance(getattr(vision, "window_size", None), int) and hasattr(vision, "fullatt_block_indexes"):
            index, bounds = get_vision_window_index(real, vision.spatial_merge_size, vision.window_size,
                                                    vision.patch_size)
            shapes.append(("window_index", tuple(index.shape)))
            values.append(("cu_window_seqlens", tuple(bounds.tolist())))
    return tuple(shapes), tuple(values)


def image_inputs(model: nn.Module, images: int, *,
                 image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> ImageInputs:
    """The inputs ``model``'s image processor makes for ``images`` images of ``image_size =
    (height, width)`` pixels (module docstring; a fixed-size model ignores ``image_size``).

    Raises:
        AttributeError: the model is not vision-language (no ``config.vision_config``).
    """
    layout = _layout(model)
    if layout is ImageLayout.ANYRES:
        return _anyres_images(model, images, image_size)
    if layout is ImageLayout.GRID:
        return _grid_images(model, images, image_size)
    return _fixed_images(model, images)


def image_tokens_per_image(model: nn.Module, dtype: torch.dtype, *,
                           image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> int | None:
    """Prompt tokens one image of ``image_size = (height, width)`` pixels expands to: the image
    features the model's ``get_image_features`` returns for the processor's inputs of that image
    (:func:`image_inputs`; on fake tensors, nothing computed), e.g. 576 for LLaVA-1.5 (24 x 24
    patches of 14 pixels at 336 px), 2928 for LLaVA-NeXT v1.6 at 672 x 672, 576 for Qwen2-VL at 672
    x 672 (48 x 48 patches, 2 x 2 merged); None when the model is not vision-language or its image
    path cannot run on shapes alone (then only its text decoder is traced)."""
    if not is_vision_language(model):
        return None
    try:
        inputs = image_inputs(model, 1, image_size=image_size)
        with torch.no_grad(), unchecked(), FakeTensorMode(allow_non_fake_inputs=True):
            pixels = torch.zeros(inputs.pixel_shape, dtype=dtype, device="meta")
            out = model.get_image_features(pixel_values=pixels, **inputs.vision_kwargs("meta"))
    except Exception:  # noqa: BLE001 -- an image path that needs more than these inputs
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
        images: a vision-language model's images (``features`` holds their ``pixel_values``): what
            else its processor hands it; None without images.
    """

    batch: int
    prompt_len: int
    encoder_decoder: bool = False
    features: tuple[str, tuple[int, ...]] | None = None
    feature_dtype: torch.dtype = torch.float32

    image_only: bool = False
    images: ImageInputs | None = None

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
        if self.images is not None:
            inputs.update(self.images.vision_kwargs(device))
            inputs.update(self.images.prompt_kwargs(device, self.batch, self.prompt_len))
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


def feed_for(model: nn.Module, workload: Workload, *, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> Feed:
    """The :class:`Feed` of ``model`` at ``workload`` (``workload.images_per_prompt`` images of
    ``image_size = (height, width)`` pixels per prompt for a vision-language model whose image path
    runs on shapes)."""
    config = _config(model)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    features = None
    frames = _speech_frames(model)
    if getattr(model, "main_input_name", None) == "pixel_values":
        shape = _fixed_images(model, workload.batch_size, vision=config).pixel_shape
        return Feed(batch=workload.batch_size, prompt_len=workload.prompt_len, features=("pixel_values", shape),
                    feature_dtype=workload.dtype, image_only=True)
    if frames is not None:
        features = ("input_features", (workload.batch_size, *frames))
    elif workload.images_per_prompt and is_vision_language(model):
        images = image_inputs(model, workload.batch_size * workload.images_per_prompt, image_size=image_size)
        return Feed(batch=workload.batch_size, prompt_len=workload.prompt_len, encoder_decoder=encoder_decoder,
                    features=("pixel_values", images.pixel_shape), feature_dtype=workload.dtype, images=images)
    return Feed(batch=workload.batch_size, prompt_len=workload.prompt_len, encoder_decoder=encoder_decoder,
                features=features, feature_dtype=workload.dtype)


def kv_tokens(workload: Workload) -> int:
    """Context the decode step's cache reaches: the prompt in a prefill-only workload, else the whole context."""
    return workload.prompt_len if workload.phase is Phase.PREFILL else workload.context_len
