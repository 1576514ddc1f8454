"""The tidy table of a sweep: one :class:`SweepRow` per point, written as CSV and JSON, and the
journal that makes a sweep resumable.

In the CSV each row is one line; the per-device columns (``devices``, ``used_bytes``,
``cap_bytes``) hold JSON lists, so :func:`read_csv` gives back rows equal to those written.
The journal (``points.jsonl``) gets one JSON line per finished point, keyed by
:meth:`~layerplan.planner.capacity.sweep_grid.Point.key`; a line cut short by an interrupted
write is ignored when read.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerplan.solver import InvalidSpecError

__all__ = ["ERROR", "Journal", "SweepRow", "read_csv", "write_csv"]

#: The status of a point that could not be planned (a trace error, a contradictory combination).
ERROR = "error"


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepRow:
    """One point of a sweep and what its plan says.

    The workload columns are the ones the point was traced at (the model's defaults resolved:
    ``seq_len`` is the context, prompt + new tokens); for a point that failed before tracing,
    the declared values (None where left to the defaults).

    Attributes:
        index: position in the grid (row order).
        key: the point's stable hash (the journal's key).
        setup: the setup as written in ``[sweep] setup``, or ``"declared"`` (the spec's ``[devices]``).
        strategy: the strategy solved.
        dtype, quantization, kv_dtype: the model's dtype, quantization method, KV-cache dtype.
        batch_size: sequences; seq_len, prompt_len, max_new_tokens: tokens.
        status: ``"fits"``, ``"infeasible"``, ``"bound"``, ``"unknown"`` (the probe's verdict,
            :mod:`layerplan.planner.capacity.probe`) or ``"error"``.
        fits: a plan was found.
        message: the solver status of a plan, the proof that none exists, or the error; one line.
        devices: each device of the plan (``"0"``, ``"cpu"``, ...); empty when it does not fit.
        used_bytes, cap_bytes: per device of ``devices``, bytes held at peak and the cap.
        offloaded_bytes: weight bytes on cpu/disk; None when it does not fit.
        ms_per_token: the cost model's milliseconds per generated token; None when it does not fit.
        plan_seconds: wall time of the solve, seconds (not tracing; 0 for a memory bound).
    """

    index: int
    key: str
    setup: str
    strategy: str
    dtype: str | None = None
    quantization: str | None = None
    kv_dtype: str | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    prompt_len: int | None = None
    max_new_tokens: int | None = None
    status: str
    fits: bool
    message: str = ""
    devices: tuple[str, ...] = ()
    used_bytes: tuple[int, ...] = ()
    cap_bytes: tuple[int, ...] = ()
    offloaded_bytes: int | None = None
    ms_per_token: float | None = None
    plan_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        return {f: list(v) if isinstance(v, tuple) else v for f, v in _items(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepRow:
        """A row from :meth:`to_dict`'s form. Raises InvalidSpecError for a missing or unknown column."""
        missing = [f for f in _REQUIRED if f not in data]
        unknown = [k for k in data if k not in COLUMNS]
        if missing or unknown:
            raise InvalidSpecError(f"a sweep row lacks {missing} or has unknown columns {unknown}; "
                                   f"expected {', '.join(COLUMNS)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_record(self) -> dict[str, str]:
        """The row as CSV cells: None as an empty cell, the per-device lists as JSON."""
        return {f: _cell(v) for f, v in _items(self)}

    @classmethod
    def from_record(cls, record: dict[str, str]) -> SweepRow:
        """The row of one CSV line (:meth:`to_record`'s inverse)."""
        return cls.from_dict({k: _PARSE[k](v) for k, v in record.items()})

    def same_answer(self, other: SweepRow) -> bool:
        """Equal in every column but :attr:`plan_seconds` (what a rerun may change)."""
        return dataclasses.replace(self, plan_seconds=0.0) == dataclasses.replace(other, plan_seconds=0.0)


def _items(row: SweepRow) -> list[tuple[str, Any]]:
    return [(f, getattr(row, f)) for f in COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return str(value)


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: parse(text) if text != "" else None


_PARSE: dict[str, Callable[[str], Any]] = {
    "index": int, "key": str, "setup": str, "strategy": str, "dtype": _optional(str),
    "quantization": _optional(str), "kv_dtype": _optional(str), "batch_size": _optional(int),
    "seq_len": _optional(int), "prompt_len": _optional(int), "max_new_tokens": _optional(int), "status": str,
    "fits": lambda text: text == "True", "message": str, "devices": json.loads, "used_bytes": json.loads,
    "cap_bytes": json.loads, "offloaded_bytes": _optional(int), "ms_per_token": _optional(float),
    "plan_seconds": float,
}
#: The table's columns, in order.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SweepRow))
_REQUIRED = tuple(f.name for f in dataclasses.fields(SweepRow)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
assert set(_PARSE) == set(COLUMNS)


def write_csv(rows: Iterable[SweepRow], path: str | os.PathLike) -> Path:
    """Write ``rows`` as CSV (a header of :data:`COLUMNS`, then one line per row); returns the path."""
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(row.to_record() for row in rows)
    return Path(path)


def read_csv(path: str | os.PathLike) -> list[SweepRow]:
    """The rows of a ``sweep.csv`` written by :func:`write_csv`, in file order.

    Raises:
        InvalidSpecError: the file is missing, or its columns are not a sweep table's.
    """
    try:
        with open(path, encoding="utf-8", newline="") as file:
            return [SweepRow.from_record(record) for record in csv.DictReader(file)]
    except FileNotFoundError:
        raise InvalidSpecError(f"sweep table {os.fspath(path)!r} does not exist") from None


class Journal:
    """The finished points of a sweep, one JSON line each, appended as they finish.

    Args:
        folder: the sweep's output folder; the journal is ``folder/points.jsonl``.
    """

    NAME = "points.jsonl"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / self.NAME

    def read(self) -> dict[str, SweepRow]:
        """Finished rows by key (a later line for a key wins; unreadable lines are skipped)."""
        if not self.path.exists():
            return {}
        rows: dict[str, SweepRow] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = SweepRow.from_dict(json.loads(line))
            except (ValueError, TypeError, InvalidSpecError):
                continue  # cut short by an interrupted write, or not a row
            rows[row.key] = row
        return rows

    def append(self, row: SweepRow) -> None:
        """Add one finished row (one line, flushed, so an interruption loses at most this one)."""
        with open(self.path, "a+b") as file:
            file.seek(0, os.SEEK_END)
            if file.tell():  # a line cut short by an interruption is ended, not continued
                file.seek(-1, os.SEEK_END)
                torn = file.read(1) != b"\n"
                file.seek(0, os.SEEK_END)
                file.write(b"\n" if torn else b"")
            file.write((json.dumps(row.to_dict()) + "\n").encode())
            file.flush()
            os.fsync(file.fileno())
