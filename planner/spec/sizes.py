"""Parse and validate what the user declares: sizes, devices with caps, dtype, pins.

Every size is an ``int`` of bytes once it leaves this module. Parsing follows accelerate's
``convert_file_size_to_int`` ("24GiB" = 24·2³⁰, "24GB" = 24·10⁹, ints are bytes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from accelerate.utils import convert_file_size_to_int

from layerplan.solver import Device, DeviceKind, InvalidSpecError

__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "parse_size",
    "parse_device",
    "parse_max_memory",
    "parse_reserve",
    "parse_dtype",
    "DeviceCap",
    "build_devices",
]

#: Bytes kept free on each accelerator unless the user says otherwise: the CUDA context (about
#: 300-600 MiB with PyTorch's kernels loaded, more with cuBLAS/cuDNN workspaces) plus allocator
#: fragmentation. accelerate's ``infer_auto_device_map`` keeps nothing back and its docs advise
#: lowering the first GPU's ``max_memory`` by hand instead.
DEFAULT_RESERVE_BYTES = 2**30

_ACCELERATOR_NAME = re.compile(r"^(mps|(xpu|npu|mlu|musa|hpu|cuda):\d+)$")


_TERA = re.compile(r"^(\d+(?:\.\d+)?)\s*(TIB|TB)$", re.IGNORECASE)


def _tera(text: str) -> int | None:
    """``"2TiB"`` / ``"4TB"``: accelerate's ``convert_file_size_to_int`` stops at GiB/GB, and disk or
    host caps are often given in tera-bytes; same rounding rule as accelerate (``int(float * unit)``)."""
    match = _TERA.match(text)
    if match is None:
        return None
    unit = 2**40 if match.group(2).upper() == "TIB" else 10**12
    return int(float(match.group(1)) * unit)


def parse_size(value: int | str, *, what: str = "size") -> int:
    """Bytes from an int or a string such as ``"24GiB"``, ``"24GB"``, ``"512MB"``, ``"1000"``.

    Raises:
        InvalidSpecError: negative, malformed, or not a number of bytes.
    """
    if isinstance(value, bool):
        raise InvalidSpecError(f"{what}={value!r} is not a size; expected bytes or e.g. '24GiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        size = int(value.strip())
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise InvalidSpecError(f"{what}={value!r} is negative; expected a size >= 0 such as '24GiB'")
        try:
            size = _tera(text)
            if size is None:
                size = convert_file_size_to_int(text)
        except ValueError:
            raise InvalidSpecError(
                f"{what}={value!r} is not a size; expected bytes or a number with a unit "
                "(KB, MB, GB, TB, KiB, MiB, GiB, TiB, e.g. '24GiB')"
            ) from None
    else:
        raise InvalidSpecError(f"{what}={value!r} is not a size; expected bytes or e.g. '24GiB'")
    if size < 0:
        raise InvalidSpecError(f"{what}={value!r} is negative; expected a size >= 0 such as '24GiB'")
    return size


def parse_device(key: int | str) -> int | str:
    """Normalise a device key as accelerate names it: GPU ``int``, ``"cpu"``, ``"disk"``, ``"mps"``, ``"xpu:0"``.

    Raises:
        InvalidSpecError: anything else.
    """
    if isinstance(key, bool):
        raise InvalidSpecError(f"device {key!r} is not a device")
    if isinstance(key, int):
        if key < 0:
            raise InvalidSpecError(f"device {key!r} is negative; GPU ids are 0, 1, ...")
        return key
    if isinstance(key, str):
        text = key.strip().lower()
        if text.isdigit():
            return int(text)
        if text.startswith("cuda:") and text[5:].isdigit():
            return int(text[5:])
        if text in ("cpu", "disk") or _ACCELERATOR_NAME.match(text):
            return text
    raise InvalidSpecError(
        f"unknown device {key!r}; expected a GPU id (0, 1, ...), 'cpu', 'disk', 'mps' or 'xpu:N'"
    )


def parse_max_memory(max_memory: Mapping[int | str, int | str]) -> dict[int | str, int]:
    """``max_memory`` with normalised keys and integer byte values, in accelerate's device order.

    Accelerators come first (GPU ids ascending, then named accelerators), then ``"cpu"``, then
    ``"disk"`` -- the order accelerate's ``infer_auto_device_map`` fills them in.

    Raises:
        InvalidSpecError: empty, an unknown device key, a duplicate device or a bad size.
    """
    if not max_memory:
        raise InvalidSpecError("max_memory is empty; declare at least one device, e.g. {0: '40GiB', 'cpu': '200GiB'}")
    parsed: dict[int | str, int] = {}
    for key, value in max_memory.items():
        device = parse_device(key)
        if device in parsed:
            raise InvalidSpecError(f"device {key!r} appears twice in max_memory; give each device once")
        parsed[device] = parse_size(value, what=f"max_memory[{key!r}]")

    def rank(device: int | str) -> tuple[int, int, str]:
        if isinstance(device, int):
            return (0, device, "")
        return ({"cpu": 2, "disk": 3}.get(device, 1), 0, device)

    return {d: parsed[d] for d in sorted(parsed, key=rank)}


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn, "fp8": torch.float8_e4m3fn,
    "int8": torch.int8,
}


def parse_dtype(value: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a name (``"bfloat16"``, ``"bf16"``, ``"fp16"``, ...) or a dtype.

    Raises:
        InvalidSpecError: unknown name.
    """
    if isinstance(value, torch.dtype):
        return value
    key = str(value).strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise InvalidSpecError(f"unknown dtype {value!r}; expected one of {', '.join(sorted(set(_DTYPES)))}")
    return _DTYPES[key]


def parse_reserve(
    reserve: Mapping[int | str, int | str] | int | str | None, devices: list[int | str]
) -> dict[int | str, int]:
    """Reserve bytes per declared device.

    Args:
        reserve: None (:data:`DEFAULT_RESERVE_BYTES` on every accelerator, 0 on cpu/disk); one size
            for every accelerator; or device -> size, with unlisted accelerators at the default.
        devices: the declared device keys (from :func:`parse_max_memory`).

    Raises:
        InvalidSpecError: a bad size, or a device not in ``max_memory``.
    """
    default = {d: 0 if d in ("cpu", "disk") else DEFAULT_RESERVE_BYTES for d in devices}
    if reserve is None:
        return default
    if not isinstance(reserve, Mapping):
        size = parse_size(reserve, what="reserve")
        return {d: 0 if d in ("cpu", "disk") else size for d in devices}
    out = dict(default)
    for key, value in reserve.items():
        device = parse_device(key)
        if device not in out:
            raise InvalidSpecError(
                f"reserve[{key!r}] names a device not in max_memory ({', '.join(map(str, devices))}); "
                "reserve room only on declared devices"
            )
        out[device] = parse_size(value, what=f"reserve[{key!r}]")
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceCap:
    """One resolved device: accelerate key, cap and reserve in bytes."""

    key: int | str
    cap_bytes: int
    reserve_bytes: int = 0

    def to_solver(self) -> Device:
        kind = {"cpu": DeviceKind.CPU, "disk": DeviceKind.DISK}.get(self.key, DeviceKind.ACCELERATOR)  # type: ignore[arg-type]
        return Device(name=str(self.key), kind=kind, cap_bytes=self.cap_bytes, reserve_bytes=self.reserve_bytes)


def build_devices(
    max_memory: Mapping[int | str, int | str],
    reserve: Mapping[int | str, int | str] | int | str | None = 0,
) -> tuple[DeviceCap, ...]:
    """Declared devices in accelerate's order (see :func:`parse_max_memory`), with reserves
    (see :func:`parse_reserve`; 0 keeps nothing back)."""
    caps = parse_max_memory(max_memory)
    reserves = parse_reserve(reserve, list(caps))
    return tuple(DeviceCap(key=k, cap_bytes=v, reserve_bytes=reserves[k]) for k, v in caps.items())
