"""Predicted vs measured, per device and per component: the result of a calibration, its JSON and table.

Relative error = ``(predicted - measured) / measured``: positive when the prediction is
conservative (the plan reserves more than the run used), negative when optimistic (a plan that
"fits" can run out of memory). The predicted peak of a device is what its plan charges it besides
the reserve: weights + KV cache + activations (largest working set and received tensors) +
streaming buffer (:class:`layerplan.planner.output.adapter.DeviceUsage`); the reserve stands for
allocator slack and the CUDA context, which ``max_memory_allocated`` does not count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from layerplan.planner.calibrate.profile import CalibrationProfile
from layerplan.solver import format_bytes

__all__ = ["CalibrationResult", "Compared", "DeviceFidelity", "render_calibration"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Compared:
    """One figure, predicted and measured (bytes or seconds); ``measured`` None when not measured."""

    predicted: float
    measured: float | None

    @property
    def error(self) -> float | None:
        """``(predicted - measured) / measured``; 0 when both are 0; None when not measured or only
        the prediction is nonzero."""
        if self.measured is None:
            return None
        if self.measured == 0:
            return 0.0 if self.predicted == 0 else None
        return (self.predicted - self.measured) / self.measured

    def to_dict(self) -> dict[str, Any]:
        error = self.error
        return {"predicted": self.predicted, "measured": self.measured,
                "relative_error": None if error is None else round(error, 6)}


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceFidelity:
    """One device: bytes predicted vs measured, by component (see the module docstring).

    Attributes:
        device: accelerate key.
        weights: parameters and buffers resident there.
        kv: KV cache storages at the end of the run.
        activations: predicted activations + streaming; measured peak - weights - KV cache (all
            else live at the peak: working sets, glue tensors, caller-held activations).
        peak: predicted weights + KV + activations + streaming; measured allocator peak.
    """

    device: int | str
    weights: Compared
    kv: Compared
    activations: Compared
    peak: Compared

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, **{name: getattr(self, name).to_dict()
                                          for name in ("weights", "kv", "activations", "peak")}}


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationResult:
    """A calibration: the workload that ran, per-device memory and per-phase time, the profile.

    Attributes:
        model: the plan's model name.
        dtype: the dtype it ran in.
        workload: the workload that ran (``TracedWorkload.to_dict``: decode steps as ``max_new_tokens``).
        declared_new_tokens: the plan's own ``max_new_tokens`` (more than ran when capped).
        random_weights: the checkpoint had no weights, so random ones of the right shapes ran.
        devices: per device, bytes (:class:`DeviceFidelity`).
        prefill_s, decode_step_s, per_token_s: seconds, the cost model's (presets) vs measured.
        node_times: node name -> ``(device, prefill s, decode s per step or None)`` measured.
        profile: the figures measured, ready to save (:class:`CalibrationProfile`).
        notes: what was not measured, and assumptions.
    """

    model: str
    dtype: str
    workload: Mapping[str, Any]
    declared_new_tokens: int
    random_weights: bool
    devices: tuple[DeviceFidelity, ...]
    prefill_s: Compared
    decode_step_s: Compared
    per_token_s: Compared
    node_times: Mapping[str, tuple[int | str, float, float | None]] = field(default_factory=dict)
    profile: CalibrationProfile = field(default_factory=CalibrationProfile)
    notes: tuple[str, ...] = ()

    @property
    def max_peak_error(self) -> float:
        """The largest ``|relative error|`` of predicted vs measured peak bytes over the devices (0 when none)."""
        errors = [abs(d.peak.error) for d in self.devices if d.peak.error is not None]
        return max(errors, default=0.0)

    @property
    def verdict(self) -> str:
        """One line: the largest peak error, and where the prediction is optimistic."""
        line = f"peak within {100 * self.max_peak_error:.1f}% on every device"
        under = [(d.device, -d.peak.error) for d in self.devices if d.peak.error is not None and d.peak.error < 0]
        if under:
            worst = max(under, key=lambda item: item[1])
            where = ", ".join(str(d) for d, _ in under)
            by = f"by {100 * worst[1]:.1f}%" if len(under) == 1 else f"by up to {100 * worst[1]:.1f}% on {worst[0]}"
            line += f"; measured above the prediction on {where} ({by}): a plan that fits can run out of memory"
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``max_peak_error``, ``verdict``, ``devices``, ``timing``, ``nodes``, ``profile``, ``notes``."""
        return {
            "model": self.model, "dtype": self.dtype, "workload": dict(self.workload),
            "declared_new_tokens": self.declared_new_tokens, "random_weights": self.random_weights,
            "max_peak_error": round(self.max_peak_error, 6), "verdict": self.verdict,
            "devices": [d.to_dict() for d in self.devices],
            "timing": {name: getattr(self, name).to_dict() for name in ("prefill_s", "decode_step_s", "per_token_s")},
            "nodes": [{"node": name, "device": device, "prefill_s": prefill, "decode_s": decode}
                      for name, (device, prefill, decode) in self.node_times.items()],
            "profile": self.profile.to_dict(), "notes": list(self.notes),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _pct(c: Compared) -> str:
    error = c.error
    return "-" if error is None else f"{100 * error:+.1f}%"


def _bytes(value: float | None) -> str:
    return "-" if value is None else format_bytes(int(value))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.3f} ms"


def render_calibration(result: CalibrationResult, console: Console) -> None:
    """Print the workload, a predicted / measured / error table per device, the times, the verdict."""
    w = result.workload
    console.print(f"[bold]{result.model}[/bold], {result.dtype}"
                  + (" (random weights of the checkpoint's shapes)" if result.random_weights else "")
                  + f": batch {w['batch_size']}, prompt {w['prompt_len']} + {w['max_new_tokens']} decode steps"
                  + (f" (of {result.declared_new_tokens} declared)" if result.declared_new_tokens != w["max_new_tokens"]
                     else ""))
    table = Table(title="Memory: predicted vs measured (allocator peaks)", title_justify="left")
    for column in ("device", "component", "predicted", "measured", "error"):
        table.add_column(column, justify="left" if column in ("device", "component") else "right")
    for d in result.devices:
        for name in ("weights", "kv", "activations", "peak"):
            c = getattr(d, name)
            table.add_row(str(d.device) if name == "weights" else "", {"kv": "KV cache"}.get(name, name),
                          _bytes(c.predicted), _bytes(c.measured), _pct(c), end_section=name == "peak")
    console.print(table)
    times = Table(title="Time: cost model (presets) vs measured", title_justify="left")
    for column in ("phase", "predicted", "measured", "error"):
        times.add_column(column, justify="left" if column == "phase" else "right")
    for label, name in (("prefill", "prefill_s"), ("decode step", "decode_step_s"), ("per token", "per_token_s")):
        c = getattr(result, name)
        times.add_row(label, _seconds(c.predicted), _seconds(c.measured), _pct(c))
    console.print(times)
    for entry in result.profile.entries:
        figures = ", ".join(f"{n}={getattr(entry, n):.4g}" for n in entry.measured) or "none"
        console.print(f"measured {entry.device_type} ({entry.dtype}): {figures}")
    console.print(f"[bold]{result.verdict}[/bold]")
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
