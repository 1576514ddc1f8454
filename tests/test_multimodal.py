"""Vision-language and speech models are traced with their images / audio: the vision tower and
the audio encoder run in prefill, image placeholders take prompt tokens, Whisper's decoder keeps a
cross-attention cache over its audio frames, and tiny random-weight checkpoints split over cpu +
disk give the unsplit model's tokens.

Oracles: transformers' own forwards (the unsplit model), and the KV formula of vLLM's
``kv_cache_interface.py`` (``2 * kv_heads * head_dim * bytes * tokens`` per attention layer).
"""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoConfig

from layerplan import planner

TEXT = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 256,
        "pad_token_id": 0}
VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
          "num_attention_heads": 4, "image_size": 48, "patch_size": 16}
PATCHES = (48 // 16) ** 2  # LLaVA's "default" feature strategy drops CLS: one token per patch
IMAGE_TOKEN = 299


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> str:
    config = AutoConfig.for_model("llava", architectures=["LlavaForConditionalGeneration"], text_config=TEXT,
                                  vision_config=VISION, image_token_index=IMAGE_TOKEN, dtype="float32")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llava")
    transformers.LlavaForConditionalGeneration(config).eval().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> str:
    config = AutoConfig.for_model(
        "whisper", architectures=["WhisperForConditionalGeneration"], vocab_size=300, d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=60, max_target_positions=64,
        pad_token_id=0, decoder_start_token_id=1, dtype="float32")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("whisper")
    transformers.WhisperForConditionalGeneration(config).eval().save_pretrained(path)
    return str(path)


def _node(graph, name: str):
    return next(n for n in graph.nodes if n.name == name)


def test_the_vision_tower_runs_in_prefill_only_and_feeds_the_text_decoder(llava_dir):
    graph, _ = planner.trace(llava_dir, prompt_len=40, max_new_tokens=8, images_per_prompt=2)
    assert (graph.workload.images_per_prompt, graph.workload.image_tokens) == (2, 2 * PATCHES)
    vision = [n for n in graph.nodes if n.name.startswith("model.vision_tower.encoder.layers.")]
    assert len(vision) == 4 and all(n.executed and n.prefill_flops > 0 and n.decode_flops == 0 for n in vision)
    assert all(n.kv_bytes == 0 for n in vision)
    text = [n for n in graph.nodes if n.name.startswith("model.language_model.layers.")]
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    assert [n.kv_bytes for n in text] == [2 * TEXT["num_key_value_heads"] * head_dim * 4 * 48] * 4
    order = [n.name for n in graph.nodes]
    assert order.index("model.multi_modal_projector.linear_2") < order.index("model.language_model.layers.0")
    into_text = {c for e in graph.edges if e.producer == "model.multi_modal_projector.linear_2" for c in e.consumers}
    assert "model.language_model.layers.0" in into_text


def test_more_images_cost_more_vision_work_and_the_same_kv(llava_dir):
    one, _ = planner.trace(llava_dir, prompt_len=40, max_new_tokens=8, images_per_prompt=1)
    three, _ = planner.trace(llava_dir, prompt_len=40, max_new_tokens=8, images_per_prompt=3)
    layer = "model.vision_tower.encoder.layers.1"
    assert _node(three, layer).prefill_flops == 3 * _node(one, layer).prefill_flops
    assert three.total_kv_bytes == one.total_kv_bytes  # placeholders are prompt tokens like any other
    none, _ = planner.trace(llava_dir, prompt_len=40, max_new_tokens=8, images_per_prompt=0)
    assert not _node(none, layer).executed
    assert any("without its vision inputs (images_per_prompt=0" in note for note in none.notes)


def test_image_tokens_that_do_not_fit_the_prompt_and_images_for_a_text_model_are_refused(llava_dir, tiny_llama_dir):
    with pytest.raises(planner.InvalidSpecError, match=f"take {5 * PATCHES} prompt tokens"):
        planner.trace(llava_dir, prompt_len=40, max_new_tokens=8, images_per_prompt=5)
    with pytest.raises(planner.InvalidSpecError, match="reads no images"):
        planner.trace(tiny_llama_dir, seq_len=16, images_per_prompt=1)


def test_whisper_encodes_its_audio_frames_and_keeps_their_cross_attention_cache(whisper_dir):
    graph, _ = planner.trace(whisper_dir, prompt_len=4, max_new_tokens=20)
    assert not any("failed" in note for note in graph.notes), graph.notes
    encoder = [n for n in graph.nodes if n.name.startswith("model.encoder.layers.")]
    assert encoder and all(n.executed and n.prefill_flops > 0 and n.decode_flops == 0 for n in encoder)
    frames, d_model, itemsize = 60, 32, 4  # the convolutions halve 2 * max_source_positions mel frames
    self_kv, cross_kv = 2 * d_model * itemsize * 24, 2 * d_model * itemsize * frames
    decoder = [n for n in graph.nodes if n.name.startswith("model.decoder.layers.")]
    assert [n.kv_bytes for n in decoder] == [self_kv + cross_kv] * 2
    encoder_out = [e for e in graph.edges if e.producer == "model.encoder.layer_norm"]
    assert encoder_out and encoder_out[0].shape == (1, frames, d_model)


def test_whisper_encoder_runs_before_any_kv_cache(whisper_dir):
    # WhisperGenerationMixin.generate hands its segment to GenerationMixin.generate, which runs the
    # encoder whole before the decoder's first step makes the cache: the encoder's nodes (the
    # convolutions and positions included) are marked, the decoder's and proj_out are not.
    graph, _ = planner.trace(whisper_dir, prompt_len=4, max_new_tokens=20)
    marked = [n.name for n in graph.nodes if n.before_kv_cache]
    assert marked == [n.name for n in graph.nodes if n.name.startswith("model.encoder.")]
    assert "model.encoder.conv1" in marked and "model.encoder.layers.1" in marked
    assert all(n.kv_bytes == 0 for n in graph.nodes if n.before_kv_cache)


def _split(path: str, tmp_path, share: float):
    graph, _ = planner.trace(path, prompt_len=24, max_new_tokens=6)
    plan = planner.plan(graph, max_memory={"cpu": int(graph.total_bytes * share), "disk": "1GB"},
                        offload_folder=tmp_path / "offload")
    assert set(plan.device_map.values()) == {"cpu", "disk"}
    return plan


def test_llava_split_over_cpu_and_disk_generates_the_unsplit_tokens(llava_dir, tmp_path):
    plan = _split(llava_dir, tmp_path, 0.6)
    cls = transformers.LlavaForConditionalGeneration
    reference = cls.from_pretrained(llava_dir).eval()
    split = cls.from_pretrained(llava_dir, **plan.from_pretrained_kwargs()).eval()
    ids = torch.tensor([[5, *([IMAGE_TOKEN] * PATCHES), 17, 42, 7]])
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, 48, 48)

    def greedy(model):
        with torch.no_grad():
            return model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                  max_new_tokens=6, do_sample=False, pad_token_id=0)

    assert torch.equal(greedy(split), greedy(reference))


def test_whisper_split_over_cpu_and_disk_decodes_the_unsplit_tokens(whisper_dir, tmp_path):
    # 0.75: the cpu also holds what is live at each node's entry (the encoder output, the decoder's inputs)
    plan = _split(whisper_dir, tmp_path, 0.75)
    cls = transformers.WhisperForConditionalGeneration
    reference = cls.from_pretrained(whisper_dir).eval()
    split = cls.from_pretrained(whisper_dir, **plan.from_pretrained_kwargs()).eval()
    torch.manual_seed(1)
    features = torch.randn(1, 16, 120)

    def greedy(model) -> list[int]:
        # a plain greedy loop over the forward: generate() of a random Whisper wants a tokenizer's
        # language and task tokens that this tiny checkpoint does not have
        tokens = [1]
        with torch.no_grad():
            encoded = model.model.encoder(features)
            for _ in range(6):
                logits = model(encoder_outputs=encoded, decoder_input_ids=torch.tensor([tokens])).logits
                tokens.append(int(logits[0, -1].argmax()))
        return tokens

    assert greedy(split) == greedy(reference)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> str:
    config = AutoConfig.for_model("vit", architectures=["ViTForImageClassification"], hidden_size=32,
                                  num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, image_size=32,
                                  patch_size=8, num_labels=5)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit")
    transformers.ViTForImageClassification(config).eval().save_pretrained(path)
    return str(path)


def test_an_image_classifier_is_traced_on_its_images_and_split_gives_the_unsplit_logits(vit_dir, tmp_path):
    graph, _ = planner.trace(vit_dir, batch_size=2)
    assert not graph.notes, graph.notes  # traced, nothing estimated
    assert all(n.executed and n.prefill_flops > 0 for n in graph.nodes if n.kind == "block")
    into_first = next(e for e in graph.edges if e.consumers == ("vit.layers.0",))
    assert into_first.shape == (2, (32 // 8) ** 2 + 1, 32)  # 16 patches and the CLS token per image
    plan = planner.plan(graph, max_memory={"cpu": graph.total_bytes * 6 // 10, "disk": "1GB"},
                        offload_folder=tmp_path / "offload")
    assert set(plan.device_map.values()) == {"cpu", "disk"}
    cls = transformers.ViTForImageClassification
    reference = cls.from_pretrained(vit_dir).eval()
    split = cls.from_pretrained(vit_dir, **plan.from_pretrained_kwargs()).eval()
    torch.manual_seed(2)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(split(pixel_values=pixels).logits, reference(pixel_values=pixels).logits)
