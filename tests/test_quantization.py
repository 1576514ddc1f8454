"""Quantized checkpoints: sizes against really loaded bitsandbytes models (CPU backend), against
published GPTQ checkpoint sizes and transformers' own FP8 layer; plans that load."""

from __future__ import annotations

import json

import warnings

import pytest
import torch
from accelerate.utils import check_device_map, compute_module_sizes
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

from layerplan import planner
from layerplan.planner.graph import LayerGraph
from layerplan.planner.model import catalog
from layerplan.planner.model.meta import build_meta_model
from layerplan.planner.model.quantization import Quantization, from_config, quantized_bytes
from layerplan.planner.spec.quantization import METHODS

BNB = {
    "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
    "nf4-double": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                     bnb_4bit_compute_dtype=torch.float32),
    "fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float32),
    "int8": BitsAndBytesConfig(load_in_8bit=True),
}


def _loaded(path: str, **kwargs) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


def _stored_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter as loaded, with the bitsandbytes quantization state it carries
    (absmax, code, nested statistics; LLM.int8() row scales)."""
    total = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)
        if state is not None:
            tensors = [state.absmax, state.code]
            if state.nested:
                tensors += [state.state2.absmax, state.state2.code, state.offset]
            total += sum(t.numel() * t.element_size() for t in tensors)
        if getattr(param, "SCB", None) is not None:
            total += param.SCB.numel() * param.SCB.element_size()
    return total


@pytest.fixture(scope="module", params=sorted(BNB))
def bnb_checkpoint(request, tiny_llama_dir, tmp_path_factory) -> tuple[str, str]:
    """(method name, folder) of the tiny Llama quantized with bitsandbytes on CPU and saved."""
    model = _loaded(tiny_llama_dir, quantization_config=BNB[request.param], device_map="cpu")
    path = tmp_path_factory.mktemp(f"tiny-llama-{request.param}")
    model.save_pretrained(path)
    return request.param, str(path)


def test_bnb_checkpoint_is_sized_as_loaded(bnb_checkpoint):
    name, path = bnb_checkpoint
    graph, _ = planner.trace(path, seq_len=16)
    assert graph.quantization.startswith("bitsandbytes")
    loaded = _loaded(path, device_map="cpu")
    predicted = sum(n.weight_bytes for n in graph.nodes)
    assert abs(predicted - _stored_bytes(loaded)) <= 0.01 * _stored_bytes(loaded), name


def test_asking_for_a_bnb_method_sizes_the_model_as_bnb_loads_it(tiny_llama_dir):
    for name in ("nf4", "int8"):
        graph, _ = planner.trace(tiny_llama_dir, seq_len=16, quantization=name)
        loaded = _loaded(tiny_llama_dir, quantization_config=BNB[name], device_map="cpu")
        predicted = sum(n.weight_bytes for n in graph.nodes)
        assert abs(predicted - _stored_bytes(loaded)) <= 0.01 * _stored_bytes(loaded), name
        assert "as asked" in graph.quantization


def test_bnb_plan_keeps_weights_off_disk_and_loads_with_the_same_logits(bnb_checkpoint, tmp_path):
    name, path = bnb_checkpoint
    graph, _ = planner.trace(path, seq_len=16)
    plan = planner.plan(graph, max_memory={"cpu": "1GB", "disk": "1GB"}, offload_folder=tmp_path / "off")
    assert set(plan.device_map.values()) == {"cpu"}  # transformers refuses bnb modules on disk
    assert any("bitsandbytes" in note for note in plan.hardware_notes)
    reference = _loaded(path, device_map="cpu")
    split = _loaded(path, **plan.from_pretrained_kwargs())
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        assert torch.equal(split(ids).logits, reference(ids).logits), name


def test_the_graph_records_the_method_and_a_format_5_graph_takes_it_from_its_description(bnb_checkpoint):
    _, path = bnb_checkpoint
    graph, _ = planner.trace(path, seq_len=16)
    assert graph.quantization_method == "bitsandbytes"
    assert LayerGraph.from_json(graph.to_json()) == graph
    old = json.loads(graph.to_json())
    old["format_version"] = 5
    del old["quantization_method"], old["workload"]["images_per_prompt"], old["workload"]["image_tokens"]
    assert LayerGraph.from_dict(old).quantization_method == "bitsandbytes"
    plain, _ = planner.trace(path, seq_len=16, quantization="none")
    assert plain.quantization_method == "" and plain.quantization == ""


def test_bnb_plan_on_gpus_passes_check_device_map_and_never_offloads(bnb_checkpoint):
    _, path = bnb_checkpoint
    graph, _ = planner.trace(path, seq_len=16)
    half = graph.total_bytes // 2 + 65536
    plan = planner.plan(graph, max_memory={0: half, 1: half, "cpu": "1GB"}, reserve=0, objective="transfers")
    assert "cpu" not in plan.device_map.values()
    check_device_map(build_meta_model(AutoConfig.from_pretrained(path)), plan.device_map)
    with pytest.raises(planner.InfeasiblePlanError):  # without room on the GPUs nothing may go to cpu
        planner.plan(graph, max_memory={0: half // 2, 1: half // 2, "cpu": "1GB"}, reserve=0)


@pytest.mark.parametrize(("group", "published_gb"), [(128, 7.26), (64, 7.51), (32, 8.00)])
def test_gptq_llama_2_13b_matches_the_published_checkpoint(group, published_gb):
    # TheBloke/Llama-2-13B-GPTQ model card, "Provided files": 4-bit, act-order False (main, g128)
    # 7.26 GB; act-order True with group 64 / 32: 7.51 / 8.00 GB (file sizes, GB = 1e9 bytes).
    model = build_meta_model(catalog.lookup("llama-2-13b").to_config()).to(torch.float16)
    sizes = compute_module_sizes(model, dtype=torch.float16)
    stored = quantized_bytes(model, Quantization(method="gptq", bits=4, group_size=group), 2)
    weights = sizes[""] - compute_module_sizes(model, dtype=torch.float16, buffers_only=True)[""]
    total = weights - sum(sizes[name] for name in stored) + sum(stored.values())
    assert abs(total / 1e9 - published_gb) <= 0.01 * published_gb
    assert "lm_head.weight" not in stored and "model.embed_tokens.weight" not in stored


@pytest.mark.parametrize("block", [(128, 128), None])
def test_fp8_weights_match_transformers_fp8_linear(block):
    from transformers.integrations.finegrained_fp8 import FP8Linear

    with torch.device("meta"):
        layer = FP8Linear(in_features=1000, out_features=300, block_size=block)
    real = sum(p.numel() * p.element_size() for p in layer.parameters())
    q = Quantization(method="fp8", bits=8, block=block)
    assert q.linear_bytes(300, 1000, 2) == real


def test_config_quantization_is_read_and_unknown_methods_are_one_line_errors():
    config = AutoConfig.for_model("llama", quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 32,
                                                                "modules_to_not_convert": ["mlp"]})
    q = from_config(config)
    assert (q.method, q.bits, q.group_size, q.skip) == ("gptq", 4, 32, ("mlp",))
    fp8 = from_config(AutoConfig.for_model("llama", quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]}))
    assert fp8.block == (128, 128)
    odd = AutoConfig.for_model("llama", quantization_config={"quant_method": "hqq"})
    with pytest.raises(planner.InvalidSpecError, match="quant_method='hqq'.*supported"):
        from_config(odd)


def test_skipped_modules_keep_the_model_dtype():
    model = build_meta_model(catalog.lookup("llama-2-7b").to_config())
    every = quantized_bytes(model, Quantization(method="awq", bits=4, group_size=128), 2)
    # matched as transformers' should_convert_module matches: a suffix, or a prefix up to a dot
    some = quantized_bytes(model, Quantization(method="awq", bits=4, group_size=128,
                                               skip=("gate_proj", "model.layers.1")), 2)
    assert {n for n in every if "gate_proj" in n} and not {n for n in some if "gate_proj" in n}
    assert not {n for n in some if n.startswith("model.layers.1.")}
    assert {n for n in some if n.startswith("model.layers.10.")}  # "layers.1" is not "layers.10"
    assert set(some) < set(every)


def test_quantization_names_are_checked_before_tracing():
    with pytest.raises(planner.InvalidSpecError, match="quantization='int3'.*nf4"):
        planner.PlanSpec.from_kwargs("llama-2-7b", quantization="int3")
    assert planner.PlanSpec.from_kwargs("llama-2-7b", quantization="BNB-4bit").model.quantization == "nf4"
    assert set(METHODS) >= {"nf4", "int8", "gptq-4bit", "awq-4bit", "fp8", "mxfp4", "none"}


def test_quantization_none_ignores_the_checkpoint_config(bnb_checkpoint, tiny_llama_dir):
    _, path = bnb_checkpoint
    graph, _ = planner.trace(path, seq_len=16, quantization="none")
    plain, _ = planner.trace(tiny_llama_dir, seq_len=16, dtype=graph.dtype)
    assert graph.quantization == ""
    assert [n.weight_bytes for n in graph.nodes] == [n.weight_bytes for n in plain.nodes]


@pytest.mark.parametrize(("name", "published_gib"), [("gpt-oss-120b", 60.8), ("gpt-oss-20b", 12.8)])
def test_mxfp4_gpt_oss_matches_the_published_checkpoint(name, published_gib):
    # gpt-oss model card (arXiv 2508.10925), Table 1: checkpoint sizes 60.8 GiB and 12.8 GiB, MoE
    # weights in MXFP4 (4.25 bits per parameter), the rest in bf16.
    config = catalog.lookup(name).to_config()
    model = build_meta_model(config).to(torch.bfloat16)
    sizes = compute_module_sizes(model, dtype=torch.bfloat16)
    stored = quantized_bytes(model, from_config(config), 2)
    assert stored and all(".mlp.experts." in k for k in stored)
    weights = sizes[""] - compute_module_sizes(model, dtype=torch.bfloat16, buffers_only=True)[""]
    total = weights - sum(sizes[k] for k in stored) + sum(stored.values())
    assert abs(total / 2**30 - published_gib) <= 0.01 * published_gib


def test_fp8_packed_experts_match_transformers_fp8_experts():
    from transformers.integrations.finegrained_fp8 import FP8Experts

    config = AutoConfig.for_model("mixtral", hidden_size=256, intermediate_size=384, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=1, num_local_experts=4,
                                  num_experts_per_tok=2, vocab_size=128)
    stored = quantized_bytes(build_meta_model(config), Quantization(method="fp8", bits=8, block=(128, 128)), 2)
    with torch.device("meta"):
        experts = FP8Experts(config, block_size=(128, 128))
    real = sum(p.numel() * p.element_size() for p in experts.parameters())
    assert sum(b for name, b in stored.items() if ".mlp.experts." in name) == real


def test_bitsandbytes_leaves_packed_experts_unquantized_as_transformers_does():
    config = AutoConfig.for_model("mixtral", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=1, num_local_experts=4, vocab_size=128)
    stored = quantized_bytes(build_meta_model(config), Quantization(method="bitsandbytes", bits=4, quant_type="nf4"), 2)
    assert stored and not any(".experts." in name for name in stored)


@pytest.mark.parametrize("name", ["nf4", "int8"])
def test_an_asked_bnb_plan_loads_quantized_with_its_own_kwargs(tiny_llama_dir, name):
    plan = planner.plan(tiny_llama_dir, seq_len=16, quantization=name, max_memory={"cpu": "1GB"})
    kwargs = plan.from_pretrained_kwargs()
    assert kwargs["quantization_config"].quant_method == "bitsandbytes"
    split = _loaded(tiny_llama_dir, **kwargs)
    direct = _loaded(tiny_llama_dir, quantization_config=BNB[name], device_map="cpu")
    assert sum(n.weight_bytes for n in plan.graph.nodes) == _stored_bytes(split)
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        assert torch.equal(split(ids).logits, direct(ids).logits)


def test_bnb_leaves_packed_moe_experts_unquantized_and_the_graph_says_so(tmp_path):
    """bitsandbytes replaces nn.Linear only, so a 4-bit Mixtral keeps its packed experts at full
    width: the predicted bytes follow the real load (the oracle), and a note says why."""
    config = AutoConfig.for_model("mixtral", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=2, num_local_experts=4,
                                  num_experts_per_tok=2, vocab_size=128)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    graph, _ = planner.trace(str(tmp_path), seq_len=16, quantization="nf4")
    loaded = _loaded(str(tmp_path), quantization_config=BNB["nf4"], device_map="cpu")
    experts = sum(p.numel() * p.element_size() for name, p in loaded.named_parameters() if ".experts." in name)
    assert experts > 0 and graph.total_expert_bytes == experts
    predicted = sum(n.weight_bytes for n in graph.nodes)
    assert abs(predicted - _stored_bytes(loaded)) <= 0.01 * _stored_bytes(loaded)
    assert any("packed MoE experts" in note and "unquantized" in note for note in graph.notes)
    dense, _ = planner.trace(str(tmp_path), seq_len=16, quantization="none")
    assert not any("packed MoE experts" in note for note in dense.notes)
    with pytest.raises(planner.InfeasiblePlanError, match="not offloaded to cpu.*packed MoE experts"):
        planner.plan(graph, max_memory={0: "64KB", "cpu": "1GB"})  # bnb refuses cpu next to a GPU
