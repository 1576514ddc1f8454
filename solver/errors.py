"""The one exception hierarchy of layerplan (modelled on Hypothesis ``errors.py``).

It lives in ``solver/`` because ``solver/`` is the bottom layer: ``planner/`` re-exports it.
"""

from __future__ import annotations

__all__ = ["LayerplanError", "InvalidSpecError", "TraceError", "InfeasiblePlanError"]


class LayerplanError(Exception):
    """Base class of every error layerplan raises on purpose."""


class InvalidSpecError(LayerplanError, ValueError):
    """The user's input is malformed or contradictory; the message names the value and the fix."""


class TraceError(LayerplanError):
    """The model could not be built or run on the meta device."""


class InfeasiblePlanError(LayerplanError):
    """No placement satisfies the caps, pins and tied groups.

    Attributes:
        missing_bytes: bytes by which the total demand exceeds the total capacity (0 when the
            totals fit but the structure does not, e.g. one node larger than every cap).
        node: name of a node that fits on no device by itself, or ``None``.
        extra_bytes: device name -> the least extra bytes on it that make the problem fit
            (:func:`layerplan.solver.cpsat.least_extra_memory`); empty when not computed or not found.
    """

    def __init__(
        self,
        message: str,
        *,
        missing_bytes: int = 0,
        node: str | None = None,
        extra_bytes: dict[str, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing_bytes = missing_bytes
        self.node = node
        self.extra_bytes = dict(extra_bytes or {})
