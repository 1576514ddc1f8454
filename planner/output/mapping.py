"""A user's ``device_map`` (a JSON file or a dict) read onto the nodes of a :class:`LayerGraph`.

Keys are module names and are read as accelerate's ``dispatch_model`` reads them: a tensor goes to
the device of the longest key that equals its name or is a dotted prefix of it, ``""`` covering
everything. layerplan places each node whole, so a map is read per node:

* a key that equals a node, or is a dotted prefix of nodes (``"model.layers"``, ``""``), covers them;
* a key naming a module without parameters or buffers outside every node (GPT-2's
  ``"transformer.drop"``, :attr:`LayerGraph.empty_modules`) places nothing and is accepted:
  accelerate's ``infer_auto_device_map`` lists such modules;
* keys *inside* a node (``"model.layers.3.mlp"`` when ``model.layers.3`` is a node) give the node
  their device when they agree with each other and with the key covering the node, if any;
  otherwise the map splits a node layerplan keeps whole, which is an error. Such keys count as
  covering the node: the graph does not list a node's tensors, so whether they leave one out is for
  accelerate's ``check_device_map`` on the model to say.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from layerplan.planner.graph import LayerGraph
from layerplan.planner.spec.files import load_device_map, map_device
from layerplan.solver import InvalidSpecError

__all__ = ["load_device_map", "node_devices", "is_full", "uncovered"]


def node_devices(graph: LayerGraph, device_map: Mapping[str, int | str]) -> dict[str, int | str]:
    """The device of every node ``device_map`` covers (see the module docstring for the rules).

    Args:
        graph: the traced model.
        device_map: module name -> device (accelerate's values, or ``"cuda:1"``, ``"0"``); not modified.

    Returns:
        A new dict, node name -> device (``int`` GPU id, ``"cpu"``, ``"disk"``, ...), in execution
        order; nodes the map does not cover are absent.

    Raises:
        InvalidSpecError: a value is not a device; a key matches no module of the graph, neither a
            node, a prefix of nodes, a module inside a node nor a module without weights (the
            message suggests close names); keys inside one node, or such keys and the key covering
            the node, put it on different devices.
    """
    devices = {key: map_device(value, key=key, where="device_map") for key, value in device_map.items()}
    nodes = [node.name for node in graph.nodes]
    prefixes = _dotted_prefixes(nodes)
    empty = set(graph.empty_modules)
    inside: dict[str, dict[str, int | str]] = {}  # node -> {key inside it: device}
    for key, device in devices.items():
        if key in prefixes or key in empty:  # covers whole nodes, or places nothing
            continue
        node = graph.node_of(key)
        if node is None:
            raise InvalidSpecError(_unknown_key_message(graph, key, prefixes))
        inside.setdefault(node, {})[key] = device

    result: dict[str, int | str] = {}
    for node in nodes:
        cover = _covering_key(node, devices)
        found = dict(inside.get(node, {}))
        if cover is not None:
            found[cover] = devices[cover]
        if not found:
            continue
        if len(set(found.values())) > 1:
            info = graph.nodes[graph.index(node)]
            what = f"a no-split block ({info.module_class})" if info.kind == "block" else f"one {info.kind} node"
            split = ", ".join(f"{k!r}: {v!r}" for k, v in found.items())
            raise InvalidSpecError(
                f"device_map splits node {node!r} across devices ({split}); layerplan keeps it whole as "
                f"{what}: map it (or the keys inside it) to one device"
            )
        result[node] = next(iter(found.values()))
    return result


def uncovered(graph: LayerGraph, device_map: Mapping[str, int | str]) -> tuple[str, ...]:
    """Names of the nodes ``device_map`` does not cover, in execution order.

    Raises:
        InvalidSpecError: see :func:`node_devices`.
    """
    covered = node_devices(graph, device_map)
    return tuple(node.name for node in graph.nodes if node.name not in covered)


def is_full(graph: LayerGraph, device_map: Mapping[str, int | str]) -> bool:
    """Whether ``device_map`` covers every node of ``graph``.

    Raises:
        InvalidSpecError: see :func:`node_devices`.
    """
    return not uncovered(graph, device_map)


# -- helpers ---------------------------------------------------------------------------------------
def _dotted_prefixes(nodes: list[str]) -> set[str]:
    """Every key that covers whole nodes: the nodes themselves, their dotted prefixes, and ``""``."""
    prefixes = {""}
    for name in nodes:
        parts = name.split(".")
        prefixes.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return prefixes


def _covering_key(node: str, devices: Mapping[str, int | str]) -> str | None:
    """The longest key equal to ``node`` or a dotted prefix of it (accelerate's rule), or None."""
    name = node
    while True:
        if name in devices:
            return name
        if not name:
            return None
        name = name.rpartition(".")[0]


def _unknown_key_message(graph: LayerGraph, key: str, prefixes: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(prefixes - {""}), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else (
        f"nodes are e.g. {', '.join(repr(n.name) for n in graph.nodes[:3])}")
    return (f"device_map key {key!r} matches no module of {graph.model} (not a node, a prefix of nodes, "
            f"a module inside a node or a module without weights); {hint} (`layerplan trace` lists the nodes)")
