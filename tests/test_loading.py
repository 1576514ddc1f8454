"""Real loading: plans are loaded by from_pretrained with real weights and must not change outputs.

Oracle: the same checkpoint loaded unsplit on the CPU.
"""

from __future__ import annotations

import torch
from accelerate.utils import check_device_map
from layerplan import planner
from layerplan.planner.model.meta import build_meta_model
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM


def _devices(device_map: dict) -> set:
    return set(device_map.values())


def test_minilm_split_over_cpu_and_disk_gives_the_unsplit_embeddings(minilm_dir, tmp_path):
    graph, _ = planner.trace(minilm_dir, seq_len=16)
    # A cpu cap of 60% of the model forces part of it onto disk (the cpu, as execution device, also
    # holds the working set and the largest disk node streamed in to run).
    cap = graph.total_bytes * 6 // 10
    plan = planner.plan(graph, max_memory={"cpu": cap, "disk": "10GB"}, offload_folder=tmp_path / "offload")
    assert _devices(plan.device_map) == {"cpu", "disk"}
    assert plan.usage[0].used_bytes <= cap

    reference = AutoModel.from_pretrained(minilm_dir).eval()
    split = AutoModel.from_pretrained(minilm_dir, **plan.from_pretrained_kwargs()).eval()
    assert split.hf_device_map == plan.device_map

    torch.manual_seed(0)
    input_ids = torch.randint(0, reference.config.vocab_size, (2, 12))
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        want = reference(input_ids=input_ids, attention_mask=mask).last_hidden_state
        got = split(input_ids=input_ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want)


def _greedy(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=8,
                              do_sample=False, pad_token_id=0)


def test_tiny_llama_over_cpu_and_disk_generates_the_same_tokens(tiny_llama_dir, tmp_path):
    graph, _ = planner.trace(tiny_llama_dir, seq_len=16)
    plan = planner.plan(graph, max_memory={"cpu": graph.total_bytes * 6 // 10, "disk": "1GB"},
                        offload_folder=tmp_path / "offload")
    assert _devices(plan.device_map) == {"cpu", "disk"}

    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    split = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, **plan.from_pretrained_kwargs()).eval()
    input_ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    assert torch.equal(_greedy(split, input_ids), _greedy(reference, input_ids))


def test_gpu_plan_passes_check_device_map_and_runs_with_gpus_replaced_by_cpu(tiny_tied_llama_dir):
    graph, _ = planner.trace(tiny_tied_llama_dir, seq_len=16)
    third = graph.total_bytes // 3 + 1
    room = 65536  # KV cache, working set and received tensors of the tiny model
    # objective "transfers" offloads only as a last resort (under "latency" streaming these tiny
    # layers from RAM costs less than the 10 us latency of a GPU-to-GPU cut).
    plan = planner.plan(graph, max_memory={0: third + room, 1: third + room, 2: third + room, "cpu": "1GB"},
                        reserve=0, objective="transfers")
    gpus = {d for d in plan.device_map.values() if isinstance(d, int)}
    assert len(gpus) >= 2, plan.device_map  # the caps force a split across GPUs

    from transformers import AutoConfig

    meta = build_meta_model(AutoConfig.from_pretrained(tiny_tied_llama_dir))
    check_device_map(meta, plan.device_map)  # accelerate's own check: every parameter covered
    # tied lm_head shares its device with the input embedding
    assert plan.device_map.get("lm_head", plan.device_map.get("", None)) is not None
    node_device = dict(zip((n.name for n in graph.nodes), plan.solution.assignment))
    assert node_device["lm_head"] == node_device["model.embed_tokens"]

    on_cpu = {k: ("cpu" if isinstance(v, int) else v) for k, v in plan.device_map.items()}
    reference = AutoModelForCausalLM.from_pretrained(tiny_tied_llama_dir).eval()
    split = AutoModelForCausalLM.from_pretrained(tiny_tied_llama_dir, device_map=on_cpu).eval()
    input_ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(split(input_ids).logits, reference(input_ids).logits)
    assert torch.equal(_greedy(split, input_ids), _greedy(reference, input_ids))


def test_t5_plan_over_cpu_and_disk_generates_the_same_tokens(tiny_t5_dir, tmp_path):
    graph, _ = planner.trace(tiny_t5_dir, seq_len=8)
    plan = planner.plan(graph, max_memory={"cpu": graph.total_bytes // 2, "disk": "1GB"},
                        offload_folder=tmp_path / "offload")
    assert _devices(plan.device_map) == {"cpu", "disk"}
    reference = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    split = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir, **plan.from_pretrained_kwargs()).eval()
    input_ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    assert torch.equal(_greedy(split, input_ids), _greedy(reference, input_ids))
