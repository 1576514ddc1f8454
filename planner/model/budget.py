"""A time budget for tracing: the meta/FakeTensor forwards check it on every op, so a model whose
forward runs for minutes under the recorders (a state-space model's Python scan loop over every
token) stops and falls back to the config estimate with a note, instead of hanging."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

__all__ = ["DEFAULT_TRACE_TIME_LIMIT_S", "TraceBudgetExceeded", "check", "expired", "time_budget"]

#: Seconds a trace (prefill trace + memory measurement, all retries) may take by default.
DEFAULT_TRACE_TIME_LIMIT_S = 120.0

_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("trace_deadline", default=None)


class TraceBudgetExceeded(Exception):
    """Raised inside a traced forward once its time budget is spent (caught by the tracer)."""


@contextlib.contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Ops run under :func:`check` inside this block raise :class:`TraceBudgetExceeded` after
    ``seconds`` (None: no budget)."""
    token = _DEADLINE.set(None if seconds is None else (time.perf_counter() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def expired() -> bool:
    """Whether the current budget is spent."""
    deadline = _DEADLINE.get()
    return deadline is not None and time.perf_counter() > deadline[0]


def check() -> None:
    """Raise :class:`TraceBudgetExceeded` when the current budget is spent (one clock read)."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.perf_counter() > deadline[0]:
        raise TraceBudgetExceeded(f"the trace ran past its time limit of {deadline[1]:g} s")
