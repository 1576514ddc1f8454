"""A plan as DeepSpeed's pipeline partition: the ``parts`` boundaries of a ``PipelineModule``.

DeepSpeed's ``PipelineModule`` (``deepspeed/runtime/pipe/module.py``) takes the model as a flat list
of layers (``LayerSpec``\\s) and cuts it into ``num_stages`` contiguous parts in
``_partition_layers``: ``self.parts`` is a list of ``num_stages + 1`` boundaries (stage ``s`` builds
``layers[parts[s]:parts[s + 1]]``, then ``self._set_bounds(start=parts[s], stop=parts[s + 1])``).
Its ``partition_method`` only computes the boundaries (``"uniform"``, ``"parameters"``,
``"type:REGEX"``); explicit ones are set by overriding ``_partition_layers``, which
:meth:`DeepSpeedExport.shell` writes.

The layer list is the usual one for a decoder: ``[embedding, layer 0, ..., layer N-1, final norm,
head]`` (the modules with weights around the stack, and a tied head; buffer-only modules such as the
rotary embedding are not layers there; the embedding goes with the first stage, norm and head with the
last, as vLLM places them):
``parts = [0, 1 + c0, 1 + c0 + c1, ..., N + 3]`` for the plan's per-stage layer counts ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerplan.planner.graph import EXPERTS_KIND

__all__ = ["DeepSpeedExport", "deepspeed"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DeepSpeedExport:
    """A plan as DeepSpeed ``PipelineModule`` boundaries.

    Attributes:
        num_stages: ``PipelineModule(num_stages=...)``: one per GPU stage of the plan.
        parts: the ``num_stages + 1`` boundaries into the layer list (module docstring).
        layer_list: the layer list they index, by module name (``[embedding, layers..., norm, head]``).
        stages: per stage: its GPU, first and last decoder layer, layer count, KV-cache bytes.
        notes: where the plan places a module differently (the embedding off the first stage...).
    """

    num_stages: int
    parts: tuple[int, ...]
    layer_list: tuple[str, ...]
    stages: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``num_stages``, ``parts``, ``layer_list``, stages, notes."""
        return {"engine": "deepspeed", "num_stages": self.num_stages, "parts": list(self.parts),
                "layer_list": list(self.layer_list), "stages": [dict(s) for s in self.stages],
                "notes": list(self.notes)}

    def shell(self) -> str:
        """Python: a ``PipelineModule`` whose ``_partition_layers`` uses these boundaries."""
        return "\n".join([
            "from deepspeed.pipe import PipelineModule",
            "",
            "",
            "class PlannedPipelineModule(PipelineModule):",
            f'    """layers = [{", ".join(self.layer_list[:2])}, ..., {", ".join(self.layer_list[-2:])}]"""',
            "",
            "    def _partition_layers(self, method=\"uniform\"):",
            f"        self.parts = {list(self.parts)}",
            "        stage_id = self._topo.get_coord(self.global_rank).pipe",
            "        self._set_bounds(start=self.parts[stage_id], stop=self.parts[stage_id + 1])",
            "",
            f"# PlannedPipelineModule(layers=layers, num_stages={self.num_stages}, ...)",
        ])


def deepspeed(plan: Any) -> DeepSpeedExport:
    """``plan``'s decoder stages as DeepSpeed ``parts`` (module docstring).

    Raises:
        InvalidSpecError: no single stack of numbered decoder layers; a layer offloaded to cpu/disk
            (:func:`layerplan.planner.output.export.layer_stages`).
    """
    from layerplan.planner.output.export import _differences, layer_stages

    graph = plan.graph
    device, layers, stages = layer_stages(plan, "deepspeed")
    tied = {name for group in graph.tied_groups for name in group}  # a tied head is a TiedLayerSpec there
    # not buffer-only modules (rotary), nor MoE experts nodes (inside their layer's LayerSpec)
    kept = lambda n: (n.weight_bytes > 0 or n.name in tied) and n.kind != EXPERTS_KIND  # noqa: E731
    before = [n.name for n in graph.nodes[: layers[0]] if kept(n)]
    after = [n.name for n in graph.nodes[layers[-1] + 1:] if kept(n)]
    layer_list = (*before, *(graph.nodes[i].name for i in layers), *after)
    parts = [0]
    for stage in stages[:-1]:
        parts.append((parts[-1] or len(before)) + stage["layers"])
    parts.append(len(layer_list))
    return DeepSpeedExport(num_stages=len(stages), parts=tuple(parts), layer_list=layer_list, stages=tuple(stages),
                           notes=tuple(_differences(graph, device, layers, stages, "deepspeed")))
