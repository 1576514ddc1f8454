"""A calibration profile: device figures measured by ``layerplan calibrate``, as a JSON file.

Keyed by device type and dtype (``profile.entry("cpu", "float32")``), because a device's effective
FLOP/s depends on the dtype it computes in. Each entry holds what was measured, and only that:

* ``flops_per_s``: effective FLOP/s, the FLOPs of the prefill forwards of every node that computed
  on the device (``torch.utils.flop_counter`` formulas, as the graph counts them) over their
  measured time: the compute side of the roofline (Williams, Waterman and Patterson 2009);
* ``mem_bytes_per_s``: effective memory bandwidth, the bytes one decode step reads on the device
  (weights + KV cache + working set of its nodes: the cost model's decode bytes, Pope et al. 2023)
  over the measured time of a decode step there: the memory side;
* ``read_bytes_per_s``: a GPU entry's host link (a timed host-to-device copy), a ``"disk"``
  entry's read speed, None when not measured;
* ``layer_time_s``: per node class, mean seconds per call in prefill and in one decode step.

Device types are what the cost model resolves a device to: ``"cpu"`` for this machine's CPU, an
accelerator preset name (``"h100-sxm"``, :func:`layerplan.planner.hardware.preset_for_device_name`)
or the driver's name in lower case where no preset matches, ``"disk"``.

Nothing here imports torch: a spec can check a profile file in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerplan.solver import InvalidSpecError

__all__ = ["PROFILE_FORMAT", "CalibrationProfile", "LayerTime", "ProfileEntry", "load_profile"]

#: The ``"format"`` field of a profile file, and the version this code writes and reads.
PROFILE_FORMAT, PROFILE_VERSION = "layerplan-calibration", 1

#: Figures an entry may hold, each in its unit (FLOP/s, bytes/s, bytes/s).
FIGURES = ("flops_per_s", "mem_bytes_per_s", "read_bytes_per_s")


def _rate(value: object, *, what: str) -> float | None:
    """A measured rate: None, or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InvalidSpecError(f"{what}={value!r}; expected a finite number > 0 (or null when not measured)")
    return float(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerTime:
    """Mean measured seconds per call of one node class: ``prefill_s`` (one prefill forward) and
    ``decode_s`` (one decode step; None for an encoder, or without decode steps)."""

    prefill_s: float | None = None
    decode_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("prefill_s", "decode_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not (math.isfinite(value) and value >= 0)):
                raise InvalidSpecError(f"layer time {name}={value!r}; expected seconds >= 0 or null")


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileEntry:
    """The figures measured for one device type at one dtype (see the module docstring).

    Attributes:
        device_type: ``"cpu"``, an accelerator preset name, a driver name, or ``"disk"``.
        dtype: the compute dtype name (``"bfloat16"``).
        flops_per_s: effective FLOP/s, or None when not measured.
        mem_bytes_per_s: effective memory bandwidth in bytes/s, or None.
        read_bytes_per_s: host link (GPU entry) or disk read (``"disk"`` entry) in bytes/s, or None.
        layer_time_s: node class -> :class:`LayerTime`.
        measured_on: what the figures were measured with (model, workload, versions): for people.

    Raises:
        InvalidSpecError: an empty device type or dtype, a rate that is not a finite number > 0.
    """

    device_type: str
    dtype: str
    flops_per_s: float | None = None
    mem_bytes_per_s: float | None = None
    read_bytes_per_s: float | None = None
    layer_time_s: Mapping[str, LayerTime] = field(default_factory=dict)
    measured_on: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("device_type", "dtype"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise InvalidSpecError(f"calibration entry {name}={getattr(self, name)!r}; expected a name")
        for name in FIGURES:
            object.__setattr__(self, name, _rate(getattr(self, name), what=f"{self.device_type}/{self.dtype} {name}"))
        object.__setattr__(self, "layer_time_s", dict(self.layer_time_s))
        object.__setattr__(self, "measured_on", dict(self.measured_on))

    @property
    def measured(self) -> tuple[str, ...]:
        """The names of the figures this entry holds (of :data:`FIGURES`)."""
        return tuple(name for name in FIGURES if getattr(self, name) is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in FIGURES},
            "layer_time_s": {name: {"prefill_s": t.prefill_s, "decode_s": t.decode_s}
                             for name, t in self.layer_time_s.items()},
            "measured_on": dict(self.measured_on),
        }

    @classmethod
    def from_dict(cls, device_type: str, dtype: str, data: Mapping[str, Any]) -> ProfileEntry:
        """Inverse of :meth:`to_dict`. Raises InvalidSpecError on an unknown key or a bad value."""
        if not isinstance(data, Mapping):
            raise InvalidSpecError(f"calibration entry {device_type}/{dtype} is a {type(data).__name__}, not an object")
        known = (*FIGURES, "layer_time_s", "measured_on")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidSpecError(f"calibration entry {device_type}/{dtype} has unknown key {unknown[0]!r}; "
                                   f"valid keys: {', '.join(known)}")
        layers = data.get("layer_time_s") or {}
        if not isinstance(layers, Mapping) or not all(isinstance(v, Mapping) for v in layers.values()):
            raise InvalidSpecError(f"calibration entry {device_type}/{dtype} layer_time_s is not class -> "
                                   "{prefill_s, decode_s}")
        return cls(device_type=device_type, dtype=dtype, **{n: data.get(n) for n in FIGURES},
                   layer_time_s={k: LayerTime(prefill_s=v.get("prefill_s"), decode_s=v.get("decode_s"))
                                 for k, v in layers.items()},
                   measured_on=data.get("measured_on") or {})


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationProfile:
    """Measured figures, one :class:`ProfileEntry` per (device type, dtype).

    Raises:
        InvalidSpecError: two entries for the same device type and dtype.
    """

    entries: tuple[ProfileEntry, ...] = ()

    def __post_init__(self) -> None:
        entries = tuple(self.entries)
        keys = [(e.device_type, e.dtype) for e in entries]
        if len(set(keys)) != len(keys):
            raise InvalidSpecError(f"calibration entries repeat a (device type, dtype) pair: {keys!r}")
        object.__setattr__(self, "entries", entries)

    def entry(self, device_type: str, dtype: str) -> ProfileEntry | None:
        """The entry measured for ``device_type`` at ``dtype``, or None."""
        return next((e for e in self.entries if (e.device_type, e.dtype) == (device_type, dtype)), None)

    def merged(self, other: CalibrationProfile) -> CalibrationProfile:
        """This profile with ``other``'s entries added; where both have a pair, ``other``'s wins."""
        theirs = {(e.device_type, e.dtype) for e in other.entries}
        return CalibrationProfile(entries=(*(e for e in self.entries if (e.device_type, e.dtype) not in theirs),
                                           *other.entries))

    def to_dict(self) -> dict[str, Any]:
        """``{"format", "version", "devices": {device type: {dtype: entry}}}``, JSON-ready."""
        devices: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            devices.setdefault(e.device_type, {})[e.dtype] = e.to_dict()
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "devices": devices}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationProfile:
        """Inverse of :meth:`to_dict`.

        Raises:
            InvalidSpecError: not a profile, another version, or a bad entry.
        """
        if not isinstance(data, Mapping) or data.get("format") != PROFILE_FORMAT:
            raise InvalidSpecError(f"not a layerplan calibration profile (no \"format\": \"{PROFILE_FORMAT}\"); "
                                   "write one with `layerplan calibrate ... --calibration-out FILE`")
        if data.get("version") != PROFILE_VERSION:
            raise InvalidSpecError(f"calibration profile version {data.get('version')!r} but this layerplan reads "
                                   f"{PROFILE_VERSION}; calibrate again")
        devices = data.get("devices")
        if not isinstance(devices, Mapping) or not all(isinstance(v, Mapping) for v in devices.values()):
            raise InvalidSpecError("calibration profile \"devices\" is not device type -> dtype -> figures")
        return cls(entries=tuple(ProfileEntry.from_dict(kind, dtype, figures)
                                 for kind, by_dtype in devices.items() for dtype, figures in by_dtype.items()))

    def save(self, path: str | os.PathLike) -> None:
        """Write the profile as JSON to ``path`` (replaced if it exists).

        Raises:
            OSError: the file cannot be written.
        """
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationProfile:
        """Read a profile written by :meth:`save`.

        Raises:
            InvalidSpecError: the file is missing, not JSON, or not a profile (one line naming the file).
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidSpecError(f"cannot read calibration profile {os.fspath(path)!r}: {exc.strerror or exc}; "
                                   "give the file `layerplan calibrate --calibration-out` wrote") from None
        except json.JSONDecodeError as exc:
            raise InvalidSpecError(f"calibration profile {os.fspath(path)!r} is not JSON: {exc.msg} at line "
                                   f"{exc.lineno}") from None
        try:
            return cls.from_dict(data)
        except InvalidSpecError as exc:
            raise InvalidSpecError(f"{os.fspath(path)}: {exc}") from None


def load_profile(profile: CalibrationProfile | str | os.PathLike) -> CalibrationProfile:
    """``profile`` itself, or the profile in the file it names (:meth:`CalibrationProfile.load`)."""
    return profile if isinstance(profile, CalibrationProfile) else CalibrationProfile.load(profile)
