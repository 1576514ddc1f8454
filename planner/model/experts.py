"""A MoE layer's experts as a node of their own, placed inside their layer's block.

transformers 5 packs a layer's routed experts into one module (``MixtralExperts``: one 3-D
parameter per projection for all experts; older checkpoints hold an ``experts`` module list), and
they are most of the layer's bytes (Mixtral-8x7B: 96 % of each decoder layer). llama.cpp users keep
attention on the GPU and the experts in host RAM (``-ot exps=CPU``); accelerate does the same for
any module mapped to ``"cpu"``/``"disk"`` inside a GPU-mapped module, streaming it to the map's
first accelerator (``big_modeling.dispatch_model``), but ``infer_auto_device_map`` never proposes
it. :func:`split_experts` makes such a layer two nodes, so the solver may:

* the layer node keeps everything but the experts (attention, norms, router, shared experts), its
  KV cache, working sets and FLOPs; its :attr:`GraphNode.parts` list the ``device_map`` keys that
  cover it when its experts are placed elsewhere (its children and parameters off the path to the
  experts: accelerate cannot take a nested map, see ``tests/test_moe_inline_loading.py``);
* the experts node (kind ``"experts"``, named by the expert module, right after its layer) holds
  the experts' weights; it reads the layer's hidden states and hands the layer's outputs on (the
  layer's outgoing edges leave from it), and it is passed to the solver as
  :attr:`layerplan.solver.Node.offload_inline` (rule ``host``: it computes where its layer does).

Costs: the experts node has no working set of its own: it runs inside the layer's forward, whose
measured working set and live bytes hold the experts' activations, and it always computes where its
layer does (rule ``host``), so the layer's charge on that device covers it
(:mod:`layerplan.solver.accounting` takes the largest working set per device); counting it twice
would double the activation traffic of the roofline. It carries the routed experts' FLOPs,
``2 * tokens * top_k * (matmul parameters of one expert)`` per pass (each token's hidden state
goes through ``top_k`` experts' projections: what the tracer's FLOP counter
counts for ``_grouped_mm`` over the routed rows, :mod:`layerplan.planner.model.measure`, and what
``torch.utils.flop_counter`` counts for transformers' per-expert loop on the CPU); the layer keeps
the rest. The roofline of a split layer is then the sum of its parts'
(:func:`layerplan.solver.cost.node_time_ns`), as the GPU runs the attention kernels, then the
experts'.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from layerplan.planner.graph import EXPERTS_KIND, GraphEdge, GraphNode, LayerGraph, TracedWorkload
from layerplan.planner.model.quantization import is_expert_module

__all__ = ["EXPERTS_KIND", "merge_experts", "split_experts"]

#: How :func:`split_experts`'s graph note starts (:func:`merge_experts` drops it by it).
_NOTE_START = "MoE experts: the experts of "


def split_experts(
    graph: LayerGraph, model: nn.Module, sizes: dict[str, int], buffer_sizes: dict[str, int]
) -> LayerGraph:
    """``graph`` with each block node that holds exactly one expert module
    (:func:`~layerplan.planner.model.quantization.is_expert_module`) split into the layer and its
    experts (module docstring); other nodes and graphs without experts are returned unchanged.

    Args:
        graph: the traced graph of ``model``.
        model: the (meta) model it was traced from.
        sizes: module or tensor name -> stored bytes, buffers included (what the tracer sized
            the nodes with); buffer_sizes: the buffer bytes alone.
    """
    modules = dict(model.named_modules())
    nodes: list[GraphNode] = []
    moved: dict[str, str] = {}  # layer -> its experts node, the new producer of its outgoing edges
    added: list[GraphEdge] = []
    for node in graph.nodes:
        path = _experts_path(modules.get(node.name)) if node.kind == "block" else None
        if path is None:
            nodes.append(node)
            continue
        layer, experts = _split_node(node, modules[node.name], path, sizes, buffer_sizes,
                                     config=getattr(model, "config", None), workload=graph.workload)
        nodes += [layer, experts]
        moved[node.name] = experts.name
        added.append(_hand_over(graph, node.name, experts.name))
    if not moved:
        return graph
    edges = [dataclasses.replace(e, producer=moved.get(e.producer, e.producer)) for e in graph.edges]
    position = {n.name: i for i, n in enumerate(nodes)}
    edges = sorted([*edges, *added], key=lambda e: (position[e.producer], [position[c] for c in e.consumers]))
    return dataclasses.replace(graph, nodes=tuple(nodes), edges=tuple(edges),
                               notes=(*graph.notes, _note(nodes, len(moved))))


def _note(nodes: list[GraphNode], layers: int) -> str:
    classes = sorted({n.module_class for n in nodes if n.kind == EXPERTS_KIND})
    packed = all(c.endswith("Experts") for c in classes)
    how = ("packed by transformers into one module (one parameter per projection for all experts)" if packed
           else "a module list of per-expert MLPs")
    return (f"{_NOTE_START}{layers} layers ({', '.join(classes)}, {how}) are a node of their own "
            "each, placed as one unit; they may be offloaded to cpu/disk while their layer stays on the "
            "execution device (planner/model/experts.py)")


def _experts_path(module: nn.Module | None) -> str | None:
    """The relative name of the one outermost expert module inside ``module`` (``"mlp.experts"``),
    or None when it holds none, several, or they hold no weights."""
    if module is None:
        return None
    found: list[str] = []
    for name, sub in module.named_modules():
        if is_expert_module(name, sub) and not any(name.startswith(f + ".") for f in found):
            found.append(name)
    if len(found) != 1 or not _holds_tensors(module.get_submodule(found[0])):
        return None
    return found[0]


def _holds_tensors(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None or next(module.buffers(), None) is not None


def _split_node(node: GraphNode, module: nn.Module, path: str, sizes: dict[str, int], buffer_sizes: dict[str, int],
                *, config: object, workload: TracedWorkload) -> tuple[GraphNode, GraphNode]:
    name = f"{node.name}.{path}"
    total, buffers = sizes.get(name, 0), buffer_sizes.get(name, 0)
    weights = total - buffers
    per_token = 2 * _top_k(module, config) * _expert_matmul_params(module.get_submodule(path))
    prefill_flops = min(node.prefill_flops, per_token * workload.batch_size * workload.prompt_len)
    decode_flops = min(node.decode_flops, per_token * workload.batch_size)
    experts = GraphNode(
        name=name, kind=EXPERTS_KIND, module_class=type(module.get_submodule(path)).__name__,
        weight_bytes=weights, buffer_bytes=buffers, prefill_flops=prefill_flops, decode_flops=decode_flops,
        executed=node.executed, estimated=node.estimated, expert_bytes=min(total, node.expert_bytes),
        before_kv_cache=node.before_kv_cache,
    )
    layer = dataclasses.replace(
        node, weight_bytes=node.weight_bytes - weights, buffer_bytes=node.buffer_bytes - buffers,
        expert_bytes=node.expert_bytes - experts.expert_bytes, parts=_parts(node.name, module, path),
        prefill_flops=node.prefill_flops - prefill_flops, decode_flops=node.decode_flops - decode_flops,
    )
    return layer, experts


def _top_k(layer: nn.Module, config: object) -> int:
    """Experts per token: the ``top_k`` of the layer's router or MoE block (transformers 5:
    ``MixtralTopKRouter.top_k``), else the config's ``num_experts_per_tok``; 0 when neither says."""
    for sub in layer.modules():
        if isinstance(getattr(sub, "top_k", None), int):
            return sub.top_k
    text = getattr(config, "get_text_config", lambda: config)()
    value = getattr(text, "num_experts_per_tok", 0)
    return value if isinstance(value, int) else 0


def _expert_matmul_params(experts: nn.Module) -> int:
    """Matmul parameters of one expert: the packed 3-D projections (``[experts, rows, cols]``) over
    their first dimension, or one member of an ``experts`` module list (its 2-D weights)."""
    packed = [p for p in experts.parameters(recurse=False) if p.dim() == 3]
    if packed:
        return sum(p.numel() // p.shape[0] for p in packed)
    if isinstance(experts, nn.ModuleList) and len(experts):
        return sum(p.numel() for p in experts[0].parameters() if p.dim() == 2)
    return 0


def _parts(prefix: str, module: nn.Module, path: str) -> tuple[str, ...]:
    """The names that cover ``module`` (named ``prefix``) but its submodule ``path``: along the
    path, each module's own parameters and buffers and its children off the path that hold any."""
    parts: list[str] = []
    step, rest = path.partition(".")[::2]
    for tensor, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        parts.append(f"{prefix}.{tensor}")
    for child_name, child in module.named_children():
        full = f"{prefix}.{child_name}"
        if child_name == step:
            parts += _parts(full, child, rest) if rest else []
        elif _holds_tensors(child):
            parts.append(full)
    return tuple(parts)


def _hand_over(graph: LayerGraph, layer: str, experts: str) -> GraphEdge:
    """The layer -> experts edge: the hidden states the router hands the experts, sized as the
    largest tensor the layer receives (its input hidden states)."""
    received = [e for e in graph.edges if layer in e.consumers]
    if not received:
        return GraphEdge(producer=layer, consumers=(experts,), shape=(), dtype=graph.dtype, size_bytes=0,
                         decode_size_bytes=0)
    largest = max(received, key=lambda e: (e.size_bytes, e.decode_size_bytes))
    return dataclasses.replace(largest, producer=layer, consumers=(experts,))


def merge_experts(graph: LayerGraph) -> LayerGraph:
    """The inverse of :func:`split_experts`: each experts node folded back into its layer (bytes
    and FLOPs summed, the layer's ``parts`` cleared, its outgoing edges leaving from the layer
    again), as graphs were before experts were nodes; a graph without experts nodes is returned unchanged.
    For comparisons (``benchmarks/experts_offload.py``) and for engines that place whole layers."""
    layer_of = graph.experts_layers()
    if not layer_of:
        return graph
    nodes = list(graph.nodes)
    for experts, layer in layer_of.items():
        a, b = nodes[layer], nodes[experts]
        nodes[layer] = dataclasses.replace(
            a, weight_bytes=a.weight_bytes + b.weight_bytes, buffer_bytes=a.buffer_bytes + b.buffer_bytes,
            expert_bytes=a.expert_bytes + b.expert_bytes, parts=(),
            prefill_flops=a.prefill_flops + b.prefill_flops, decode_flops=a.decode_flops + b.decode_flops,
        )
    merged = [n for i, n in enumerate(nodes) if i not in layer_of]
    into = {nodes[experts].name: nodes[layer].name for experts, layer in layer_of.items()}  # experts -> layer
    edges = [dataclasses.replace(e, producer=into.get(e.producer, e.producer)) for e in graph.edges
             if not set(e.consumers) & set(into)]
    notes = tuple(n for n in graph.notes if not n.startswith(_NOTE_START))
    return dataclasses.replace(graph, nodes=tuple(merged), edges=tuple(edges), notes=notes)
