"""Check a graph JSON's dict form field by field before :meth:`LayerGraph.from_dict` builds it, so
that a hand-edited or truncated file gets one line naming the field, never a KeyError traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from layerplan.solver import InvalidSpecError

__all__ = ["check_graph_dict"]

_TOP = {"model": str, "model_class": str, "dtype": str, "workload": Mapping, "nodes": list, "edges": list}
_NODE_REQUIRED = {"name": str, "kind": str, "module_class": str, "weight_bytes": int, "buffer_bytes": int}
_NODE_OPTIONAL = {"kv_bytes": int, "prefill_work_bytes": int, "decode_work_bytes": int,
                  "prefill_live_bytes": int, "decode_live_bytes": int, "prefill_flops": int,
                  "decode_flops": int, "executed": bool, "estimated": bool, "expert_bytes": int,
                  "before_kv_cache": bool, "parts": list}
_EDGE_REQUIRED = {"producer": str, "consumers": list, "shape": list, "dtype": str, "size_bytes": int}
_EDGE_OPTIONAL = {"decode_size_bytes": int}
_WORKLOAD_REQUIRED = {"batch_size": int, "prompt_len": int}


def _bad(where: str, message: str) -> InvalidSpecError:
    return InvalidSpecError(f"not a layerplan graph JSON: {where} {message}; trace the model again with `layerplan trace`")


def _type_ok(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _check_fields(obj: Any, where: str, required: Mapping[str, type], optional: Mapping[str, type]) -> None:
    if not isinstance(obj, Mapping):
        raise _bad(where, f"is a {type(obj).__name__}, not an object")
    for key, kind in required.items():
        if key not in obj:
            raise _bad(where, f"has no field {key!r}")
    for key, value in obj.items():
        kind = required.get(key) or optional.get(key)
        if kind is None:
            raise _bad(where, f"has unknown field {key!r} (known: {', '.join([*required, *optional])})")
        if not _type_ok(value, kind):
            expected = "an integer >= 0" if kind is int else f"a {'list' if kind is list else kind.__name__}"
            raise _bad(where, f"field {key!r} = {value!r} is not {expected}")


def check_graph_dict(data: Any, *, version: int) -> None:
    """Raise one :class:`InvalidSpecError` for the first problem in a graph's dict form.

    Checked: the top-level fields and their types; every node's and edge's fields (sizes are
    integers >= 0); node names unique and the list non-empty; every edge's producer and consumers
    are nodes, consumers after their producer; the workload's batch and prompt length. Format 2
    predates per-edge ``decode_size_bytes``; from format 3 on it is required.
    """
    optional = {"tied_parameters": list, "tied_groups": list, "no_split_module_classes": list,
                "empty_modules": list, "notes": list, "quantization": str,
                "quantization_method": str}
    edge_required = {**_EDGE_REQUIRED, **({"decode_size_bytes": int} if version >= 3 else {})}
    _check_fields(data, "the top level", _TOP, optional)
    _check_fields(data["workload"], "workload", _WORKLOAD_REQUIRED,
                  {k: object for k in data["workload"] if k not in _WORKLOAD_REQUIRED})
    if not data["nodes"]:
        raise _bad("nodes", "is empty")
    position: dict[str, int] = {}
    for i, node in enumerate(data["nodes"]):
        _check_fields(node, f"node {i}", _NODE_REQUIRED, _NODE_OPTIONAL)
        if node["name"] in position:
            raise _bad(f"node {i}", f"repeats the name {node['name']!r} (also node {position[node['name']]})")
        position[node["name"]] = i
    for i, edge in enumerate(data["edges"]):
        _check_fields(edge, f"edge {i}", edge_required, _EDGE_OPTIONAL)
        producer = edge["producer"]
        if producer not in position:
            raise _bad(f"edge {i}", f"has producer {producer!r}, which is no node")
        for consumer in edge["consumers"]:
            if consumer not in position:
                raise _bad(f"edge {i}", f"has consumer {consumer!r}, which is no node")
            if position[consumer] <= position[producer]:
                raise _bad(f"edge {i}", f"goes from {producer!r} back to {consumer!r}, which runs before it")
    for key in ("tied_groups",):
        for group in data.get(key, ()):
            for name in group:
                if name not in position:
                    raise _bad(key, f"names {name!r}, which is no node")
