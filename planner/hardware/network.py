"""Devices on several hosts: which host each device is on, and the network between hosts.

A multi-host device set names a host per accelerator (``[devices] hosts = {"0-7" = "node-a",
"8-15" = "node-b"}``, ``--hosts 0-7=node-a 8-15=node-b``). Two GPUs on different hosts talk over
the inter-host network (``inter_host``: a :data:`INTER_HOST_LINKS` preset or a rate) with GPUDirect
RDMA, so a transfer between them runs at the slower of the network and each GPU's host link (the
NIC sits on the GPU's PCIe switch). ``cpu`` and ``disk`` are the offload tiers of the host of the
*execution device* (the first accelerator listed): offloaded layers compute there (accelerate
``dispatch_model``), so a ``cpu``/``disk`` declared on another host could never be read without a
network hop and is refused (:func:`check_offload_host`).

Network figures are line rates per direction of one NIC port, with one port per GPU as on
rail-optimised clusters (DGX H100: eight single-port ConnectX-7 at 400 Gb/s for the compute fabric,
one per GPU). A host with fewer NICs than GPUs shares them: pass the rate per GPU instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from layerplan.planner.hardware.presets import _GIGA, _compact
from layerplan.planner.spec.sizes import parse_device
from layerplan.solver.errors import InvalidSpecError

__all__ = [
    "DEFAULT_INTER_HOST",
    "INTER_HOST_LINKS",
    "NetworkPreset",
    "check_offload_host",
    "host_of_devices",
    "lookup_network",
    "parse_hosts",
    "resolve_network",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class NetworkPreset:
    """An inter-host network, per GPU.

    Attributes:
        name: lower-case key, e.g. ``"ib-ndr"``.
        description: what it is, in words.
        bytes_per_s: line rate per direction of one port, bytes per second.
        latency_s: seconds added per transfer (an ASSUMPTION, see :data:`INTER_HOST_LINKS`).
        source: where the rate comes from.
    """

    name: str
    description: str
    bytes_per_s: float
    latency_s: float
    source: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bytes_per_s) and self.bytes_per_s > 0 and self.latency_s >= 0):
            raise InvalidSpecError(f"network preset {self.name!r}: bytes_per_s and latency_s must be > 0")


# Latencies are ASSUMPTIONS of the order of one small NCCL send/recv between hosts (NIC, switch hop
# and launch, more than PCIe's 10 us; kernel TCP sockets several times more); measure a cluster
# with nccl-tests' sendrecv_perf and pass the rate (and see the report's notes) instead.
_IB_LATENCY_S = 15e-6
_ROCE_LATENCY_S = 20e-6
_TCP_LATENCY_S = 60e-6
_IEEE = "IEEE 802.3 Ethernet line rate (https://standards.ieee.org/ieee/802.3/)"

#: Inter-host networks, per GPU (one port each), per direction: Gb/s / 8 = GB/s.
INTER_HOST_LINKS: Mapping[str, NetworkPreset] = MappingProxyType({
    p.name: p
    for p in (
        NetworkPreset(
            name="ib-hdr", description="InfiniBand HDR, 200 Gb/s per GPU", bytes_per_s=25 * _GIGA,
            latency_s=_IB_LATENCY_S,
            source="NVIDIA ConnectX-6 VPI datasheet: HDR 200 Gb/s per port "
                   "(https://www.nvidia.com/en-us/networking/infiniband-adapters/)",
        ),
        NetworkPreset(
            name="ib-ndr", description="InfiniBand NDR, 400 Gb/s per GPU", bytes_per_s=50 * _GIGA,
            latency_s=_IB_LATENCY_S,
            source="NVIDIA ConnectX-7 datasheet: NDR 400 Gb/s per port; NVIDIA DGX H100 User Guide: "
                   "eight single-port ConnectX-7 for the compute fabric, one per GPU "
                   "(https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html)",
        ),
        NetworkPreset(
            name="ib-xdr", description="InfiniBand XDR, 800 Gb/s per GPU", bytes_per_s=100 * _GIGA,
            latency_s=_IB_LATENCY_S,
            source="NVIDIA ConnectX-8 SuperNIC datasheet: XDR 800 Gb/s "
                   "(https://www.nvidia.com/en-us/networking/products/ethernet/supernic/)",
        ),
        NetworkPreset(
            name="roce-400g", description="400 GbE RoCE v2, per GPU", bytes_per_s=50 * _GIGA,
            latency_s=_ROCE_LATENCY_S, source=_IEEE,
        ),
        NetworkPreset(
            name="roce-200g", description="200 GbE RoCE v2, per GPU", bytes_per_s=25 * _GIGA,
            latency_s=_ROCE_LATENCY_S, source=_IEEE,
        ),
        NetworkPreset(
            name="roce-100g", description="100 GbE RoCE v2, per GPU", bytes_per_s=12.5 * _GIGA,
            latency_s=_ROCE_LATENCY_S, source=_IEEE,
        ),
        NetworkPreset(
            name="eth-25g", description="25 GbE with TCP sockets, shared by the host", bytes_per_s=3.125 * _GIGA,
            latency_s=_TCP_LATENCY_S, source=_IEEE,
        ),
        NetworkPreset(
            name="eth-10g", description="10 GbE with TCP sockets, shared by the host", bytes_per_s=1.25 * _GIGA,
            latency_s=_TCP_LATENCY_S, source=_IEEE,
        ),
    )
})

#: Network assumed between hosts when ``inter_host`` is not given (a note says so).
DEFAULT_INTER_HOST = "ib-ndr"

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def lookup_network(name: str) -> NetworkPreset | None:
    """The :data:`INTER_HOST_LINKS` preset called ``name`` (any case, ``_`` or ``-``), else None."""
    key = _compact(name) if isinstance(name, str) else None
    return next((p for p in INTER_HOST_LINKS.values() if _compact(p.name) == key), None)


def _devices_in(keys: object) -> list[int | str]:
    """``"0-7"``, ``"0,1,4-5"``, ``3``, ``"cpu"`` -> the devices they name."""
    parts = keys.split(",") if isinstance(keys, str) else [keys]
    out: list[int | str] = []
    for part in parts:
        part = part.strip() if isinstance(part, str) else part
        span = _RANGE.match(part) if isinstance(part, str) else None
        if span is None:
            out.append(parse_device(part))
            continue
        low, high = int(span[1]), int(span[2])
        if low > high:
            raise InvalidSpecError(f"hosts key {keys!r}: range {part!r} runs backwards; write it low-high, e.g. '0-7'")
        out.extend(range(low, high + 1))
    return out


def parse_hosts(items: Sequence[str] | Mapping[object, str]) -> dict[int | str, str]:
    """``["0-7=node-a", "8-15=node-b"]`` or ``{"0-7": "node-a", 8: "node-b"}`` -> device -> host.

    A key lists devices separated by commas, GPU ranges as ``low-high``; ``cpu`` and ``disk`` may be
    named (they must be on the execution device's host: :func:`check_offload_host`). Host names are
    letters, digits, ``.``, ``_`` and ``-`` (a hostname or any label).

    Raises:
        InvalidSpecError: malformed item, bad host name, a device on two hosts.
    """
    from layerplan.planner.hardware.parsing import _assignments

    out: dict[int | str, str] = {}
    for keys, host in _assignments(items, what="host", example="0-7=node-a"):
        if not isinstance(host, str) or not _HOST_NAME.match(host.strip()):
            raise InvalidSpecError(
                f"host {host!r} for {keys!r} is not a host name; use letters, digits, '.', '_' or '-', e.g. 'node-a'"
            )
        for device in _devices_in(keys):
            name = host.strip()
            if out.get(device, name) != name:
                raise InvalidSpecError(f"device {device!r} is on two hosts, {out[device]!r} and {name!r}; give one")
            out[device] = name
    return out


def host_of_devices(keys: Sequence[int | str], hosts: Mapping[int | str, str]) -> dict[int | str, str]:
    """Every device of ``keys`` -> its host, ``cpu``/``disk`` on the first accelerator's host.

    Raises:
        InvalidSpecError: a host for an undeclared device, an accelerator without a host, or an
            offload tier on another host than the execution device (:func:`check_offload_host`).
    """
    accelerators = [k for k in keys if k not in ("cpu", "disk")]
    for device in hosts:
        if device not in keys:
            raise InvalidSpecError(
                f"hosts names device {device!r}, which is not declared ({', '.join(map(str, keys))}); "
                "add it to max_memory or drop it from hosts"
            )
    missing = [k for k in accelerators if k not in hosts]
    if missing:
        raise InvalidSpecError(
            f"hosts gives no host for GPU {', '.join(map(str, missing))}; give every accelerator a host, "
            "e.g. --hosts 0-7=node-a 8-15=node-b"
        )
    check_offload_host(accelerators, hosts)
    first = hosts[accelerators[0]] if accelerators else next(iter(hosts.values()), "")
    return {k: hosts.get(k, first) if k in ("cpu", "disk") else hosts[k] for k in keys}


def check_offload_host(accelerators: Sequence[int | str], hosts: Mapping[int | str, str]) -> None:
    """Refuse a ``cpu``/``disk`` tier on a host other than the execution device's.

    Raises:
        InvalidSpecError: one line naming the tier, both hosts and the two fixes.
    """
    if not accelerators:
        return
    execution, home = accelerators[0], hosts.get(accelerators[0])
    for tier in ("cpu", "disk"):
        if tier in hosts and home is not None and hosts[tier] != home:
            raise InvalidSpecError(
                f"{tier} is on host {hosts[tier]!r}, but offloaded layers compute on the execution device "
                f"(GPU {execution}, the first accelerator) on host {home!r}: put {tier} on {home!r} or list a "
                f"GPU of {hosts[tier]!r} first"
            )


def resolve_network(value: str | float | None) -> tuple[str, float, float, bool]:
    """``(description, bytes/s, latency s, assumed)`` of an ``inter_host`` value: a preset name, a
    rate (:func:`layerplan.planner.hardware.parsing.parse_bandwidth` forms; InfiniBand latency), or
    None (:data:`DEFAULT_INTER_HOST`, ``assumed`` True).

    Raises:
        InvalidSpecError: neither a preset nor a rate; the line lists the presets.
    """
    if value is None:
        preset = INTER_HOST_LINKS[DEFAULT_INTER_HOST]
        return preset.description, preset.bytes_per_s, preset.latency_s, True
    preset = lookup_network(value) if isinstance(value, str) else None
    if preset is not None:
        return preset.description, preset.bytes_per_s, preset.latency_s, False
    from layerplan.planner.hardware.parsing import parse_bandwidth

    try:
        rate = parse_bandwidth(value, what="inter_host")
    except InvalidSpecError:
        raise InvalidSpecError(
            f"inter_host={value!r} is neither a network ({', '.join(INTER_HOST_LINKS)}) nor a rate such as "
            "'50GB/s' or '400Gb/s'"
        ) from None
    return f"{rate / _GIGA:.4g} GB/s network", rate, _IB_LATENCY_S, False
