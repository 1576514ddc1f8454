"""The image paths of LLaVA-NeXT (anyres tiles + ``image_sizes``) and Qwen2-VL / Qwen2.5-VL (patch
grids + ``image_grid_thw``, M-RoPE) are traced with the inputs their processors make.

Oracles, all independent of layerplan's own arithmetic:

* transformers' real processors on a real image of the declared size: ``LlavaNextProcessor`` (with
  a tiny tokenizer built offline) counts the ``<image>`` placeholders it expands each image into;
  for Qwen2-VL, whose ``Qwen2VLProcessor`` cannot be built without torchvision (it insists on a
  video processor), ``Qwen2VLImageProcessorPil`` makes ``pixel_values`` / ``image_grid_thw`` and
  ``Qwen2VLProcessor.replace_image_token`` (the processor's own expansion) counts the tokens;
* ``torch.utils.flop_counter.FlopCounterMode`` around a vision block of the real tiny model in a
  real forward on those processor outputs (eager attention: two ``bmm``, the same
  ``4 * b * h * q * k * d`` as the fused kernel the trace counts);
* ``accelerate.utils.check_device_map`` and the unsplit model's own greedy tokens.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import transformers
from accelerate import init_empty_weights
from accelerate.utils import check_device_map
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, LlavaNextProcessor, PreTrainedTokenizerFast, Qwen2VLProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from layerplan import planner
from layerplan.planner.model.inputs import DEFAULT_IMAGE_SIZE, image_inputs, image_tokens_per_image

IMAGE_TOKEN, QWEN_IMAGE_TOKEN = 299, 298
TEXT = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 4096,
        "pad_token_id": 0}
TILE = 56  # the tiny CLIP tower's image_size; LLaVA-NeXT v1.6's pinpoints scaled from 336 to it
PINPOINTS = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE], [3 * TILE, TILE], [TILE, 3 * TILE]]
LLAVA_NEXT = {"architectures": ["LlavaNextForConditionalGeneration"], "text_config": TEXT, "dtype": "float32",
              "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": TILE,
                                "patch_size": 14},
              "image_token_index": IMAGE_TOKEN, "image_grid_pinpoints": PINPOINTS}
# Qwen2-VL keeps the released patch (14 px), merge (2 x 2) and temporal patch (2) sizes: the
# processor's min_pixels / max_pixels then apply unchanged
QWEN_TEXT = {**TEXT, "model_type": "qwen2_vl_text", "bos_token_id": 0, "eos_token_id": 0,
             "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}}
QWEN_VISION = {"depth": 4, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "patch_size": 14,
               "spatial_merge_size": 2, "temporal_patch_size": 2}
QWEN2_VL = {"architectures": ["Qwen2VLForConditionalGeneration"], "text_config": QWEN_TEXT,
            "vision_config": QWEN_VISION, "image_token_id": QWEN_IMAGE_TOKEN, "video_token_id": 297,
            "vision_start_token_id": 296, "vision_end_token_id": 295, "dtype": "float32"}
QWEN2_5_VL = {**QWEN2_VL, "architectures": ["Qwen2_5_VLForConditionalGeneration"],
              "text_config": {**QWEN_TEXT, "model_type": "qwen2_5_vl_text"},
              "vision_config": {"depth": 4, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64,
                                "num_heads": 4, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                                "window_size": 112, "fullatt_block_indexes": [1, 3]}}
FAMILIES = {"llava_next": LLAVA_NEXT, "qwen2_vl": QWEN2_VL, "qwen2_5_vl": QWEN2_5_VL}
VISION_BLOCK = {"llava_next": "model.vision_tower.encoder.layers.", "qwen2_vl": "model.visual.blocks.",
                "qwen2_5_vl": "model.visual.blocks."}
INTO_TEXT = {"llava_next": "model.multi_modal_projector.linear_2", "qwen2_vl": "model.visual.merger.mlp.2",
             "qwen2_5_vl": "model.visual.merger.mlp.2"}
SIZES = [DEFAULT_IMAGE_SIZE, (100, 300), (480, 640), (333, 500), (30, 30), (2000, 1500)]


def _config(family: str):  # noqa: ANN202
    fields = dict(FAMILIES[family])
    return AutoConfig.for_model(family, **fields)


def _meta(family: str) -> torch.nn.Module:
    config = _config(family)
    with torch.device("meta"):
        return getattr(transformers, config.architectures[0])(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built offline: a few words and the two families' image tokens."""
    vocab = {"[UNK]": 0, "hi": 1, "there": 2, "<image>": IMAGE_TOKEN, "<|image_pad|>": QWEN_IMAGE_TOKEN,
             "<|video_pad|>": 297}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                   additional_special_tokens=["<image>", "<|image_pad|>", "<|video_pad|>"])


def _image(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _processed(family: str, tokenizer, size: tuple[int, int]) -> tuple[int, dict]:  # noqa: ANN001
    """``(image tokens, the processor's image inputs)`` for one image of ``size`` pixels."""
    if family == "llava_next":
        images = LlavaNextImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                                            image_grid_pinpoints=PINPOINTS)
        processor = LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1)
        out = processor(images=[_image(size)], text=["hi <image> there"], return_tensors="pt")
        return int((out["input_ids"] == IMAGE_TOKEN).sum()), {k: out[k] for k in ("pixel_values", "image_sizes")}
    images = Qwen2VLImageProcessorPil()
    out = images(images=[_image(size)], return_tensors="pt")
    stand_in = types.SimpleNamespace(image_processor=images, image_token="<|image_pad|>")
    tokens = Qwen2VLProcessor.replace_image_token(stand_in, out, 0).count("<|image_pad|>")
    return tokens, {k: out[k] for k in ("pixel_values", "image_grid_thw")}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_image_tokens_and_inputs_are_what_the_processor_makes(family, size, tokenizer):
    model = _meta(family)
    tokens, processed = _processed(family, tokenizer, size)
    assert image_tokens_per_image(model, torch.float32, image_size=size) == tokens
    inputs = image_inputs(model, 1, image_size=size)
    assert inputs.pixel_shape == tuple(processed["pixel_values"].shape)
    if family == "llava_next":
        assert [list(s) for s in inputs.image_sizes] == processed["image_sizes"].tolist()
    else:
        assert [list(g) for g in inputs.grid_thw] == processed["image_grid_thw"].tolist()


def test_the_default_image_takes_the_published_token_counts():
    # LLaVA-NeXT at 672 x 672: 2 x 2 tiles of 24 x 24 patches unpadded (2304) + 48 newlines + the
    # 24 x 24 base image = 2928; Qwen2-VL: 672 / 14 = 48 patches a side, merged 2 x 2: 576
    released = {"llava_next": {"text_config": {**TEXT, "hidden_size": 64}, "image_grid_pinpoints":
                               [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
                               "vision_config": {**LLAVA_NEXT["vision_config"], "image_size": 336}},
                "qwen2_vl": {}}
    for family, changes in released.items():
        config = AutoConfig.for_model(family, **{**FAMILIES[family], **changes})
        with torch.device("meta"):
            model = getattr(transformers, config.architectures[0])(config).eval()
        assert image_tokens_per_image(model, torch.float32) == {"llava_next": 2928, "qwen2_vl": 576}[family]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Tiny random-weight checkpoints of the three families, saved with save_pretrained."""
    out = {}
    for family in FAMILIES:
        config = _config(family)
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(family)
        getattr(transformers, config.architectures[0])(config).eval().save_pretrained(path)
        out[family] = str(path)
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_vision_tower_runs_and_hands_the_text_decoder_its_image_tokens(family, checkpoints, tokenizer):
    per_image, _ = _processed(family, tokenizer, DEFAULT_IMAGE_SIZE)
    graph, _ = planner.trace(checkpoints[family], prompt_len=2 * per_image + 24, max_new_tokens=6,
                             images_per_prompt=2)
    assert (graph.workload.images_per_prompt, graph.workload.image_tokens) == (2, 2 * per_image)
    assert not any("without its vision" in note or "failed" in note for note in graph.notes), graph.notes
    vision = [n for n in graph.nodes if n.name.startswith(VISION_BLOCK[family])]
    assert len(vision) == 4
    assert all(n.executed and n.prefill_flops > 0 and n.prefill_work_bytes > 0 and n.decode_flops == 0
               for n in vision)
    hidden = TEXT["hidden_size"]
    edge = next(e for e in graph.edges if e.producer == INTO_TEXT[family])
    first_text = "model.language_model.layers.0"
    assert first_text in edge.consumers
    # what crosses from the vision side: the image features, not the whole prompt's embeddings
    assert edge.shape == (2 * per_image, hidden) and edge.size_bytes == 2 * per_image * hidden * 4
    text_in = next(e for e in graph.edges if e.producer == "model.language_model.embed_tokens")
    assert text_in.shape == (1, 2 * per_image + 24, hidden)
    order = [n.name for n in graph.nodes]
    assert order.index(INTO_TEXT[family]) < order.index(first_text)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_vision_block_flops_are_those_of_the_real_forward_on_the_processor_inputs(family, checkpoints, tokenizer):
    per_image, processed = _processed(family, tokenizer, DEFAULT_IMAGE_SIZE)
    graph, _ = planner.trace(checkpoints[family], prompt_len=per_image + 8, max_new_tokens=2, images_per_prompt=1)
    config = _config(family)
    model = getattr(transformers, config.architectures[0]).from_pretrained(
        checkpoints[family], attn_implementation="eager").eval()
    ids = torch.tensor([[1, *([config.image_token_id] * per_image), 2]])
    extra = {}
    if family != "llava_next":  # the processor's token types, for M-RoPE
        extra["mm_token_type_ids"] = (ids == config.image_token_id).int()
    seen = {}
    for i in (0, 1):
        block = model.get_submodule(VISION_BLOCK[family] + str(i))
        block.register_forward_pre_hook(lambda m, a, k, i=i: seen.setdefault(i, (a, k)), with_kwargs=True)
    with torch.no_grad():
        model(input_ids=ids, **processed, **extra)
    for i, (args, kwargs) in seen.items():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.get_submodule(VISION_BLOCK[family] + str(i))(*args, **kwargs)
        node = next(n for n in graph.nodes if n.name == VISION_BLOCK[family] + str(i))
        assert node.prefill_flops == counter.get_total_flops() > 0


def test_more_images_cost_proportionally_more_vision_work(checkpoints, tokenizer):
    per_image, _ = _processed("qwen2_vl", tokenizer, DEFAULT_IMAGE_SIZE)
    one, _ = planner.trace(checkpoints["qwen2_vl"], prompt_len=3 * per_image + 8, max_new_tokens=2,
                           images_per_prompt=1)
    three, _ = planner.trace(checkpoints["qwen2_vl"], prompt_len=3 * per_image + 8, max_new_tokens=2,
                             images_per_prompt=3)
    batched, _ = planner.trace(checkpoints["qwen2_vl"], prompt_len=3 * per_image + 8, max_new_tokens=2,
                               images_per_prompt=1, batch_size=2)
    block = "model.visual.blocks.1"
    flops = {g: next(n.prefill_flops for n in g.nodes if n.name == block) for g in (one, three, batched)}
    # each image attends within itself (cu_seqlens): three images, three times one image's FLOPs
    assert flops[three] == 3 * flops[one] and flops[batched] == 2 * flops[one]


def test_image_tokens_that_do_not_fit_the_prompt_are_refused(checkpoints, tokenizer):
    per_image, _ = _processed("qwen2_vl", tokenizer, DEFAULT_IMAGE_SIZE)
    with pytest.raises(planner.InvalidSpecError, match=f"take {per_image} prompt tokens"):
        planner.trace(checkpoints["qwen2_vl"], prompt_len=per_image, max_new_tokens=2, images_per_prompt=1)


def _plan(path: str, tmp_path, per_image: int):  # noqa: ANN202
    """A plan of one default-size image per prompt whose cpu holds half the weights, the KV cache
    and the largest node's activations: the rest goes to disk."""
    graph, _ = planner.trace(path, prompt_len=per_image + 24, max_new_tokens=6, images_per_prompt=1)
    activations = max(n.work_bytes for n in graph.nodes)  # working set + live bytes at its peak
    cpu = graph.total_bytes // 2 + graph.total_kv_bytes + activations
    plan = planner.plan(graph, max_memory={"cpu": cpu, "disk": "1GB"}, offload_folder=tmp_path / "offload")
    assert set(plan.device_map.values()) == {"cpu", "disk"}
    return plan


@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl"])
def test_the_plans_device_map_is_one_accelerate_accepts(family, checkpoints, tokenizer, tmp_path):
    per_image, _ = _processed(family, tokenizer, DEFAULT_IMAGE_SIZE)
    plan = _plan(checkpoints[family], tmp_path, per_image)
    config = _config(family)
    with init_empty_weights():
        model = getattr(transformers, config.architectures[0])(config)
    check_device_map(model, plan.device_map)  # raises when a parameter is not covered


@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl"])
def test_split_over_cpu_and_disk_generates_the_unsplit_tokens_for_an_image(family, checkpoints, tokenizer, tmp_path):
    per_image, _ = _processed(family, tokenizer, DEFAULT_IMAGE_SIZE)
    plan = _plan(checkpoints[family], tmp_path, per_image)
    cls = getattr(transformers, _config(family).architectures[0])
    reference = cls.from_pretrained(checkpoints[family]).eval()
    split = cls.from_pretrained(checkpoints[family], **plan.from_pretrained_kwargs()).eval()
    size = (100, 300)  # any image: the plan holds the largest, DEFAULT_IMAGE_SIZE
    tokens, processed = _processed(family, tokenizer, size)
    image_token = reference.config.image_token_id
    ids = torch.tensor([[5, *([image_token] * tokens), 17, 42, 7]])
    extra = {"mm_token_type_ids": (ids == image_token).int()} if family == "qwen2_vl" else {}

    def greedy(model) -> torch.Tensor:  # noqa: ANN001
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **processed, **extra,
                                  max_new_tokens=6, do_sample=False, pad_token_id=0)

    expected = greedy(reference)
    assert expected.shape[1] == ids.shape[1] + 6
    assert torch.equal(greedy(split), expected)
