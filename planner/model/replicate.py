"""Trace one representative per distinct decoder layer and replicate its measurements.

Why: under ``FakeTensorMode`` and the recorders, a forward costs about the same for every layer, and
the layers of a stack are mostly identical (Llama-2-70B: 80 ``LlamaDecoderLayer`` of the same shapes,
almost all of a 4-forward trace). So :mod:`layerplan.planner.model.trace` traces a *reduced* model
that holds one representative per distinct layer *signature*, and expands what it recorded (execution
order, tensors handed between nodes, per-node bytes and FLOPs) back to every layer. The graph is the
one a full trace gives; when the reduced trace does not have the structure this expansion assumes,
:class:`NotReplicable` is raised and the caller traces the full model.

* **Stacks**: every ``nn.ModuleList`` whose children are all block nodes, with at least
  :data:`MIN_LAYERS` children.
* **Signature** of a layer: its class; the name, shape and dtype of each parameter and buffer; each
  submodule's class and scalar attributes (index attributes such as ``layer_idx`` left out); and its
  entry in each per-layer list of the config (``layer_types``: Gemma-2's sliding and global layers
  differ in nothing else). The first layer and the last two are always their own (code such as
  ``if layer_idx == 0``; and see :meth:`NodeMap.flows`), and so is every layer named in an *index
  list* of the stack's owner or of a module above it, or of their configs: a list of positions that
  the owner's forward tests each layer's position against (Qwen2.5-VL's vision tower: ``if layer_num
  in self.fullatt_block_indexes`` gives those blocks full attention over the whole image, the others
  windowed attention; Qwen3-VL's ``deepstack_visual_indexes``, read with ``.index(layer_num)``).
  Layers of equal signature take the measurements of the first of them, their *representative*.
* **Reduced model**: shallow copies of the modules from the root down to each stack's parent, the
  stack replaced by a copy holding only the representatives under their own keys (``"0"``, ``"1"``,
  ``"78"``, ``"79"``), so node names are those of the full model. The representatives are the
  original modules (their ``layer_idx`` indexes the cache as in the full model), per-layer config
  lists are cut to the representatives' positions (model code reads ``config.layer_types[i]`` with
  ``i`` counting the layers it runs), index lists renumbered to them (on the copied modules and
  configs: ``[3, 7]`` with representatives ``0, 1, 3, 6, 7`` becomes ``[2, 4]``), and nothing of
  the user's model is changed.
"""

from __future__ import annotations

import copy
import re
import types
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

__all__ = ["MIN_LAYERS", "LayerStack", "NodeMap", "NotReplicable", "Replication", "plan_replication",
           "reduced_model"]

#: Stacks with fewer layers are traced whole: the first and the last two layers are traced anyway,
#: so a stack needs two layers besides them to have any to share.
MIN_LAYERS = 5

# Attributes left out of a signature: the mode, and the numbers that name a layer rather than shape
# its computation (the cache is indexed by them, and each layer keeps its own).
_NOT_SIGNATURE = frozenset({"training", "layer_idx", "layer_id", "layer_index", "layer_number", "idx"})

# Names of index lists (module docstring): Qwen2.5-VL ``fullatt_block_indexes``, Qwen3-VL
# ``deepstack_visual_indexes``, Mllama ``cross_attention_layers``, SegGPT
# ``intermediate_hidden_state_indices``. A list of ints by any other name (``mrope_section``) is not one.
_INDEX_LIST_NAME = re.compile(r"layer|block|ind(?:ex|ic)es$")

_T = TypeVar("_T")


class NotReplicable(Exception):
    """The reduced trace has a structure the expansion cannot map onto every layer."""


@dataclass(frozen=True, slots=True)
class LayerStack:
    """One ``nn.ModuleList`` of layers and the representative of each.

    Attributes:
        path: the list's module name, e.g. ``"model.layers"``.
        keys: its children's keys in order (``"0"`` ... ``"79"``).
        representative: per position, the position of the layer whose measurements it takes
            (itself for a representative).
    """

    path: str
    keys: tuple[str, ...]
    representative: tuple[int, ...]

    @property
    def traced(self) -> tuple[int, ...]:
        """Positions of the representatives, ascending."""
        return tuple(sorted(set(self.representative)))

    def name(self, position: int) -> str:
        """The node name of the layer at ``position``."""
        return f"{self.path}.{self.keys[position]}"


@dataclass(frozen=True, slots=True)
class Replication:
    """The stacks a model's trace is reduced by (each traced at fewer positions than it has)."""

    stacks: tuple[LayerStack, ...]

    @property
    def num_layers(self) -> int:
        """Layers in all stacks."""
        return sum(len(s.keys) for s in self.stacks)

    @property
    def num_traced(self) -> int:
        """Layers the reduced model runs."""
        return sum(len(s.traced) for s in self.stacks)


def plan_replication(model: nn.Module, block_names: Collection[str]) -> Replication | None:
    """The stacks of ``model`` that have layers to replicate, or None when there are none.

    Args:
        model: the full model (read only).
        block_names: names of the model's block nodes (``no_split_module_classes`` instances).

    Returns:
        The stacks with at least one layer that shares a representative; None when no stack has
        one, or when replicating could go wrong unseen (a heterogeneous config, a list outside the
        blocks as long as a stack, an index list that two stacks would read: which one it indexes
        is unknown).
    """
    modules = dict(model.named_modules())
    if any(getattr(_config(m), "is_heterogeneous", False) for m in modules.values()):
        return None  # per-layer config overrides: model code may read per_layer_config[i]
    stack_paths = [path for path, module in modules.items() if _is_stack(path, module, block_names)]
    stacks, listed = [], []
    for path in stack_paths:
        module = modules[path]
        keys = tuple(module._modules)
        indexes = _index_lists(_path_owners(model, path), len(keys))
        listed.append({id(value) for _, value in indexes})
        representative = _representatives(module, _per_layer_lists(_path_configs(model, path), len(keys)), indexes)
        if len(set(representative)) < len(keys):
            stacks.append(LayerStack(path=path, keys=keys, representative=representative))
    shared = sum(map(len, listed)) > len(set().union(*listed))
    if not stacks or shared or _parallel_lists(modules, block_names, stack_paths):
        return None
    return Replication(stacks=tuple(stacks))


def _representatives(stack: nn.ModuleList, lists: list[tuple[str, Sequence]],
                     indexes: list[tuple[str, Sequence[int]]]) -> tuple[int, ...]:
    """Per position of ``stack``, the first position of equal signature: the layer, its entries in
    the per-layer ``lists``, and its place in each of the index lists ``indexes`` that name it (a
    place, not only membership: Qwen3-VL's tower picks a merger by
    ``deepstack_visual_indexes.index(layer_num)``). The first and the last two are their own."""
    signatures = [_signature(layer, [(n, v[i]) for n, v in lists] + [(n, v.index(i)) for n, v in indexes if i in v])
                  for i, layer in enumerate(stack)]
    signatures[0], signatures[-2], signatures[-1] = ("first",), ("second to last",), ("last",)
    first: dict[tuple, int] = {}
    return tuple(first.setdefault(sig, i) for i, sig in enumerate(signatures))


def _is_stack(path: str, module: nn.Module, block_names: Collection[str]) -> bool:
    """An ``nn.ModuleList`` of at least :data:`MIN_LAYERS` block nodes."""
    return (isinstance(module, nn.ModuleList) and len(module) >= MIN_LAYERS
            and all(f"{path}.{key}" in block_names for key in module._modules))


def _parallel_lists(modules: dict[str, nn.Module], block_names: Collection[str], stack_paths: list[str]) -> bool:
    """Whether a list outside the blocks has as many entries as a stack (per-layer norms or scales
    that model code may ``zip`` with the layers: a reduced stack would pair them wrongly)."""
    lengths = {len(modules[path]) for path in stack_paths}
    paths = set(stack_paths)

    def inside_a_block(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:i]) in block_names for i in range(1, len(parts)))

    return any(
        isinstance(m, nn.ModuleList | nn.ModuleDict | nn.ParameterList | nn.ParameterDict)
        and len(m) in lengths and name not in paths and not inside_a_block(name)
        for name, m in modules.items()
    )


def reduced_model(model: nn.Module, replication: Replication) -> nn.Module:
    """A model that runs only the representatives (see the module docstring); ``model`` is unchanged.

    Raises:
        NotReplicable: one config object would have to be cut, or one module's index list
            renumbered, for two stacks in different ways.
    """
    copies: dict[str, nn.Module] = {"": _shallow(model)}
    cuts: dict[int, tuple[object, int, tuple[int, ...]]] = {}  # id(config) -> (config, layers, kept)
    renumbered: dict[tuple[int, str], object] = {}  # (id(module copy), attribute) -> renumbered list
    decoder = _decoder_config(model)
    for stack in replication.stacks:
        parent_path, _, attr = stack.path.rpartition(".")
        parent = _copied_path(model, parent_path, copies)
        layers = getattr(parent, attr)
        kept = _shallow(layers)
        kept._modules = {stack.keys[i]: layers._modules[stack.keys[i]] for i in stack.traced}
        parent._modules[attr] = kept
        clones = [copies[p] for p in _prefixes(parent_path)]
        _renumber_owners(list(zip(_path_modules(model, stack.path), clones)), stack, renumbered)
        for config in _path_configs(model, stack.path):
            cut = (config, len(stack.keys), stack.traced)
            if _needs_cut(config, len(stack.keys), decoder) and cuts.setdefault(id(config), cut) != cut:
                raise NotReplicable("one config's per-layer lists would be cut for two stacks")
    cut_configs = {key: _cut_config(config, n, kept, depth=key != id(decoder)) for key, (config, n, kept) in cuts.items()}
    for clone in copies.values():
        config = _config(clone)
        if config is not None and id(config) in cut_configs:
            clone.config = cut_configs[id(config)]
    return copies[""]


@dataclass(frozen=True, slots=True)
class NodeMap:
    """Nodes of the full model against nodes of the reduced one (indices into each node list).

    Attributes:
        source: per full node, the reduced node it takes its measurements from.
        full_of: per reduced node, its full index.
        layers: per stack, the full node index of each position.
        where: full node index of a layer -> ``(stack number, position)``.
        stacks: the stacks, as in ``replication``.
    """

    source: tuple[int, ...]
    full_of: tuple[int, ...]
    layers: tuple[tuple[int, ...], ...]
    where: dict[int, tuple[int, int]]
    stacks: tuple[LayerStack, ...]

    @classmethod
    def from_names(cls, replication: Replication, *, full: Sequence[str], reduced: Sequence[str]) -> NodeMap:
        """Map by node name (the reduced model keeps the full model's names).

        Raises:
            NotReplicable: a node of one model is missing from the other.
        """
        full_index = {name: i for i, name in enumerate(full)}
        reduced_index = {name: i for i, name in enumerate(reduced)}
        if not set(reduced_index) <= set(full_index):
            raise NotReplicable("the reduced model has nodes the full model lacks")
        rep_name = {s.name(i): s.name(r) for s in replication.stacks for i, r in enumerate(s.representative)}
        missing = [name for name in full if rep_name.get(name, name) not in reduced_index]
        if missing:
            raise NotReplicable(f"{missing[0]!r} has no counterpart in the reduced model")
        layers = tuple(tuple(full_index[s.name(i)] for i in range(len(s.keys))) for s in replication.stacks)
        return cls(
            source=tuple(reduced_index[rep_name.get(name, name)] for name in full),
            full_of=tuple(full_index[name] for name in reduced),
            layers=layers,
            where={node: (k, pos) for k, stack in enumerate(layers) for pos, node in enumerate(stack)},
            stacks=replication.stacks,
        )

    def values(self, reduced: Sequence[_T]) -> tuple[_T, ...]:
        """Per-node values (bytes, FLOPs) of the reduced nodes, one per full node."""
        return tuple(reduced[s] for s in self.source)

    def order(self, reduced_order: Sequence[int]) -> list[int]:
        """The full execution order (full indices) from the reduced one (reduced indices): each
        stack's representatives must run one after another in index order, and are replaced by all
        of its layers.

        Raises:
            NotReplicable: a stack's representatives run apart, out of order, or only some of them.
        """
        order = [self.full_of[node] for node in reduced_order]
        for k, stack in enumerate(self.stacks):
            traced = [self.layers[k][i] for i in stack.traced]
            ran = [pos for pos, node in enumerate(order) if self.where.get(node, (None,))[0] == k]
            if not ran:
                continue  # the stack never runs (in the full model neither)
            start = ran[0]
            if order[start:start + len(traced)] != traced:
                raise NotReplicable(f"the layers of {stack.path} did not run once each in index order")
            order[start:start + len(traced)] = self.layers[k]
        return order

    def flows(self, producer: int, consumers: Sequence[tuple[int, str]]) -> Iterator[tuple[int, list[tuple[int, str]]]]:
        """What one tensor handed over in the reduced model (producer and ``(consumer, key)``,
        reduced indices) is in the full one: ``(producer, [(consumer, key)])`` in full indices, once
        per layer the producer stands for.

        * From a node outside the stacks: to every layer whose representative received it.
        * From a representative ``p``: its layer consumers must be exactly the next representative
          (the hidden states: layer ``i`` hands them to ``i + 1``) or exactly every representative
          after ``p`` (a tensor broadcast to all later layers: ``i`` to every ``j > i``). With one
          representative after ``p`` the two read alike; since the last two layers are their own
          representatives, that happens only for ``p`` = the second to last, where they agree.

        Raises:
            NotReplicable: any other pattern, or a layer handing a tensor to another stack's layers.
        """
        full_producer = self.full_of[producer]
        mapped = [(self.full_of[c], key) for c, key in consumers]
        outside = [(c, key) for c, key in mapped if c not in self.where]
        if full_producer not in self.where:
            yield full_producer, outside + self._broadcast([(c, key) for c, key in mapped if c in self.where])
            return
        k, p = self.where[full_producer]
        inside = [(self.where[c], key) for c, key in mapped if c in self.where]
        if any(stack != k for (stack, _), _ in inside):
            raise NotReplicable(f"a layer of {self.stacks[k].path} hands a tensor to another stack")
        received = {pos for (_, pos), _ in inside}
        after = [t for t in self.stacks[k].traced if t > p]
        keys = sorted({key for _, key in inside})
        if len({frozenset(key for (_, pos), key in inside if pos == r) for r in received}) > 1:
            raise NotReplicable(f"the layers of {self.stacks[k].path} receive a tensor under different keys")
        layers = self.layers[k]
        if not received:
            span = 0
        elif received == set(after[:1]):
            span = 1  # the next layer
        elif received == set(after):
            span = len(layers)  # every later layer
        else:
            raise NotReplicable(f"a layer of {self.stacks[k].path} hands a tensor to other layers than the "
                                "next or all later ones")
        for i, r in enumerate(self.stacks[k].representative):
            if r == p:
                later = range(i + 1, min(i + 1 + span, len(layers)))
                yield layers[i], outside + [(layers[j], key) for j in later for key in keys]

    def _broadcast(self, consumers: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Every layer whose representative is among ``consumers`` (full indices), with its keys."""
        keys: dict[int, list[str]] = {}
        for c, key in consumers:
            keys.setdefault(c, []).append(key)
        out = []
        for k, stack in enumerate(self.stacks):
            for i, r in enumerate(stack.representative):
                out += [(self.layers[k][i], key) for key in keys.get(self.layers[k][r], ())]
        return out


def _signature(layer: nn.Module, config_entries: list[tuple[str, object]]) -> tuple:
    """What decides a layer's measurements: class, tensor shapes, scalar attributes, config entries."""
    tensors = [(n, tuple(t.shape), t.dtype) for n, t in [*layer.named_parameters(), *layer.named_buffers()]]
    modules = [(n, type(m).__name__, _scalars(m)) for n, m in layer.named_modules()]
    return (type(layer).__name__, tuple(tensors), tuple(modules), tuple(config_entries))


def _scalars(module: nn.Module) -> tuple:
    """The module's own attributes that are scalars (or tuples/lists of them), index names left out."""
    return tuple((name, _frozen(v)) for name, v in vars(module).items()
                 if name not in _NOT_SIGNATURE and _is_scalar(v))


_SCALAR_TYPES = (int, float, str, bool, torch.dtype, types.FunctionType, type(None))


def _is_scalar(value: object) -> bool:
    if type(value) in _SCALAR_TYPES:  # the common case, without isinstance's subclass walk
        return True
    if isinstance(value, list | tuple):
        return all(_is_scalar(v) for v in value)
    return isinstance(value, _SCALAR_TYPES)


def _frozen(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value.__qualname__ if isinstance(value, types.FunctionType) else value


def _config(module: nn.Module) -> object | None:
    """The module's transformers config, if it holds one."""
    config = vars(module).get("config")
    return config if config is not None and hasattr(config, "to_dict") else None


def _prefixes(path: str) -> list[str]:
    """``""`` and every dotted prefix of ``path``, ``path`` included: ``"", "a", "a.b"``."""
    parts = path.split(".") if path else []
    return ["", *(".".join(parts[:i]) for i in range(1, len(parts) + 1))]


def _path_modules(model: nn.Module, path: str) -> list[nn.Module]:
    """The modules from the root down to ``path``'s parent (``path``'s owner)."""
    modules = [model]
    for part in path.split(".")[:-1]:
        modules.append(modules[-1]._modules[part])
    return modules


def _path_configs(model: nn.Module, path: str) -> list[object]:
    """Configs held by the modules from the root down to ``path``'s parent (each once)."""
    found: dict[int, object] = {}
    for module in _path_modules(model, path):
        config = _config(module)
        if config is not None:
            found.setdefault(id(config), config)
    return list(found.values())


def _path_owners(model: nn.Module, path: str) -> list[object]:
    """The modules from the root down to ``path``'s parent, then the configs they hold."""
    return [*_path_modules(model, path), *_path_configs(model, path)]


def _per_layer_lists(configs: list[object], num_layers: int) -> list[tuple[str, list]]:
    """``(name, list)`` of every config attribute holding one entry per layer (``layer_types``)."""
    return [(name, value) for config in configs for name, value in vars(config).items()
            if "layer" in name and isinstance(value, list | tuple) and len(value) == num_layers]


def _index_lists(owners: list[object], num_layers: int) -> list[tuple[str, Sequence[int]]]:
    """``(name, list)`` of every index list among the owners' attributes (module docstring): a
    non-empty list or tuple of positions ``0 <= i < num_layers`` under an index list's name
    (:data:`_INDEX_LIST_NAME`), not a per-layer list (one entry per layer, see
    :func:`_per_layer_lists`)."""
    return [(name, value) for owner in owners for name, value in vars(owner).items()
            if _is_index_list(name, value, num_layers)]


def _is_index_list(name: str, value: object, num_layers: int) -> bool:
    return (isinstance(value, list | tuple) and len(value) > 0 and _INDEX_LIST_NAME.search(name) is not None
            and all(type(v) is int and 0 <= v < num_layers for v in value)
            and not ("layer" in name and len(value) == num_layers))


def _renumbered(value: Sequence[int], kept: tuple[int, ...]) -> Sequence[int]:
    """An index list over the full stack as positions in the reduced one (``kept``: the positions
    it keeps, ascending), same order and type. Every listed layer is a representative of its own."""
    return type(value)(kept.index(i) for i in value)


def _renumber_owners(owners: list[tuple[nn.Module, nn.Module]], stack: LayerStack,
                     done: dict[tuple[int, str], object]) -> None:
    """Renumber the index lists that ``stack``'s signatures read from the modules above it, on their
    copies: ``owners`` are ``(original, copy)`` from the root down to the stack's owner; ``done``
    records what was set across stacks.

    Raises:
        NotReplicable: a module's list was renumbered for another stack to other positions.
    """
    for original, clone in owners:
        for name, value in _index_lists([original], len(stack.keys)):
            new = _renumbered(value, stack.traced)
            if done.setdefault((id(clone), name), new) != new:
                raise NotReplicable(f"{type(original).__name__}.{name} would be renumbered for two stacks")
            vars(clone)[name] = new


def _decoder_config(model: nn.Module) -> object | None:
    config = _config(model)
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if callable(get) else config


def _needs_cut(config: object, num_layers: int, decoder: object | None) -> bool:
    """Whether ``config`` must be cut with its stack: it has per-layer lists or index lists, or it
    is a tower's (not the text decoder's) config that counts the stack's layers in
    ``num_hidden_layers``."""
    deep = config is not decoder and getattr(config, "num_hidden_layers", None) == num_layers
    lists = _per_layer_lists([config], num_layers) or _index_lists([config], num_layers)
    return bool(lists) or deep


def _cut_config(config: object, num_layers: int, kept: tuple[int, ...], *, depth: bool = False) -> object:
    """A shallow copy of ``config`` whose per-layer lists hold only the entries at ``kept``, and
    whose index lists are renumbered to positions among them (:func:`_renumbered`).

    The text decoder's ``num_hidden_layers`` stays (model code slices ``layers[:num_hidden_layers]``,
    harmless, and some compares ``layer_idx`` with it, which the representatives keep). With
    ``depth`` (a vision or audio tower) it becomes ``len(kept)``: transformers resolves a negative
    ``vision_feature_layer`` (LLaVA's -2) against it into the hidden states the reduced tower
    records, and the representatives keep the first, second to last and last positions.
    """
    cut = copy.copy(config)
    for name, value in _per_layer_lists([config], num_layers):
        vars(cut)[name] = type(value)(value[i] for i in kept)
    for name, value in _index_lists([config], num_layers):
        vars(cut)[name] = _renumbered(value, kept)
    if depth and getattr(config, "num_hidden_layers", None) == num_layers:
        cut.num_hidden_layers = len(kept)
    return cut


def _shallow(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its submodules and tensors, with dicts of its own to change.

    Raises:
        NotReplicable: the module has a ``forward`` of its own (accelerate's hooks, ``torch.compile``
            wrappers): bound to the original, it would run the full model from the copy.
    """
    if "forward" in vars(module):
        raise NotReplicable(f"{type(module).__name__} has an instance-level forward")
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    return clone


def _copied_path(model: nn.Module, path: str, copies: dict[str, nn.Module]) -> nn.Module:
    """The copy of the module at ``path``, copying (once) every module from the root to it."""
    if path in copies:
        return copies[path]
    parent_path, _, attr = path.rpartition(".")
    parent = _copied_path(model, parent_path, copies)
    clone = _shallow(parent._modules[attr])
    parent._modules[attr] = clone
    copies[path] = clone
    return clone
