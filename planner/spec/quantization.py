"""The names ``[model] quantization`` (``--quantization``) takes, and what each stands for.

Torch-free, so a spec is validated before torch is imported; the bytes each method stores are
computed in :mod:`layerplan.planner.model.quantization`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from layerplan.solver import InvalidSpecError

__all__ = ["METHODS", "quantization_name"]

#: Each name and the :class:`layerplan.planner.model.quantization.Quantization` fields it sets
#: (group sizes and FP8 blocks are the ones the common checkpoints use). ``"none"``: plan the
#: weights unquantized even when the checkpoint has a ``quantization_config``.
METHODS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "nf4": {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4"},
    "nf4-double": {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4", "double_quant": True},
    "fp4": {"method": "bitsandbytes", "bits": 4, "quant_type": "fp4"},
    "int8": {"method": "bitsandbytes", "bits": 8},
    "gptq-4bit": {"method": "gptq", "bits": 4, "group_size": 128},
    "gptq-8bit": {"method": "gptq", "bits": 8, "group_size": 128},
    "awq-4bit": {"method": "awq", "bits": 4, "group_size": 128},
    "fp8": {"method": "fp8", "bits": 8, "block": (128, 128)},
    "mxfp4": {"method": "mxfp4", "bits": 4},
    "none": {},
})
_ALIASES = {"bnb-4bit": "nf4", "4bit": "nf4", "bnb-8bit": "int8", "8bit": "int8", "llm.int8": "int8",
            "gptq": "gptq-4bit", "awq": "awq-4bit"}


def quantization_name(value: object) -> str:
    """The canonical name of a ``[model] quantization`` value (aliases such as ``"bnb-4bit"``
    resolved, case ignored).

    Raises:
        InvalidSpecError: not one of :data:`METHODS` or their aliases (the line lists them).
    """
    name = str(value).strip().lower() if isinstance(value, str) else None
    name = _ALIASES.get(name, name)
    if name not in METHODS:
        raise InvalidSpecError(
            f"[model] quantization={value!r}; expected one of {', '.join(METHODS)} "
            f"(or {', '.join(_ALIASES)})"
        )
    return name
