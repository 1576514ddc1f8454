"""Real loading of a split MoE layer: attention, router and norms on the execution device, the
layer's packed experts offloaded inside it (llama.cpp's ``-ot exps=CPU``), the map that
``Node.offload_inline`` lets the solver return.

No GPU here, so the execution device is the cpu and the experts go to disk (accelerate streams a
disk-offloaded module exactly as a cpu-offloaded one, to the execution device). Oracles:
accelerate's ``check_device_map`` and the unsplit model's greedy tokens.
"""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import check_device_map
from layerplan.planner.model.meta import build_meta_model
from transformers import AutoConfig, AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM

LAYERS = 2


def _tiny_mixtral(path) -> str:
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64)
    MixtralForCausalLM(config).eval().save_pretrained(path)
    return str(path)


def _greedy(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=8,
                              do_sample=False, pad_token_id=0)


def _split_map(model, *, experts_on: str, rest_on: str) -> dict[str, int | str]:
    """Every layer split along the path to its experts: the layer's and its ``mlp``'s children
    named one by one, so no mapped module holds another. accelerate cannot take the nested map
    (``{layer: rest_on, layer.mlp.experts: experts_on}``, below)."""
    device_map: dict[str, int | str] = {"model.embed_tokens": rest_on, "model.rotary_emb": rest_on}
    for i in range(LAYERS):
        layer = f"model.layers.{i}"
        for child, _ in model.model.layers[i].named_children():
            if child != "mlp":
                device_map[f"{layer}.{child}"] = rest_on
        for child, _ in model.model.layers[i].mlp.named_children():
            device_map[f"{layer}.mlp.{child}"] = experts_on if child == "experts" else rest_on
    device_map |= {"model.norm": rest_on, "lm_head": rest_on}
    return device_map


def test_experts_offloaded_inside_their_layer_generate_the_unsplit_tokens(tmp_path) -> None:
    path = _tiny_mixtral(tmp_path / "mixtral")
    meta = build_meta_model(AutoConfig.from_pretrained(path))
    device_map = _split_map(meta, experts_on="disk", rest_on="cpu")
    assert "model.layers.0.mlp.experts" in device_map and "model.layers.0.self_attn" in device_map
    check_device_map(meta, device_map)  # raises when a parameter is not covered

    reference = AutoModelForCausalLM.from_pretrained(path).eval()
    split = AutoModelForCausalLM.from_pretrained(path, device_map=device_map, offload_folder=tmp_path / "offload").eval()
    assert split.hf_device_map == device_map
    # The experts really are offloaded (their weights are meta until streamed in); attention is not.
    assert all(p.device.type == "meta" for p in split.model.layers[0].mlp.experts.parameters())
    assert all(p.device.type == "cpu" for p in split.model.layers[0].self_attn.parameters())
    input_ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    want = _greedy(reference, input_ids)
    assert want.shape[1] == input_ids.shape[1] + 8
    assert torch.equal(_greedy(split, input_ids), want)


def test_accelerate_refuses_the_nested_map(tmp_path) -> None:
    """Why the map names the layer's parts: a layer mapped to a device with its experts offloaded
    inside it fails in ``dispatch_model`` (accelerate 1.16: the layer's ``AlignDevicesHook`` has
    ``place_submodules=True`` and moves the offloaded experts' meta weights too). If this starts
    to pass, the collapse may keep the layer whole and name the experts alone."""
    path = _tiny_mixtral(tmp_path / "mixtral")
    nested: dict[str, int | str] = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu"}
    for i in range(LAYERS):
        nested[f"model.layers.{i}"] = "cpu"
        nested[f"model.layers.{i}.mlp.experts"] = "disk"
    nested |= {"model.norm": "cpu", "lm_head": "cpu"}
    with pytest.raises(ValueError, match="meta device"):
        AutoModelForCausalLM.from_pretrained(path, device_map=nested, offload_folder=tmp_path / "offload")
