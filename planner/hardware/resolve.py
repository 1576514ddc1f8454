"""Resolve the declared devices into one :class:`HardwareSpec`: peak FLOP/s at the plan's dtype,
memory bandwidth, and the link bandwidth between every pair. Pure: the figures come from
:mod:`layerplan.planner.hardware.presets` and from what the caller passes (driver-reported names
come from :mod:`layerplan.planner.hardware.detect`, never from a probe here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from typing import TYPE_CHECKING

from layerplan.planner.hardware.network import host_of_devices, parse_hosts, resolve_network
from layerplan.planner.hardware.parsing import (
    _bandwidth_preset,
    _dtype_name,
    parse_bandwidth,
    parse_device_types,
    parse_override,
)
from layerplan.planner.hardware.presets import (
    _FALLBACK,
    _GIGA,
    _TERA,
    ACCELERATORS,
    DEFAULT_ACCELERATOR,
    DEFAULT_DISK,
    DEFAULT_HOST_LINK,
    DISKS,
    HOST_CPU,
    HOST_LINKS,
    NVLINK_LATENCY_S,
    PCIE_LATENCY_S,
    AcceleratorPreset,
    preset_for_device_name,
)
from layerplan.planner.spec.sizes import parse_device
from layerplan.solver.errors import InvalidSpecError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceHardware", "HardwareSpec", "build_hardware"]

# --------------------------------------------------------------------------------------------------
# Resolved hardware
# --------------------------------------------------------------------------------------------------


def _label(key: int | str) -> str:
    return f"GPU {key}" if isinstance(key, int) else repr(key)


def _fmt_rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / _GIGA:.4g} GB/s"


def _fmt_flops(flops_per_s: float) -> str:
    return f"{flops_per_s / _TERA:.4g} TFLOPS"


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceHardware:
    """One declared device with the figures the cost model uses.

    Attributes:
        key: accelerate's device key (``0``, ``"cpu"``, ``"disk"``, ``"mps"``, ``"xpu:0"``).
        preset: the preset the figures come from (an :data:`ACCELERATORS`, :data:`HOST_CPU` or
            :data:`DISKS` name; ``"custom"`` for a disk given as a number).
        flops_per_s: peak FLOP/s at the plan's dtype; 0 for ``"disk"`` (it never computes).
        mem_bytes_per_s: peak bandwidth of the device's own memory; 0 for ``"disk"``.
        memory_bytes: the preset's memory; None for ``"cpu"`` and ``"disk"`` (their caps come
            only from ``max_memory``).
        read_bytes_per_s: ``"cpu"``: the host link that carries offloaded weights from RAM to the
            execution device; ``"disk"``: the disk's sequential read (the caller combines it with
            the host link); accelerators: 0 (unused).
    """

    key: int | str
    preset: str
    flops_per_s: float
    mem_bytes_per_s: float
    memory_bytes: int | None
    read_bytes_per_s: float

    def __post_init__(self) -> None:
        for name in ("flops_per_s", "mem_bytes_per_s", "read_bytes_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidSpecError(f"device {self.key!r}: {name}={value!r} must be a finite number >= 0")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise InvalidSpecError(f"device {self.key!r}: memory_bytes={self.memory_bytes!r} must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class HardwareSpec:
    """Figures for every declared device and every pair of them.

    Attributes:
        devices: one entry per declared device, in the declared order.
        link_bytes_per_s: ``k x k`` bandwidth matrix over ``devices`` in that order, bytes per
            second per direction, symmetric. The diagonal is ``inf``: moving data within a device
            costs no transfer. Accelerator-cpu is the accelerator's host link; accelerator-disk
            is the slower of the disk read and that host link; cpu-disk is the disk read.
        link_latency_s: seconds added per transfer: :data:`NVLINK_LATENCY_S` when every pair of
            devices talks over NVLink, else :data:`PCIE_LATENCY_S`.
        host_link: the host link in words (a :data:`HOST_LINKS` name, or the rate given).
        host_link_bytes_per_s: its bandwidth, per direction.
        notes: assumptions made while resolving (defaults, fallbacks), one sentence each.
        hosts: per device (``devices`` order), the host it is on
            (:mod:`layerplan.planner.hardware.network`); empty when no hosts were declared.
        inter_host: the network between hosts in words; ``""`` on one host.
        inter_host_latency_s: seconds added per transfer between two hosts (instead of
            ``link_latency_s``).
    """

    devices: tuple[DeviceHardware, ...]
    link_bytes_per_s: tuple[tuple[float, ...], ...]
    link_latency_s: float
    host_link: str
    host_link_bytes_per_s: float
    notes: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    inter_host: str = ""
    inter_host_latency_s: float = 0.0
    _index: Mapping[int | str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        devices = tuple(self.devices)
        matrix = tuple(tuple(float(x) for x in row) for row in self.link_bytes_per_s)
        object.__setattr__(self, "devices", devices)
        object.__setattr__(self, "link_bytes_per_s", matrix)
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "hosts", tuple(self.hosts))
        keys = [d.key for d in devices]
        if not keys:
            raise InvalidSpecError("a hardware spec needs at least one device")
        if len(set(keys)) != len(keys):
            raise InvalidSpecError(f"devices {keys!r} repeat a key; give each device once")
        k = len(keys)
        if len(matrix) != k or any(len(row) != k for row in matrix):
            raise InvalidSpecError(f"link_bytes_per_s must be {k} x {k} for devices {keys!r}")
        for i in range(k):
            if matrix[i][i] != math.inf:
                raise InvalidSpecError(f"link_bytes_per_s[{i}][{i}] must be inf (a device to itself)")
            for j in range(i + 1, k):
                if matrix[i][j] != matrix[j][i]:
                    raise InvalidSpecError(
                        f"link between {keys[i]!r} and {keys[j]!r} is {matrix[i][j]!r} one way and "
                        f"{matrix[j][i]!r} the other; links are symmetric"
                    )
                if not (math.isfinite(matrix[i][j]) and matrix[i][j] > 0):
                    raise InvalidSpecError(
                        f"link between {keys[i]!r} and {keys[j]!r} is {matrix[i][j]!r}; it must be finite and > 0"
                    )
        if not (math.isfinite(self.link_latency_s) and self.link_latency_s >= 0):
            raise InvalidSpecError(f"link_latency_s={self.link_latency_s!r} must be a finite number >= 0")
        if self.hosts and len(self.hosts) != k:
            raise InvalidSpecError(f"hosts must give one host per device ({k}), not {len(self.hosts)}")
        if not (math.isfinite(self.inter_host_latency_s) and self.inter_host_latency_s >= 0):
            raise InvalidSpecError(f"inter_host_latency_s={self.inter_host_latency_s!r} must be a finite number >= 0")
        object.__setattr__(self, "_index", MappingProxyType({key: i for i, key in enumerate(keys)}))

    @property
    def multi_host(self) -> bool:
        """The devices are on more than one host."""
        return len(set(self.hosts)) > 1

    def host(self, key: int | str) -> str:
        """The host of device ``key``; ``""`` when no hosts were declared."""
        return self.hosts[self._position(key)] if self.hosts else ""

    def latency(self, a_key: int | str, b_key: int | str) -> float:
        """Seconds added per transfer between two devices: ``inter_host_latency_s`` across hosts,
        else ``link_latency_s``."""
        crosses = self.hosts and self.host(a_key) != self.host(b_key)
        return self.inter_host_latency_s if crosses else self.link_latency_s

    @property
    def keys(self) -> tuple[int | str, ...]:
        """Device keys in order."""
        return tuple(d.key for d in self.devices)

    def _position(self, key: int | str) -> int:
        device = parse_device(key)
        if device not in self._index:
            raise InvalidSpecError(
                f"device {key!r} is not in this hardware spec (devices: {', '.join(map(str, self.keys))})"
            )
        return self._index[device]

    def device(self, key: int | str) -> DeviceHardware:
        """The entry of device ``key`` (any spelling :func:`layerplan.planner.spec.sizes.parse_device` accepts)."""
        return self.devices[self._position(key)]

    def link(self, a_key: int | str, b_key: int | str) -> float:
        """Bandwidth between two devices, bytes per second per direction (``inf`` when equal)."""
        return self.link_bytes_per_s[self._position(a_key)][self._position(b_key)]


def _check_declared(key: int | str, declared: Sequence[int | str], *, what: str, fix: str) -> int | str:
    device = parse_device(key)
    if device not in declared:
        raise InvalidSpecError(
            f"{what} names {_label(device)}, which is not a declared device "
            f"({', '.join(map(str, declared))}); {fix}"
        )
    return device


def _resolve_types(
    accelerators: Sequence[int | str],
    declared: Sequence[int | str],
    device_types: Mapping[int | str, str] | None,
    reported_names: Mapping[int, str],
    notes: list[str],
) -> tuple[dict[int | str, AcceleratorPreset], frozenset[int | str]]:
    """Preset per accelerator, and the accelerators that got :data:`DEFAULT_ACCELERATOR`."""
    given: dict[int | str, AcceleratorPreset] = {}
    for device, name in parse_device_types(device_types or {}).items():
        _check_declared(device, declared, what=f"device type {name!r}", fix="declare it or drop its device type")
        given[device] = ACCELERATORS[name]
    default = ACCELERATORS[DEFAULT_ACCELERATOR]
    out: dict[int | str, AcceleratorPreset] = {}
    undeclared: list[int | str] = []
    for key in accelerators:
        if key in given:
            out[key] = given[key]
            continue
        reported = reported_names.get(key) if isinstance(key, int) else None
        if reported is not None:
            preset = preset_for_device_name(reported)
            if preset is not None:
                out[key] = ACCELERATORS[preset]
                continue
            notes.append(f"{_label(key)} reports itself as {reported!r}, which matches no preset")
        undeclared.append(key)
        out[key] = default
    if undeclared:
        notes.append(
            f"no device type for {', '.join(map(_label, undeclared))}: assumed {default.description} "
            f"figures and PCIe links; pass --device-type {','.join(map(str, undeclared))}=NAME"
        )
    return out, frozenset(undeclared)


def _flops_at(presets: Mapping[int | str, AcceleratorPreset], dtype: str, notes: list[str]) -> dict[int | str, float]:
    out: dict[int | str, float] = {}
    fell_back: dict[tuple[str, str], list[int | str]] = {}
    for key, preset in presets.items():
        if dtype in preset.flops_per_s:
            out[key] = preset.flops_per_s[dtype]
            continue
        used = next(d for d in _FALLBACK[dtype] if d in preset.flops_per_s)
        out[key] = preset.flops_per_s[used]
        fell_back.setdefault((preset.name, used), []).append(key)
    for (name, used), keys in fell_back.items():
        preset = ACCELERATORS[name]
        notes.append(
            f"{preset.description} has no {dtype} figure: {', '.join(map(_label, keys))} "
            f"use its {used} peak ({_fmt_flops(preset.flops_per_s[used])})"
        )
    return out


def _nvlink(pa: AcceleratorPreset, pb: AcceleratorPreset, *, declared: bool) -> float | None:
    """NVLink bandwidth between two presets: on one board automatically (same SXM/OAM product),
    or through whatever NVLink each has (board or bridge) when the user declared it."""
    if not declared:
        same_board = pa.name == pb.name and pa.nvlink_bytes_per_s > 0
        return pa.nvlink_bytes_per_s if same_board else None
    a = pa.nvlink_bytes_per_s or pa.nvlink_bridge_bytes_per_s
    b = pb.nvlink_bytes_per_s or pb.nvlink_bridge_bytes_per_s
    return min(a, b) if a > 0 and b > 0 else None


def _no_nvlink_error(key: int | str, preset: AcceleratorPreset, what: str) -> InvalidSpecError:
    with_link = sorted(p.name for p in ACCELERATORS.values() if p.nvlink_bytes_per_s or p.nvlink_bridge_bytes_per_s)
    return InvalidSpecError(
        f"{what} asks for NVLink but {_label(key)} ({preset.description}) has none "
        f"(NVLink presets: {', '.join(with_link)}); use 'pcie' or a bandwidth"
    )


def build_hardware(
    device_keys: Sequence[int | str],
    *,
    dtype: str | torch.dtype = "bfloat16",
    device_types: Mapping[int | str, str] | None = None,
    interconnect: str = "auto",
    links: Mapping[tuple[int | str, int | str], float | str] | None = None,
    host_link: str | float | None = None,
    disk_read: str | float | None = None,
    overrides: Mapping[int | str, Mapping[str, float | str]] | None = None,
    reported_names: Mapping[int, str] | None = None,
    hosts: Mapping[int | str, str] | None = None,
    inter_host: str | float | None = None,
) -> HardwareSpec:
    """Resolve the declared devices into peak figures and a link matrix.

    Args:
        device_keys: accelerate device keys in order (accelerators, then ``"cpu"``, then ``"disk"``),
            e.g. ``list(parse_max_memory(...))``.
        dtype: the plan's compute dtype; picks each accelerator's FLOP/s. A preset without a figure
            for it uses the 16-bit (fp8/int8) or FP32 (bf16 on V100) peak, with a note.
        device_types: accelerator key -> preset name (any spelling :func:`lookup_accelerator`
            takes). Accelerators left out are identified from ``reported_names``, else get
            :data:`DEFAULT_ACCELERATOR` with a note.
        interconnect: between accelerators: ``"auto"`` (NVLink between two GPUs of the same
            NVLink-board product, e.g. two H100 SXM; PCIe through the host otherwise), ``"nvlink"``
            (every pair; cards with only a bridge are allowed when there are two) or ``"pcie"``.
            PCIe between two accelerators runs at the slower of their host links.
        links: ``(a, b)`` -> bandwidth (:func:`parse_bandwidth` forms) or ``"nvlink"`` / ``"pcie"``;
            wins over ``interconnect`` for that pair, in both directions.
        host_link: the platform's PCIe (``"pcie4"``, ``"25GB/s"``, bytes/s); each accelerator's host
            link is the slower of it and the card's own. Default: the cards' own links.
        disk_read: the offload disk's sequential read (``"nvme-gen4"``, ``"2GB/s"``, bytes/s).
            Default :data:`DEFAULT_DISK`, with a note, when ``"disk"`` is declared.
        overrides: device -> ``{"flops_per_s", "mem_bytes_per_s", "memory_bytes",
            "read_bytes_per_s"}`` -> value (``"989TFLOPS"``, ``"3.35TB/s"``, ``"80GiB"`` or
            numbers). A ``"cpu"`` / ``"disk"`` ``read_bytes_per_s`` override also sets their links.
        reported_names: GPU index -> the name its driver reports
            (:func:`layerplan.planner.hardware.detect.detect_device_names`); nothing is probed here.
        hosts: device -> host name (:func:`layerplan.planner.hardware.network.parse_hosts`); every
            accelerator needs one, ``cpu``/``disk`` are on the first accelerator's host. Two
            devices on different hosts talk over ``inter_host`` (no NVLink), at the slower of it
            and each GPU's host link (GPUDirect RDMA); ``links`` still win for a pair.
        inter_host: the network between hosts, an
            :data:`~layerplan.planner.hardware.network.INTER_HOST_LINKS` name or a rate; default
            :data:`~layerplan.planner.hardware.network.DEFAULT_INTER_HOST`, with a note, when the
            devices span hosts.

    Returns:
        A :class:`HardwareSpec` over ``device_keys`` in order. The inputs are not modified.

    Raises:
        InvalidSpecError: a repeated or unknown device, a type or override for an undeclared
            device, an unknown preset name, NVLink asked of a device without it, a bad rate, a host
            missing for an accelerator, ``cpu``/``disk`` on another host than the first accelerator.
    """
    keys = [parse_device(k) for k in device_keys]
    if not keys:
        raise InvalidSpecError("no devices declared; declare at least one, e.g. [0, 'cpu']")
    if len(set(keys)) != len(keys):
        raise InvalidSpecError(f"device_keys {list(device_keys)!r} repeat a device; give each device once")
    if interconnect not in ("auto", "nvlink", "pcie"):
        raise InvalidSpecError(f"interconnect={interconnect!r} is not one of 'auto', 'nvlink', 'pcie'")
    dtype_name = _dtype_name(dtype)
    notes: list[str] = []
    accelerators = [k for k in keys if k not in ("cpu", "disk")]
    presets, assumed = _resolve_types(accelerators, keys, device_types, reported_names or {}, notes)
    flops = _flops_at(presets, dtype_name, notes)
    host_of, host_name, host_bytes_per_s = _host_links(presets, host_link)
    disk_name, disk_bytes_per_s = _disk(disk_read) if "disk" in keys else ("custom", 0.0)

    devices = _device_figures(keys, presets, flops, host_bytes_per_s, disk_name, disk_bytes_per_s)
    read_overridden = _apply_overrides(devices, overrides)
    if "disk" in keys and disk_read is None and "disk" not in read_overridden:
        notes.append(
            f"no disk_read given: assumed {DISKS[DEFAULT_DISK].description} ({_fmt_rate(disk_bytes_per_s)}); "
            "pass disk_read for the offload folder's drive"
        )
    if interconnect == "nvlink" and len(accelerators) > 2:
        for key in accelerators:
            if not presets[key].nvlink_bytes_per_s:
                raise InvalidSpecError(
                    f"interconnect='nvlink' with {len(accelerators)} accelerators, but {_label(key)} "
                    f"({presets[key].description}) has at most a two-card NVLink bridge; declare the "
                    "bridged pairs with links, e.g. {(0, 1): 'nvlink'}"
                )
    cpu_read = devices["cpu"].read_bytes_per_s if "cpu" in read_overridden else None
    pairs, bridgeable = _link_pairs(accelerators, devices, presets, assumed, host_of, interconnect, cpu_read)
    host_names = host_of_devices(keys, parse_hosts(hosts)) if hosts else {}
    network = _cross_host(keys, host_names, inter_host, host_of, pairs, bridgeable, notes)
    for (a, b), value in _declared_links(links, keys):
        pairs[frozenset((a, b))] = _declared_link(a, b, value, presets, host_of)
        bridgeable.discard(frozenset((a, b)))
    if bridgeable:
        cards = [x for x in accelerators if any(x in pair for pair in bridgeable)]
        notes.append(
            f"{', '.join(map(_label, cards))} could be joined by two-card NVLink bridges; assumed PCIe "
            "between them (declare bridged pairs with links, e.g. {(0, 1): 'nvlink'})"
        )
    matrix = tuple(
        tuple(math.inf if a == b else pairs[frozenset((a, b))][0] for b in keys) for a in keys
    )
    local = {pair: v for pair, v in pairs.items() if len({host_names.get(d) for d in pair}) == 1}
    all_nvlink = bool(local) and all(nvlink for _, nvlink in local.values())
    return HardwareSpec(
        devices=tuple(devices[key] for key in keys),
        link_bytes_per_s=matrix,
        link_latency_s=NVLINK_LATENCY_S if all_nvlink else PCIE_LATENCY_S,
        host_link=host_name,
        host_link_bytes_per_s=host_bytes_per_s,
        notes=tuple(notes),
        hosts=tuple(host_names[k] for k in keys) if host_names else (),
        inter_host=network[0],
        inter_host_latency_s=network[1],
    )


def _cross_host(
    keys: Sequence[int | str],
    host_names: Mapping[int | str, str],
    inter_host: str | float | None,
    host_of: Mapping[int | str, float],
    pairs: dict[frozenset[int | str], tuple[float, bool]],
    bridgeable: set[frozenset[int | str]],
    notes: list[str],
) -> tuple[str, float]:
    """Set every pair of devices on different hosts to the network (at most each GPU's host link,
    which the NIC hangs off); ``(network in words, its latency)``, ``("", 0)`` on one host."""
    if len(set(host_names.values())) < 2:
        if inter_host is not None:
            resolve_network(inter_host)  # still a valid value
        return "", 0.0
    description, rate, latency, assumed = resolve_network(inter_host)
    if assumed:
        notes.append(f"no inter_host given: assumed {description} between hosts; pass --inter-host NAME or a rate")
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            pair = frozenset((a, b))
            if host_names[a] == host_names[b] or pair not in pairs:
                continue
            ends = [host_of[d] for d in (a, b) if d in host_of]  # the GPUs' own host links
            # two GPUs: GPUDirect RDMA through each one's host link, never their NVLink; an
            # offload tier: its own link, and no faster than the network
            local = math.inf if len(ends) == 2 else pairs[pair][0]
            pairs[pair] = (min(rate, local, *ends), False)
            bridgeable.discard(pair)
    return description, latency


def _device_figures(
    keys: Sequence[int | str],
    presets: Mapping[int | str, AcceleratorPreset],
    flops: Mapping[int | str, float],
    host_bytes_per_s: float,
    disk_name: str,
    disk_bytes_per_s: float,
) -> dict[int | str, DeviceHardware]:
    """Each declared device's figures from its preset (cpu: :data:`HOST_CPU`; disk: its read speed)."""
    devices: dict[int | str, DeviceHardware] = {}
    for key in keys:
        if key == "cpu":
            devices[key] = DeviceHardware(
                key=key, preset=HOST_CPU.name, flops_per_s=HOST_CPU.flops_per_s,
                mem_bytes_per_s=HOST_CPU.mem_bytes_per_s, memory_bytes=None, read_bytes_per_s=host_bytes_per_s,
            )
        elif key == "disk":
            devices[key] = DeviceHardware(
                key=key, preset=disk_name, flops_per_s=0.0, mem_bytes_per_s=0.0, memory_bytes=None,
                read_bytes_per_s=disk_bytes_per_s,
            )
        else:
            devices[key] = DeviceHardware(
                key=key, preset=presets[key].name, flops_per_s=flops[key],
                mem_bytes_per_s=presets[key].mem_bytes_per_s, memory_bytes=presets[key].memory_bytes,
                read_bytes_per_s=0.0,
            )
    return devices


def _link_pairs(
    accelerators: Sequence[int | str],
    devices: Mapping[int | str, DeviceHardware],
    presets: Mapping[int | str, AcceleratorPreset],
    assumed: frozenset[int | str],
    host_of: Mapping[int | str, float],
    interconnect: str,
    cpu_read: float | None,
) -> tuple[dict[frozenset[int | str], tuple[float, bool]], set[frozenset[int | str]]]:
    """Pair -> (bytes/s, over NVLink) before declared links: accelerator pairs by ``interconnect``,
    accelerator-cpu over its host link, anything-disk no faster than the disk; and the pairs that a
    two-card NVLink bridge could join (for a note)."""
    disk_bw = devices["disk"].read_bytes_per_s if "disk" in devices else 0.0
    pairs: dict[frozenset[int | str], tuple[float, bool]] = {}
    bridgeable: set[frozenset[int | str]] = set()
    for i, a in enumerate(accelerators):
        for b in accelerators[i + 1:]:
            pair = frozenset((a, b))
            if interconnect == "nvlink":
                pairs[pair] = (_declared_nvlink(a, b, presets, what="interconnect='nvlink'"), True)
                continue
            # "auto" never assumes NVLink for an accelerator whose type was itself assumed.
            known = not {a, b} & assumed
            board = _nvlink(presets[a], presets[b], declared=False) if interconnect == "auto" and known else None
            if board is not None:
                pairs[pair] = (board, True)
                continue
            pairs[pair] = (min(host_of[a], host_of[b]), False)
            both_bridgeable = presets[a].nvlink_bridge_bytes_per_s and presets[b].nvlink_bridge_bytes_per_s
            if interconnect == "auto" and known and both_bridgeable:
                bridgeable.add(pair)
        if "cpu" in devices:
            pairs[frozenset((a, "cpu"))] = (cpu_read if cpu_read is not None else host_of[a], False)
        if "disk" in devices:
            pairs[frozenset((a, "disk"))] = (min(disk_bw, host_of[a]), False)
    if "cpu" in devices and "disk" in devices:
        pairs[frozenset(("cpu", "disk"))] = (disk_bw, False)
    return pairs, bridgeable


def _host_links(
    presets: Mapping[int | str, AcceleratorPreset], host_link: str | float | None
) -> tuple[dict[int | str, float], str, float]:
    """Each accelerator's host link in bytes/s (the slower of its card's and the platform's), and
    the host link of the execution device (the first accelerator, where accelerate streams
    offloaded weights) in words and bytes/s."""
    platform = None if host_link is None else parse_bandwidth(host_link, what="host_link")
    platform_name = ""
    if platform is not None:
        named = _bandwidth_preset(host_link) if isinstance(host_link, str) else None
        platform_name = named.name if named is not None else (
            host_link.strip() if isinstance(host_link, str) else _fmt_rate(platform))
    card = {key: HOST_LINKS[preset.host_link].bytes_per_s for key, preset in presets.items()}
    host_of = {key: bw if platform is None else min(bw, platform) for key, bw in card.items()}
    if presets:
        execution = next(iter(presets))
        slower_is_card = platform is None or card[execution] <= platform
        name = presets[execution].host_link if slower_is_card else platform_name
        return host_of, name, host_of[execution]
    if platform is not None:
        return host_of, platform_name, platform
    return host_of, DEFAULT_HOST_LINK, HOST_LINKS[DEFAULT_HOST_LINK].bytes_per_s


def _disk(disk_read: str | float | None) -> tuple[str, float]:
    """The disk preset name (``"custom"`` for a rate) and its read bandwidth; :data:`DEFAULT_DISK`
    when ``disk_read`` is None."""
    if disk_read is None:
        return DEFAULT_DISK, DISKS[DEFAULT_DISK].bytes_per_s
    named = _bandwidth_preset(disk_read) if isinstance(disk_read, str) else None
    return (named.name if named is not None else "custom"), parse_bandwidth(disk_read, what="disk_read")


def _apply_overrides(
    devices: dict[int | str, DeviceHardware], overrides: Mapping[int | str, Mapping[str, float | str]] | None
) -> set[int | str]:
    """Replace overridden fields in ``devices`` (a dict local to the caller); the devices whose
    ``read_bytes_per_s`` was overridden."""
    read_overridden: set[int | str] = set()
    for key, fields in (overrides or {}).items():
        device = _check_declared(key, list(devices), what="overrides", fix="override only declared devices")
        if not isinstance(fields, Mapping):
            raise InvalidSpecError(f"overrides[{key!r}]={fields!r} is not a mapping of field -> value")
        parsed = {name: parse_override(key, name, value) for name, value in fields.items()}
        devices[device] = replace(devices[device], **parsed)
        if "read_bytes_per_s" in parsed:
            read_overridden.add(device)
    return read_overridden


def _declared_links(
    links: Mapping[tuple[int | str, int | str], float | str] | None, keys: Sequence[int | str]
) -> list[tuple[tuple[int | str, int | str], float | str]]:
    """``links`` with normalised, declared, distinct, non-repeated device pairs."""
    out: list[tuple[tuple[int | str, int | str], float | str]] = []
    seen: set[frozenset[int | str]] = set()
    for pair, value in (links or {}).items():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise InvalidSpecError(f"links key {pair!r} is not a pair of devices such as (0, 1)")
        a, b = (_check_declared(x, keys, what=f"link {pair!r}", fix="link only declared devices") for x in pair)
        if a == b:
            raise InvalidSpecError(f"link {pair!r} joins {_label(a)} to itself; name two different devices")
        if frozenset((a, b)) in seen:
            raise InvalidSpecError(f"link {a}-{b} is given twice; give each pair once")
        seen.add(frozenset((a, b)))
        out.append(((a, b), value))
    return out


def _declared_nvlink(a: int | str, b: int | str, presets: Mapping[int | str, AcceleratorPreset], *, what: str) -> float:
    bw = _nvlink(presets[a], presets[b], declared=True)
    if bw is None:
        bad = a if not (presets[a].nvlink_bytes_per_s or presets[a].nvlink_bridge_bytes_per_s) else b
        raise _no_nvlink_error(bad, presets[bad], what)
    return bw


def _declared_link(
    a: int | str,
    b: int | str,
    value: float | str,
    presets: Mapping[int | str, AcceleratorPreset],
    host_of: Mapping[int | str, float],
) -> tuple[float, bool]:
    """Bandwidth and NVLink-ness of one ``links`` entry."""
    what = f"link {a}-{b}"
    kind = value.strip().lower() if isinstance(value, str) else None
    if kind in ("nvlink", "pcie"):
        for x in (a, b):
            if x in ("cpu", "disk"):
                raise InvalidSpecError(
                    f"{what}={value!r}: {x!r} is not an accelerator; give a bandwidth such as '25GB/s'"
                )
        if kind == "nvlink":
            return _declared_nvlink(a, b, presets, what=what), True
        return min(host_of[a], host_of[b]), False
    return parse_bandwidth(value, what=what), False
