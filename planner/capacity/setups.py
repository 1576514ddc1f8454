"""Hardware setups for capacity questions: so many GPUs of these types, plus host RAM and disk.

A :class:`Setup` is what a capacity question varies (the count of GPUs of a type, the mix of
types); :meth:`Setup.devices` turns it into the ``[devices]`` section one plan is solved under,
keeping the user's reserve, links kind, host link and disk speed. It is written
``"h100-sxm*8+cpu=512GiB"`` on the command line (:func:`parse_setup`).

Prices (US dollars per GPU-hour) come from the user (``--price TYPE=USD``) or from
:data:`DEFAULT_PRICES`, which cite where they were read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from layerplan.planner.hardware.presets import lookup_accelerator
from layerplan.planner.spec import DevicesSpec
from layerplan.planner.spec.sizes import parse_size
from layerplan.solver import InvalidSpecError, format_bytes

__all__ = ["DEFAULT_PRICES", "PRICE_SOURCE", "Setup", "parse_prices", "parse_setup"]

#: Where :data:`DEFAULT_PRICES` were read, and when.
PRICE_SOURCE = ("RunPod on-demand list prices per GPU-hour as quoted by deploybase.ai, "
                "'NVIDIA L40S Cloud Pricing' (https://deploybase.ai/articles/nvidia-l40s-price), March 2026")

#: Accelerator preset -> US dollars per GPU-hour (:data:`PRICE_SOURCE`). Prices move: pass your own.
DEFAULT_PRICES: Mapping[str, float] = {"h100-sxm": 1.99, "a100-80gb": 1.19, "l40s": 0.79, "rtx-4090": 0.34}

_SETUP = re.compile(r"^\s*([A-Za-z0-9_. -]+?)\s*(?:@\s*([0-9.]+\s*[A-Za-z]*))?\s*(?:\*\s*(\d+))?\s*$")


@dataclass(frozen=True, slots=True)
class Setup:
    """One hardware setup: GPUs by preset and count, host RAM and disk for offload.

    Attributes:
        gpus: ``(preset name, count)`` pairs, in the order the GPUs are numbered (``0, 1, ...``).
        host_bytes: host RAM the plan may offload weights to (``cpu``), bytes; None: no offload.
        disk_bytes: disk the plan may offload to, bytes; None: none.
        name: how tables show it (default: ``"8x h100-sxm + cpu 512.00 GiB"``).
        gpu_memory: preset name -> memory per GPU in bytes, instead of the preset's (a MIG slice,
            a card shared with other work); the preset still gives the speeds.
        as_declared: a ``[devices]`` section this setup stands for, used as is by :meth:`devices`
            (:meth:`declared`); None for a setup built from presets.

    Raises:
        InvalidSpecError: an unknown preset, a count below 0, no GPU at all, a negative size.
    """

    gpus: tuple[tuple[str, int], ...]
    host_bytes: int | None = None
    disk_bytes: int | None = None
    name: str = ""
    gpu_memory: Mapping[str, int] = field(default_factory=dict)
    as_declared: DevicesSpec | None = None

    @classmethod
    def declared(cls, devices: DevicesSpec) -> Setup:
        """The setup of a declared ``[devices]`` section (its caps, types, links and overrides kept;
        an untyped GPU counts as the default preset in :attr:`gpus`).

        Raises:
            InvalidSpecError: the section declares no GPU.
        """
        from layerplan.planner.hardware.presets import DEFAULT_ACCELERATOR

        caps = devices.max_memory or {}
        counted: dict[str, int] = {}
        for key in (k for k in caps if k not in ("cpu", "disk")):
            name = devices.types.get(key, DEFAULT_ACCELERATOR)
            counted[name] = counted.get(name, 0) + 1
        return cls(tuple(counted.items()), host_bytes=caps.get("cpu") or None, disk_bytes=caps.get("disk") or None,
                   name="the declared devices", as_declared=devices)

    def __post_init__(self) -> None:
        gpus = tuple((lookup_accelerator(t).name, _count(n, what=f"the count of {t}")) for t, n in self.gpus)
        object.__setattr__(self, "gpus", tuple((t, n) for t, n in gpus if n))
        memory = {lookup_accelerator(t).name: parse_size(b, what=f"the memory of {t}")
                  for t, b in self.gpu_memory.items()}
        object.__setattr__(self, "gpu_memory", memory)
        if not self.gpus:
            raise InvalidSpecError(f"setup {self.name or gpus!r} has no GPU; give at least one, e.g. h100-sxm*1")
        for what in ("host_bytes", "disk_bytes"):
            value = getattr(self, what)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidSpecError(f"setup {what}={value!r}; expected bytes >= 0 or None")
        if not self.name:
            object.__setattr__(self, "name", self._describe())

    @property
    def num_gpus(self) -> int:
        return sum(n for _, n in self.gpus)

    @property
    def offload(self) -> bool:
        """Whether weights may go to host RAM or disk."""
        return bool(self.host_bytes) or bool(self.disk_bytes)

    def gpu_types(self) -> list[str]:
        """The preset of each GPU, by index."""
        return [t for t, n in self.gpus for _ in range(n)]

    def memory_of(self, gpu_type: str) -> int:
        """Bytes of one GPU of ``gpu_type`` in this setup (:attr:`gpu_memory`, else the preset's)."""
        return self.gpu_memory.get(gpu_type) or lookup_accelerator(gpu_type).memory_bytes

    def price_per_hour(self, prices: Mapping[str, float]) -> float:
        """US dollars per hour of the GPUs (host RAM and disk are not priced).

        Raises:
            InvalidSpecError: a GPU type without a price.
        """
        missing = [t for t, _ in self.gpus if t not in prices]
        if missing:
            raise InvalidSpecError(f"no price for {missing[0]!r}; pass --price {missing[0]}=USD_PER_HOUR")
        return sum(prices[t] * n for t, n in self.gpus)

    def devices(self, base: DevicesSpec) -> DevicesSpec:
        """The ``[devices]`` section of this setup: its GPUs at their presets' memory, ``cpu`` and
        ``disk`` at the setup's sizes; ``base``'s reserve (one size for all), interconnect, host link,
        disk speed and offload folder carried over. Per-device entries of ``base`` (links,
        overrides, a per-device reserve, hosts) name another setup's devices and are not carried.
        A :meth:`declared` setup returns its own section."""
        if self.as_declared is not None:
            return self.as_declared
        caps: dict[int | str, int] = {i: self.memory_of(t) for i, t in enumerate(self.gpu_types())}
        if self.host_bytes:
            caps["cpu"] = self.host_bytes
        if self.disk_bytes:
            caps["disk"] = self.disk_bytes
        reserve = base.reserve if not isinstance(base.reserve, Mapping) else None
        return dataclasses.replace(
            base, max_memory=caps, types=dict(enumerate(self.gpu_types())), reserve=reserve, links={}, overrides={},
            hosts={},
        )

    def _describe(self) -> str:
        parts = [f"{n}x {t}" + (f" ({format_bytes(self.gpu_memory[t])})" if t in self.gpu_memory else "")
                 for t, n in self.gpus]
        parts += [f"cpu {format_bytes(self.host_bytes)}"] if self.host_bytes else []
        parts += [f"disk {format_bytes(self.disk_bytes)}"] if self.disk_bytes else []
        return " + ".join(parts)


def _count(value: object, *, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidSpecError(f"{what} is {value!r}; expected an int >= 0")
    return value


def parse_setup(text: str) -> Setup:
    """A setup from its command-line form: ``TYPE[@SIZE]*COUNT`` terms and ``cpu=SIZE`` /
    ``disk=SIZE`` joined by ``+``, optionally named ``NAME:``: ``"h100-sxm*8"``,
    ``"a100-80gb*4+cpu=256GiB"``, ``"mixed:h100-sxm*2+l40s*2"``, ``"h100-sxm@40GiB*2"`` (40 GiB of
    each, e.g. a MIG slice). A type without ``*COUNT`` is one GPU.

    Raises:
        InvalidSpecError: a term that is neither, an unknown preset, a bad size.
    """
    name, _, body = text.rpartition(":") if ":" in text else ("", "", text)
    gpus: list[tuple[str, int]] = []
    sizes: dict[str, int] = {}
    memory: dict[str, int] = {}
    for term in body.split("+"):
        key, eq, value = term.partition("=")
        if eq:
            if key.strip().lower() not in ("cpu", "disk"):
                raise InvalidSpecError(f"setup {text!r}: {term.strip()!r} is not cpu=SIZE or disk=SIZE")
            sizes[key.strip().lower()] = parse_size(value.strip(), what=f"setup {text!r} {key.strip()}")
            continue
        match = _SETUP.match(term)
        if not match:
            raise InvalidSpecError(f"setup {text!r}: {term.strip()!r} is not TYPE*COUNT; "
                                   "write e.g. h100-sxm*8+cpu=512GiB")
        gpus.append((match.group(1), int(match.group(3) or 1)))
        if match.group(2):
            what = f"setup {text!r} memory of {match.group(1)}"
            memory[match.group(1)] = parse_size(match.group(2).strip(), what=what)
    return Setup(tuple(gpus), host_bytes=sizes.get("cpu"), disk_bytes=sizes.get("disk"), name=name.strip(),
                 gpu_memory=memory)


def parse_prices(items: Mapping[str, float | str] | None) -> dict[str, float]:
    """``{"h100-sxm": 2.5}`` (or ``"2.5"``, ``"$2.5"``) over :data:`DEFAULT_PRICES`, keyed by preset name.

    Raises:
        InvalidSpecError: an unknown preset, a price that is not a number >= 0.
    """
    prices = dict(DEFAULT_PRICES)
    for key, value in (items or {}).items():
        try:
            price = float(str(value).strip().lstrip("$"))
        except ValueError:
            price = -1.0
        if not price >= 0:
            raise InvalidSpecError(f"price {key}={value!r}; expected US dollars per GPU-hour, e.g. {key}=2.49")
        prices[lookup_accelerator(key, what="price").name] = price
    return prices
