"""Files a spec names, read with one-line errors: device_map JSON files, spec TOML files."""

from __future__ import annotations

import json
import os
from typing import Any

from layerplan.planner.spec.sizes import parse_device
from layerplan.solver import InvalidSpecError

__all__ = ["load_device_map", "map_device", "read_toml"]


def load_device_map(path: str | os.PathLike) -> dict[str, int | str]:
    """Read a ``{module name: device}`` JSON object, devices normalised by :func:`layerplan.planner.spec.sizes.parse_device`.

    Example file: ``{"model.embed_tokens": 0, "model.layers": "cuda:1", "lm_head": "cpu"}``.

    Returns:
        A new dict in file order; devices are ``int`` GPU ids or ``"cpu"``, ``"disk"``, ``"mps"``, ...

    Raises:
        InvalidSpecError: (one line) the file is missing or unreadable, is not JSON (line and column
            given), is not a JSON object, repeats a key, or maps a key to something that is not a device.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise InvalidSpecError(f"device_map file {name!r} does not exist; pass a JSON file such as "
                               '{"model.layers": 0, "lm_head": "cpu"}') from None
    except OSError as exc:
        raise InvalidSpecError(f"device_map file {name!r} cannot be read ({exc.strerror or exc}); "
                               "pass a readable JSON file") from None
    except UnicodeDecodeError as exc:
        raise InvalidSpecError(f"device_map file {name!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                               "save it as UTF-8 JSON") from None
    try:
        data = json.loads(text, object_pairs_hook=_pairs)
    except json.JSONDecodeError as exc:
        raise InvalidSpecError(
            f"device_map file {name!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if isinstance(data, _Duplicate):
        raise InvalidSpecError(f"device_map file {name!r} gives key {data.key!r} twice; give each module once")
    if not isinstance(data, dict):
        raise InvalidSpecError(
            f"device_map file {name!r} holds a JSON {_json_type(data)}, not an object; "
            'write {"module name": device, ...}'
        )
    return {key: map_device(value, key=key, where=f"device_map file {name!r}") for key, value in data.items()}


def map_device(value: Any, *, key: str, where: str) -> int | str:
    """The device of one device_map entry (``key`` must be a module name).

    Raises:
        InvalidSpecError: a key that is not a string, or a value that is not a device.
    """
    if not isinstance(key, str):
        raise InvalidSpecError(f"{where} key {key!r} is not a module name; keys are strings such as 'model.layers.0'")
    try:
        return parse_device(value)
    except InvalidSpecError as exc:
        raise InvalidSpecError(f"{where}, key {key!r}: {exc}") from None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The tables of a TOML file (``tomllib``; ``tomli`` on Python 3.10).

    Raises:
        InvalidSpecError: (one line) missing, unreadable, or not valid TOML (the parser's line and column).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise InvalidSpecError(f"spec file {name!r} does not exist; pass a TOML file (see README: the spec file)") from None
    except IsADirectoryError:
        raise InvalidSpecError(f"spec file {name!r} is a directory; pass a TOML file") from None
    except OSError as exc:
        raise InvalidSpecError(f"spec file {name!r} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InvalidSpecError(f"spec file {name!r} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpecError(f"spec file {name!r} is not valid TOML: {exc}") from None


class _Duplicate:
    """Marks a JSON object that repeats a key (``json`` silently keeps the last one); it propagates
    to the top so that :func:`load_device_map` reports it wherever it was."""

    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Duplicate:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if isinstance(value, _Duplicate):
            return value
        if key in seen:
            return _Duplicate(key)
        seen[key] = value
    return seen


def _json_type(data: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(data), type(data).__name__)
