"""Parse what the user writes about hardware: bandwidths, FLOP/s, device types and links."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence


from layerplan.planner.hardware.presets import (
    DISKS,
    FLOPS_DTYPES,
    HOST_LINKS,
    BandwidthPreset,
    _compact,
    lookup_accelerator,
)
from layerplan.planner.spec.sizes import dtype_name, parse_device, parse_size
from layerplan.solver.errors import InvalidSpecError

__all__ = ["OVERRIDE_FIELDS", "parse_bandwidth", "parse_device_types", "parse_flops", "parse_links", "parse_override"]

# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------

_RATE = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*"
    r"(?P<prefix>[kKmMgGtTpP]?)(?P<binary>i?)(?P<unit>[bB])\s*(?i:/\s*s(?:ec)?|ps)$"
)
_DECIMAL = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}
_BINARY = {"k": 2.0**10, "m": 2.0**20, "g": 2.0**30, "t": 2.0**40, "p": 2.0**50}


def _bandwidth_preset(text: str) -> BandwidthPreset | None:
    key = _compact(text)
    for preset in (*HOST_LINKS.values(), *DISKS.values()):
        if _compact(preset.name) == key:
            return preset
    return None


def _positive(value: float, text: object, what: str, example: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise InvalidSpecError(f"{what}={text!r} must be a finite number > 0, e.g. {example!r}")
    return float(value)


def parse_bandwidth(value: float | str, *, what: str = "bandwidth") -> float:
    """Bytes per second from a number (bytes/s), a rate string or a preset name.

    Accepted strings: ``"900GB/s"`` (9e11), ``"64GiB/s"`` (64·2³⁰), ``"3.35TB/s"`` (3.35e12),
    ``"25 GB/s"``, ``"25GBps"``, bits with a capital prefix and lower-case b (``"100Gb/s"`` =
    12.5e9), a plain number string (``"9e11"``), a host link (``"pcie4"``) or a disk
    (``"nvme-gen4"``) from :data:`HOST_LINKS` / :data:`DISKS`. All-lower-case bit/byte spellings
    such as ``"gb/s"`` are refused as ambiguous.

    Raises:
        InvalidSpecError: not a rate, not > 0, or ambiguous; one line naming the value.
    """
    example = "900GB/s"
    if isinstance(value, bool):
        raise InvalidSpecError(f"{what}={value!r} is not a bandwidth; expected bytes/s or e.g. {example!r}")
    if isinstance(value, (int, float)):
        return _positive(float(value), value, what, example)
    if not isinstance(value, str):
        raise InvalidSpecError(f"{what}={value!r} is not a bandwidth; expected bytes/s or e.g. {example!r}")
    text = value.strip()
    preset = _bandwidth_preset(text)
    if preset is not None:
        return preset.bytes_per_s
    try:
        return _positive(float(text), value, what, example)
    except ValueError:
        pass
    match = _RATE.match(text)
    if match is None:
        names = ", ".join([*HOST_LINKS, *DISKS])
        raise InvalidSpecError(
            f"{what}={value!r} is not a bandwidth; expected bytes per second such as '900GB/s', "
            f"'64GiB/s', '3.35TB/s', or one of {names}"
        )
    prefix, binary, unit = match["prefix"], match["binary"], match["unit"]
    if unit == "b" and prefix in ("m", "g", "t", "p"):
        raise InvalidSpecError(
            f"{what}={value!r} is ambiguous; write {prefix.upper()}B/s for bytes or {prefix.upper()}b/s for bits"
        )
    if binary and not prefix:
        raise InvalidSpecError(f"{what}={value!r} is not a bandwidth; a binary unit needs a prefix, e.g. '64GiB/s'")
    scale = _BINARY[prefix.lower()] if binary else _DECIMAL[prefix.lower()]
    rate = float(match["number"]) * scale / (8 if unit == "b" else 1)
    return _positive(rate, value, what, example)


_FLOPS = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*(?P<prefix>[kKMGTP]?)\s*(?:flop|op)(?:s|/s)$",
    re.IGNORECASE,
)


def parse_flops(value: float | str, *, what: str = "flops_per_s") -> float:
    """FLOP per second from a number or a string such as ``"989TFLOPS"`` (9.89e14),
    ``"1.979 PFLOPS"``, ``"500GFLOP/s"`` or ``"624TOPS"`` (integer ops, for int8).

    Raises:
        InvalidSpecError: not a rate or not > 0.
    """
    example = "989TFLOPS"
    if isinstance(value, bool):
        raise InvalidSpecError(f"{what}={value!r} is not a FLOP rate; expected e.g. {example!r}")
    if isinstance(value, (int, float)):
        return _positive(float(value), value, what, example)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _positive(float(text), value, what, example)
        except ValueError:
            pass
        match = _FLOPS.match(text)
        if match is not None:
            rate = float(match["number"]) * _DECIMAL[match["prefix"].lower()]
            return _positive(rate, value, what, example)
    raise InvalidSpecError(
        f"{what}={value!r} is not a FLOP rate; expected FLOP per second such as '989TFLOPS' or '67e12'"
    )


def _split_assignment(item: str, *, what: str, example: str) -> tuple[str, str]:
    if not isinstance(item, str) or item.count("=") != 1:
        raise InvalidSpecError(f"{what} {item!r} is not KEY=VALUE; expected e.g. {example!r}")
    left, right = (part.strip() for part in item.split("="))
    if not left or not right:
        raise InvalidSpecError(f"{what} {item!r} is not KEY=VALUE; expected e.g. {example!r}")
    return left, right


def _assignments(items: Sequence[str] | Mapping, *, what: str, example: str) -> list[tuple[object, object]]:
    """``(key, value)`` pairs from ``["K=V", ...]`` (the CLI's form) or a mapping (a spec's or Python's)."""
    if isinstance(items, Mapping):
        return list(items.items())
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise InvalidSpecError(f"{what}s={items!r}; expected a mapping or a list such as [{example!r}]")
    return [_split_assignment(item, what=what, example=example) for item in items]


def parse_device_types(items: Sequence[str] | Mapping[object, str]) -> dict[int | str, str]:
    """``["0=h100-sxm", "1,2=a100-80gb"]`` or ``{0: "h100-sxm", "1,2": "a100-80gb"}`` ->
    ``{0: "h100-sxm", 1: "a100-80gb", 2: "a100-80gb"}``.

    Names are checked and returned in canonical form (see :func:`lookup_accelerator`); a key may
    list several accelerators separated by commas.

    Raises:
        InvalidSpecError: malformed item, unknown device or type, a type for cpu/disk, a device
            given two different types.
    """
    out: dict[int | str, str] = {}
    for keys, name in _assignments(items, what="device type", example="0=h100-sxm"):
        if not isinstance(name, str):
            raise InvalidSpecError(f"device type {name!r} for {keys!r} is not a preset name such as 'a100-80gb'")
        parts = keys.split(",") if isinstance(keys, str) else [keys]
        devices = [parse_device(p.strip() if isinstance(p, str) else p) for p in parts]
        labels = ", ".join(f"GPU {d}" if isinstance(d, int) else repr(d) for d in devices)
        preset = lookup_accelerator(name, what=f"device type for {labels}").name
        for key in devices:
            if key in ("cpu", "disk"):
                raise InvalidSpecError(
                    f"device type {name!r} given for {key!r}; device types apply to accelerators only"
                )
            if out.get(key, preset) != preset:
                raise InvalidSpecError(f"device {key!r} has two device types, {out[key]!r} and {preset!r}; give one")
            out[key] = preset
    return out


def parse_links(
    items: Sequence[str] | Mapping[object, float | str],
) -> dict[tuple[int | str, int | str], float | str]:
    """``["0-1=nvlink", "0-2=25GB/s", "1-cpu=pcie4"]`` or ``{"0-1": "nvlink", (0, 2): "25GB/s"}`` ->
    ``{(0, 1): "nvlink", (0, 2): 25e9, (1, "cpu"): 31.5e9}``.

    A value is ``"nvlink"`` or ``"pcie"`` (resolved by :func:`build_hardware` from the two devices'
    presets) or a bandwidth (:func:`parse_bandwidth`).

    Raises:
        InvalidSpecError: malformed item, unknown device, a device linked to itself, a pair given twice.
    """
    out: dict[tuple[int | str, int | str], float | str] = {}
    for pair, rate in _assignments(items, what="link", example="0-1=nvlink"):
        ends = pair.split("-") if isinstance(pair, str) else list(pair) if isinstance(pair, tuple) else []
        if len(ends) != 2:
            raise InvalidSpecError(f"link {pair!r} does not name two devices; expected e.g. '0-1=nvlink'")
        a, b = (parse_device(end.strip() if isinstance(end, str) else end) for end in ends)
        if a == b:
            raise InvalidSpecError(f"link {pair!r} joins device {a!r} to itself; name two different devices")
        if (a, b) in out or (b, a) in out:
            raise InvalidSpecError(f"link {a}-{b} is given twice; give each pair once")
        kind = rate.strip().lower() if isinstance(rate, str) else None
        out[(a, b)] = kind if kind in ("nvlink", "pcie") else parse_bandwidth(rate, what=f"link {pair}")  # type: ignore[arg-type]
    return out


def _dtype_name(dtype: object) -> str:
    name = dtype_name(dtype)
    if name not in FLOPS_DTYPES:
        raise InvalidSpecError(f"dtype={dtype!r} has no FLOP/s figures; expected one of {', '.join(FLOPS_DTYPES)}")
    return name


OVERRIDE_FIELDS = ("flops_per_s", "mem_bytes_per_s", "memory_bytes", "read_bytes_per_s")


def parse_override(key: int | str, name: str, value: float | str) -> float | int:
    """One hardware override (``flops_per_s``, ``mem_bytes_per_s``, ``memory_bytes``, ``read_bytes_per_s``) as a number.

    Raises:
        InvalidSpecError: an unknown field or a bad value.
    """
    what = f"overrides[{key!r}][{name!r}]"
    if name == "flops_per_s":
        return parse_flops(value, what=what)
    if name == "memory_bytes":
        size = parse_size(value if not isinstance(value, float) else int(value), what=what)
        if size <= 0:
            raise InvalidSpecError(f"{what}={value!r} must be > 0")
        return size
    if name in ("mem_bytes_per_s", "read_bytes_per_s"):
        return parse_bandwidth(value, what=what)
    raise InvalidSpecError(
        f"overrides[{key!r}] has unknown field {name!r}; expected one of {', '.join(OVERRIDE_FIELDS)}"
    )
