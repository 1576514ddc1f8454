"""``calibrate``: plan, load the model with the plan, run the workload for real, compare.

The prediction compared is the plan's own device_map evaluated (:func:`layerplan.evaluate_map`) at
the workload that runs: the declared batch and prompt, and ``min(max_new_tokens, decode_steps)``
decode steps (a few steps measure the decode rate; the KV cache and times are then those of that
shorter context, predicted and measured alike).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from layerplan.planner.api import as_spec, evaluate_map, load_graph, plan
from layerplan.planner.calibrate.checkpoint import checkpoint
from layerplan.planner.calibrate.figures import compute_devices, measured_profile
from layerplan.planner.calibrate.report import CalibrationResult, Compared, DeviceFidelity
from layerplan.planner.calibrate.run import Measurement, measure_plan
from layerplan.planner.hardware import detect_device_names
from layerplan.planner.output.adapter import Plan
from layerplan.planner.spec import PlanSpec
from layerplan.solver import InvalidSpecError

__all__ = ["DEFAULT_DECODE_STEPS", "calibrate"]

#: Decode steps run by default: enough for a mean decode-step time, few enough for any context.
DEFAULT_DECODE_STEPS = 4


def _run_spec(spec: PlanSpec, planned: Plan, steps: int) -> PlanSpec:
    """``spec`` at the workload that runs: the traced prompt, ``steps`` new tokens.

    Raises:
        InvalidSpecError: images in the prompt (calibrate feeds token ids only).
    """
    w = planned.graph.workload
    if w.images_per_prompt:
        raise InvalidSpecError(f"{planned.graph.model} is planned with {w.images_per_prompt} image(s) per prompt; "
                               "calibrate runs text prompts only: pass images_per_prompt=0")
    workload = dataclasses.replace(spec.workload, seq_len=None, prompt_len=w.prompt_len, max_new_tokens=steps,
                                   attn_implementation=w.attn_implementation)
    return spec.replace(workload=workload)


def _device(predicted: Plan, measured: Measurement, device: int | str) -> DeviceFidelity:
    u = next(x for x in predicted.usage if x.device == device)
    peak = measured.peak_bytes[device]
    weights, kv = measured.weights_bytes.get(device, 0), measured.kv_bytes.get(device, 0)
    return DeviceFidelity(
        device=device,
        weights=Compared(predicted=u.weights_bytes, measured=weights),
        kv=Compared(predicted=u.kv_bytes, measured=kv),
        activations=Compared(predicted=u.activation_bytes + u.streaming_bytes, measured=max(peak - weights - kv, 0)),
        peak=Compared(predicted=u.used_bytes - u.reserve_bytes, measured=peak),
    )


def _timing(predicted: Plan, measured: Measurement, steps: int) -> tuple[Compared, Compared, Compared]:
    t, m = predicted.timing, measured.times
    assert t is not None  # evaluate_map always times
    decode = m.decode_step_s if m.decode_step_s is not None else 0.0
    per_token = (m.prefill_s + steps * decode) / max(steps, 1)
    return (Compared(predicted=t.prefill_ns / 1e9, measured=m.prefill_s),
            Compared(predicted=t.decode_ns / 1e9, measured=m.decode_step_s),
            Compared(predicted=t.per_token_s, measured=per_token))


def _notes(planned: Plan, steps: int, random_weights: bool) -> tuple[str, ...]:
    notes = []
    declared = planned.graph.workload.max_new_tokens
    if steps < declared:
        notes.append(f"ran {steps} of the {declared} declared decode steps (decode_steps); KV cache and times are "
                     "predicted and measured at that shorter context")
    if any(u.device == "disk" and u.nodes for u in planned.usage):
        notes.append("disk holds weights in files, not memory: not compared; its read speed is not measured")
    if random_weights:
        notes.append("the model had no weights here: random weights of its shapes were written and loaded")
    return tuple(notes)


def calibrate(model: Any, *, model_dir: str | None = None, decode_steps: int = DEFAULT_DECODE_STEPS,
              **options: Any) -> CalibrationResult:
    """Plan ``model``, load it with the plan, run the workload, and compare predicted with measured.

    Args:
        model: a :class:`Plan` (then ``options`` must be empty), a :class:`PlanSpec`, or what
            :func:`layerplan.plan` takes with ``options``.
        model_dir: a ``save_pretrained`` folder to load (default: the spec's model directory when it
            holds weights, else random weights of the model's shapes in a temporary folder).
        decode_steps: decode steps to run at most (>= 0); the declared ``max_new_tokens`` when smaller.
        **options: :func:`layerplan.plan`'s keyword options.

    Returns:
        A :class:`CalibrationResult`: bytes per device and component (weights, KV cache,
        activations, peak), seconds per phase, and the measured :class:`CalibrationProfile`.

    Raises:
        InvalidSpecError: bad options, ``decode_steps < 0``, a plan without a spec, images in the
            prompt, a model that does not read token ids, a ``model_dir`` without config.json.
        InfeasiblePlanError: the model does not fit the declared devices.
    """
    if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or decode_steps < 0:
        raise InvalidSpecError(f"decode_steps={decode_steps!r}; expected an integer >= 0")
    planned = model if isinstance(model, Plan) else plan(as_spec(model, **options))
    if isinstance(model, Plan) and options:
        raise InvalidSpecError(f"pass a Plan or options, not both (got {', '.join(sorted(options))})")
    if planned.spec is None:
        raise InvalidSpecError("this plan carries no spec; calibrate the spec or model it was made from")
    steps = min(planned.graph.workload.max_new_tokens, decode_steps)
    run_spec = _run_spec(planned.spec, planned, steps)
    graph, _ = load_graph(run_spec)
    predicted = evaluate_map(graph, planned.device_map, run_spec)
    with checkpoint(run_spec, model_dir=model_dir, dtype=graph.dtype) as (folder, random_weights):
        measured = measure_plan(predicted, folder, steps=steps)
    return CalibrationResult(
        model=graph.model, dtype=graph.dtype, workload=graph.workload.to_dict(),
        declared_new_tokens=planned.graph.workload.max_new_tokens, random_weights=random_weights,
        devices=tuple(_device(predicted, measured, d) for d in measured.peak_bytes),
        **dict(zip(("prefill_s", "decode_step_s", "per_token_s"), _timing(predicted, measured, steps))),
        node_times=_node_times(predicted, measured),
        profile=measured_profile(predicted, measured, reported_names=detect_device_names()),
        notes=_notes(planned, steps, random_weights),
    )


def _node_times(predicted: Plan, measured: Measurement) -> dict[str, tuple[int | str, float, float | None]]:
    devices = compute_devices(predicted)
    t = measured.times
    return {name: (devices[name], t.node_prefill_s[name], t.node_decode_s.get(name)) for name in t.node_prefill_s}
