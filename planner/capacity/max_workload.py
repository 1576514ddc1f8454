"""The largest workload that fits given devices: the biggest batch at a context, the longest
context at a batch, and the (batch, context) frontier.

Each point is a real plan: the model is traced at that workload (the graph cache keeps every
trace, so asking again is solve-only) and solved under the declared devices. Memory grows with
batch and with context (KV cache, working sets and transfers all do; the weights do not), so
fitting is monotone in each, and the search is doubling, then bisection, on a grid of ``step``:
the answer ``v`` fits and ``v + step`` is proven not to (or ``v`` is the limit: the model's
positions for context, ``limit`` for batch).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from layerplan.planner.capacity.probe import FITS, Probe, probe
from layerplan.planner.capacity.setups import Setup
from layerplan.planner.spec import PlanSpec, WorkloadSpec
from layerplan.solver import InvalidSpecError

__all__ = ["Frontier", "Largest", "frontier", "max_batch", "max_context"]

#: Default grid of the context search, tokens.
CONTEXT_STEP = 256
#: Default largest batch tried.
BATCH_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Largest:
    """The largest value of one workload field that fits.

    Attributes:
        field: ``"batch_size"`` or ``"seq_len"``.
        value: the largest fitting value on the grid, or None when even the smallest does not fit.
        step: the grid step; ``value + step`` is the next point.
        limit: the largest value the search may try.
        proven: ``value`` fits and ``value + step`` is proven not to (or ``value`` is the limit).
        proof: why the next point does not fit (or that the limit was reached), one line.
        fixed: the other workload fields, as declared.
        probes: every point looked at, in order; the plan at ``value`` is :attr:`plan`.
    """

    field: str
    value: int | None
    step: int
    limit: int
    proven: bool
    proof: str
    fixed: dict[str, object]
    probes: tuple[Probe, ...]

    @property
    def plan(self):  # noqa: ANN201 - a Plan or None
        return next((p.plan for p in self.probes if p.value == self.value and p.fits), None)

    @property
    def next_probe(self) -> Probe | None:
        """The probe one step past :attr:`value` (None at the limit, or when it was not needed)."""
        if self.value is None or self.value >= self.limit:
            return None
        return next((p for p in self.probes if p.value == min(self.value + self.step, self.limit)), None)

    def to_dict(self) -> dict[str, object]:
        plan = self.plan
        return {"field": self.field, "value": self.value, "step": self.step, "limit": self.limit,
                "proven": self.proven, "proof": self.proof, "fixed": self.fixed,
                "ms_per_token": plan.timing.per_token_s * 1e3 if plan is not None and plan.timing else None,
                "device_map": plan.device_map if plan is not None else None,
                "plans_solved": len(self.probes), "probes": [p.to_dict() for p in self.probes]}


@dataclass(frozen=True, slots=True)
class Frontier:
    """The longest context at each batch size: the boundary of what fits.

    Attributes:
        points: one :class:`Largest` (field ``seq_len``) per batch size, in increasing batch; a
            batch at which even the shortest context does not fit ends the list.
        seconds: wall time of the whole question.
    """

    model: str
    setup: str
    points: tuple[tuple[int, Largest], ...]
    seconds: float

    def pairs(self) -> list[tuple[int, int]]:
        """``(batch_size, longest seq_len)`` for each batch that fits at all."""
        return [(b, p.value) for b, p in self.points if p.value is not None]

    def to_dict(self) -> dict[str, object]:
        return {"question": "max-workload", "vary": "both", "model": self.model, "setup": self.setup,
                "frontier": [{"batch_size": b, "seq_len": p.value, "proven": p.proven, "proof": p.proof}
                             for b, p in self.points],
                "plans_solved": sum(len(p.probes) for _, p in self.points), "seconds": round(self.seconds, 3)}


def _largest(check: Callable[[int], Probe], *, step: int, limit: int) -> tuple[int | None, list[Probe]]:
    """The largest grid value that ``check`` says fits, and every probe made: doubling, then
    bisection, over the grid ``step, 2*step, ...`` capped at ``limit`` (which is on the grid)."""
    probes: list[Probe] = []
    seen: dict[int, bool] = {}
    last = -(-limit // step)  # grid index of ``limit``

    def fits(k: int) -> bool:
        if k not in seen:
            probes.append(check(min(k * step, limit)))
            seen[k] = probes[-1].verdict == FITS
        return seen[k]

    if not fits(1):
        return None, probes
    low, high = 1, None
    while high is None and low < last:
        nxt = min(low * 2, last)
        low, high = (nxt, None) if fits(nxt) else (low, nxt)
    while high is not None and high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return min(low * step, limit), probes


def _result(field: str, value: int | None, probes: list[Probe], *, step: int, limit: int,
            fixed: dict[str, object]) -> Largest:
    if value is None:
        first = probes[0]
        return Largest(field, None, step, limit, first.proven_not, f"{first.value}: {first.reason}", fixed,
                       tuple(probes))
    if value >= limit:
        return Largest(field, value, step, limit, True, f"the limit ({limit}) fits", fixed, tuple(probes))
    nxt = next(p for p in probes if p.value == min(value + step, limit))  # bisection probed it
    return Largest(field, value, step, limit, nxt.proven_not, f"{nxt.value}: {nxt.reason}", fixed, tuple(probes))


def _checker(spec: PlanSpec, setup: Setup, workload: Callable[[int], WorkloadSpec]) -> Callable[[int], Probe]:
    from layerplan.planner.api import load_graph

    def check(value: int) -> Probe:
        trial = spec.replace(workload=workload(value))
        graph, _ = load_graph(trial)
        return probe(graph, setup, trial, value=value)

    return check


def _declared_setup(spec: PlanSpec, setup: Setup | None) -> Setup:
    if setup is not None:
        return setup
    caps = spec.devices.max_memory
    if not caps or not any(k not in ("cpu", "disk") for k in caps):
        raise InvalidSpecError("max-workload needs the devices: pass --max-memory 0=80GiB ... (and --device-type), "
                               "or --setup h100-sxm*8")
    return Setup.declared(spec.devices)


def max_batch(spec: PlanSpec, *, setup: Setup | None = None, step: int = 1, limit: int = BATCH_LIMIT) -> Largest:
    """The largest batch size that fits at ``spec``'s context (its workload's other fields kept).

    Args:
        spec: model, workload, devices (used when ``setup`` is None), solve options.
        setup: the hardware instead of ``spec``'s ``max_memory``.
        step: the grid, sequences; ``limit``: the largest batch tried.

    Raises:
        InvalidSpecError: no devices declared, a step or limit below 1; the spec's own errors.
        TraceError: the model cannot be traced.
    """
    _check_grid(step, limit)
    where = _declared_setup(spec, setup)
    fixed = {k: v for k, v in spec.workload.to_dict().items() if k != "batch_size"}
    check = _checker(spec, where, lambda b: dataclasses.replace(spec.workload, batch_size=b))
    value, probes = _largest(check, step=step, limit=limit)
    return _result("batch_size", value, probes, step=step, limit=limit, fixed=fixed)


def max_context(spec: PlanSpec, *, setup: Setup | None = None, step: int = CONTEXT_STEP,
                limit: int | None = None) -> Largest:
    """The longest context (``seq_len``: prompt + new tokens) that fits at ``spec``'s batch size.

    ``max_new_tokens`` stays as declared (default: 256, at most a quarter of the context) and the
    prompt takes the rest; ``limit`` defaults to the model's positions.

    Raises:
        InvalidSpecError: no devices declared, a bad step or limit, a model that does not say its
            positions and no ``limit``; the spec's own errors.
        TraceError: the model cannot be traced.
    """
    from layerplan.planner.api import model_context

    positions = model_context(spec)
    limit = limit if limit is not None else positions
    if limit is None:
        raise InvalidSpecError(f"{spec.model.source} does not say its context length; pass --limit TOKENS")
    if positions is not None and limit > positions:
        raise InvalidSpecError(f"limit={limit} exceeds the model's {positions} positions; lower it")
    _check_grid(step, limit)
    where = _declared_setup(spec, setup)
    fixed = {k: v for k, v in spec.workload.to_dict().items() if k not in ("seq_len", "prompt_len")}
    base = dataclasses.replace(spec.workload, seq_len=None, prompt_len=None)
    check = _checker(spec, where, lambda c: dataclasses.replace(base, seq_len=c))
    value, probes = _largest(check, step=step, limit=limit)
    return _result("seq_len", value, probes, step=step, limit=limit, fixed=fixed)


def frontier(spec: PlanSpec, *, setup: Setup | None = None, batch_sizes: Sequence[int] | None = None,
             step: int = CONTEXT_STEP, limit: int | None = None) -> Frontier:
    """The longest context at each of ``batch_sizes`` (default 1, 2, 4, ... until the shortest
    context stops fitting). A larger batch never fits a longer context, so each search is capped
    by the previous answer.

    Raises:
        InvalidSpecError, TraceError: see :func:`max_context`; batch sizes that are not increasing.
    """
    started = time.perf_counter()
    sizes = list(batch_sizes) if batch_sizes is not None else [2 ** i for i in range(13)]
    if any(b < 1 for b in sizes) or sorted(set(sizes)) != sizes:
        raise InvalidSpecError(f"batch_sizes={sizes!r}; expected increasing ints >= 1")
    where = _declared_setup(spec, setup)
    points: list[tuple[int, Largest]] = []
    cap = limit
    for batch in sizes:
        trial = spec.replace(workload=dataclasses.replace(spec.workload, batch_size=batch))
        point = max_context(trial, setup=where, step=step, limit=cap)
        if points and cap is not None and point.value == cap and cap < points[0][1].limit:
            before = points[-1][1]  # the cap was the smaller batch's answer: its next step fails here too
            point = dataclasses.replace(point, proven=before.proven,
                                        proof=f"{before.proof} (at batch {points[-1][0]}, so at {batch} too)")
        points.append((batch, point))
        if point.value is None:
            break
        cap = point.value
    return Frontier(str(spec.model.source), where.name, tuple(points), time.perf_counter() - started)


def _check_grid(step: int, limit: int) -> None:
    for name, value in (("step", step), ("limit", limit)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidSpecError(f"{name}={value!r}; expected an int >= 1")
