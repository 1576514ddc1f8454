"""The published head class is what gets planned: its device_map keys cover the head, accelerate's
check accepts the map on ``architectures[0]``, and the split model gives the unsplit one's outputs."""

from __future__ import annotations

import pytest
import torch
import transformers
from accelerate.utils import check_device_map
from transformers import AutoConfig

from layerplan import planner
from layerplan.planner.model.meta import build_meta_model

HEADS = {
    "BertForSequenceClassification": ("bert", "classifier"),
    "BertForMaskedLM": ("bert", "cls.predictions"),
    "BertForTokenClassification": ("bert", "classifier"),
    "BertForQuestionAnswering": ("bert", "qa_outputs"),
    "LlamaForSequenceClassification": ("llama", "score"),
}
_SHAPES = {
    "bert": {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
             "intermediate_size": 64, "max_position_embeddings": 64},
    "llama": {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64, "pad_token_id": 0},
}


@pytest.fixture(scope="module", params=sorted(HEADS))
def head_checkpoint(request, tmp_path_factory) -> tuple[str, str]:
    """(class name, folder) of a tiny random-weight head model saved with save_pretrained."""
    name = request.param
    model_type, _ = HEADS[name]
    labels = 2 if name.endswith("QuestionAnswering") else 3  # QA heads give start and end logits
    config = AutoConfig.for_model(model_type, architectures=[name], num_labels=labels, **_SHAPES[model_type])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(name)
    getattr(transformers, name)(config).save_pretrained(path)
    return name, str(path)


def test_the_plan_places_the_head_and_accelerate_accepts_it(head_checkpoint):
    name, path = head_checkpoint
    graph, meta = planner.trace(path, seq_len=16)
    assert type(meta).__name__ == name
    head = HEADS[name][1]
    assert any(n.name == head or n.name.startswith(head + ".") for n in graph.nodes), [n.name for n in graph.nodes]
    plan = planner.plan(graph, max_memory={"cpu": "1GB"})
    check_device_map(build_meta_model(AutoConfig.from_pretrained(path)), plan.device_map)


def test_head_model_over_cpu_and_disk_gives_the_unsplit_outputs(head_checkpoint, tmp_path):
    name, path = head_checkpoint
    graph, _ = planner.trace(path, seq_len=16)
    plan = planner.plan(graph, max_memory={"cpu": graph.total_bytes * 3 // 4, "disk": "1GB"},
                        offload_folder=tmp_path / "offload")
    assert set(plan.device_map.values()) == {"cpu", "disk"}
    cls = getattr(transformers, name)
    reference = cls.from_pretrained(path).eval()
    split = cls.from_pretrained(path, **plan.from_pretrained_kwargs()).eval()
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        got, want = split(ids), reference(ids)
        keys = [k for k in want if k.endswith("logits")]  # logits; QA: start_logits, end_logits
        assert keys
        torch.testing.assert_close([got[k] for k in keys], [want[k] for k in keys])


def _save_config(path, model_type: str, **fields) -> str:
    AutoConfig.for_model(model_type, **fields).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def multimodal_configs(tmp_path_factory) -> dict[str, str]:
    """Tiny LLaVA- and Whisper-shaped configs, saved as config.json only."""
    text = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 512}
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "image_size": 32, "patch_size": 16}
    return {
        "LlavaForConditionalGeneration": _save_config(
            tmp_path_factory.mktemp("llava"), "llava", architectures=["LlavaForConditionalGeneration"],
            text_config=text, vision_config=vision),
        "WhisperForConditionalGeneration": _save_config(
            tmp_path_factory.mktemp("whisper"), "whisper", architectures=["WhisperForConditionalGeneration"],
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=448),
    }


@pytest.mark.parametrize(("name", "context"), [("LlavaForConditionalGeneration", 512),
                                                ("WhisperForConditionalGeneration", 448)])
def test_multimodal_models_are_the_published_class_with_the_text_decoders_context(multimodal_configs, name, context):
    path = multimodal_configs[name]
    graph, meta = planner.trace(path)
    assert type(meta).__name__ == name
    assert graph.workload.context_len == context  # text_config / max_target_positions, not a 4096 default
    plan = planner.plan(graph, max_memory={"cpu": "2GB"})
    check_device_map(build_meta_model(AutoConfig.from_pretrained(path)), plan.device_map)
    with pytest.raises(planner.InvalidSpecError, match=f"exceeds .* {context} positions"):
        planner.trace(path, seq_len=context + 1)
