"""What a placement is optimised for: the objectives, their lexicographic phases and their scores.

Each :class:`Goal` is a lexicographic list of integer *measures* (minimised one after the other, each
later one among the placements optimal for the earlier ones). The *headline* measure is the one
the goal is named after; a FEASIBLE solution's bound and gap refer to it.

Measures (all integers, so CP-SAT and :func:`score` agree exactly):

* ``offload_cost``: offloaded bytes x per-byte cost of their device (:func:`layerplan.solver.problem.evaluate`);
* ``transfer_bytes``: bytes crossing device boundaries per forward pass (same);
* ``time_ns``: estimated time of the whole workload, prefill plus every decode step
  (:func:`layerplan.solver.cost.timing` ``total_ns``); minimising it minimises the time per generated token;
* ``bottleneck_ns``: the busiest device's share of that time (``Timing.bottleneck_ns``): a pipeline
  of micro-batches runs at the pace of its slowest stage;
* ``max_utilisation``: the largest ``used / cap`` over the devices that compute, in units of
  1/:data:`UTILISATION_SCALE`, rounded up (``used`` is the full accounting of
  :mod:`layerplan.solver.accounting`).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Sequence

from layerplan.solver.accounting import device_loads
from layerplan.solver.cost import CostModel, timing
from layerplan.solver.errors import InvalidSpecError
from layerplan.solver.problem import PlacementProblem, evaluate

__all__ = ["UTILISATION_SCALE", "Goal", "Measure", "max_utilisation", "score", "scores"]

#: ``max_utilisation`` is measured in 1/10000 of a device's cap (0.01 %).
UTILISATION_SCALE = 10_000


class Measure(str, enum.Enum):
    """One integer measure of a placement (see the module docstring). A ``str`` enum: a member
    equals its name (``Measure.TIME_NS == "time_ns"``), so solution values keyed by measure read
    back from JSON."""

    OFFLOAD_COST = "offload_cost"
    TRANSFER_BYTES = "transfer_bytes"
    TIME_NS = "time_ns"
    BOTTLENECK_NS = "bottleneck_ns"
    MAX_UTILISATION = "max_utilisation"

    def __str__(self) -> str:
        return self.value


class Goal(enum.Enum):
    """An objective: what the solver minimises, as lexicographic measures (see the module docstring).

    * ``LATENCY``: time per generated token under the cost model, then max utilisation (among
      equally fast plans, the one with the most headroom);
    * ``THROUGHPUT``: the slowest device's time (pipelined batches), then the total time;
    * ``BALANCED``: offload cost, then the largest utilisation, then transfer bytes;
    * ``TRANSFERS``: offload cost, then bytes crossing cuts.
    """

    LATENCY = "latency"
    THROUGHPUT = "throughput"
    BALANCED = "balanced"
    TRANSFERS = "transfers"

    @classmethod
    def parse(cls, value: Goal | str) -> Goal:
        """A Goal from itself or its name. Raises InvalidSpecError for an unknown name."""
        if isinstance(value, Goal):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = [g.value for g in cls]
            close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidSpecError(f"unknown objective {value!r}; expected one of {', '.join(names)}{hint}") from None

    @property
    def measures(self) -> tuple[Measure, ...]:
        """Measure names, minimised in this order."""
        return _MEASURES[self]

    @property
    def headline(self) -> Measure:
        """The measure the goal is named after (its bound and gap are reported)."""
        return _HEADLINE[self]

    @property
    def needs_cost(self) -> bool:
        """Whether a :class:`~layerplan.solver.cost.CostModel` is required."""
        return any(m in _TIMED for m in self.measures)


_MEASURES = {
    Goal.LATENCY: (Measure.TIME_NS, Measure.MAX_UTILISATION),
    Goal.THROUGHPUT: (Measure.BOTTLENECK_NS, Measure.TIME_NS),
    Goal.BALANCED: (Measure.OFFLOAD_COST, Measure.MAX_UTILISATION, Measure.TRANSFER_BYTES),
    Goal.TRANSFERS: (Measure.OFFLOAD_COST, Measure.TRANSFER_BYTES),
}
_HEADLINE = {
    Goal.LATENCY: Measure.TIME_NS,
    Goal.THROUGHPUT: Measure.BOTTLENECK_NS,
    Goal.BALANCED: Measure.MAX_UTILISATION,
    Goal.TRANSFERS: Measure.TRANSFER_BYTES,
}
_TIMED = (Measure.TIME_NS, Measure.BOTTLENECK_NS)


def balance_devices(problem: PlacementProblem) -> tuple[int, ...]:
    """Devices whose utilisation is balanced: those that compute (accelerators, or the CPU alone)."""
    return tuple(d for d in problem.computing_devices if problem.devices[d].cap_bytes > 0)


def max_utilisation(problem: PlacementProblem, assignment: Sequence[int]) -> int:
    """``max over balance devices of ceil(UTILISATION_SCALE * used / cap)`` (see the module docstring)."""
    loads = device_loads(problem, assignment)
    return max(
        (-(-UTILISATION_SCALE * loads[d].total // problem.devices[d].cap_bytes) for d in balance_devices(problem)),
        default=0,
    )


def score(
    problem: PlacementProblem, assignment: Sequence[int], measure: Measure | str, cost: CostModel | None = None
) -> int:
    """The value of one measure (see the module docstring) for ``assignment``.

    Raises:
        InvalidSpecError: a timed measure without a cost model, or an unknown measure.
    """
    measure = _parse_measure(measure)
    return scores(problem, assignment, (measure,), cost)[measure]


def scores(
    problem: PlacementProblem, assignment: Sequence[int], measures: Iterable[Measure | str],
    cost: CostModel | None = None,
) -> dict[Measure, int]:
    """:func:`score` of each of ``measures``, evaluating and timing ``assignment`` once at most.

    Raises:
        InvalidSpecError: see :func:`score`.
    """
    out: dict[Measure, int] = {}
    objective = times = None
    for name in measures:
        measure = _parse_measure(name)
        if measure in (Measure.OFFLOAD_COST, Measure.TRANSFER_BYTES):
            objective = objective or evaluate(problem, assignment)
            out[measure] = getattr(objective, measure.value)
        elif measure is Measure.MAX_UTILISATION:
            out[measure] = max_utilisation(problem, assignment)
        elif cost is None:  # the rest are timed
            raise InvalidSpecError(f"measure {measure.value!r} needs a cost model (device speeds and node work)")
        else:
            times = times or timing(problem, cost, assignment)
            out[measure] = times.total_ns if measure is Measure.TIME_NS else times.bottleneck_ns
    return out


def _parse_measure(measure: Measure | str) -> Measure:
    try:
        return Measure(measure)
    except ValueError:
        raise InvalidSpecError(f"unknown measure {measure!r}; expected one of {', '.join(m.value for m in Measure)}") from None
