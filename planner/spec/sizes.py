"""Parse and validate what the user declares: sizes, devices with caps, dtype names.

Every size is an ``int`` of bytes once it leaves this module. Parsing follows accelerate's
``convert_file_size_to_int`` ("24GiB" = 24·2³⁰, "24GB" = 24·10⁹, "24Gb" = bits, ints are bytes),
extended to TB/TiB. This module imports neither torch nor accelerate, so that a spec is validated
in milliseconds, before the ~2 s import of torch (``tests/test_spec_sizes.py`` checks it against
accelerate's own function).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from typing import TYPE_CHECKING

from layerplan.solver import Device, DeviceKind, InvalidSpecError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "MAX_SIZE_BYTES",
    "parse_size",
    "parse_device",
    "parse_max_memory",
    "parse_reserve",
    "parse_dtype",
    "dtype_name",
    "DTYPE_NAMES",
    "DeviceCap",
    "build_devices",
]

#: Bytes kept free on each accelerator unless the user says otherwise: the CUDA context (about
#: 300-600 MiB with PyTorch's kernels loaded, more with cuBLAS/cuDNN workspaces) plus allocator
#: fragmentation. accelerate's ``infer_auto_device_map`` keeps nothing back and its docs advise
#: lowering the first GPU's ``max_memory`` by hand instead.
DEFAULT_RESERVE_BYTES = 2**30

#: The largest size accepted anywhere (8 PiB): CP-SAT's constraints are int64 sums of sizes over
#: all nodes and devices, so sizes are bounded well below 2**63.
MAX_SIZE_BYTES = 2**53

def _is_integer(value: object) -> bool:
    """An int, or an integer scalar from numpy (``np.int64``) or similar, but never a bool."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    if isinstance(value, int):
        return True
    return hasattr(value, "__index__") and not isinstance(value, str)


def _did_you_mean(value: str, choices) -> str:  # noqa: ANN001
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (difflib), or ``""``."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_ACCELERATOR_NAME = re.compile(r"^(mps|(xpu|npu|mlu|musa|hpu|cuda):\d+)$")


_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[KMGT]I?B)$", re.IGNORECASE)
_UNIT = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _convert_file_size_to_int(text: str) -> int:
    """accelerate's ``convert_file_size_to_int`` for a string, extended to TB/TiB (disk and host
    caps are often given in tera-bytes). Same rounding (``int(float(number) * unit)``) and the
    same bit rule ("5Gb", with a lower-case ``b``, is 5·10⁹ bits = 625·10⁶ bytes). Written here
    because importing accelerate imports torch (about 2 s), and a spec is validated first.

    Raises:
        ValueError: not a number followed by KB/MB/GB/TB/KiB/MiB/GiB/TiB.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(text)
    unit = match.group("unit")
    prefix = unit[0].upper()
    if unit.upper().endswith("IB"):
        return int(float(match.group("number")) * (2 ** (10 * ("KMGT".index(prefix) + 1))))
    size = int(float(match.group("number")) * _UNIT[prefix])
    return size // 8 if unit.endswith("b") else size


def parse_size(value: int | str, *, what: str = "size") -> int:
    """Bytes from an int (numpy ints too) or a string such as ``"24GiB"``, ``"24GB"``, ``"512MB"``, ``"1000"``.

    Raises:
        InvalidSpecError: negative, malformed, or not a number of bytes.
    """
    if isinstance(value, bool):
        raise InvalidSpecError(f"{what}={value!r} is not a size; expected bytes or e.g. '24GiB'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if _is_integer(value):
        size = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        size = int(value.strip())
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise InvalidSpecError(f"{what}={value!r} is negative; expected a size >= 0 such as '24GiB'")
        try:
            size = _convert_file_size_to_int(text)
        except ValueError:
            raise InvalidSpecError(
                f"{what}={value!r} is not a size; expected bytes or a number with a unit "
                "(KB, MB, GB, TB, KiB, MiB, GiB, TiB, e.g. '24GiB')"
            ) from None
    else:
        raise InvalidSpecError(f"{what}={value!r} is not a size; expected bytes or e.g. '24GiB'")
    if size < 0:
        raise InvalidSpecError(f"{what}={value!r} is negative; expected a size >= 0 such as '24GiB'")
    if size > MAX_SIZE_BYTES:
        raise InvalidSpecError(
            f"{what}={value!r} is {size:.3g} bytes, more than the {MAX_SIZE_BYTES // 2**50} PiB layerplan accepts "
            "(the solver's 64-bit integer sums must not overflow); give the device's real size"
        )
    return size


def parse_device(key: object) -> int | str:
    """Normalise a device key as accelerate names it: GPU ``int``, ``"cpu"``, ``"disk"``, ``"mps"``, ``"xpu:0"``.

    Also accepted: numpy integers, ``"cuda:1"`` and ``torch.device`` objects (``torch.device("cuda", 1)``
    is GPU 1, ``torch.device("cpu")`` is ``"cpu"``).

    Raises:
        InvalidSpecError: anything else.
    """
    if isinstance(key, bool) or type(key).__name__ == "bool_":
        raise InvalidSpecError(f"device {key!r} is not a device")
    if type(key).__name__ == "device" and hasattr(key, "type"):  # a torch.device, without importing torch
        key = str(key) if key.index is not None or key.type not in ("cuda",) else "cuda:0"  # type: ignore[attr-defined]
    if _is_integer(key):
        key = int(key)  # type: ignore[call-overload]
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
    if not isinstance(max_memory, Mapping):
        raise InvalidSpecError(
            f"max_memory={max_memory!r} is a {type(max_memory).__name__}; expected a mapping of device -> size, "
            "e.g. {0: '40GiB', 'cpu': '200GiB'} (CLI: --max-memory 0=40GiB cpu=200GiB)"
        )
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


#: Accepted spellings -> the canonical dtype name (``str(torch.dtype)`` without ``torch.``).
DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float8_e4m3fn": "float8_e4m3fn", "fp8": "float8_e4m3fn",
    "int8": "int8",
}


def dtype_name(value: object, *, what: str = "dtype") -> str:
    """The canonical name (``"bfloat16"``) of a dtype given by name (``"bf16"``, ``"torch.float16"``)
    or as a ``torch.dtype``; torch is not imported.

    Raises:
        InvalidSpecError: unknown name.
    """
    key = str(value).strip().lower().removeprefix("torch.")
    if not isinstance(value, str) and type(value).__name__ != "dtype" or key not in DTYPE_NAMES:
        where = "" if what == "dtype" else f" ({what})"
        canonical = sorted(set(DTYPE_NAMES.values()))
        aliases = sorted(set(DTYPE_NAMES) - set(canonical))
        raise InvalidSpecError(
            f"unknown dtype {value!r}{where}; expected one of {', '.join(canonical)} (or {', '.join(aliases)})"
            f"{_did_you_mean(key, DTYPE_NAMES)}"
        )
    return DTYPE_NAMES[key]


def parse_dtype(value: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a name (``"bfloat16"``, ``"bf16"``, ``"fp16"``, ...) or a dtype.

    Raises:
        InvalidSpecError: unknown name.
    """
    import torch  # here, not at the top: the rest of this module must not pay for importing torch

    if isinstance(value, torch.dtype):
        return value
    return getattr(torch, dtype_name(value))


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
