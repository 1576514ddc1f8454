"""Planning never changes the user's model: real weights, accelerate hooks and torch.compile wrappers
come out as they went in (parameters, buffers, hooks, forward outputs)."""

from __future__ import annotations

import pytest
import torch
from accelerate import cpu_offload, dispatch_model
from torch import nn
from transformers import AutoModelForCausalLM

import layerplan

CAPS = {"max_memory": {"cpu": "1GiB"}, "seq_len": 16}


def _state(model: nn.Module) -> dict:
    return {
        "params": {n: (p.device.type, p.detach().clone()) for n, p in model.named_parameters()},
        "buffers": {n: (b.device.type, b.detach().clone()) for n, b in model.named_buffers()},
        "hooks": {n: (getattr(m, "_hf_hook", None), len(m._forward_hooks), len(m._forward_pre_hooks), m.forward)
                  for n, m in model.named_modules()},
        "training": model.training,
    }


def _same(before: dict, after: dict) -> None:
    assert before["params"].keys() == after["params"].keys()
    for name, (device, value) in before["params"].items():
        assert after["params"][name][0] == device
        if device != "meta":
            assert torch.equal(after["params"][name][1], value), name
    assert before["buffers"].keys() == after["buffers"].keys()
    assert before["hooks"] == after["hooks"]
    assert before["training"] == after["training"]


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.arange(8).unsqueeze(0)).logits


@pytest.mark.parametrize("wrap", ["plain", "cpu_offload", "dispatch_model", "compiled"])
def test_planning_leaves_the_users_model_as_it_was(tiny_llama_dir, wrap):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    expected = _logits(model)
    if wrap == "cpu_offload":
        model = cpu_offload(model, execution_device=torch.device("cpu"))
    elif wrap == "dispatch_model":
        model = dispatch_model(model, device_map={"": "cpu"})
    target = torch.compile(model, backend="eager") if wrap == "compiled" else model
    before = _state(model)
    plan = layerplan.plan(target, **CAPS)
    assert plan.device_map == {"": "cpu"}
    _same(before, _state(model))
    assert torch.allclose(_logits(model), expected)


def test_a_plain_module_with_weights_and_no_config_is_refused_in_one_line():
    with pytest.raises(layerplan.InvalidSpecError, match="no transformers config") as info:
        layerplan.plan(nn.Sequential(nn.Linear(4, 4)), max_memory={"cpu": "1GiB"})
    assert "\n" not in str(info.value)
