"""Quantized weights: which parameters a quantization method replaces, and their stored bytes.

A checkpoint's ``quantization_config`` (or the user's ``[model] quantization``) decides how many
bytes each weight takes once ``from_pretrained`` has loaded it. transformers' own quantizers know
this only when their backend imports (GPTQ and AWQ need ``gptqmodel``, compressed-tensors its
package, FP8 and MXFP4 dequantize to bf16 without a GPU) and even then count only the packed
weight (``HfQuantizer.param_element_size``: 0.5 bytes for bitsandbytes 4-bit, without its
absmax statistics). So the bytes come from each method's storage layout, per quantized weight
of ``out x in`` elements (``N = out * in``), as the loading code allocates it:

* ``bitsandbytes`` 4-bit (``bitsandbytes/functional.py`` ``quantize_4bit``, blocksize 64):
  ``ceil(N / 2)`` packed bytes, an fp32 absmax per 64 values, the 16-entry fp32 code; with
  double quantization (``compress_statistics``) the absmax is uint8 per block plus an fp32
  absmax per 256 blocks, a 256-entry fp32 code and an fp32 offset.
* ``bitsandbytes`` 8-bit (``Int8Params``, LLM.int8()): ``N`` int8 bytes and an fp32 scale per
  output row (``SCB``).
* ``gptq`` (AutoGPTQ/GPTQModel ``QuantLinear``): ``qweight`` int32 ``[in * bits / 32, out]``,
  ``qzeros`` int32 ``[in / g, out * bits / 32]``, fp16 ``scales`` ``[in / g, out]``, int32
  ``g_idx`` ``[in]`` (``g = in`` for ``group_size = -1``).
* ``awq`` (AutoAWQ ``WQLinear_GEMM``): ``qweight`` int32 ``[in, out * bits / 32]``, ``qzeros``
  int32 ``[in / g, out * bits / 32]``, fp16 ``scales`` ``[in / g, out]``.
* ``fp8`` (transformers ``integrations/finegrained_fp8.py`` ``FP8Linear``): ``N`` fp8 bytes and
  an fp32 ``weight_scale_inv`` per ``weight_block_size`` block (one per tensor without blocks);
  ``fbgemm_fp8``: an fp32 scale per output row.
* ``mxfp4`` (transformers ``integrations/mxfp4.py``, OCP Microscaling spec): the packed MoE
  expert projections only, ``N / 2`` bytes of FP4 blocks and a uint8 E8M0 scale per 32 values
  (4.25 bits per weight, as the gpt-oss model card says).
* ``compressed-tensors`` (``compressed_tensors`` ``pack-quantized`` / ``float-quantized`` /
  ``int-quantized``): ``N * bits / 8`` packed (else one byte per value), a scale in the model dtype
  per group, channel or tensor, as many zero points when asymmetric, and a 2-entry int64
  ``weight_shape`` when packed.

transformers 5 packs a layer's MoE experts into 3-D parameters (``[experts, rows, cols]``); FP8
(``FP8Experts``), GPTQ, AWQ and compressed-tensors checkpoints quantize each expert's weight, sized
here as ``experts`` weights of ``rows x cols`` (the scale layout along ``cols``); bitsandbytes
replaces ``nn.Linear`` modules only (``integrations/bitsandbytes.py``), so packed experts keep the
model dtype there.

Linear layers are replaced except the output embedding, tied weights and the model's last
module (transformers ``quantizers/base.py`` ``get_keys_to_not_convert``) and the modules the
config skips (``modules_to_not_convert``, ``llm_int8_skip_modules``, ``ignore``), matched as
transformers matches them (``quantizers_utils.should_convert_module``). Everything else keeps the
model's dtype. Biases stay unquantized (fp16 in GPTQ/AWQ layers, the model dtype elsewhere).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerplan.planner.spec.quantization import METHODS, quantization_name
from layerplan.solver.errors import InvalidSpecError

__all__ = ["UNQUANTIZED_EXPERTS", "Quantization", "from_config", "is_expert_module", "parse_quantization",
           "quantized_bytes", "refuses_offload", "unquantized_experts"]

#: How the note of :func:`unquantized_experts` starts (the planner finds it in a graph's notes by it).
UNQUANTIZED_EXPERTS = "bitsandbytes quantizes nn.Linear layers only: the packed MoE experts"

#: bitsandbytes 4-bit: values per absmax, and absmax values per nested absmax (double quant).
_BNB_BLOCK, _BNB_NESTED_BLOCK = 64, 256


@dataclass(frozen=True, kw_only=True, slots=True)
class Quantization:
    """How a model's weights are stored.

    Attributes:
        method: ``"bitsandbytes"``, ``"gptq"``, ``"awq"``, ``"fp8"``, ``"fbgemm_fp8"``,
            ``"mxfp4"`` or ``"compressed-tensors"``.
        bits: bits per quantized value.
        group_size: values per scale along the input dimension (GPTQ, AWQ, compressed-tensors
            ``group``); None: one per output channel.
        block: FP8 ``weight_block_size`` ``(out, in)``; None: one scale per tensor.
        quant_type: bitsandbytes 4-bit ``"nf4"`` or ``"fp4"``.
        double_quant: bitsandbytes 4-bit nested quantization of the absmax statistics.
        symmetric: no zero points (compressed-tensors).
        packed: values packed several per int32 (compressed-tensors ``pack-quantized``).
        strategy: compressed-tensors scale granularity: ``"tensor"``, ``"channel"`` or ``"group"``.
        skip: module name patterns left unquantized besides transformers' defaults.
        source: ``"config"`` (the checkpoint's ``quantization_config``) or ``"user"``.
    """

    method: str
    bits: int
    group_size: int | None = None
    block: tuple[int, int] | None = None
    quant_type: str = ""
    double_quant: bool = False
    symmetric: bool = True
    packed: bool = True
    strategy: str = ""
    skip: tuple[str, ...] = ()
    source: str = "config"

    def describe(self) -> str:
        """One line for reports, e.g. ``"gptq 4-bit, group 128 (from the config; bytes from ...)"``."""
        parts = [f"{self.method} {self.bits}-bit"]
        if self.quant_type:
            parts[0] += f" {self.quant_type}"
        if self.double_quant:
            parts.append("double quant")
        if self.group_size:
            parts.append(f"group {self.group_size}")
        if self.block:
            parts.append(f"blocks {self.block[0]}x{self.block[1]}")
        where = "from the config" if self.source == "config" else "as asked"
        return f"{', '.join(parts)} ({where}; bytes from the method's storage layout)"

    def linear_bytes(self, out_features: int, in_features: int, model_dtype_bytes: int) -> int:
        """Stored bytes of one quantized ``out x in`` weight with its scales, zeros and indices."""
        n, bits = out_features * in_features, self.bits
        if self.method == "bitsandbytes" and bits == 8:
            return n + 4 * out_features
        if self.method == "bitsandbytes":
            blocks = -(-n // _BNB_BLOCK)
            stats = blocks + 4 * -(-blocks // _BNB_NESTED_BLOCK) + 4 * 256 + 4 if self.double_quant else 4 * blocks
            return -(-n // 2) + stats + 4 * 16
        groups = -(-in_features // self.group_size) if self.group_size and self.group_size > 0 else 1
        if self.method == "gptq":
            words = -(-in_features * bits // 32) * out_features + groups * -(-out_features * bits // 32)
            return 4 * words + 2 * groups * out_features + 4 * in_features
        if self.method == "awq":
            return 4 * (in_features + groups) * -(-out_features * bits // 32) + 2 * groups * out_features
        if self.method == "fp8":
            scales = math.prod(-(-d // b) for d, b in zip((out_features, in_features), self.block)) if self.block else 1
            return n + 4 * scales
        if self.method == "fbgemm_fp8":
            return n + 4 * out_features
        if self.method == "compressed-tensors":
            return self._compressed_bytes(out_features, in_features, model_dtype_bytes)
        raise AssertionError(self.method)  # mxfp4 replaces expert tensors, not Linear layers

    def _compressed_bytes(self, out_features: int, in_features: int, model_dtype_bytes: int) -> int:
        n = out_features * in_features
        values = -(-n * self.bits // 8) if self.packed else n
        if self.strategy == "group" and self.group_size:
            scales = out_features * -(-in_features // self.group_size)
        else:
            scales = 1 if self.strategy == "tensor" else out_features
        zeros = 0 if self.symmetric else (-(-scales * self.bits // 8) if self.packed else scales)
        return values + model_dtype_bytes * scales + zeros + (16 if self.packed else 0)


def refuses_offload(method: str) -> bool:
    """Whether weights quantized by ``method`` (:attr:`Quantization.method`, a
    :class:`~layerplan.planner.graph.LayerGraph`'s ``quantization_method``) cannot be loaded on cpu
    or disk next to accelerators: transformers' bitsandbytes quantizers (``quantizer_bnb_4bit.py`` /
    ``quantizer_bnb_8bit.py`` ``validate_environment``) refuse a ``device_map`` with modules on
    cpu or disk unless every module is on cpu (or ``llm_int8_enable_fp32_cpu_offload``, which keeps
    those modules unquantized in fp32: not planned here)."""
    return method == "bitsandbytes"


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpecError(f"quantization_config {what}={value!r}; expected an integer")
    return value


def from_config(config: Any) -> Quantization | None:
    """The quantization a transformers config declares (``config.quantization_config``), or None.

    Raises:
        InvalidSpecError: a method this module does not size (one line naming it and the supported ones).
    """
    raw = getattr(config, "quantization_config", None)
    if raw is None:
        return None
    q = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    method = str(q.get("quant_method", "")).lower().replace("_", "-") if q.get("quant_method") else ""
    if method == "bitsandbytes" or q.get("load_in_4bit") or q.get("load_in_8bit"):
        skip = tuple(q.get("llm_int8_skip_modules") or ())
        if q.get("load_in_8bit"):
            return Quantization(method="bitsandbytes", bits=8, skip=skip)
        return Quantization(method="bitsandbytes", bits=4, quant_type=q.get("bnb_4bit_quant_type") or "fp4",
                            double_quant=bool(q.get("bnb_4bit_use_double_quant")), skip=skip)
    skip = tuple(q.get("modules_to_not_convert") or ())
    if method in ("gptq", "awq"):
        group = _int(q.get("group_size", 128), "group_size")
        return Quantization(method=method, bits=_int(q.get("bits", 4), "bits"), group_size=group if group > 0 else None,
                            skip=skip)
    if method == "fp8":
        block = q.get("weight_block_size")
        return Quantization(method="fp8", bits=8, block=tuple(block) if block else None, skip=skip)
    if method == "fbgemm-fp8":
        return Quantization(method="fbgemm_fp8", bits=8, skip=skip)
    if method == "mxfp4":
        return Quantization(method="mxfp4", bits=4, skip=skip)
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    supported = "bitsandbytes, gptq, awq, fp8, fbgemm_fp8, mxfp4, compressed-tensors"
    raise InvalidSpecError(
        f"quantization_config quant_method={q.get('quant_method')!r} is not sized by layerplan (supported: "
        f"{supported}); plan it unquantized with --quantization none, or as one of {', '.join(METHODS)}"
    )


def _compressed_tensors(q: Mapping[str, Any]) -> Quantization:
    groups = list((q.get("config_groups") or {}).values())
    weights = (groups[0] or {}).get("weights") if groups else None
    if not weights:
        raise InvalidSpecError("quantization_config (compressed-tensors) has no config_groups[...].weights to size")
    strategy = weights.get("strategy", "tensor")
    fmt = q.get("format", "")
    return Quantization(
        method="compressed-tensors", bits=_int(weights.get("num_bits", 8), "num_bits"),
        group_size=_int(weights["group_size"], "group_size") if strategy == "group" else None,
        strategy=strategy, symmetric=bool(weights.get("symmetric", True)),
        packed=fmt == "pack-quantized", skip=tuple(q.get("ignore") or ()),
    )


def parse_quantization(value: str) -> Quantization | None:
    """A ``[model] quantization`` value (:data:`layerplan.planner.spec.quantization.METHODS`):
    its settings, or None for ``"none"``.

    Raises:
        InvalidSpecError: an unknown name (the line lists the known ones).
    """
    settings = METHODS[quantization_name(value)]
    return Quantization(**settings, source="user") if settings else None


# -- which tensors, how many bytes ------------------------------------------------------------
def _kept(model: nn.Module, q: Quantization) -> list[str]:
    """Module name patterns left unquantized: transformers' defaults and the config's."""
    from transformers.quantizers.base import get_keys_to_not_convert

    try:
        defaults = get_keys_to_not_convert(model)
    except AttributeError:  # a plain nn.Module: no tied-weight bookkeeping, no output embeddings
        defaults = []
    return [*defaults, *(p.removeprefix("re:") for p in q.skip)]


def _converted(name: str, patterns: list[str]) -> bool:
    from transformers.quantizers.quantizers_utils import should_convert_module

    try:
        return should_convert_module(name, patterns)
    except re.error:  # a pattern that is no regex: plain prefix / suffix match
        return not any(name == p or name.startswith(p + ".") or name.endswith(p) for p in patterns)


def is_expert_module(name: str, module: nn.Module) -> bool:
    """Whether ``module`` (registered as ``name``) holds a layer's MoE experts: transformers 5's
    packed ``*Experts`` modules, or an ``experts`` module list of per-expert MLPs."""
    return bool(name) and (type(module).__name__.endswith("Experts") or name.rsplit(".", 1)[-1] == "experts")


def _expert_tensors(model: nn.Module) -> Iterator[tuple[str, str, nn.Parameter]]:
    """``(module name, parameter name, parameter)`` of packed MoE expert projections: the 3-D
    tensors (``[experts, rows, cols]``) of an expert module (:func:`is_expert_module`)."""
    for name, module in model.named_modules():
        if is_expert_module(name, module):
            for pname, param in module.named_parameters(recurse=False):
                if param.dim() == 3:
                    yield name, f"{name}.{pname}", param


def quantized_bytes(model: nn.Module, q: Quantization, model_dtype_bytes: int) -> dict[str, int]:
    """``{parameter name: stored bytes}`` of every weight ``q`` replaces in ``model`` (shapes from
    the meta model; names as ``named_parameters`` gives them). Other parameters are not listed.
    """
    kept = _kept(model, q)
    out: dict[str, int] = {}
    if q.method != "mxfp4":  # MXFP4 replaces the packed experts only
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and _converted(name, kept):
                weight = f"{name}.weight" if name else "weight"
                out[weight] = q.linear_bytes(module.out_features, module.in_features, model_dtype_bytes)
                if module.bias is not None and q.method in ("gptq", "awq"):
                    out[f"{name}.bias"] = 2 * module.out_features
    if q.method == "bitsandbytes":  # it replaces nn.Linear only: packed experts stay unquantized
        return out
    for module, key, param in _expert_tensors(model):
        if not _converted(module, kept):
            continue
        if q.method == "mxfp4":
            n = param.numel()
            out[key] = n // 2 + -(-n // 32)
        else:
            experts, rows, cols = param.shape  # one [rows, cols] weight per expert
            out[key] = experts * q.linear_bytes(rows, cols, model_dtype_bytes)
    return out


def unquantized_experts(model: nn.Module, q: Quantization, model_dtype: torch.dtype) -> str | None:
    """A note when ``q`` leaves the packed MoE experts in ``model_dtype``, else None.

    bitsandbytes replaces ``nn.Linear`` layers only (``transformers/integrations/bitsandbytes.py``),
    and transformers 5 packs a layer's experts into 3-D parameters, so a bitsandbytes load keeps
    them at full width: planning DeepSeek-V3 "in 4-bit" comes out at twice its FP8 checkpoint.
    """
    if q.method != "bitsandbytes":
        return None
    kept = _kept(model, q)
    expert_bytes = sum(p.numel() * model_dtype.itemsize for m, _, p in _expert_tensors(model) if _converted(m, kept))
    if not expert_bytes:
        return None
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    dtype = str(model_dtype).removeprefix("torch.")
    share = 100 * expert_bytes / max(total, 1)
    return (f"{UNQUANTIZED_EXPERTS} ({expert_bytes / 2**30:.1f} GiB at {dtype}, {share:.0f}% of the model's "
            "parameters) stay unquantized, as transformers loads them")
