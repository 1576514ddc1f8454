"""Feed a calibration profile to the cost model through ``[devices] overrides``, and nothing else.

A device's measured figures replace its preset's (:func:`layerplan.planner.hardware.build_hardware`
``overrides``): ``flops_per_s`` and ``mem_bytes_per_s`` of the device, and the host link that
carries offloaded weights (``overrides["cpu"]["read_bytes_per_s"]``, build_hardware's place for it)
from the execution GPU's measured host link; a ``"disk"`` entry's read speed for ``"disk"``.
Overrides the user wrote win over the profile's. Caps, reserves and the graph are untouched, so
the plan's memory and, for the same figures' ordering, its device_map stay what they were; only
the times change.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from layerplan.planner.calibrate.profile import CalibrationProfile, load_profile
from layerplan.planner.hardware.presets import ACCELERATORS, preset_for_device_name
from layerplan.planner.hardware.resolve import HardwareSpec, build_hardware
from layerplan.planner.spec import DevicesSpec, PlanSpec
from layerplan.solver import InvalidSpecError

__all__ = ["calibrated_hardware", "device_type", "profile_overrides", "with_calibration"]


def device_type(
    key: int | str, *, types: Mapping[int | str, str] | None = None, reported_names: Mapping[int, str] | None = None
) -> str:
    """The profile key of device ``key``: ``"cpu"`` / ``"disk"`` / another non-GPU key as is; a GPU's
    declared preset (``types``), else the preset its driver name matches, else that name in lower
    case, else ``"unknown"``."""
    types, reported_names = types or {}, reported_names or {}
    if not isinstance(key, int):
        return str(key)
    if key in types:
        return ACCELERATORS[types[key]].name if types[key] in ACCELERATORS else str(types[key])
    name = reported_names.get(key)
    if name is None:
        return "unknown"
    return preset_for_device_name(name) or name.strip().lower()


def profile_overrides(
    profile: CalibrationProfile,
    keys: Sequence[int | str],
    *,
    dtype: str,
    types: Mapping[int | str, str] | None = None,
    reported_names: Mapping[int, str] | None = None,
) -> tuple[dict[int | str, dict[str, float]], tuple[str, ...]]:
    """The overrides ``profile`` gives devices ``keys`` at ``dtype``, and one note per device saying
    which figures are measured (a device without an entry keeps its preset and is not named).

    Returns:
        ``({device: {field: value}}, notes)``; fields of :data:`layerplan.planner.hardware.parsing.OVERRIDE_FIELDS`.
    """
    def kind(key: int | str) -> str:
        return device_type(key, types=types, reported_names=reported_names)

    overrides: dict[int | str, dict[str, float]] = {}
    for key in keys:
        entry = profile.entry(kind(key), dtype)
        if entry is None:
            continue
        fields = {n: getattr(entry, n) for n in ("flops_per_s", "mem_bytes_per_s") if getattr(entry, n) is not None}
        if key == "disk" and entry.read_bytes_per_s is not None:
            fields["read_bytes_per_s"] = entry.read_bytes_per_s
        if fields:
            overrides[key] = fields
    gpus = [k for k in keys if isinstance(k, int)]
    if gpus and "cpu" in keys:  # offloaded weights cross the execution GPU's host link
        entry = profile.entry(kind(gpus[0]), dtype)
        if entry is not None and entry.read_bytes_per_s is not None:
            overrides.setdefault("cpu", {})["read_bytes_per_s"] = entry.read_bytes_per_s
    notes = tuple(f"measured figures for device {key!r} ({kind(key)}, {dtype}) from the calibration profile: "
                  f"{', '.join(sorted(fields))}"
                  for key, fields in overrides.items())
    return overrides, notes


def _with_user_overrides(found: Mapping[int | str, Mapping[str, float]], devices: DevicesSpec) -> dict:
    """``found`` with every field the user declared in ``devices.overrides`` put back on top."""
    merged = {key: dict(fields) for key, fields in found.items()}
    for key, fields in devices.overrides.items():
        merged.setdefault(key, {}).update(fields)
    return merged


def calibrated_hardware(
    keys: Sequence[int | str],
    *,
    dtype: str,
    devices: DevicesSpec,
    profile: CalibrationProfile | str | os.PathLike | None,
    reported_names: Mapping[int, str] | None = None,
) -> HardwareSpec:
    """:func:`build_hardware` of ``devices`` with ``profile``'s figures as overrides (the user's own
    overrides win) and notes naming the measured figures; ``build_hardware`` unchanged without a profile.

    Raises:
        InvalidSpecError: see :func:`build_hardware`; an unreadable profile file.
    """
    kwargs: dict[str, Any] = dict(devices.hardware)
    notes: tuple[str, ...] = ()
    if profile is not None:
        found, notes = profile_overrides(load_profile(profile), keys, dtype=dtype, types=devices.types,
                                         reported_names=reported_names or {})
        kwargs["overrides"] = _with_user_overrides(found, devices)
    hardware = build_hardware(keys, dtype=dtype, reported_names=reported_names, **kwargs)
    return dataclasses.replace(hardware, notes=(*hardware.notes, *notes))


def with_calibration(
    spec: PlanSpec,
    profile: CalibrationProfile | str | os.PathLike,
    *,
    dtype: str,
    keys: Sequence[int | str] | None = None,
    reported_names: Mapping[int, str] | None = None,
) -> PlanSpec:
    """``spec`` with ``profile``'s figures for its devices at ``dtype`` written into ``[devices]
    overrides`` (the spec's own overrides win): plan it as any spec, and the cost model uses the
    measured figures.

    Args:
        spec: a spec whose ``[devices] max_memory`` names the devices (or pass ``keys``).
        profile: a :class:`CalibrationProfile` or its JSON file.
        dtype: the dtype the plan computes in (the traced graph's ``dtype``), e.g. ``"float32"``.
        keys: the devices, when ``max_memory`` is detected rather than declared.
        reported_names: GPU index -> driver name, for GPUs without a declared type.

    Raises:
        InvalidSpecError: no devices known, an unreadable profile.
    """
    if keys is None:
        if spec.devices.max_memory is None:
            raise InvalidSpecError("with_calibration needs the devices: declare max_memory, or pass keys=[...]")
        keys = list(spec.devices.max_memory)
    found, _ = profile_overrides(load_profile(profile), keys, dtype=dtype, types=spec.devices.types,
                                 reported_names=reported_names or {})
    devices = dataclasses.replace(spec.devices, overrides=_with_user_overrides(found, spec.devices))
    return spec.replace(devices=devices)
