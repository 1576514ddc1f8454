"""accelerate's ``device_map`` strategies, as layerplan solves them.

accelerate (``from_pretrained(device_map=...)``) fills devices greedily; layerplan solves each
strategy to optimality under the same rules plus runtime memory:

========================  ================================================  ==================
strategy                  rule added to the placement problem               default objective
========================  ================================================  ==================
``"auto"``                none: any accelerator may hold any block          ``latency``
``"balanced"``            none                                              ``balanced``
``"balanced_low_0"``      GPU 0 stores no more than any other GPU           ``balanced``
                          (``PlacementProblem.low_zero``)
``"sequential"``          blocks follow the device order (``ordered``),     ``latency``
                          as accelerate fills GPU 0, then GPU 1, ...
========================  ================================================  ==================

``{"": 0}``, ``{"": "cpu"}`` and any other full ``device_map`` are evaluated, not solved; a
partial one pins the modules it names and the rest is solved.
"""

from __future__ import annotations

import enum

from layerplan.planner.spec.sizes import _did_you_mean
from layerplan.solver import Goal, InvalidSpecError

__all__ = ["Strategy"]


class Strategy(enum.Enum):
    """One of accelerate's string ``device_map`` values (see the module docstring)."""

    AUTO = "auto"
    BALANCED = "balanced"
    BALANCED_LOW_0 = "balanced_low_0"
    SEQUENTIAL = "sequential"

    @classmethod
    def parse(cls, value: Strategy | str) -> Strategy:
        """A Strategy from itself or its name. Raises InvalidSpecError for an unknown name."""
        if isinstance(value, Strategy):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = [s.value for s in cls]
            raise InvalidSpecError(
                f"unknown strategy {value!r}; expected one of {', '.join(names)} "
                f"(or give a device_map dict / --device-map FILE.json){_did_you_mean(str(value), names)}"
            ) from None

    @property
    def default_goal(self) -> Goal:
        return Goal.BALANCED if self in (Strategy.BALANCED, Strategy.BALANCED_LOW_0) else Goal.LATENCY

    @property
    def ordered(self) -> bool:
        """Accelerator blocks must follow the device order."""
        return self is Strategy.SEQUENTIAL

    @property
    def low_zero(self) -> bool:
        """GPU 0 stores no more weight bytes than any other GPU."""
        return self is Strategy.BALANCED_LOW_0
