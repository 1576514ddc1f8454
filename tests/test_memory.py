"""Workload-aware memory: KV cache per node and working sets, against published figures, the
KV formula worked by hand, and real forward passes measured with PyTorch's own MemTracker."""

from __future__ import annotations

import pytest
import torch
from layerplan import planner
from layerplan.planner.model.meta import build_meta_model
from layerplan.planner.model.workload import Workload
from layerplan.solver import Device, DeviceKind
from torch.distributed._tools.mem_tracker import MemTracker, _ModState
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    FalconConfig,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    T5Config,
)
from transformers.cache_utils import DynamicCache

KIB = 1024


@pytest.mark.parametrize(
    ("name", "per_token_bytes"),
    [
        # vLLM paper (Kwon et al. 2023, section 3): OPT-13B holds 800 KB of KV cache per token
        # = 2 (K and V) x 5120 (hidden) x 40 (layers) x 2 bytes (fp16) = 819,200 B = 800 KiB.
        ("opt-13b", 800 * KIB),
        # Llama-2-70B with GQA: 2 x 8 KV heads x 128 head_dim x 80 layers x 2 bytes = 320 KiB.
        ("llama-2-70b", 320 * KIB),
    ],
)
def test_published_kv_bytes_per_token(name, per_token_bytes):
    graph, _ = planner.trace(name, dtype="float16", prompt_len=48, max_new_tokens=16)
    assert graph.total_kv_bytes == per_token_bytes * 64


def _kv_by_block(graph) -> list[int]:
    return [n.kv_bytes for n in graph.nodes if n.kind == "block"]


def _trace_config(config, **workload):
    model = build_meta_model(config)
    return planner.trace(model, dtype="float32", **workload)[0]


def test_kv_formula_gqa():
    # 2 layers, 8 query heads, 2 KV heads of 16 dims, fp32, context 20 tokens, batch 3:
    # per layer 2 x 2 x 16 x 4 B x 20 x 3 = 15,360 B
    cfg = LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2)
    graph = _trace_config(cfg, batch_size=3, prompt_len=12, max_new_tokens=8)
    assert _kv_by_block(graph) == [2 * 2 * 16 * 4 * 20 * 3] * 2


def test_kv_formula_mqa():
    # Falcon-7B style multi-query attention: one KV head of 64/4 = 16 dims; context 10:
    # per layer 2 x 1 x 16 x 4 B x 10 = 1,280 B
    cfg = FalconConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       multi_query=True, new_decoder_architecture=False, parallel_attn=True, alibi=False)
    graph = _trace_config(cfg, prompt_len=6, max_new_tokens=4)
    assert _kv_by_block(graph) == [2 * 1 * 16 * 4 * 10] * 2


def test_kv_sliding_window_holds_the_prompts_storage_until_the_first_step():
    # Mistral: window 8 < context 20, so each layer ends holding 8 tokens (2 x 2 x 16 x 4 B x 8 =
    # 2,048 B); but transformers' DynamicSlidingWindowLayer keeps after the 16-token prompt a view of
    # the prompt's K/V (its last 7 tokens), whose storage is all 16 until the first decode step:
    # 2 x 2 x 16 x 4 B x 16 = 4,096 B held, and charged.
    cfg = MistralConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=8)
    graph = _trace_config(cfg, prompt_len=16, max_new_tokens=4)
    assert _kv_by_block(graph) == [2 * 2 * 16 * 4 * 16] * 2
    # prompt 6 < window 8: the prompt's storage is less than the window's at the end (8 tokens)
    graph = _trace_config(cfg, prompt_len=6, max_new_tokens=14)
    assert _kv_by_block(graph) == [2 * 2 * 16 * 4 * 8] * 2


def test_kv_formula_gemma2_alternates_sliding_and_full_layers():
    # Gemma-2: layer_types alternate sliding (window 8) and full (context 20), head_dim 16, 2 KV heads;
    # a sliding layer holds the 16-token prompt's storage behind its window's view until the first
    # decode step (see the Mistral test above), more than the window's 8 tokens at the end
    cfg = Gemma2Config(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8)
    graph = _trace_config(cfg, prompt_len=16, max_new_tokens=4)
    per_token = 2 * 2 * 16 * 4
    expected = [per_token * (16 if t == "sliding_attention" else 20) for t in cfg.layer_types]
    assert _kv_by_block(graph) == expected
    assert len(set(expected)) == 2


def test_kv_formula_encoder_decoder():
    # T5: encoder blocks hold no cache; each decoder block holds self-attention K/V for the
    # max_new_tokens=4 decoder tokens plus cross-attention K/V for the prompt_len=12 encoder tokens:
    # 2 x 4 heads x 8 d_kv x 4 B x (4 + 12) = 4,096 B
    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4)
    graph = _trace_config(cfg, prompt_len=12, max_new_tokens=4)
    kv = {n.name: n.kv_bytes for n in graph.nodes if n.kind == "block"}
    assert kv == {"encoder.block.0": 0, "encoder.block.1": 0,
                  "decoder.block.0": 2 * 4 * 8 * 4 * 16, "decoder.block.1": 2 * 4 * 8 * 4 * 16}


@pytest.mark.parametrize("phase", ["generate", "prefill"])
def test_t5_encoder_nodes_run_before_any_kv_cache(tiny_t5_dir, phase):
    # generate() runs the whole encoder before the decoder's first step makes the cache (self and
    # cross attention): the encoder's nodes, and only they, are marked, in any phase; to_problem
    # hands the mark to the solver.
    graph, _ = planner.trace(tiny_t5_dir, prompt_len=12, max_new_tokens=4, dtype="float32", phase=phase)
    marked = {n.name for n in graph.nodes if n.before_kv_cache}
    assert marked == {"encoder.embed_tokens", "encoder.block.0", "encoder.block.1", "encoder.final_layer_norm"}
    assert all(n.kv_bytes == 0 for n in graph.nodes if n.before_kv_cache)
    assert all(n.kv_bytes > 0 for n in graph.nodes if n.name.startswith("decoder.block."))
    problem = graph.to_problem(devices=(Device(name="cpu", kind=DeviceKind.CPU, cap_bytes=2**30),))
    assert [x.before_kv_cache for x in problem.nodes] == [n.before_kv_cache for n in graph.nodes]


@pytest.mark.parametrize("arch", ["T5Model", "T5EncoderModel"])
def test_models_that_keep_no_kv_cache_mark_nothing(tiny_llama_dir, arch):
    # A decoder-only model runs every node beside its cache; T5Model (an encoder-decoder without
    # generate(): can_generate() is False) and T5EncoderModel keep no cache at all.
    llama, _ = planner.trace(tiny_llama_dir, prompt_len=8, max_new_tokens=4, dtype="float32")
    assert not any(n.before_kv_cache for n in llama.nodes)
    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, architectures=[arch])
    graph = _trace_config(cfg, prompt_len=8, max_new_tokens=4)
    assert any(n.name.startswith("encoder.block.") for n in graph.nodes)
    assert not any(n.before_kv_cache for n in graph.nodes)


def test_kv_dtype_scales_the_cache_only():
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    full = planner.trace(build_meta_model(cfg), dtype="bfloat16", prompt_len=8, max_new_tokens=8)[0]
    fp8 = planner.trace(build_meta_model(cfg), dtype="bfloat16", kv_dtype="fp8", prompt_len=8, max_new_tokens=8)[0]
    assert _kv_by_block(fp8) == [kv // 2 for kv in _kv_by_block(full)]
    assert [n.work_bytes for n in fp8.nodes] == [n.work_bytes for n in full.nodes]


# -- predicted (fake tensors) vs measured (real tensors, PyTorch's MemTracker) -------------------

def _real_work(model, nodes, run) -> dict[str, int]:
    """Peak bytes above the live bytes at entry, per node module, over a real CPU forward."""
    modules = dict(model.named_modules())
    tracker = MemTracker()
    with tracker, torch.no_grad():
        run()
    out = {}
    for name in nodes:
        stats = tracker.memory_tracking[modules[name]]
        entry = stats.snapshots[_ModState.PRE_FW][0]
        out[name] = max(peak - entry[dev]["Total"] for dev, peak in stats.local_peak.items())
    return out


def _assert_close_per_node(predicted: dict[str, int], measured: dict[str, int]) -> None:
    for name, real in measured.items():
        assert abs(predicted[name] - real) <= 0.10 * real + 64, (name, predicted[name], real)


def test_minilm_prefill_working_set_matches_a_real_forward(minilm_dir):
    graph, _ = planner.trace(minilm_dir, batch_size=2, seq_len=64, dtype="float32")
    nodes = [n.name for n in graph.nodes if n.module_class != "Parameter"]
    model = AutoModel.from_pretrained(minilm_dir).eval()
    ids = torch.randint(0, 1000, (2, 64))
    measured = _real_work(model, nodes, lambda: model(input_ids=ids))
    _assert_close_per_node({n.name: n.prefill_work_bytes for n in graph.nodes}, measured)
    assert graph.total_kv_bytes == 0  # encoder-only: no cache


def test_tiny_llama_prefill_decode_and_kv_match_real_passes(tiny_llama_dir):
    prompt, new = 40, 24
    graph, _ = planner.trace(tiny_llama_dir, batch_size=2, prompt_len=prompt, max_new_tokens=new, dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    nodes = [n.name for n in graph.nodes]
    ids = torch.randint(0, 256, (2, prompt))
    measured = _real_work(model, nodes, lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1))
    _assert_close_per_node({n.name: n.prefill_work_bytes for n in graph.nodes}, measured)

    # decode: fill a real cache with context-1 tokens, then measure one real step
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 256, (2, prompt + new - 1)), past_key_values=cache, use_cache=True)
    step = torch.randint(0, 256, (2, 1))
    measured = _real_work(model, nodes, lambda: model(input_ids=step, past_key_values=cache, use_cache=True,
                                                      logits_to_keep=1))
    _assert_close_per_node({n.name: n.decode_work_bytes for n in graph.nodes}, measured)
    real_kv = [layer.keys.nbytes + layer.values.nbytes for layer in cache.layers]
    assert _kv_by_block(graph) == real_kv


def test_tiny_t5_kv_matches_real_generate(tiny_t5_dir):
    prompt, new = 12, 6
    graph, _ = planner.trace(tiny_t5_dir, prompt_len=prompt, max_new_tokens=new, dtype="float32")
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    with torch.no_grad():
        out = model.generate(torch.randint(1, 128, (1, prompt)), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, return_dict_in_generate=True)
    cache = out.past_key_values
    # generate() feeds the start token plus new-1 generated tokens: `new` decoder positions in the cache
    real = [s.keys.nbytes + s.values.nbytes + c.keys.nbytes + c.values.nbytes
            for s, c in zip(cache.self_attention_cache.layers, cache.cross_attention_cache.layers)]
    predicted = [n.kv_bytes for n in graph.nodes if n.name.startswith("decoder.block.")]
    assert predicted == real


def test_workload_defaults_and_validation():
    w = Workload.from_lengths(model_context=32768, dtype=torch.bfloat16)
    assert (w.batch_size, w.context_len, w.max_new_tokens) == (1, 4096, 256)
    w = Workload.from_lengths(model_context=1024, seq_len=512, max_new_tokens=100, dtype=torch.float16)
    assert (w.prompt_len, w.max_new_tokens) == (412, 100)
    with pytest.raises(planner.InvalidSpecError, match="prompt_len"):
        Workload.from_lengths(model_context=1024, seq_len=64, max_new_tokens=64, dtype=torch.float16)
    with pytest.raises(planner.InvalidSpecError, match="attn_implementation"):
        Workload(prompt_len=4, attn_implementation="flash")


def test_failed_forward_falls_back_to_estimates_and_names_them():
    config = AutoConfig.for_model("llama", vocab_size=64, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.layers = torch.nn.ModuleList([torch.nn.Linear(64, 64) for _ in range(2)])

        def forward(self, **kwargs):  # noqa: ANN003
            raise RuntimeError("no meta kernel")

    with torch.device("meta"):
        module = Broken()
    graph, _ = planner.trace(module, dtype="float32", prompt_len=10, max_new_tokens=6,
                             no_split_module_classes=("Linear",))
    assert all(n.estimated for n in graph.nodes if n.kind == "block")
    # estimate.py: 2 x 2 KV heads x 16 dims x 4 B x 16 tokens per layer
    assert _kv_by_block(graph) == [2 * 2 * 16 * 4 * 16] * 2
    assert any("estimated from the config" in note for note in graph.notes)


@pytest.mark.parametrize(("prompt_len", "max_new_tokens"), [(16, 4), (6, 14), (8, 8)])
def test_the_config_estimate_of_sliding_layers_holds_what_the_trace_measures(prompt_len, max_new_tokens):
    # the fallback estimator (used when a model cannot run on meta) against the traced storage,
    # per layer type, for a prompt longer than the window, shorter, and equal to it
    from layerplan.planner.model.estimate import estimate_layer_bytes

    cfg = Gemma2Config(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8)
    graph = _trace_config(cfg, prompt_len=prompt_len, max_new_tokens=max_new_tokens)
    workload = Workload(batch_size=1, prompt_len=prompt_len, max_new_tokens=max_new_tokens, dtype=torch.float32)
    estimated = [estimate_layer_bytes(cfg, workload, layer_type=t)[0] for t in cfg.layer_types]
    assert estimated == _kv_by_block(graph)
