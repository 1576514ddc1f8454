"""Fidelity of the one-device peak: the plan's weights + KV cache + largest charged working set
against the peak of a real CPU ``generate()`` measured by the torch profiler's allocator events
(:class:`~layerplan.planner.calibrate.memory.AllocatorPeaks`, not the fake-tensor tracker that
makes the prediction), on tiny random-weight Llama-, Mixtral-, Gemma-2- and Falcon-shaped models at
three workloads each (issue 11).

Before the accounting charged each node the activations live at its entry (``inputs_embeds``, its
input hidden states, rotary cos/sin, glue masks), these peaks were 2.8-10.1% under the measurement
(Llama -4.0..-5.8%, Mixtral -2.8..-3.7% with its float32 experts traced in bfloat16, Gemma-2
-7.4..-10.1%, Falcon -6.1..-7.7%). Measured after it, float32, 4 decode steps (predicted - measured)
/ measured: Llama +0.4..+0.7%, Mixtral +0.2..+0.8%, Gemma-2 -1.8..+0.1%, Falcon -0.9..-0.6%.
Gemma-2's -1.8% (2x48) was its sliding-window layers holding, from prefill to their first decode
step, a view of the whole prompt's K/V where the window's was charged (16 KiB of 1.1 MiB); charged
the storage behind that view, Gemma-2 is -0.6..+1.7%: -0.4% at 2x48, -0.6% at 4x32 (prompt =
window: nothing held beyond it), +1.7% at 1x64, where the real peak (prefill, in the last layer,
as at 2x48) holds that layer's own K/V inside its working set, which KV + working set charges twice
(+17 KiB), and which the window's smaller charge had cancelled. The bound, 3%, leaves room for that
and for allocator bookkeeping that is not the model's (profiler events of ``generate()``'s own
tensors: logits copies, token lists).

T5 (encoder-decoder, tiny, same workloads): its peak is in the encoder, which ``generate()`` runs
before any KV cache exists; charged the KV cache *and* the encoder's working set, it was over the
measurement by +8.3% (1x64), +11.3% (4x32), +10.9% (2x48). With the encoder's nodes marked
``before_kv_cache`` (a device holds ``max(encoder working set, KV + other working set)``):
-0.0%, +1.5%, +0.7%. Its bound, 2%, is what that achieves (:data:`ENCODER_DECODER_PEAK_TOLERANCE`). Whisper's
encoder runs first the same way (``WhisperGenerationMixin.generate`` hands its segment to
``GenerationMixin.generate``): a tiny one decoding 4 tokens from 1 was +5.4% (batch 1) and +16.9%
(batch 4) over without the mark, -0.7% and -0.3% with it.
"""

from __future__ import annotations

import gc

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, WhisperForConditionalGeneration

import layerplan
from layerplan.planner.calibrate.memory import AllocatorPeaks, storage_bytes, weight_bytes
from layerplan.planner.calibrate.run import generate_tokens
from layerplan.planner.quiet import quiet

STEPS = 4
PEAK_TOLERANCE = 0.03
ENCODER_DECODER_PEAK_TOLERANCE = 0.02
#: T5 with 64-dim layers, 4 encoder and 4 decoder blocks, a vocabulary of 256.
T5_FIELDS = {"vocab_size": 256, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 4, "num_decoder_layers": 4,
             "num_heads": 4, "decoder_start_token_id": 0}
WORKLOADS = [(1, 64), (4, 32), (2, 48)]  # batch x prompt

#: family -> config fields: 64-dim models, a vocabulary of 256 (Mixtral: 32-dim, 4 experts, 2 per token).
FAMILIES = {
    "llama": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128},
    "mixtral": {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
                "num_experts_per_tok": 2, "max_position_embeddings": 256},
    # window 32 < every prompt: the sliding layers' mask and cache differ from the global ones'
    "gemma2": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 32,
               "max_position_embeddings": 256},
    # Falcon-7B's layout: multi-query attention, parallel attention and MLP
    "falcon": {"vocab_size": 256, "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    out = {}
    for family, fields in FAMILIES.items():
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(f"tiny-{family}")
        with quiet():
            AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **fields)).save_pretrained(path)
        out[family] = str(path)
    return out


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-t5-fidelity")
    with quiet():
        AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model("t5", **T5_FIELDS)).save_pretrained(path)
    return str(path)


def _measured_peak(folder: str, batch: int, prompt: int, attn: str, auto: type = AutoModelForCausalLM) -> int:
    """Weights + inputs resident at entry + the allocator's peak above them over ``generate()``
    (a warm-up run first, as ``layerplan calibrate`` does)."""
    with quiet():
        model = auto.from_pretrained(folder, attn_implementation=attn).eval()
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    tokens = generate_tokens(model, STEPS)

    def run() -> None:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)

    run()
    gc.collect()
    with AllocatorPeaks(devices=("cpu",)) as peaks:
        run()
    return weight_bytes(model)["cpu"] + storage_bytes(inputs.values())["cpu"] + peaks.peak_bytes["cpu"]


@pytest.mark.parametrize(("batch", "prompt"), WORKLOADS, ids=[f"{b}x{p}" for b, p in WORKLOADS])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_device_peak_matches_a_real_generate(family, batch, prompt, folders):
    planned = layerplan.plan(folders[family], max_memory={"cpu": "4GiB"}, reserve=0, dtype="float32",
                             batch_size=batch, prompt_len=prompt, max_new_tokens=STEPS)
    (cpu,) = [u for u in planned.usage if u.device == "cpu"]
    assert not any("bfloat16" in n for n in planned.graph.notes)  # float32 traced as float32 (Mixtral's experts)
    assert cpu.activation_bytes == max(n.work_bytes for n in planned.graph.nodes)  # one device: nothing received
    predicted = cpu.weights_bytes + cpu.kv_bytes + cpu.activation_bytes
    measured = _measured_peak(folders[family], batch, prompt, planned.graph.workload.attn_implementation)
    error = (predicted - measured) / measured
    assert abs(error) <= PEAK_TOLERANCE, f"{family} {batch}x{prompt}: predicted {predicted} B, measured {measured} B ({error:+.2%})"


def test_live_bytes_hold_what_the_model_keeps_for_the_layer(folders):
    # Llama, batch 2 x prompt 48, float32: a decoder layer after the first starts with inputs_embeds
    # (2 x 48 x 64 x 4 B = 24 KiB) and its input hidden states (24 KiB) live, with cos and sin
    # (1 x 48 x 16 x 4 B = 3 KiB each: the positions broadcast over the batch) and the input ids
    # (2 x 48 x 8 B = 768 B): 56,064 B; positions and the like add a few KiB more.
    graph, _ = layerplan.planner.trace(folders["llama"], dtype="float32", batch_size=2, prompt_len=48,
                                       max_new_tokens=STEPS)
    layer = next(n for n in graph.nodes if n.name == "model.layers.1")
    least = 2 * 24 * 1024 + 2 * 3 * 1024 + 768
    assert least <= layer.prefill_live_bytes <= least + 8 * 1024
    # in decode the cache is KV (kv_bytes), not live activations: one token's tensors only
    assert layer.decode_live_bytes < 4 * 1024
    assert layer.work_bytes == layer.prefill_work_bytes + layer.prefill_live_bytes


@pytest.mark.parametrize(("batch", "prompt"), WORKLOADS, ids=[f"{b}x{p}" for b, p in WORKLOADS])
def test_t5_peak_is_its_encoder_or_its_cache_not_both(batch, prompt, t5_folder):
    planned = layerplan.plan(t5_folder, max_memory={"cpu": "4GiB"}, reserve=0, dtype="float32",
                             batch_size=batch, prompt_len=prompt, max_new_tokens=STEPS)
    (cpu,) = [u for u in planned.usage if u.device == "cpu"]
    nodes = planned.graph.nodes
    encoder = max(n.work_bytes for n in nodes if n.before_kv_cache)
    beside = max(n.work_bytes for n in nodes if not n.before_kv_cache)
    assert {n.name for n in nodes if n.before_kv_cache} == {n.name for n in nodes if n.name.startswith("encoder.")}
    # one device, nothing received: KV + activations = max(encoder working set, KV + the rest's)
    assert cpu.kv_bytes + cpu.activation_bytes == max(encoder, cpu.kv_bytes + beside)
    predicted = cpu.weights_bytes + cpu.kv_bytes + cpu.activation_bytes
    measured = _measured_peak(t5_folder, batch, prompt, planned.graph.workload.attn_implementation,
                              AutoModelForSeq2SeqLM)
    error = (predicted - measured) / measured
    assert abs(error) <= ENCODER_DECODER_PEAK_TOLERANCE, (
        f"t5 {batch}x{prompt}: predicted {predicted} B, measured {measured} B ({error:+.2%})")
    both = cpu.weights_bytes + cpu.kv_bytes + max(encoder, beside)  # the encoder charged beside the cache
    assert (both - measured) / measured > 0.05  # what the mark corrects here: +8..11%


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory) -> str:
    config = AutoConfig.for_model(
        "whisper", vocab_size=300, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16,
        max_source_positions=60, max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-whisper-fidelity")
    with quiet():
        WhisperForConditionalGeneration(config).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("batch", [1, 4])
def test_whisper_peak_is_its_encoder_or_its_cache_not_both(batch, whisper_folder):
    planned = layerplan.plan(whisper_folder, max_memory={"cpu": "4GiB"}, reserve=0, dtype="float32",
                             batch_size=batch, prompt_len=1, max_new_tokens=STEPS)
    (cpu,) = [u for u in planned.usage if u.device == "cpu"]
    assert any(n.before_kv_cache for n in planned.graph.nodes)
    predicted = cpu.weights_bytes + cpu.kv_bytes + cpu.activation_bytes
    with quiet():
        model = WhisperForConditionalGeneration.from_pretrained(
            whisper_folder, attn_implementation=planned.graph.workload.attn_implementation).eval()
    # one 30 s window: 2 x max_source_positions mel frames (WhisperFeatureExtractor pads to it)
    inputs = {"input_features": torch.randn(batch, 16, 120, generator=torch.Generator().manual_seed(0)),
              "decoder_input_ids": torch.ones(batch, 1, dtype=torch.long)}

    def run() -> None:
        with torch.no_grad(), quiet():
            model.generate(**inputs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)

    run()
    gc.collect()
    with AllocatorPeaks(devices=("cpu",)) as peaks:
        run()
    measured = weight_bytes(model)["cpu"] + storage_bytes(inputs.values())["cpu"] + peaks.peak_bytes["cpu"]
    error = (predicted - measured) / measured
    assert abs(error) <= ENCODER_DECODER_PEAK_TOLERANCE, (
        f"whisper batch {batch}: predicted {predicted} B, measured {measured} B ({error:+.2%})")
