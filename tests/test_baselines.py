"""The accelerate/transformers baseline: what ``from_pretrained(device_map=<strategy>)`` would do.

No GPU and no network. The GPUs in ``max_memory`` do not exist on the test machine: that is the
point (layerplan plans for hardware it does not run on). Oracles:

* ``from_pretrained`` itself on a tiny checkpoint saved in a temporary folder. With GPU keys it
  cannot finish loading here, so the device_map it computes is captured at the one place it is
  computed (``transformers.modeling_utils._get_device_map``) and loading is stopped there; with only
  ``cpu``/``disk`` caps it loads for real and its ``hf_device_map`` is compared.
* accelerate's own ``infer_auto_device_map`` for ``"sequential"`` (transformers 5 uses a fork of it).
* hand arithmetic for the balanced budgets.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import transformers.modeling_utils
from accelerate import infer_auto_device_map, init_empty_weights
from accelerate.utils import check_device_map, compute_module_sizes
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from layerplan.planner.baselines.accelerate import STRATEGIES, accelerate_device_map, accelerate_max_memory
from layerplan.solver import InvalidSpecError

BF16 = torch.bfloat16


def _config() -> LlamaConfig:
    # vocab 1000 x hidden 64: the embedding and lm_head (128 000 bytes each in bf16) are larger
    # than one decoder layer (73 984 bytes), so "largest leaf" and "largest block" differ.
    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=1000, max_position_embeddings=128)


@pytest.fixture(scope="module")
def meta_model() -> nn.Module:
    """float32 on meta: the baseline must size it at the dtype asked for, not at its own."""
    with init_empty_weights():
        return LlamaForCausalLM(_config())


@pytest.fixture(scope="module")
def sizes(meta_model) -> dict[str, int]:
    return dict(compute_module_sizes(meta_model, dtype=BF16))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("baseline-llama")
    LlamaForCausalLM(_config()).save_pretrained(path)
    return str(path)


def _caps(name: str, sizes: dict[str, int]) -> dict[int | str, int]:
    total, layer, embed = sizes[""], sizes["model.layers.0"], sizes["model.embed_tokens"]
    return {
        "roomy": {0: total, 1: total, 2: total, "cpu": 100 * total},
        "tight": {0: total // 2, 1: total // 2, "cpu": 100 * total},
        "uneven": {0: total, 1: total // 2, "cpu": 10 * total},
        "offload": {0: embed + 2 * layer, 1: 2 * layer, "cpu": 3 * layer, "disk": 100 * total},
    }[name]


CAPS = ("roomy", "tight", "uneven", "offload")


def _bytes_on(device_map: dict[str, int | str], device: int | str, sizes: dict[str, int]) -> int:
    return sum(sizes[key] for key, value in device_map.items() if value == device)


def _from_pretrained_device_map(monkeypatch, checkpoint: str, **kwargs) -> dict[str, int | str]:
    """The device_map from_pretrained computes, stopped before it loads onto GPUs we do not have."""

    class Computed(Exception):
        pass

    captured = {}
    compute = transformers.modeling_utils._get_device_map

    def spy(*args, **kw):
        captured["device_map"] = compute(*args, **kw)
        raise Computed

    monkeypatch.setattr(transformers.modeling_utils, "_get_device_map", spy)
    with pytest.raises(Computed):
        LlamaForCausalLM.from_pretrained(checkpoint, **kwargs)
    return dict(captured["device_map"])


# -- defining properties --------------------------------------------------------------------------
@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_map_covers_the_model_on_declared_devices(meta_model, sizes, strategy, caps):
    max_memory = _caps(caps, sizes)
    device_map = accelerate_device_map(meta_model, max_memory=max_memory, strategy=strategy, dtype=BF16)
    check_device_map(meta_model, device_map)  # accelerate's own coverage check
    assert set(device_map.values()) <= set(max_memory)


def test_sequential_fills_gpu0_before_gpu1(meta_model, sizes):
    max_memory = _caps("tight", sizes)
    device_map = accelerate_device_map(meta_model, max_memory=max_memory, strategy="sequential", dtype=BF16)
    order = list(dict.fromkeys(device_map.values()))
    assert order == [0, 1, "cpu"]
    runs = [v for i, v in enumerate(device_map.values()) if i == 0 or v != list(device_map.values())[i - 1]]
    assert runs == order  # each device is one contiguous run in execution order
    # GPU 0 holds back the largest remaining layer (lm_head, 128 000) for offloaded modules:
    # 350 032 - 128 000 = 222 032 >= embed + 1 layer = 128 000 + 73 984 = 201 984, < + 1 more layer.
    assert [k for k, v in device_map.items() if v == 0] == ["model.embed_tokens", "model.layers.0"]


@pytest.mark.parametrize("caps", ["roomy", "tight", "uneven"])
def test_balanced_low_0_puts_fewer_bytes_on_gpu0_than_gpu1(meta_model, sizes, caps):
    max_memory = _caps(caps, sizes)
    device_map = accelerate_device_map(meta_model, max_memory=max_memory, strategy="balanced_low_0", dtype=BF16)
    assert _bytes_on(device_map, 0, sizes) < _bytes_on(device_map, 1, sizes)


def test_balanced_low_0_keeps_something_on_gpu0_when_the_others_are_short(meta_model, sizes):
    # GPU 1 holds half the model, so GPU 0 is given the other half (minus what cpu takes)
    device_map = accelerate_device_map(meta_model, max_memory=_caps("uneven", sizes),
                                       strategy="balanced_low_0", dtype=BF16)
    assert 0 < _bytes_on(device_map, 0, sizes) < _bytes_on(device_map, 1, sizes)


@pytest.mark.parametrize("caps", CAPS)
def test_auto_is_balanced(meta_model, sizes, caps):
    kwargs = dict(max_memory=_caps(caps, sizes), dtype=BF16)
    assert accelerate_device_map(meta_model, strategy="auto", **kwargs) == accelerate_device_map(
        meta_model, strategy="balanced", **kwargs)


def test_balanced_budget_by_hand(meta_model, sizes):
    total = sizes[""]  # 700 064: accelerate sizes the float32 inv_freq buffer (16 values) at bf16
    budget = accelerate_max_memory(meta_model, max_memory=_caps("roomy", sizes), strategy="balanced", dtype=BF16)
    # transformers sizes the model as from_pretrained builds it: inv_freq stays float32, so
    # 700 064 + 16 * 2 = 700 096 bytes; per GPU 700 096 // 3 = 233 365, padded by
    # 1.25 * max(largest block 73 984, largest leaf 128 000) = 160 000 -> 393 365. The last GPU keeps its cap.
    assert budget == {0: 393_365, 1: 393_365, 2: total, "cpu": 100 * total}


def test_balanced_low_0_budget_by_hand(meta_model, sizes):
    total = sizes[""]
    budget = accelerate_max_memory(meta_model, max_memory=_caps("roomy", sizes), strategy="balanced_low_0",
                                   dtype=BF16)
    # share over GPUs 1..2: 700 096 // 2 + 160 000 = 510 048 on GPU 1; GPU 0 gets what GPUs 1 and 2
    # cannot hold: max(0, 700 096 - 510 048 - 700 064) = 0.
    assert budget == {0: 0, 1: 510_048, 2: total, "cpu": 100 * total}


def test_sequential_budget_is_the_caps(meta_model, sizes):
    max_memory = {"cpu": "1MiB", "cuda:1": 5000, 0: 7000}
    budget = accelerate_max_memory(meta_model, max_memory=max_memory, strategy="sequential", dtype=BF16)
    assert list(budget.items()) == [(0, 7000), (1, 5000), ("cpu", 2**20)]


def test_extra_no_split_class_keeps_that_module_whole(meta_model, sizes):
    device_map = accelerate_device_map(meta_model, max_memory=_caps("tight", sizes), strategy="sequential",
                                       dtype=BF16, no_split_module_classes=("LlamaModel",))
    check_device_map(meta_model, device_map)
    assert not any(key.startswith("model.") for key in device_map)


def test_plain_module_on_meta():
    with torch.device("meta"):
        model = nn.Sequential(*(nn.Linear(64, 64) for _ in range(4)))
    layer_bf16 = (64 * 64 + 64) * 2  # 8 320
    # GPU 0 holds back one layer (the largest still to place) for offloaded modules:
    # 3.5 - 1 = 2.5 layers of room, so 2 layers in bf16 (in float32 a layer alone would not fit).
    cap = 3 * layer_bf16 + layer_bf16 // 2
    device_map = accelerate_device_map(model, max_memory={0: cap, 1: cap}, strategy="sequential", dtype=BF16)
    assert device_map == {"0": 0, "1": 0, "2": 1, "3": 1}
    assert all(p.dtype == torch.float32 for p in model.parameters())


# -- oracles --------------------------------------------------------------------------------------
@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matches_from_pretrained(monkeypatch, meta_model, sizes, checkpoint, strategy, caps):
    max_memory = _caps(caps, sizes)
    expected = _from_pretrained_device_map(monkeypatch, checkpoint, device_map=strategy,
                                           max_memory=dict(max_memory), dtype=BF16)
    got = accelerate_device_map(meta_model, max_memory=max_memory, strategy=strategy, dtype=BF16)
    assert list(got.items()) == list(expected.items())


def test_matches_a_real_cpu_disk_load(meta_model, sizes, checkpoint, tmp_path):
    # cpu holds back the largest layer (128 000) for disk-offloaded modules, then takes the embedding
    # and three layers: 128 000 + 128 000 + 3 * 73 984 = 477 952 <= cap; the 4th layer goes to disk.
    max_memory = {"cpu": 2 * sizes["model.embed_tokens"] + 3 * sizes["model.layers.0"] + 1000,
                  "disk": 100 * sizes[""]}
    model = LlamaForCausalLM.from_pretrained(checkpoint, device_map="auto", max_memory=dict(max_memory),
                                             dtype=BF16, offload_folder=str(tmp_path))
    for strategy in STRATEGIES:  # without GPUs every strategy is the same
        got = accelerate_device_map(meta_model, max_memory=max_memory, strategy=strategy, dtype=BF16)
        assert got == model.hf_device_map
    assert [k for k, v in got.items() if v == "cpu"] == [
        "model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2"]


# Not "uneven": its GPU 0 cap is accelerate's size of the model, 700 064 bytes, which fits it exactly
# because accelerate's compute_module_sizes(dtype=bf16) counts the float32 inv_freq buffer at bf16;
# from_pretrained builds that buffer in float32 (700 096 bytes) and so does not fit it on GPU 0
# (test_matches_from_pretrained checks that case against from_pretrained).
@pytest.mark.parametrize("caps", ["tight", "offload"])
def test_sequential_matches_accelerates_own_infer_auto_device_map(caplog, meta_model, sizes, caps):
    max_memory = _caps(caps, sizes)
    caplog.set_level(logging.ERROR, logger="accelerate.utils.modeling")  # "Device 0 is not available"
    expected = infer_auto_device_map(meta_model, max_memory=dict(max_memory),
                                     no_split_module_classes=["LlamaDecoderLayer"], dtype=BF16)
    got = accelerate_device_map(meta_model, max_memory=max_memory, strategy="sequential", dtype=BF16)
    assert got == dict(expected)


# -- inputs and errors ----------------------------------------------------------------------------
def test_inputs_are_not_modified(meta_model, sizes):
    max_memory = {"cuda:0": "1MiB", 1: sizes[""], "cpu": "1GiB", "disk": "10GiB"}
    before = copy.deepcopy(max_memory)
    dtypes = {n: p.dtype for n, p in meta_model.named_parameters()}
    for strategy in STRATEGIES:
        accelerate_device_map(meta_model, max_memory=max_memory, strategy=strategy, dtype=BF16,
                              no_split_module_classes=["LlamaMLP"])
    assert max_memory == before
    assert {n: p.dtype for n, p in meta_model.named_parameters()} == dtypes


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(strategy="fast"), r"unknown strategy 'fast'.*'auto', 'balanced', 'balanced_low_0', 'sequential'"),
        (dict(strategy="Auto"), r"unknown strategy"),
        (dict(max_memory={"xpu:0": 10**6, "cpu": 10**9}), r"'xpu:0'.*integer id"),
        (dict(strategy="balanced_low_0", max_memory={1: 10**6, 2: 10**6}), r"GPU ids 0\.\.1.*\[1, 2\]"),
        (dict(no_split_module_classes=("LlamaBlock",)), r"'LlamaBlock'.*no module"),
        (dict(dtype=torch.int8), r"dtype=torch.int8"),
        (dict(dtype="fp7"), r"unknown dtype"),
        (dict(max_memory={}), r"max_memory is empty"),
    ],
)
def test_invalid_arguments(meta_model, kwargs, match):
    args = dict(max_memory={0: 10**6, 1: 10**6, "cpu": 10**9}, strategy="auto", dtype=BF16) | kwargs
    with pytest.raises(InvalidSpecError, match=match) as info:
        accelerate_device_map(meta_model, **args)
    assert "\n" not in str(info.value)
