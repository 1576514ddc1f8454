"""The cheapest hardware that runs the model at the workload, within a latency or throughput
target; and the same model on several setups side by side (what-if).

:func:`cheapest` enumerates every setup of one type, or of two types mixed, up to
``max_devices`` GPUs, in order of price per hour (then fewer GPUs), and plans them in that order
until two meet the target: the first is the answer, the second the runner-up. Every cheaper
setup was planned (or ruled out by the memory bound, or by the latency
floor when there is a target) and failed, so within that space the answer
is the cheapest -- unless a cheaper one was undecided in the solver's time limit, which the
result says.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerplan.planner.capacity.probe import BOUND, SLOW, UNKNOWN, Probe, memory_bound, probe
from layerplan.planner.capacity.setups import Setup, parse_prices
from layerplan.planner.spec import PlanSpec
from layerplan.solver import InvalidSpecError

if TYPE_CHECKING:
    from layerplan.planner.graph import LayerGraph

__all__ = ["Candidate", "Cheapest", "Comparison", "cheapest", "compare_setups"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One setup planned: its price and what the plan says.

    Attributes:
        probe: the verdict and the plan (:class:`~layerplan.planner.capacity.probe.Probe`).
        price_per_hour: US dollars per hour of its GPUs, or None when unpriced (what-if).
        meets: it fits and meets the target (a fitting plan meets an absent target).
        tokens_per_s: generated tokens per second of the whole batch (``batch_size / per-token
            time``), or None when it does not fit.
    """

    probe: Probe
    price_per_hour: float | None
    meets: bool
    tokens_per_s: float | None

    @property
    def setup(self) -> Setup:
        return self.probe.setup

    def to_dict(self) -> dict[str, object]:
        plan = self.probe.plan
        usage = [{"device": str(u.device), "used_bytes": u.used_bytes, "cap_bytes": u.cap_bytes}
                 for u in plan.usage] if plan is not None else []
        return {**self.probe.to_dict(), "price_per_hour": self.price_per_hour, "meets": self.meets,
                "tokens_per_s": self.tokens_per_s, "num_gpus": self.setup.num_gpus,
                "offloaded_bytes": plan.offloaded_bytes if plan is not None else None, "usage": usage}


@dataclass(frozen=True, slots=True)
class Cheapest:
    """:func:`cheapest`'s answer.

    Attributes:
        best, runner_up: the cheapest setup that meets the target and the next one, or None.
        proven: no setup cheaper than ``best`` was left undecided.
        target: the target, in words.
        candidates: every setup planned or bounded, in the order tried.
        price_source: where the prices came from.
    """

    model: str
    best: Candidate | None
    runner_up: Candidate | None
    proven: bool
    target: str
    candidates: tuple[Candidate, ...]
    price_source: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        pick = lambda c: c.to_dict() if c is not None else None  # noqa: E731
        return {"question": "cheapest", "model": self.model, "target": self.target, "proven": self.proven,
                "best": pick(self.best), "runner_up": pick(self.runner_up), "price_source": self.price_source,
                "plans_solved": sum(1 for c in self.candidates if c.probe.verdict not in (BOUND, SLOW)),
                "seconds": round(self.seconds, 3), "candidates": [c.to_dict() for c in self.candidates]}


@dataclass(frozen=True, slots=True)
class Comparison:
    """:func:`compare_setups`'s answer: one :class:`Candidate` per setup, in the order given."""

    model: str
    rows: tuple[Candidate, ...]
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"question": "compare", "model": self.model, "seconds": round(self.seconds, 3),
                "setups": [c.to_dict() for c in self.rows]}


def _candidate(found: Probe, price: float | None, batch: int, max_ms: float | None, min_tps: float | None) -> Candidate:
    ms = found.ms_per_token
    tps = batch / (ms / 1e3) if ms else None
    meets = found.fits and (max_ms is None or (ms is not None and ms <= max_ms)) and \
        (min_tps is None or (tps is not None and tps >= min_tps))
    return Candidate(found, price, meets, tps)


def _too_slow(graph: LayerGraph, setup: Setup, spec: PlanSpec, batch: int, max_ms: float | None,
              min_tps: float | None) -> Probe | None:
    """A ``slow`` probe when no placement on ``setup`` can meet the target (the latency floor of
    :func:`layerplan.planner.api.least_ms_per_token`), else None. Setups too small by memory are
    left to :func:`probe`, which says so without solving."""
    from layerplan.planner.api import least_ms_per_token

    if (max_ms is None and min_tps is None) or memory_bound(graph, setup, spec) is not None:
        return None
    floor = least_ms_per_token(graph, spec.replace(devices=setup.devices(spec.devices)))
    best_tps = batch / (floor / 1e3) if floor > 0 else math.inf
    if (max_ms is not None and floor > max_ms) or (min_tps is not None and best_tps < min_tps):
        return Probe(setup, SLOW, f"at least {floor:.1f} ms per token on any placement (every node on its fastest "
                                  "GPU, nothing moved)")
    return None


def setups_by_price(types: Sequence[str], prices: Mapping[str, float], *, max_devices: int, mix: int,
                    host_bytes: int | None, disk_bytes: int | None) -> list[tuple[float, Setup]]:
    """Every setup of 1..``mix`` types with 1..``max_devices`` GPUs in all, cheapest first (then
    fewer GPUs, then the order of ``types``)."""
    out: list[tuple[float, int, int, Setup]] = []
    for size in range(1, mix + 1):
        for combo in itertools.combinations(types, size):
            for counts in itertools.product(range(1, max_devices + 1), repeat=size):
                if sum(counts) <= max_devices:
                    setup = Setup(tuple(zip(combo, counts)), host_bytes=host_bytes, disk_bytes=disk_bytes)
                    out.append((setup.price_per_hour(prices), setup.num_gpus, len(out), setup))
    return [(price, setup) for price, _, _, setup in sorted(out, key=lambda t: t[:3])]


def cheapest(
    spec: PlanSpec,
    *,
    device_types: Sequence[str] | None = None,
    prices: Mapping[str, float | str] | None = None,
    max_ms_per_token: float | None = None,
    min_tokens_per_s: float | None = None,
    max_devices: int = 8,
    mix: int = 2,
) -> Cheapest:
    """The cheapest setup that runs ``spec``'s model at its workload (module docstring).

    Args:
        spec: model, workload, solve options; ``max_memory``'s ``cpu`` / ``disk`` sizes (if any)
            join every setup as offload room, its GPUs are not used.
        device_types: the presets to buy from (default: every priced one).
        prices: preset -> US dollars per GPU-hour, over :data:`~layerplan.planner.capacity.setups.DEFAULT_PRICES`.
        max_ms_per_token: latency target, milliseconds per generated token (the cost model's estimate).
        min_tokens_per_s: throughput target, generated tokens per second over the batch.
        max_devices: most GPUs in a setup; mix: most GPU types in one setup (1 or 2).

    Raises:
        InvalidSpecError: an unknown or unpriced type, a bad target or limit; the spec's errors.
        TraceError: the model cannot be traced.
    """
    from layerplan.planner.api import load_graph
    from layerplan.planner.hardware.presets import lookup_accelerator

    table = parse_prices(prices)
    types = [lookup_accelerator(t).name for t in (device_types or sorted(table))]
    _check_target(max_ms_per_token, min_tokens_per_s, max_devices, mix)
    started = time.perf_counter()
    graph, _ = load_graph(spec)
    caps = spec.devices.max_memory or {}
    order = setups_by_price(types, table, max_devices=max_devices, mix=mix,
                            host_bytes=caps.get("cpu") or None, disk_bytes=caps.get("disk") or None)
    batch = graph.workload.batch_size
    tried: list[Candidate] = []
    met: list[Candidate] = []
    for price, setup in order:
        found = _too_slow(graph, setup, spec, batch, max_ms_per_token, min_tokens_per_s) or probe(graph, setup, spec)
        tried.append(_candidate(found, price, batch, max_ms_per_token, min_tokens_per_s))
        if tried[-1].meets:
            met.append(tried[-1])
            if len(met) == 2:
                break
    best = met[0] if met else None
    cheaper = tried[: tried.index(best)] if best is not None else tried
    proven = not any(c.probe.verdict == UNKNOWN for c in cheaper)
    return Cheapest(graph.model, best, met[1] if len(met) > 1 else None, proven,
                    _target(max_ms_per_token, min_tokens_per_s), tuple(tried),
                    _price_source(prices), time.perf_counter() - started)


def compare_setups(spec: PlanSpec, setups: Sequence[Setup], *, prices: Mapping[str, float | str] | None = None
                   ) -> Comparison:
    """The same model and workload planned on each of ``setups`` (what-if), in order.

    Raises:
        InvalidSpecError: no setup; the spec's errors.
        TraceError: the model cannot be traced.
    """
    from layerplan.planner.api import load_graph

    if not setups:
        raise InvalidSpecError("no setup given; pass --setup h100-sxm*8 --setup a100-80gb*8 ...")
    table = parse_prices(prices)
    started = time.perf_counter()
    graph, _ = load_graph(spec)
    rows = []
    for setup in setups:
        price = setup.price_per_hour(table) if all(t in table for t, _ in setup.gpus) else None
        rows.append(_candidate(probe(graph, setup, spec), price, graph.workload.batch_size, None, None))
    return Comparison(graph.model, tuple(rows), time.perf_counter() - started)


def _check_target(max_ms: float | None, min_tps: float | None, max_devices: int, mix: int) -> None:
    for name, value in (("max_ms_per_token", max_ms), ("min_tokens_per_s", min_tps)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise InvalidSpecError(f"{name}={value!r}; expected a number > 0")
    if not isinstance(max_devices, int) or max_devices < 1:
        raise InvalidSpecError(f"max_devices={max_devices!r}; expected an int >= 1")
    if mix not in (1, 2):
        raise InvalidSpecError(f"mix={mix!r}; expected 1 (one GPU type per setup) or 2 (two types mixed)")


def _target(max_ms: float | None, min_tps: float | None) -> str:
    parts = [f"at most {max_ms:g} ms per token"] if max_ms is not None else []
    parts += [f"at least {min_tps:g} tokens/s"] if min_tps is not None else []
    return " and ".join(parts) or "fits"


def _price_source(prices: Mapping[str, object] | None) -> str:
    from layerplan.planner.capacity.setups import PRICE_SOURCE

    return f"given, and for other types {PRICE_SOURCE}" if prices else PRICE_SOURCE
