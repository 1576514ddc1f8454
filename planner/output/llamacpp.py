"""A plan as llama.cpp's ``-ngl``, ``--tensor-split`` and ``-ot`` (tensor override) arguments.

llama.cpp names a Llama-style GGUF's tensors ``token_embd.weight``, ``blk.{i}.attn_q.weight`` ...
``blk.{i}.ffn_down.weight`` (experts ``blk.{i}.ffn_{gate,up,down}_exps.weight``),
``output_norm.weight`` and ``output.weight``; HF's ``model.layers.{i}`` is ``blk.{i}``,
``model.embed_tokens`` is ``token_embd``, ``model.norm`` is ``output_norm`` and ``lm_head`` is
``output`` (absent when tied: llama.cpp then reads ``token_embd``). The rules applied
(``src/llama-model.cpp``, ``src/llama-model-loader.cpp``):

* ``-ngl N`` above the layer count puts every repeating layer and the output layer on the GPUs;
  ``--tensor-split`` gives each GPU a share, and layer ``i`` goes to the first GPU whose cumulative
  share exceeds ``i / n_layer``, which is where its KV cache lives;
* each ``-ot PATTERN=BUFFER`` is tried in order and the first whose regex is *found* in a tensor's
  name (``std::regex_search``) decides its buffer (``CUDA0`` ..., ``CPU``);
* the input embedding is always on the CPU (llama.cpp's input device);
* a MoE layer's experts placed apart from the layer (:mod:`layerplan.planner.model.experts`) get
  their own ``-ot`` ahead of the layers' (``blk\.(3|4)\.ffn_[a-z_]*_exps\.=CPU``: the
  ``ffn_{gate,up,down}_exps`` tensors, what users write as ``-ot exps=CPU``).

The GPUs are listed in stage order in ``CUDA_VISIBLE_DEVICES``, so ``CUDA{k}`` is stage ``k``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from layerplan.solver import InvalidSpecError, format_bytes

__all__ = ["GGUF_NAMES", "LlamaCppExport", "llamacpp"]

#: HF node name (Llama-style) -> its GGUF tensor-name prefix; ``{i}``: the layer index.
GGUF_NAMES = {"model.embed_tokens": "token_embd.", "model.layers.{i}": "blk.{i}.", "model.norm": "output_norm.",
              "lm_head": "output."}


@dataclass(frozen=True, kw_only=True, slots=True)
class LlamaCppExport:
    """llama.cpp launch settings for a plan.

    Attributes:
        env: ``CUDA_VISIBLE_DEVICES`` in stage order.
        args: ``-ngl``, ``--tensor-split`` and one ``-ot PATTERN=BUFFER`` per buffer.
        overrides: the ``(pattern, buffer)`` pairs of the ``-ot`` arguments, in order.
        tensor_split: layers per GPU stage (the ``--tensor-split`` shares).
        notes: where llama.cpp's placement differs from the plan.
    """

    env: dict[str, str]
    args: tuple[str, ...]
    overrides: tuple[tuple[str, str], ...]
    tensor_split: tuple[int, ...]
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: env, args, overrides (``[pattern, buffer]``), tensor_split, notes."""
        return {"engine": "llama.cpp", "env": dict(self.env), "args": list(self.args),
                "overrides": [list(o) for o in self.overrides], "tensor_split": list(self.tensor_split),
                "notes": list(self.notes)}

    def shell(self) -> str:
        """The settings as shell lines, regexes quoted."""
        quoted = [f'"{a}"' if "\\" in a or "|" in a else a for a in self.args]
        return "\n".join([*(f"export {k}={v}" for k, v in self.env.items()), " ".join(quoted)])


def llamacpp(plan: Any, layers: list[int]) -> LlamaCppExport:
    """``plan`` as llama.cpp arguments (module docstring); ``layers``: the node indices of its one
    decoder stack, in order.

    Raises:
        InvalidSpecError: no decoder layer is on a GPU (llama.cpp then needs no GPU arguments:
            run it with ``-ngl 0``).
    """
    graph, problem, assignment = plan.graph, plan.problem, plan.solution.assignment
    device = [problem.devices[d].name if problem.devices[d].is_accelerator else "CPU" for d in assignment]
    layer_of = graph.experts_layers()
    held = [*layers, *(experts for experts, layer in layer_of.items() if layer in layers)]
    gpus = list(dict.fromkeys(device[i] for i in held if device[i] != "CPU"))
    if not gpus:
        raise InvalidSpecError("no decoder layer is on a GPU: run llama.cpp with -ngl 0")
    buffer = {gpu: f"CUDA{k}" for k, gpu in enumerate(gpus)} | {"CPU": "CPU"}
    split, owner = [0] * len(gpus), 0  # an offloaded layer's KV goes with the GPU range it falls in
    by_buffer: dict[str, list[int]] = {}
    for i in layers:
        if device[i] != "CPU":
            owner = gpus.index(device[i])
        split[owner] += 1
        by_buffer.setdefault(buffer[device[i]], []).append(int(graph.nodes[i].name.rsplit(".", 1)[1]))  # blk.{i}
    # experts placed apart from their layer go first: the first pattern found decides
    overrides = [(rf"^blk\.({'|'.join(map(str, idx))})\.ffn_[a-z_]*_exps\.", buf)
                 for buf, idx in _experts_apart(graph, layer_of, device, buffer).items()]
    overrides += [(rf"^blk\.({'|'.join(map(str, idx))})\.", buf) for buf, idx in by_buffer.items()]
    names = {n.name: k for k, n in enumerate(graph.nodes)}
    for hf, gguf in (("model.norm", "output_norm"), ("lm_head", "output")):
        if hf in names and graph.nodes[names[hf]].size_bytes:
            overrides.append((rf"^{gguf}\.", buffer[device[names[hf]]]))
    args = ["-ngl", "999", "--tensor-split", ",".join(map(str, split))]
    for pattern, buf in overrides:
        args += ["-ot", f"{pattern}={buf}"]
    return LlamaCppExport(env={"CUDA_VISIBLE_DEVICES": ",".join(gpus)}, args=tuple(args), overrides=tuple(overrides),
                          tensor_split=tuple(split), notes=tuple(_notes(plan, device, names)))


def _experts_apart(graph: Any, layer_of: dict[int, int], device: list[str],
                   buffer: dict[str, str]) -> dict[str, list[int]]:
    """``{buffer: [layer index]}`` of the MoE layers whose experts node (``layer_of``:
    :meth:`~layerplan.planner.graph.LayerGraph.experts_layers`) is on another device than the
    layer: llama.cpp's ``blk.{i}.ffn_{gate,up,down}_exps`` tensors, overridden to the experts' buffer."""
    out: dict[str, list[int]] = {}
    for experts, layer in layer_of.items():
        if device[experts] != device[layer]:
            out.setdefault(buffer[device[experts]], []).append(int(graph.nodes[layer].name.rsplit(".", 1)[1]))
    return out


def _notes(plan: Any, device: list[str], names: dict[str, int]) -> list[str]:
    notes = []
    embed = names.get("model.embed_tokens")
    if embed is not None and device[embed] != "CPU":
        size = plan.graph.nodes[embed].size_bytes
        notes.append(f"llama.cpp keeps token_embd ({format_bytes(size)}) in host RAM, not on GPU {device[embed]}")
    if any(re.fullmatch(r"model\.layers\.\d+(\.mlp\.experts)?", n.name) and device[k] == "CPU"
           for k, n in enumerate(plan.graph.nodes)):
        notes.append("offloaded layers' weights stay in host RAM (-ot ...=CPU) and llama.cpp computes them on the "
                     "CPU, where accelerate would stream them to the execution device")
    return notes
