"""Write a spec's dict form as TOML. The standard library reads TOML (``tomllib``) but does not
write it, and a spec needs only tables of scalars, lists and inline tables: a few lines here
instead of a new dependency (``tomli-w``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: object) -> str:
    text = str(key)
    return text if _BARE_KEY.match(text) else json.dumps(text)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def dumps(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """``{"model": {"source": "x"}}`` -> ``'[model]\\nsource = "x"\\n'``: one ``[table]`` per section,
    nested mappings as inline tables.

    Raises:
        TypeError: a value TOML cannot hold (``None``, objects).
    """
    blocks = []
    for name, table in tables.items():
        lines = [f"[{_key(name)}]"] + [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
