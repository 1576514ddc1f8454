"""Hypothesis strategies for traced workloads and LayerGraphs shaped like a Llama-style decoder.

:func:`layer_graphs` builds the graph a trace of a decoder-only model gives (``model.embed_tokens``,
``model.rotary_emb`` broadcasting to every layer, ``model.layers.{i}``, ``model.norm``,
``lm_head``, optionally tied to the embedding) from a few drawn dimensions, with the textbook
sizes: weights ``12 h^2``-style per layer from the drawn hidden and MLP widths, KV cache
``2 * batch * context * kv_heads * head_dim * itemsize`` per layer (Vaswani et al. 2017; the
layout of transformers' ``DynamicCache``), FLOPs ``2 * parameters * tokens``. Such a graph plans
with ``layerplan.plan(graph, max_memory=...)`` as a traced one does, without torch.
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from layerplan.planner.graph import GraphEdge, GraphNode, LayerGraph, TracedWorkload

__all__ = ["layer_graphs", "workloads"]

_ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


def workloads(*, max_batch_size: int = 8, max_prompt_len: int = 4096, max_new_tokens: int = 512,
              dtypes: tuple[str, ...] = ("bfloat16", "float16", "float32")) -> st.SearchStrategy[TracedWorkload]:
    """Resolved workloads (:class:`layerplan.planner.graph.TracedWorkload`): batch ``1..``
    ``max_batch_size``, prompt ``1..max_prompt_len`` tokens, ``0..max_new_tokens`` decode steps,
    a dtype from ``dtypes`` (the KV cache in it or in float16), sdpa or eager attention.

    Raises:
        InvalidArgument: a bound below 1 (0 allowed for ``max_new_tokens``) or an unknown dtype.
    """
    for name, value, floor in (("max_batch_size", max_batch_size, 1), ("max_prompt_len", max_prompt_len, 1),
                               ("max_new_tokens", max_new_tokens, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < floor:
            raise InvalidArgument(f"{name}={value!r}; expected an int >= {floor}")
    unknown = [d for d in dtypes if d not in _ITEMSIZE] if isinstance(dtypes, tuple | list) else [dtypes]
    if unknown or not dtypes:
        raise InvalidArgument(f"dtypes={dtypes!r}; expected a non-empty tuple of {', '.join(_ITEMSIZE)}")
    return st.builds(
        lambda batch, prompt, new, dtype, kv, attn: TracedWorkload(
            batch_size=batch, prompt_len=prompt, max_new_tokens=new, dtype=dtype, kv_dtype=kv or dtype,
            attn_implementation=attn),
        st.integers(1, max_batch_size), st.integers(1, max_prompt_len), st.integers(0, max_new_tokens),
        st.sampled_from(tuple(dtypes)), st.sampled_from((None, "float16")), st.sampled_from(("sdpa", "eager")),
    )


def layer_graphs(*, min_layers: int = 1, max_layers: int = 48, tied: bool | None = None,
                 workload: st.SearchStrategy[TracedWorkload] | None = None) -> st.SearchStrategy[LayerGraph]:
    """Llama-shaped LayerGraphs (module docstring) of ``min_layers..max_layers`` decoder layers
    (10_000 and more is fine: the dimensions are drawn, not the nodes).

    Args:
        min_layers, max_layers: decoder layers, 1 or more.
        tied: ``lm_head`` tied to the input embedding (True), untied (False) or drawn (None).
        workload: the strategy of the traced workload; default :func:`workloads` with small bounds.

    Raises:
        InvalidArgument: bounds out of range, ``tied`` not a bool or None, ``workload`` not a strategy.
    """
    for name, value in (("min_layers", min_layers), ("max_layers", max_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgument(f"{name}={value!r}; expected an int >= 1")
    if min_layers > max_layers:
        raise InvalidArgument(f"min_layers={min_layers} > max_layers={max_layers}; expected min_layers <= max_layers")
    if tied is not None and not isinstance(tied, bool):
        raise InvalidArgument(f"tied={tied!r}; expected True, False or None (drawn)")
    if workload is not None and not isinstance(workload, st.SearchStrategy):
        raise InvalidArgument(f"workload={workload!r}; expected a hypothesis strategy of TracedWorkload")
    return _layer_graphs(min_layers, max_layers, tied, workload or workloads(max_batch_size=4, max_prompt_len=512,
                                                                             max_new_tokens=64))


@st.composite
def _layer_graphs(draw: st.DrawFn, low: int, high: int, tied: bool | None,
                  workloads_: st.SearchStrategy[TracedWorkload]) -> LayerGraph:
    layers = draw(st.integers(low, high))
    work = draw(workloads_)
    heads = draw(st.sampled_from((2, 4, 8)))
    kv_heads = draw(st.sampled_from([k for k in (1, 2, heads) if heads % k == 0]))
    head_dim = draw(st.sampled_from((8, 16, 64)))
    hidden, mlp, vocab = heads * head_dim, draw(st.integers(1, 4)) * heads * head_dim, draw(st.integers(16, 1024))
    item, kv_item = _ITEMSIZE[work.dtype], _ITEMSIZE[work.kv_dtype]
    with_tie = draw(st.booleans()) if tied is None else tied
    tokens, batch = work.batch_size * work.prompt_len, work.batch_size
    act = tokens * hidden * item  # one hidden-state tensor in prefill
    layer_params = hidden * (2 * heads + 2 * kv_heads) * head_dim + 3 * hidden * mlp + 2 * hidden  # q, k, v, o; MLP; norms
    kv = 2 * batch * work.context_len * kv_heads * head_dim * kv_item
    decode = work.max_new_tokens > 0

    def node(name: str, kind: str, cls: str, params: int, *, buffers: int = 0, kv_bytes: int = 0,
             work_bytes: int = 0, flops_params: int = 0) -> GraphNode:
        return GraphNode(name=name, kind=kind, module_class=cls, weight_bytes=params * item, buffer_bytes=buffers,
                         kv_bytes=kv_bytes, prefill_work_bytes=work_bytes,
                         decode_work_bytes=work_bytes // work.prompt_len if decode else 0,
                         prefill_flops=2 * flops_params * tokens, decode_flops=2 * flops_params * batch if decode else 0)

    names = [f"model.layers.{i}" for i in range(layers)]
    nodes = [node("model.embed_tokens", "leaf", "Embedding", vocab * hidden, work_bytes=act),
             node("model.rotary_emb", "leaf", "LlamaRotaryEmbedding", 0, buffers=head_dim // 2 * 4),
             *(node(n, "block", "LlamaDecoderLayer", layer_params, kv_bytes=kv, work_bytes=act * (2 + mlp // hidden),
                    flops_params=layer_params) for n in names),
             node("model.norm", "leaf", "LlamaRMSNorm", hidden, work_bytes=act),
             node("lm_head", "leaf", "Linear", 0 if with_tie else vocab * hidden, work_bytes=batch * vocab * 4,
                  flops_params=vocab * hidden)]
    hidden_shape = (batch, work.prompt_len, hidden)

    def edge(producer: str, consumers: tuple[str, ...], shape: tuple[int, ...], size: int) -> GraphEdge:
        return GraphEdge(producer=producer, consumers=consumers, shape=shape, dtype=work.dtype, size_bytes=size,
                         decode_size_bytes=size // work.prompt_len if decode else 0)

    edges = [edge("model.embed_tokens", (names[0],), hidden_shape, act),
             edge("model.rotary_emb", tuple(names), (1, work.prompt_len, head_dim), 2 * work.prompt_len * head_dim * item),
             *(edge(a, (b,), hidden_shape, act) for a, b in itertools.pairwise(names)),
             edge(names[-1], ("model.norm",), hidden_shape, act),
             edge("model.norm", ("lm_head",), (batch, 1, hidden), batch * hidden * item)]
    return LayerGraph(
        model=f"generated-llama-{layers}", model_class="LlamaForCausalLM", dtype=work.dtype, workload=work,
        nodes=tuple(nodes), edges=tuple(edges),
        tied_parameters=(("lm_head.weight", "model.embed_tokens.weight"),) if with_tie else (),
        tied_groups=(("model.embed_tokens", "lm_head"),) if with_tie else (),
        no_split_module_classes=("LlamaDecoderLayer",), notes=("generated by layerplan.testing.layer_graphs",),
    )
