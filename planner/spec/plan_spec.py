"""One :class:`PlanSpec` for a plan, three ways in: a TOML file, CLI flags (which override the
file's fields) and Python (a spec, or keyword arguments that build one).

Example spec file (``layerplan plan spec.toml``)::

    [model]
    source = "llama-2-70b"
    dtype = "float16"

    [devices]
    max_memory = { 0 = "40GiB", 1 = "40GiB", cpu = "200GiB" }
    types = { "0,1" = "a100-40gb" }
    reserve = "1GiB"

    [workload]
    batch_size = 4
    prompt_len = 2048
    max_new_tokens = 256

    [solve]
    strategy = "auto"
    objective = "latency"
    time_limit_s = 30
    pins = { lm_head = 1 }
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from layerplan.planner.spec.files import read_toml
from layerplan.planner.spec.sections import DevicesSpec, ModelSpec, OutputSpec, SolveSpec, WorkloadSpec
from layerplan.planner.spec.sizes import _did_you_mean
from layerplan.planner.spec.toml_writer import dumps
from layerplan.solver import InvalidSpecError

__all__ = ["PlanSpec"]

_SECTIONS: dict[str, type] = {
    "model": ModelSpec, "devices": DevicesSpec, "workload": WorkloadSpec, "solve": SolveSpec, "output": OutputSpec,
}

#: A spec file's ``[sweep]`` table spans many plans: it is read by ``layerplan sweep``
#: (:mod:`layerplan.planner.capacity.sweep`), which builds this spec from the other tables.
SWEEP_SECTION = "sweep"

#: Keyword names :meth:`PlanSpec.from_kwargs` also takes, as the earlier keyword API spelled them.
_ALIASES = {"device_types": ("devices", "types")}


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanSpec:
    """Everything one plan is made from, validated when built (before any model is).

    Attributes:
        model: :class:`ModelSpec` -- what to plan.
        devices: :class:`DevicesSpec` -- caps, device types, links, offload folder.
        workload: :class:`WorkloadSpec` -- batch, lengths, KV dtype, phase.
        solve: :class:`SolveSpec` -- strategy, objective, pins, partial device_map, time limit.
        output: :class:`OutputSpec` -- how the CLI writes the plan.

    Raises:
        InvalidSpecError: any section's error, or a pin on a device ``max_memory`` does not declare.
    """

    SECTIONS: ClassVar[dict[str, type]] = _SECTIONS

    model: ModelSpec
    devices: DevicesSpec = field(default_factory=DevicesSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    solve: SolveSpec = field(default_factory=SolveSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    def __post_init__(self) -> None:
        for name, section in _SECTIONS.items():
            if not isinstance(getattr(self, name), section):
                raise InvalidSpecError(f"PlanSpec {name}={getattr(self, name)!r}; expected a {section.__name__}")
        caps = self.devices.max_memory
        if caps is None:
            return
        # A device_map may name undeclared devices: a full map is evaluated with their caps at 0
        # (`layerplan evaluate`); a partial one is refused when it is read onto the graph.
        for module, device in self.solve.pins.items():
            if device not in caps:
                raise InvalidSpecError(
                    f"[solve] pins put {module!r} on device {device!r}, which is not in max_memory "
                    f"({', '.join(map(str, caps))}); add it to max_memory or use a declared device"
                )

    # -- from and to dicts / TOML --------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanSpec:
        """A spec from its dict form (the TOML file's tables).

        Raises:
            InvalidSpecError: an unknown section or key (the valid ones listed, the closest
                suggested), a ``[sweep]`` table (one plan is not a sweep), a missing ``[model]
                source``, or any field's error.
        """
        if not isinstance(data, Mapping):
            raise InvalidSpecError(f"a spec is a mapping of sections ({', '.join(_SECTIONS)}), not {type(data).__name__}")
        if SWEEP_SECTION in data:
            raise InvalidSpecError("[sweep] is read by `layerplan sweep spec.toml`, which plans every point of its "
                                   "grid; to plan one point, remove [sweep] or copy its values into [workload]")
        for name in data:
            if name not in _SECTIONS:
                raise InvalidSpecError(
                    f"unknown section [{name}]; valid sections: {', '.join(_SECTIONS)}{_did_you_mean(name, _SECTIONS)}"
                )
        model = data.get("model")
        if not isinstance(model, Mapping) or "source" not in model:
            raise InvalidSpecError("the spec has no [model] source; add [model] source = \"llama-2-7b\" "
                                   "(a catalog name, model directory, config.json or graph JSON)")
        return cls(**{name: _SECTIONS[name].from_dict(data[name]) for name in _SECTIONS if name in data})

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> PlanSpec:
        """A spec from a TOML file (see the module docstring for an example).

        Raises:
            InvalidSpecError: the file is missing or not TOML, or :meth:`from_dict` refuses it.
        """
        data = read_toml(path)
        try:
            return cls.from_dict(data)
        except InvalidSpecError as exc:
            raise InvalidSpecError(f"{os.fspath(path)}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The dict form: sections with their non-default fields, TOML-ready (no ``None``)."""
        out = {name: getattr(self, name).to_dict() for name in _SECTIONS}
        return {name: table for name, table in out.items() if table or name == "model"}

    def to_toml(self) -> str:
        """The spec as a TOML file's text; ``PlanSpec.from_toml`` of it gives an equal spec."""
        return dumps(self.to_dict())

    # -- from keyword arguments ------------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, model: Any, **kwargs: Any) -> PlanSpec:
        """A spec from the flat keyword arguments of :func:`layerplan.plan` (``max_memory=...,
        batch_size=..., strategy=...``): each name is the field of the section that has it
        (``device_types`` is ``[devices] types``; ``hardware={...}`` spreads into ``[devices]``).

        Raises:
            InvalidSpecError: an unknown keyword (closest suggested) or any field's error.
        """
        tables: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        tables["model"]["source"] = model
        hardware = kwargs.pop("hardware", None) or {}
        if not isinstance(hardware, Mapping):
            raise InvalidSpecError(f"hardware={hardware!r}; expected a mapping such as {{'interconnect': 'nvlink'}}")
        for key, value in [*dict(hardware).items(), *kwargs.items()]:
            section, name = _ALIASES.get(key) or (_section_of(key), key)
            if value is not None:
                tables[section][name] = value
        return cls(**{name: _SECTIONS[name](**table) for name, table in tables.items()})

    def replace(self, **sections: Any) -> PlanSpec:
        """A copy with whole sections replaced (``spec.replace(workload=WorkloadSpec(batch_size=8))``)."""
        return dataclasses.replace(self, **sections)


def _section_of(key: str) -> str:
    for name, section in _SECTIONS.items():
        if name != "output" and key in section.field_names() and key != "source":
            return name
    known = sorted({f for n, s in _SECTIONS.items() if n != "output" for f in s.field_names()} - {"source"} | set(_ALIASES))
    raise InvalidSpecError(f"unknown option {key!r}; valid options: {', '.join(known)}{_did_you_mean(key, known)}")
