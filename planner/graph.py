"""The LayerGraph: nodes in execution order with their bytes, the tensors between them, tied groups.

It is plain data (JSON round-trip with :meth:`LayerGraph.to_json` / :meth:`LayerGraph.from_json`), so
a model can be traced once and planned many times, and it is the only thing the planner hands to
:mod:`solver` (via :meth:`LayerGraph.to_problem`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from layerplan.planner.graph_schema import check_graph_dict
from layerplan.planner.spec.sections import Phase
from layerplan.solver import Device, Edge, InvalidSpecError, Node, PlacementProblem

__all__ = ["EXPERTS_KIND", "GraphNode", "GraphEdge", "LayerGraph", "TracedWorkload"]

#: :attr:`GraphNode.kind` of a MoE layer's experts node (:mod:`layerplan.planner.model.experts`).
EXPERTS_KIND = "experts"

GRAPH_FORMAT_VERSION = 7
#: Older formats :meth:`LayerGraph.from_dict` still reads. 2: no FLOPs, no decode-step edge sizes;
#: 3: no ``empty_modules``; 5: no ``images_per_prompt`` / ``image_tokens`` in the workload (text only),
#: no ``quantization_method``; 6: MoE experts inside their layer's node (no ``"experts"`` nodes).
_READABLE_FORMAT_VERSIONS = (2, 3, 4, 5, 6, GRAPH_FORMAT_VERSION)


@dataclass(frozen=True, kw_only=True, slots=True)
class GraphNode:
    """One node: a no-split block, a leaf module outside blocks, or a root parameter.

    Attributes:
        name: module (or parameter) name, as used in a ``device_map``, e.g. ``"model.layers.7"``.
        kind: ``"block"`` (an instance of a ``no_split_module_classes`` class), ``"leaf"`` or
            ``"parameter"``.
        module_class: class name of the module (``"LlamaDecoderLayer"``), ``"Parameter"`` for
            root parameters.
        weight_bytes: parameter bytes in the planned dtype; tied parameters are counted once, on the
            node that registers them first (accelerate ``compute_module_sizes`` semantics).
        buffer_bytes: buffer bytes (persistent or not), same dtype rule.
        kv_bytes: KV cache the node holds at the end of the workload (its attention layers' keys and
            values, :mod:`layerplan.planner.model.measure`), or more where a sliding-window layer
            held more after the prompt (the storage behind its window's view of the prompt's K/V);
            charged to the node's execution device.
        prefill_work_bytes: peak transient working set of the node's forward during prefill
            (bytes above those live at its entry).
        decode_work_bytes: the same for one decode step.
        prefill_live_bytes: activation bytes live at the node's prefill peak besides its working
            set: what the forward allocated earlier and still holds when the node runs (the
            model's inputs, ``inputs_embeds``, the node's input hidden states, rotary cos/sin,
            masks built outside every node), KV cache excluded (it is ``kv_bytes``);
            :mod:`layerplan.planner.model.measure`. 0 in graphs written before it was measured.
        decode_live_bytes: the same for one decode step.
        prefill_flops: floating-point operations (a multiply-add counts 2) of the node's forward in
            one prefill pass over the prompt (``batch * prompt_len`` tokens; logits for the last
            position only unless ``prefill_logits``), counted per op with PyTorch's formulas
            (``torch.utils.flop_counter``: matmuls, convolutions, attention; elementwise ops count 0)
            during the fake-tensor forward of :mod:`layerplan.planner.model.measure`.
        decode_flops: the same for one decode step at full context (``batch`` new tokens against a
            cache of ``context_len - 1`` tokens); 0 when the workload has no decode step (an
            encoder-only model, or ``phase="prefill"``).
        executed: False when the meta forward never called the node (its position then follows
            registration order).
        estimated: some of KV, working set and FLOPs come from the config (:mod:`layerplan.planner.model.estimate`),
            not a measurement (the graph's notes say which).
        expert_bytes: the part of ``weight_bytes`` held by MoE experts (modules whose class ends in
            ``Experts``, or an ``experts`` module list); transformers packs a layer's experts into one
            module (one parameter per projection for all experts), so they move with their block.
        before_kv_cache: the node runs only before any KV cache exists, so its working set never
            coexists with the cache: an encoder-decoder's encoder nodes when the model generates
            (transformers ``GenerationMixin.generate`` runs the whole encoder once,
            ``_maybe_prepare_encoder_kwargs_for_generation``, before ``_prepare_cache_for_generation``
            and the decoder's first step; :mod:`layerplan.planner.model.trace`). Passed to the
            solver as :attr:`layerplan.solver.Node.before_kv_cache`. False in graphs written
            before it was recorded (their encoders are then charged beside the cache: conservative).
        parts: for a MoE layer whose experts are a node of their own (kind ``"experts"``, the next
            node: :mod:`layerplan.planner.model.experts`), the ``device_map`` keys that cover the
            layer without its experts (its children and parameters off the path to them), which
            the device_map names when the two are placed apart; empty otherwise.
    """

    name: str
    kind: str
    module_class: str
    weight_bytes: int
    buffer_bytes: int
    kv_bytes: int = 0
    prefill_work_bytes: int = 0
    decode_work_bytes: int = 0
    prefill_live_bytes: int = 0
    decode_live_bytes: int = 0
    prefill_flops: int = 0
    decode_flops: int = 0
    executed: bool = True
    estimated: bool = False
    expert_bytes: int = 0
    before_kv_cache: bool = False
    parts: tuple[str, ...] = ()

    @property
    def work_bytes(self) -> int:
        """Activation bytes the node's device holds at the node's peak, over the phases measured:
        ``max(prefill_work + prefill_live, decode_work + decode_live)`` bytes. On one device the
        forward's peak is then weights + KV cache + the largest ``work_bytes``; across devices a
        node's live bytes include tensors that another device holds or sent (charged there, or as
        a transfer, too: conservative)."""
        return max(self.prefill_work_bytes + self.prefill_live_bytes, self.decode_work_bytes + self.decode_live_bytes)

    @property
    def size_bytes(self) -> int:
        """Bytes resident on the device that holds the node (weights + buffers)."""
        return self.weight_bytes + self.buffer_bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class GraphEdge:
    """One tensor that leaves node ``producer`` and is read by every node in ``consumers``.

    Attributes:
        producer: node name.
        consumers: node names, each later in execution order.
        shape: the tensor's shape as the consumer receives it in prefill, e.g. ``(batch,
            prompt_len, hidden)``; between the decoder nodes of an encoder-decoder model ``(batch,
            1, hidden)``, as ``generate()``'s decoder starts from its one ``decoder_start_token_id``
            token, while the encoder output it reads keeps ``prompt_len`` tokens.
        dtype: torch dtype name, e.g. ``"bfloat16"``.
        size_bytes: ``prod(shape) * itemsize`` bytes per prefill forward pass.
        decode_size_bytes: bytes of the same input in one decode step, as measured by
            :mod:`layerplan.planner.model.trace` (e.g. ``batch * 1 * hidden * itemsize`` for hidden states; the
            encoder output of an encoder-decoder model keeps its ``prompt_len`` tokens because it
            is handed to the decoder at every step); 0 when the consumers do not run in decode
            (encoder blocks) or the workload has no decode step. Always filled: where the decode
            step could not be measured it is derived (:func:`decode_size_from_prefill`) and the
            graph's notes say so.
    """

    producer: str
    consumers: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    size_bytes: int
    decode_size_bytes: int


def decode_size_from_prefill(size_bytes: int, shape: Sequence[int], *, prompt_len: int) -> int:
    """Bytes of a prefill tensor of ``shape`` (``size_bytes``) once its ``prompt_len`` dimension is 1.

    ``size_bytes // prompt_len`` when a dimension equals ``prompt_len``, else ``size_bytes``. A
    derivation, used only where the decode step was not measured (format-2 graphs, a failed
    measurement): it cannot know that a ``(batch, heads, q, kv)`` bias becomes ``(.., 1, context)``
    nor that an encoder output keeps its ``prompt_len`` tokens in decode.
    """
    return size_bytes // prompt_len if prompt_len in tuple(shape) else size_bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class TracedWorkload:
    """The workload a graph was traced at, resolved (every length known), torch-free.

    Attributes:
        batch_size: sequences per forward pass.
        prompt_len: prompt tokens (prefill length), tokens.
        max_new_tokens: decode steps, tokens.
        dtype: weight and activation dtype name (``"bfloat16"``).
        kv_dtype: KV-cache dtype name; None: ``dtype``.
        attn_implementation: ``"sdpa"`` or ``"eager"``.
        phase: which part of ``generate()`` must fit.
        prefill_logits: logits for every prompt position in prefill.
        images_per_prompt: images per prompt (vision-language models).
        image_tokens: prompt tokens those images take, part of ``prompt_len``.
    """

    batch_size: int
    prompt_len: int
    max_new_tokens: int = 0
    dtype: str = "float16"
    kv_dtype: str | None = None
    attn_implementation: str = "sdpa"
    phase: Phase = Phase.GENERATE
    prefill_logits: bool = False
    images_per_prompt: int = 0
    image_tokens: int = 0

    def __post_init__(self) -> None:
        if self.kv_dtype is None:
            object.__setattr__(self, "kv_dtype", self.dtype)
        if not isinstance(self.phase, Phase):
            object.__setattr__(self, "phase", Phase(self.phase))

    @property
    def context_len(self) -> int:
        """Tokens the KV cache holds at the end: ``prompt_len + max_new_tokens``."""
        return self.prompt_len + self.max_new_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``context_len`` spelled out."""
        return {"batch_size": self.batch_size, "prompt_len": self.prompt_len, "max_new_tokens": self.max_new_tokens,
                "context_len": self.context_len, "dtype": self.dtype, "kv_dtype": self.kv_dtype,
                "attn_implementation": self.attn_implementation, "phase": self.phase.value,
                "prefill_logits": self.prefill_logits, "images_per_prompt": self.images_per_prompt,
                "image_tokens": self.image_tokens}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TracedWorkload:
        """Inverse of :meth:`to_dict` (``context_len`` is derived; unknown keys are ignored)."""
        return cls(**{f: data[f] for f in cls.__dataclass_fields__ if f in data})


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerGraph:
    """A traced model, ready to be planned.

    Attributes:
        model: the model's name (catalog name, path or class).
        model_class: e.g. ``"LlamaForCausalLM"``.
        dtype: the dtype weights and activations were sized in, e.g. ``"bfloat16"``.
        workload: the workload it was traced at (:class:`TracedWorkload`; a mapping of its fields
            is converted); edges are measured in prefill (``prompt_len`` tokens).
        nodes: in execution order.
        edges: tensors between nodes.
        tied_parameters: groups of parameter names sharing one tensor (accelerate
            ``find_tied_parameters``).
        tied_groups: groups of node names that must share a device because of ``tied_parameters``.
        no_split_module_classes: the classes kept whole.
        empty_modules: modules of the model outside every node that hold no parameter or buffer
            (dropouts, activations: GPT-2's ``"transformer.drop"``), in registration order. They
            are no nodes, but a ``device_map`` may name them (accelerate's ``infer_auto_device_map``
            does): such a key places nothing (:mod:`layerplan.planner.output.mapping`).
        notes: how the graph was obtained where it deviates from a full meta trace.
        quantization: how quantized weights were sized (:meth:`layerplan.planner.model.quantization.Quantization.describe`),
            e.g. ``"gptq 4-bit, group 128 (from the config; ...)"``; empty when nothing is quantized.
        quantization_method: the method alone (:attr:`~layerplan.planner.model.quantization.Quantization.method`:
            ``"bitsandbytes"``, ``"gptq"``, ...), what loading rules are decided on; empty when
            nothing is quantized. Graphs before format 6 take it from ``quantization``'s first word.
    """

    model: str
    model_class: str
    dtype: str
    workload: TracedWorkload
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    tied_parameters: tuple[tuple[str, ...], ...] = ()
    tied_groups: tuple[tuple[str, ...], ...] = ()
    no_split_module_classes: tuple[str, ...] = ()
    empty_modules: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    quantization: str = ""
    quantization_method: str = ""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.workload, Mapping):
            object.__setattr__(self, "workload", TracedWorkload.from_dict(self.workload))
        object.__setattr__(self, "_index", {n.name: i for i, n in enumerate(self.nodes)})

    # -- views ----------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.workload.batch_size

    @property
    def prompt_len(self) -> int:
        return self.workload.prompt_len

    @property
    def total_kv_bytes(self) -> int:
        return sum(n.kv_bytes for n in self.nodes)

    @property
    def total_expert_bytes(self) -> int:
        """Weight bytes of MoE experts over all nodes (0 for a dense model)."""
        return sum(n.expert_bytes for n in self.nodes)

    def experts_layers(self) -> dict[int, int]:
        """``{experts node index: its layer's index}`` for the MoE layers whose experts are a node
        of their own (kind ``"experts"``, right after the layer it sits in:
        :mod:`layerplan.planner.model.experts`), in execution order; empty for other graphs."""
        nodes = self.nodes
        return {i: i - 1 for i in range(1, len(nodes))
                if nodes[i].kind == EXPERTS_KIND and nodes[i].name.startswith(nodes[i - 1].name + ".")}

    def index(self, name: str) -> int:
        """Position of node ``name`` in execution order; KeyError if absent."""
        return self._index[name]

    @property
    def total_bytes(self) -> int:
        """Bytes of every node's weights and buffers."""
        return sum(n.size_bytes for n in self.nodes)

    def node_of(self, module_or_param: str) -> str | None:
        """The node that holds ``module_or_param`` (itself, or its closest ancestor that is a node)."""
        name = module_or_param
        while True:
            if name in self._index:
                return name
            if not name:
                return None
            name = name.rpartition(".")[0]

    # -- conversion -----------------------------------------------------------------------------
    def to_problem(
        self,
        *,
        devices: Sequence[Device],
        pins: Mapping[str, int] | None = None,
        ordered: bool = True,
    ) -> PlacementProblem:
        """The pure :class:`solver.PlacementProblem` for this graph on ``devices``.

        Args:
            devices: placement targets (accelerators first, in block order).
            pins: node name -> device index.
            ordered: accelerator blocks follow the device order.

        Raises:
            InvalidSpecError: a pin names a node that is not in the graph.
        """
        pin_pairs = []
        for name, device in (pins or {}).items():
            if name not in self._index:
                raise InvalidSpecError(f"pin {name!r} is not a node of {self.model}; nodes are e.g. "
                                       f"{', '.join(n.name for n in self.nodes[:3])} (see `layerplan trace`)")
            pin_pairs.append((self._index[name], device))
        return PlacementProblem(
            nodes=tuple(
                Node(name=n.name, size_bytes=n.size_bytes, kv_bytes=n.kv_bytes, work_bytes=n.work_bytes,
                     before_kv_cache=n.before_kv_cache, offload_inline=n.kind == EXPERTS_KIND)
                for n in self.nodes
            ),
            edges=tuple(
                Edge(
                    producer=self._index[e.producer],
                    consumers=tuple(self._index[c] for c in e.consumers),
                    size_bytes=e.size_bytes,
                )
                for e in self.edges
            ),
            devices=tuple(devices),
            tied_groups=tuple(tuple(self._index[m] for m in g) for g in self.tied_groups),
            pins=tuple(pin_pairs),
            ordered=ordered,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_index", None)
        data["workload"] = self.workload.to_dict()
        data["format_version"] = GRAPH_FORMAT_VERSION
        return data

    def to_json(self, *, indent: int | None = 1) -> str:
        """Serialise to JSON (all sizes integer bytes)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerGraph:
        """Inverse of :meth:`to_dict`; also reads format 2 (FLOPs 0, decode edge sizes derived from
        the prefill shapes by :func:`decode_size_from_prefill`, and a note saying so) and format 3
        (no ``empty_modules``, and a note saying so).

        Raises:
            InvalidSpecError: an unknown ``format_version``, or a missing, mistyped or inconsistent
                field (:func:`layerplan.planner.graph_schema.check_graph_dict`), in one line.
        """
        if not isinstance(data, Mapping):
            raise InvalidSpecError(f"a graph JSON holds an object, not a {type(data).__name__}; write one with `layerplan trace`")
        data = dict(data)
        version = data.pop("format_version", GRAPH_FORMAT_VERSION)
        if version not in _READABLE_FORMAT_VERSIONS:
            raise InvalidSpecError(
                f"graph format_version={version!r} but this layerplan reads "
                f"{', '.join(map(str, _READABLE_FORMAT_VERSIONS))}; trace the model again"
            )
        check_graph_dict(data, version=version)
        edges = [{**e, "consumers": tuple(e["consumers"]), "shape": tuple(e["shape"])} for e in data["edges"]]
        notes = tuple(data.get("notes", ()))
        if version == 2:
            prompt_len = int(data["workload"]["prompt_len"])
            for e in edges:
                e["decode_size_bytes"] = decode_size_from_prefill(e["size_bytes"], e["shape"], prompt_len=prompt_len)
            notes += ("graph format 2 predates FLOP counting: prefill_flops and decode_flops are 0 and edge "
                      "decode_size_bytes are the prefill sizes with the prompt_len dimension set to 1; "
                      "trace the model again to measure them",)
        if version in (2, 3):
            notes += (f"graph format {version} does not list the modules without parameters or buffers: a "
                      "device_map naming one (e.g. GPT-2's transformer.drop) is refused; trace the model "
                      "again to accept such maps",)
        data["nodes"] = tuple(GraphNode(**{**n, "parts": tuple(n.get("parts", ()))}) for n in data["nodes"])
        data["edges"] = tuple(GraphEdge(**e) for e in edges)
        for key in ("tied_parameters", "tied_groups"):
            data[key] = tuple(tuple(g) for g in data.get(key, ()))
        data["no_split_module_classes"] = tuple(data.get("no_split_module_classes", ()))
        data["empty_modules"] = tuple(data.get("empty_modules", ()))
        data["notes"] = notes
        if version < 6 and data.get("quantization"):
            data["quantization_method"] = data["quantization"].split(" ", 1)[0]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> LayerGraph:
        """Inverse of :meth:`to_json`.

        Raises:
            InvalidSpecError: the text is not a layerplan graph.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidSpecError(
                f"not a layerplan graph JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
                "produce one with `layerplan trace`"
            ) from None
        return cls.from_dict(data)
