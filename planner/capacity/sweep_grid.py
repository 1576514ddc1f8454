"""The ``[sweep]`` table of a spec file: the values of each axis, and the grid of points they span.

Example (the other tables are the base spec every point starts from)::

    [model]
    source = "llama-2-70b"

    [workload]
    max_new_tokens = 256

    [sweep]
    batch_size = [1, 4, 16]
    seq_len = [2048, 8192]
    dtype = ["bfloat16", "float16"]
    setup = ["h100-sxm*8", "a100-80gb*8+cpu=512GiB"]
    strategy = ["auto", "balanced"]

The grid is the product of the axes, in the fixed order of :data:`AXES` (the model and workload
outermost, so consecutive points share a traced graph; ``setup`` and ``strategy`` innermost). Each
value is checked on its own when the table is read, before anything is traced; a combination that
contradicts itself (``prompt_len`` past ``seq_len``) or the model (a context past its positions)
is found per point and recorded in that point's row.

Lengths: when the swept lengths and the base's together give all three of ``seq_len``,
``prompt_len`` and ``max_new_tokens``, the base's is dropped: its ``prompt_len`` under a swept
``seq_len`` (the prompt takes what the new tokens leave), else its ``seq_len``.
Without a ``setup`` axis every point runs on the spec's own ``[devices]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerplan.planner.provenance import planner_digest
from layerplan.planner.capacity.setups import Setup, parse_setup
from layerplan.planner.spec import ModelSpec, PlanSpec, Strategy, WorkloadSpec
from layerplan.planner.spec.files import read_toml
from layerplan.planner.spec.plan_spec import SWEEP_SECTION
from layerplan.planner.spec.sizes import _did_you_mean
from layerplan.solver import InvalidSpecError

__all__ = ["AXES", "DECLARED", "Point", "SweepGrid", "base_setup", "point_spec", "read_sweep"]

#: Each axis and the spec section whose field it replaces, in grid order (outermost first).
AXES: Mapping[str, str] = {
    "dtype": "model", "quantization": "model", "kv_dtype": "workload", "batch_size": "workload",
    "seq_len": "workload", "prompt_len": "workload", "max_new_tokens": "workload", "setup": "devices",
    "strategy": "solve",
}
#: The ``setup`` of a point run on the spec's own ``[devices]`` (no ``setup`` axis).
DECLARED = "declared"
_EXAMPLE = "[sweep] batch_size = [1, 4, 16]"


@dataclass(frozen=True, slots=True)
class Point:
    """One point of the grid: a value for each swept axis, in :data:`AXES` order.

    Attributes:
        index: its position in the grid (row order).
        values: ``(axis, value)`` pairs; values are canonical (``"bf16"`` read as ``"bfloat16"``).
    """

    index: int
    values: tuple[tuple[str, Any], ...]

    def get(self, axis: str, default: Any = None) -> Any:
        return dict(self.values).get(axis, default)

    @property
    def label(self) -> str:
        """``"batch_size=4 seq_len=2048 setup=h100-sxm*8"``."""
        return " ".join(f"{axis}={value}" for axis, value in self.values)

    def key(self, base: PlanSpec) -> str:
        """A stable hash of the base spec (less ``[output]``), this point's values and layerplan's
        code and library versions (:func:`~layerplan.planner.provenance.planner_digest`): the same
        in every process and run, different when the spec or layerplan changes, so a journal is
        never misread."""
        spec = {k: v for k, v in base.to_dict().items() if k != "output"}
        text = json.dumps({"spec": spec, "point": dict(self.values), "layerplan": planner_digest()},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SweepGrid:
    """The axes of a ``[sweep]`` table and their values, checked (:meth:`from_dict`).

    Attributes:
        axes: ``(axis, values)`` pairs in :data:`AXES` order; each value canonical, none repeated.
    """

    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    @classmethod
    def from_dict(cls, table: object) -> SweepGrid:
        """The grid of a ``[sweep]`` table (``{"batch_size": [1, 4], "setup": ["h100-sxm*8"]}``).

        Raises:
            InvalidSpecError: (one line, naming the axis and value) a table that is not a mapping
                or is empty, an unknown axis, an axis that is not a non-empty list, a repeated or
                invalid value.
        """
        if not isinstance(table, Mapping) or not table:
            raise InvalidSpecError(f"[sweep] must list values per axis, e.g. {_EXAMPLE}; valid axes: {', '.join(AXES)}")
        for axis in table:
            if axis not in AXES:
                raise InvalidSpecError(f"unknown [sweep] axis {axis!r}; valid axes: {', '.join(AXES)}"
                                       f"{_did_you_mean(axis, AXES)}")
        return cls(tuple((axis, _values(axis, table[axis])) for axis in AXES if axis in table))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(axis for axis, _ in self.axes)

    def __len__(self) -> int:
        count = 1
        for _, values in self.axes:
            count *= len(values)
        return count

    def points(self) -> list[Point]:
        """Every point, in grid order (the last axis varies fastest)."""
        import itertools

        names = self.names
        combos = itertools.product(*(values for _, values in self.axes))
        return [Point(i, tuple(zip(names, combo))) for i, combo in enumerate(combos)]

    def to_dict(self) -> dict[str, list[Any]]:
        return {axis: list(values) for axis, values in self.axes}


def _values(axis: str, given: object) -> tuple[Any, ...]:
    if not isinstance(given, (list, tuple)) or not given:
        raise InvalidSpecError(f"[sweep] {axis}={given!r}; expected a non-empty list of values, "
                               f"e.g. {axis} = {_EXAMPLES[axis]}")
    values = tuple(_value(axis, v) for v in given)
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise InvalidSpecError(f"[sweep] {axis} gives {repeated!r} twice; give each value once")
    return values


_EXAMPLES = {"dtype": '["bfloat16", "float16"]', "quantization": '["none", "nf4"]', "kv_dtype": '["bfloat16", "fp8"]',
             "batch_size": "[1, 4, 16]", "seq_len": "[2048, 8192]", "prompt_len": "[512, 2048]",
             "max_new_tokens": "[128, 512]", "setup": '["h100-sxm*8", "a100-80gb*8+cpu=512GiB"]',
             "strategy": '["auto", "balanced"]'}


def _value(axis: str, value: object) -> Any:
    """The canonical form of one value, checked by the section that takes it."""
    try:
        if axis == "setup":
            if not isinstance(value, str):
                raise InvalidSpecError(f"{value!r} is not a setup string such as 'h100-sxm*8+cpu=512GiB'")
            parse_setup(value)
            return value.strip()
        if axis == "strategy":
            return Strategy.parse(value).value
        if AXES[axis] == "model":
            return getattr(ModelSpec(source="-", **{axis: value}), axis)
        return getattr(WorkloadSpec(**{axis: value}), axis)
    except InvalidSpecError as exc:
        raise InvalidSpecError(f"[sweep] {axis} value {value!r}: {exc}") from None


def read_sweep(source: str | os.PathLike | Mapping[str, Any]) -> tuple[PlanSpec, SweepGrid]:
    """The base spec (every table but ``[sweep]``) and the grid of a spec file or its dict form.

    Raises:
        InvalidSpecError: the file cannot be read, has no ``[sweep]`` table, or any table is
            invalid (the file's name leads the line).
    """
    where = "" if isinstance(source, Mapping) else f"{os.fspath(source)}: "
    tables = dict(source) if isinstance(source, Mapping) else read_toml(source)
    if SWEEP_SECTION not in tables:
        raise InvalidSpecError(f"{where}the spec has no [sweep] table; add one, e.g. {_EXAMPLE}")
    table = tables.pop(SWEEP_SECTION)
    try:
        return PlanSpec.from_dict(tables), SweepGrid.from_dict(table)
    except InvalidSpecError as exc:
        raise InvalidSpecError(f"{where}{exc}") from None


def base_setup(spec: PlanSpec) -> Setup:
    """The setup of the spec's own ``[devices]`` (for a grid without a ``setup`` axis).

    Raises:
        InvalidSpecError: the spec declares no GPU in ``max_memory``.
    """
    caps = spec.devices.max_memory or {}
    if not any(k not in ("cpu", "disk") for k in caps):
        raise InvalidSpecError("the sweep needs devices: add [sweep] setup = [\"h100-sxm*8\", ...] or GPUs in "
                               "[devices] max_memory")
    return Setup.declared(spec.devices)


def point_spec(base: PlanSpec, point: Point) -> tuple[PlanSpec, Setup]:
    """The spec and setup one point is planned with: ``base`` with the point's values in place
    (lengths as the module docstring says).

    Raises:
        InvalidSpecError: the point's values contradict each other or the base spec.
    """
    values = dict(point.values)
    model = dataclasses.replace(base.model, **{a: v for a, v in values.items() if AXES[a] == "model"})
    workload = _workload(base.workload, {a: v for a, v in values.items() if AXES[a] == "workload"})
    solve = dataclasses.replace(base.solve, strategy=Strategy.parse(values.get("strategy", base.solve.strategy)))
    setup = parse_setup(values["setup"]) if "setup" in values else base_setup(base)
    return base.replace(model=model, workload=workload, solve=solve), setup


def _workload(base: WorkloadSpec, values: dict[str, Any]) -> WorkloadSpec:
    merged = {name: values.get(name, getattr(base, name)) for name in _LENGTHS}
    freed: dict[str, None] = {}
    if all(v is not None for v in merged.values()):
        order = ("prompt_len", "seq_len") if "seq_len" in values else ("seq_len", "prompt_len")
        drop = next((n for n in (*order, "max_new_tokens") if n not in values), None)
        freed = {drop: None} if drop is not None else {}
    return dataclasses.replace(base, **{**values, **freed})


_LENGTHS = ("seq_len", "prompt_len", "max_new_tokens")
