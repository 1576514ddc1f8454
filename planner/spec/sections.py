"""The sections of a :class:`~layerplan.planner.spec.PlanSpec`, one dataclass per concern
(torchtitan's ``JobConfig`` shape): the model, the devices, the workload, the solve, the output.

Every section is frozen and keyword-only; ``__post_init__`` validates and normalises every field
(sizes to ``int`` bytes, device keys as accelerate names them, dtype and preset names canonical)
without importing torch or building a model, so a mistake is reported in milliseconds. Mappings
given by the caller are copied, never kept or changed. ``to_dict`` gives the TOML-ready form
(string keys, no ``None``); ``from_dict(to_dict(s)) == s``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from layerplan.planner.hardware.network import host_of_devices, parse_hosts, resolve_network
from layerplan.planner.hardware.parsing import (
    OVERRIDE_FIELDS,
    parse_bandwidth,
    parse_device_types,
    parse_links,
    parse_override,
)
from layerplan.planner.spec.files import load_device_map
from layerplan.planner.spec.paths import check_folder
from layerplan.planner.spec.quantization import quantization_name
from layerplan.planner.spec.sizes import (
    _did_you_mean,
    _is_integer,
    dtype_name,
    parse_device,
    parse_max_memory,
    parse_size,
)
from layerplan.planner.spec.strategies import Strategy
from layerplan.solver import Goal, InvalidSpecError

__all__ = ["DevicesSpec", "ModelSpec", "OutputSpec", "Phase", "SolveSpec", "WorkloadSpec", "device_label"]


class Phase(enum.Enum):
    """Which part of ``generate()`` the memory must hold.

    ``PREFILL``: one forward over the whole prompt; ``DECODE``: one token at a time against a KV
    cache of the full context; ``GENERATE`` (default): both, so every device must hold the larger
    of the two.
    """

    PREFILL = "prefill"
    DECODE = "decode"
    GENERATE = "generate"


ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
INTERCONNECTS = ("auto", "nvlink", "pcie")
FORMATS = ("table", "json")


def device_label(device: int | str) -> str:
    """A device key as a TOML / JSON key: ``0`` -> ``"0"``, ``"cpu"`` -> ``"cpu"``."""
    return str(device)


def _choice(value: object, choices: tuple[str, ...], *, what: str) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else value
    if text not in choices:
        raise InvalidSpecError(
            f"{what}={value!r} is not one of {', '.join(choices)}{_did_you_mean(str(value), choices)}"
        )
    return text  # type: ignore[return-value]


def _mapping(value: object, *, what: str, example: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise InvalidSpecError(f"{what}={value!r} is a {type(value).__name__}; expected a mapping, e.g. {example}")
    return value


def _count(value: object, *, what: str, low: int) -> int | None:
    """An optional integer >= ``low`` (numpy ints accepted, bools and floats refused)."""
    if value is None:
        return None
    if not _is_integer(value) or int(value) < low:  # type: ignore[call-overload]
        raise InvalidSpecError(f"{what}={value!r}; expected an integer >= {low}")
    return int(value)  # type: ignore[call-overload]


def _seconds(value: object, *, what: str) -> float:
    """A finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise InvalidSpecError(f"{what}={value!r}; expected a number of seconds > 0")
    return float(value)


def _short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error about a big object stays one line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]} ({type(value).__name__})"


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


class _Section:
    """``to_dict`` / ``from_dict`` shared by the sections (fields named as in the TOML file)."""

    __slots__ = ()

    #: The section's name in a spec file (``[model]``).
    NAME: ClassVar[str] = ""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """The section from its TOML table. Raises InvalidSpecError naming an unknown key."""
        data = _mapping(data, what=f"[{cls.NAME}]", example="{...}")
        for key in data:
            if key not in cls.field_names():
                raise InvalidSpecError(
                    f"unknown key {key!r} in [{cls.NAME}]; valid keys: {', '.join(cls.field_names())}"
                    f"{_did_you_mean(key, cls.field_names())}"
                )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """TOML-ready: fields left at ``None`` are omitted, enums by value, device keys as strings."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            value = _plain(getattr(self, name))
            if value is not None and value != {} and value != []:
                out[name] = value
        return out


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {device_label(k) if not isinstance(k, tuple) else "-".join(map(str, k)): _plain(v)
                for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec(_Section):
    """``[model]``: what to plan.

    Attributes:
        source: a catalog name (``layerplan models``), a directory holding ``config.json``, a
            transformers config file (any name: its content is sniffed), a Hub id in the local
            cache, or a graph JSON from ``layerplan trace``. From Python also an ``nn.Module`` or a
            ``LayerGraph`` (those are not written by ``to_dict``).
        dtype: weight and activation dtype (``"bfloat16"``, ``"fp16"``, ...); None: the
            checkpoint's published dtype, else float32.
        no_split_module_classes: classes kept whole besides the model's ``_no_split_modules``.
        quantization: how the weights are stored when loaded: a name of
            :data:`layerplan.planner.spec.quantization.METHODS` (``"nf4"``, ``"int8"``,
            ``"gptq-4bit"``, ``"awq-4bit"``, ``"fp8"``, ``"mxfp4"``, ...) to plan "this model if I load
            it quantized", ``"none"`` to ignore the checkpoint's ``quantization_config``; None: the
            checkpoint's own quantization, if any.
        trace_time_limit_s: seconds the meta/FakeTensor forwards may take (> 0); past it the rest
            is estimated from the config, with a note (:mod:`layerplan.planner.model.budget`).
        cache: read and write traced graphs in the graph cache (:mod:`layerplan.planner.model.cache`).
        cache_dir: the cache folder; None: ``$LAYERPLAN_CACHE_DIR``, else ``~/.cache/layerplan/graphs``.
    """

    NAME: ClassVar[str] = "model"

    source: Any
    dtype: str | None = None
    no_split_module_classes: tuple[str, ...] = ()
    quantization: str | None = None
    trace_time_limit_s: float = 120.0
    cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            _set(self, "source", os.fspath(self.source))
        if isinstance(self.source, str):
            if not self.source.strip():
                raise InvalidSpecError(
                    "[model] source is empty; give a catalog name, a model directory or a config.json"
                )
        elif self.source is None or isinstance(self.source, (int, float, bool, Mapping, list, tuple)):
            raise InvalidSpecError(
                f"[model] source={_short_repr(self.source)}; expected a catalog name, a model directory, a "
                "config.json path, a Hub id or a graph JSON (from Python also an nn.Module or a LayerGraph)"
            )
        if self.dtype is not None:
            _set(self, "dtype", dtype_name(self.dtype, what="[model] dtype"))
        classes = self.no_split_module_classes
        if isinstance(classes, str):
            classes = (classes,)
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) and c for c in classes):
            raise InvalidSpecError(
                f"[model] no_split_module_classes={self.no_split_module_classes!r}; expected a list of class names"
            )
        _set(self, "no_split_module_classes", tuple(dict.fromkeys(classes)))
        if self.quantization is not None:
            _set(self, "quantization", quantization_name(self.quantization))
        _set(self, "trace_time_limit_s", _seconds(self.trace_time_limit_s, what="[model] trace_time_limit_s"))
        if not isinstance(self.cache, bool):
            raise InvalidSpecError(f"[model] cache={self.cache!r}; expected true or false")
        if self.cache_dir is not None:
            _set(self, "cache_dir", check_folder(self.cache_dir, what="[model] cache_dir"))

    def to_dict(self) -> dict[str, Any]:
        out = _Section.to_dict(self)
        if not isinstance(self.source, str):
            out["source"] = f"<{type(self.source).__name__}>"  # a Python object: not reproducible from text
        return out


def _overrides(value: object) -> dict[int | str, dict[str, float | int]]:
    """``{device: {field: value}}`` with every value parsed (:func:`parse_override`)."""
    out: dict[int | str, dict[str, float | int]] = {}
    for key, table in _mapping(value, what="[devices] overrides", example="{0: {'flops_per_s': '989TFLOPS'}}").items():
        fields_ = _mapping(table, what=f"overrides[{key!r}]", example=f"{{{OVERRIDE_FIELDS[0]!r}: ...}}")
        out[parse_device(key)] = {name: parse_override(key, name, v) for name, v in fields_.items()}
    return out


def _rate_name(value: object, *, what: str) -> str | float | None:
    """A host link / disk read as given (a preset name or a rate), checked by :func:`parse_bandwidth`."""
    if value is None:
        return None
    parse_bandwidth(value, what=what)  # type: ignore[arg-type]
    return value.strip() if isinstance(value, str) else float(value)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True, slots=True)
class DevicesSpec(_Section):
    """``[devices]``: where the model may go, and how fast it runs there.

    Attributes:
        max_memory: device -> cap in bytes (accelerate's ``max_memory``: ``0``, ``"cpu"``,
            ``"disk"``, ``"mps"``, ``"xpu:0"``; sizes as ``"40GiB"``, ``"40GB"`` or ints), in
            accelerate's device order; None detects this machine's (``get_max_memory``).
        types: GPU -> accelerator preset (``layerplan devices``); a key may list several, ``"0,1"``.
        reserve: bytes kept free per computing device (CUDA context, allocator slack): None is
            1 GiB per accelerator and 0 on cpu/disk; one size for every accelerator; or per device.
        interconnect: GPU-GPU links: ``"auto"``, ``"nvlink"`` or ``"pcie"``.
        links: device pair -> ``"nvlink"``, ``"pcie"`` or bytes/s, overriding ``interconnect``.
        host_link: the CPU-GPU link (``"pcie4"``, ``"25GB/s"``); None: each GPU's own.
        disk_read: the offload drive's read speed (``"nvme-gen4"``, ``"3GB/s"``).
        hosts: device -> host for a device set on several hosts (``{"0-7": "node-a", "8-15":
            "node-b"}``; :func:`layerplan.planner.hardware.network.parse_hosts`); every GPU needs
            one, ``cpu``/``disk`` belong to the first GPU's host. Such a plan exports to pipeline
            engines (``--export vllm``), not to one process's accelerate ``device_map``.
        inter_host: the network between hosts (``"ib-ndr"``, ``"roce-200g"``, ``"50GB/s"``;
            :data:`layerplan.planner.hardware.network.INTER_HOST_LINKS`).
        overrides: device -> ``{flops_per_s, mem_bytes_per_s, memory_bytes, read_bytes_per_s}``.
        offload_folder: where ``from_pretrained`` writes disk-offloaded weights; must be a
            directory or creatable as one (it is not created here).
        calibration: a calibration profile (JSON, ``layerplan calibrate --calibration-out``) whose
            measured figures replace the presets' in the cost model (the user's ``overrides``
            win); read once here, so a bad file is an error before any tracing.

    Raises:
        InvalidSpecError: a bad size, device key, preset or rate; a type, reserve, link or override
            for a device ``max_memory`` does not declare; an offload folder that is a file.
    """

    NAME: ClassVar[str] = "devices"

    max_memory: Mapping[int | str, int] | None = None
    types: Mapping[int | str, str] = field(default_factory=dict)
    reserve: int | Mapping[int | str, int] | None = None
    interconnect: str = "auto"
    links: Mapping[tuple[int | str, int | str], float | str] = field(default_factory=dict)
    host_link: str | float | None = None
    disk_read: str | float | None = None
    hosts: Mapping[int | str, str] = field(default_factory=dict)
    inter_host: str | float | None = None
    overrides: Mapping[int | str, Mapping[str, float | int]] = field(default_factory=dict)
    offload_folder: str | None = None
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.max_memory is not None:
            _set(self, "max_memory", parse_max_memory(self.max_memory))
        types = _mapping(self.types, what="[devices] types", example="{'0,1': 'a100-40gb'}")
        _set(self, "types", parse_device_types(types))
        if isinstance(self.reserve, Mapping):
            reserve = {parse_device(k): parse_size(v, what=f"reserve[{k!r}]") for k, v in self.reserve.items()}
            _set(self, "reserve", reserve or None)  # an empty mapping keeps the defaults, as None does
        elif self.reserve is not None:
            _set(self, "reserve", parse_size(self.reserve, what="reserve"))
        _set(self, "interconnect", _choice(self.interconnect, INTERCONNECTS, what="[devices] interconnect"))
        _set(self, "links", parse_links(_mapping(self.links, what="[devices] links", example="{'0-1': 'nvlink'}")))
        _set(self, "host_link", _rate_name(self.host_link, what="[devices] host_link"))
        _set(self, "disk_read", _rate_name(self.disk_read, what="[devices] disk_read"))
        _set(self, "overrides", _overrides(self.overrides))
        _set(self, "hosts", parse_hosts(_mapping(self.hosts, what="[devices] hosts", example="{'0-7': 'node-a'}")))
        if self.inter_host is not None:
            resolve_network(self.inter_host)
            _set(self, "inter_host", self.inter_host.strip() if isinstance(self.inter_host, str) else float(self.inter_host))
        if self.offload_folder is not None:
            _set(self, "offload_folder", check_folder(self.offload_folder, what="offload_folder"))
        if self.calibration is not None:
            from layerplan.planner.calibrate.profile import CalibrationProfile  # torch-free

            CalibrationProfile.load(self.calibration)
            _set(self, "calibration", os.fspath(self.calibration))
        self._check_declared()
        if self.hosts and self.max_memory is not None:
            host_of_devices(list(self.max_memory), self.hosts)  # every GPU has a host, offload on the first's

    def _check_declared(self) -> None:
        """Every device named outside ``max_memory`` is declared in it (when caps are given)."""
        if self.max_memory is None:
            return
        declared = list(self.max_memory)
        named = [("types", k) for k in self.types]
        named += [("reserve", k) for k in (self.reserve if isinstance(self.reserve, Mapping) else ())]
        named += [("links", k) for pair in self.links for k in pair]
        named += [("overrides", k) for k in self.overrides]
        named += [("hosts", k) for k in self.hosts]
        for what, key in named:
            if key not in declared:
                raise InvalidSpecError(
                    f"[devices] {what} names device {key!r}, which max_memory does not declare "
                    f"({', '.join(map(str, declared))}); add it to max_memory or drop it from {what}"
                )

    @property
    def hardware(self) -> dict[str, Any]:
        """The keyword arguments of :func:`layerplan.planner.hardware.build_hardware` this section gives."""
        return {"device_types": dict(self.types), "interconnect": self.interconnect, "links": dict(self.links),
                "host_link": self.host_link, "disk_read": self.disk_read, "overrides": dict(self.overrides),
                "hosts": dict(self.hosts), "inter_host": self.inter_host}

    @property
    def host_names(self) -> tuple[str, ...]:
        """The declared hosts, in order of first appearance; empty on one undeclared host."""
        return tuple(dict.fromkeys(self.hosts.values()))


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadSpec(_Section):
    """``[workload]``: what will run on the placed model (lengths in tokens).

    Fields left at None take the defaults of :meth:`layerplan.planner.model.workload.Workload.from_lengths`
    (context = the model's, at most 4096; 256 new tokens, at most a quarter of it), which need the
    model's config: the resolved workload is the traced graph's ``workload``.

    Attributes:
        batch_size: sequences per forward pass (default 1).
        seq_len: total context per sequence, prompt + new tokens.
        prompt_len: prompt tokens (prefill length).
        max_new_tokens: tokens ``generate()`` adds (decode steps); 0 for one forward.
        kv_dtype: KV-cache dtype (default: the model's dtype).
        attn_implementation: ``"sdpa"`` or ``"eager"`` (default: transformers' choice).
        phase: ``"prefill"``, ``"decode"`` or ``"generate"`` (default).
        prefill_logits: size prefill logits for every prompt position (default False).
        images_per_prompt: images each prompt carries, for a vision-language model (default 1
            there; 0 traces its text decoder alone). Their placeholder tokens are part of
            ``prompt_len``, as in the ``input_ids`` the model's processor expands.

    Raises:
        InvalidSpecError: a length below its minimum, lengths that contradict each other, an
            unknown dtype, attention implementation or phase.
    """

    NAME: ClassVar[str] = "workload"

    batch_size: int | None = None
    seq_len: int | None = None
    prompt_len: int | None = None
    max_new_tokens: int | None = None
    kv_dtype: str | None = None
    attn_implementation: str | None = None
    phase: Phase | None = None
    prefill_logits: bool | None = None
    images_per_prompt: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("seq_len", 1), ("prompt_len", 1), ("max_new_tokens", 0),
                          ("images_per_prompt", 0)):
            _set(self, name, _count(getattr(self, name), what=f"[workload] {name}", low=low))
        if None not in (self.seq_len, self.prompt_len, self.max_new_tokens) and \
                self.prompt_len + self.max_new_tokens != self.seq_len:  # type: ignore[operator]
            raise InvalidSpecError(
                f"seq_len={self.seq_len} but prompt_len + max_new_tokens = {self.prompt_len} + "
                f"{self.max_new_tokens}; give seq_len or the two lengths, not all three"
            )
        if self.seq_len is not None and self.prompt_len is not None and self.prompt_len >= self.seq_len:
            raise InvalidSpecError(
                f"prompt_len={self.prompt_len} leaves no room in seq_len={self.seq_len}; "
                "raise seq_len or lower prompt_len"
            )
        if self.kv_dtype is not None:
            _set(self, "kv_dtype", dtype_name(self.kv_dtype, what="[workload] kv_dtype"))
        if self.attn_implementation is not None:
            _set(self, "attn_implementation", _choice(self.attn_implementation, ATTENTION_IMPLEMENTATIONS,
                                                      what="[workload] attn_implementation"))
        if self.phase is not None and not isinstance(self.phase, Phase):
            _set(self, "phase", Phase(_choice(self.phase, tuple(p.value for p in Phase), what="[workload] phase")))
        if self.prefill_logits is not None and not isinstance(self.prefill_logits, bool):
            raise InvalidSpecError(f"[workload] prefill_logits={self.prefill_logits!r}; expected true or false")


def _pins(value: object, *, what: str) -> dict[str, int | str]:
    pins = _mapping(value, what=what, example="{'lm_head': 1}")
    out: dict[str, int | str] = {}
    for module, device in pins.items():
        if not isinstance(module, str):
            raise InvalidSpecError(f"{what} key {module!r} is not a module name; write e.g. {{'lm_head': 1}}")
        out[module] = parse_device(device)
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class SolveSpec(_Section):
    """``[solve]``: how to place.

    Attributes:
        strategy: ``"auto"``, ``"balanced"``, ``"balanced_low_0"`` or ``"sequential"``
            (:class:`~layerplan.planner.spec.strategies.Strategy`).
        objective: ``"latency"``, ``"throughput"``, ``"balanced"`` or ``"transfers"``; None: the
            strategy's.
        pins: module (or prefix such as ``"model.layers"``) -> device.
        device_map: a full device_map (evaluated as is) or a partial one (its modules pinned, the
            rest solved), module -> device; a JSON file path is read here.
        time_limit_s: CP-SAT wall-clock limit in seconds (> 0).

    Raises:
        InvalidSpecError: an unknown strategy or objective, a pin or map value that is not a
            device, the same module in ``pins`` and ``device_map`` on two devices, a time limit <= 0.
    """

    NAME: ClassVar[str] = "solve"

    strategy: Strategy = Strategy.AUTO
    objective: Goal | None = None
    pins: Mapping[str, int | str] = field(default_factory=dict)
    device_map: Mapping[str, int | str] | None = None
    time_limit_s: float = 30.0

    def __post_init__(self) -> None:
        _set(self, "strategy", Strategy.parse(self.strategy))
        if self.objective is not None:
            _set(self, "objective", Goal.parse(self.objective))
        _set(self, "pins", _pins(self.pins, what="[solve] pins"))
        if isinstance(self.device_map, (str, os.PathLike)):
            _set(self, "device_map", load_device_map(self.device_map))
        if self.device_map is not None:
            _set(self, "device_map", _pins(self.device_map, what="[solve] device_map"))
            for module, device in self.pins.items():
                if self.device_map.get(module, device) != device:
                    raise InvalidSpecError(
                        f"{module!r} is pinned to {device!r} but the device_map puts it on "
                        f"{self.device_map[module]!r}; give it once"
                    )
        _set(self, "time_limit_s", _seconds(self.time_limit_s, what="[solve] time_limit_s"))

    @property
    def goal(self) -> Goal:
        """The objective, or the strategy's default."""
        return self.objective if self.objective is not None else self.strategy.default_goal

    def to_dict(self) -> dict[str, Any]:
        out = _Section.to_dict(self)
        if self.device_map is not None:  # an empty partial map still says "solve everything"
            out["device_map"] = _plain(self.device_map)
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputSpec(_Section):
    """``[output]``: how the CLI writes the plan.

    Attributes:
        format: ``"table"`` (default) or ``"json"``.
        path: a file to write instead of stdout; its folder must exist and be writable, and it must
            not be a directory (checked before any work: :func:`layerplan.planner.spec.paths.check_output`).
    """

    NAME: ClassVar[str] = "output"

    format: str = "table"
    path: str | None = None

    def __post_init__(self) -> None:
        _set(self, "format", _choice(self.format, FORMATS, what="[output] format"))
        if self.path is not None:
            if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path).strip():
                raise InvalidSpecError(f"[output] path={self.path!r}; expected a file path")
            _set(self, "path", os.fspath(self.path))
