"""What ``from_pretrained(device_map=<strategy>, max_memory=..., dtype=...)`` would place where.

The baseline a layerplan plan is compared with. transformers 5 no longer calls accelerate's
``get_balanced_memory`` / ``infer_auto_device_map``: it carries its own forks of them in
``transformers/integrations/accelerate.py``, and they differ (its ``get_balanced_memory`` pads each
GPU's share by 1.25 x the *largest* no-split block or leaf, accelerate's by 1.25 x the first block of
each class or the *mean* leaf). So this module follows transformers 5.23's own path, function by
function:

1. ``modeling_utils.py`` ``PreTrainedModel.from_pretrained``: the model is built from its config under
   ``cls.get_init_context(dtype, ...)`` (default dtype ``dtype``, meta device, weights not tied yet),
   then ``_get_device_map(model, device_map, max_memory, hf_quantizer)`` is called before any weight
   is read.
2. ``integrations/accelerate.py`` ``_get_device_map``: ``"sequential"`` takes ``get_max_memory(max_memory)``;
   the other strategies take ``get_balanced_memory(model, max_memory, model._no_split_modules,
   low_zero=(strategy == "balanced_low_0"))`` (``"auto"`` is ``"balanced"``); then
   ``infer_auto_device_map(model, max_memory=..., no_split_module_classes=model._no_split_modules,
   no_placement_params=model._no_placement_params)``.

Those transformers functions are called here as they are (no quantizer), on a fresh meta model, with
copies of ``max_memory``. They read no accelerator: with an explicit ``max_memory``, transformers'
``get_max_memory`` adds the CUDA caching allocator's reserved-but-unused bytes (0 on a machine without
CUDA; read without initialising CUDA) and then caps every device at the user's value again, so the
result depends on the declared caps only. GPU ids that this machine does not have are fine: both
``get_balanced_memory`` and ``infer_auto_device_map`` count integer keys as GPUs without asking
torch; accelerate's ``get_max_memory`` only logs "Device N is not available", which is silenced here
because layerplan plans for hardware it does not run on.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping, Sequence

import torch
from accelerate.utils import find_tied_parameters
from torch import nn
from transformers import PreTrainedModel
from transformers.integrations import accelerate as hf_accelerate

from layerplan.planner.spec.sizes import parse_dtype, parse_max_memory
from layerplan.solver import InvalidSpecError, TraceError

__all__ = ["STRATEGIES", "accelerate_device_map", "accelerate_max_memory"]

#: The ``device_map`` strings ``from_pretrained`` plans itself (transformers ``check_and_set_device_map``).
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")

#: Device keys accelerate's ``get_max_memory`` accepts besides GPU ids; it raises on any other.
_NAMED_DEVICES = ("mps", "cpu", "disk")

#: dtypes ``torch.set_default_dtype`` accepts, hence the ones ``from_pretrained`` can build a model in.
_INIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def accelerate_max_memory(
    meta_model: nn.Module,
    *,
    max_memory: Mapping[int | str, int | str],
    strategy: str,
    dtype: torch.dtype | str,
    no_split_module_classes: Sequence[str] = (),
) -> dict[int | str, int]:
    """The per-device budget (bytes) transformers hands ``infer_auto_device_map`` for ``strategy``.

    ``"sequential"``: the declared caps. ``"auto"`` / ``"balanced"``: every GPU but the last capped at
    ``total // n_gpus + 1.25 * max(largest no-split block, largest leaf)``. ``"balanced_low_0"``: the
    same share over GPUs 1..n-1 and GPU 0 capped at what they cannot hold. (transformers
    ``integrations/accelerate.py`` ``get_balanced_memory`` / ``get_max_memory``.)

    Args and Raises: see :func:`accelerate_device_map`.

    Returns:
        A new dict, device -> bytes, in accelerate's order (GPUs ascending, ``"mps"``, ``"cpu"``, ``"disk"``).
    """
    strategy = _check_strategy(strategy)
    caps = _accelerate_caps(max_memory, strategy)
    model = _model_as_loaded(meta_model, parse_dtype(dtype))
    return _strategy_max_memory(model, caps, strategy, _no_split_classes(model, no_split_module_classes))


def accelerate_device_map(
    meta_model: nn.Module,
    *,
    max_memory: Mapping[int | str, int | str],
    strategy: str,
    dtype: torch.dtype | str,
    no_split_module_classes: Sequence[str] = (),
) -> dict[str, int | str]:
    """The ``device_map`` ``from_pretrained(device_map=strategy, max_memory=max_memory, dtype=dtype)``
    computes for ``meta_model``'s class and config, without weights and without an accelerator.

    Follows transformers 5.23 ``integrations/accelerate.py`` ``_get_device_map`` (see the module
    docstring): budget from :func:`accelerate_max_memory`, then transformers' ``infer_auto_device_map``
    with the model's ``_no_split_modules`` (plus ``no_split_module_classes``) and its
    ``_no_placement_params``. Its quirks are kept: GPU 0 (and cpu) hold back room for the largest
    remaining layer, so the first GPU can stay empty; modules that fit nowhere go to ``"disk"`` even
    when ``max_memory`` declares no disk.

    Args:
        meta_model: a ``PreTrainedModel`` (only its class and config are read: a fresh instance is
            built on meta exactly as ``from_pretrained`` builds it, so ``_keep_in_fp32_modules``
            counts at ``dtype`` as it does there, and buffers created in float32 stay float32), or a
            plain ``nn.Module`` on the meta device (sized as ``model.to(dtype)``, tied groups from
            accelerate ``find_tied_parameters``).
        max_memory: device -> cap, accelerate's keys (GPU ids need not exist on this machine);
            values in bytes or strings such as ``"40GiB"``. Not modified.
        strategy: one of :data:`STRATEGIES`.
        dtype: the ``dtype`` passed to ``from_pretrained`` (``torch.bfloat16`` or ``"bf16"``).
        no_split_module_classes: classes kept whole in addition to the model's ``_no_split_modules``
            (``from_pretrained`` itself takes none).

    Returns:
        A new dict, module name -> device (``int`` GPU id, ``"cpu"``, ``"disk"``), in the order
        accelerate assigned it, collapsed by accelerate's ``clean_device_map`` (``{"": 0}`` when all
        fits on GPU 0).

    Raises:
        InvalidSpecError: unknown strategy, bad ``max_memory`` or dtype, a device accelerate does not
            know, ``"balanced_low_0"`` with GPU ids other than 0..n-1, a ``no_split_module_classes``
            entry that names no module of the model, a plain module with weights off the meta device.
        TraceError: transformers cannot build the model from its config.
    """
    strategy = _check_strategy(strategy)
    caps = _accelerate_caps(max_memory, strategy)
    model = _model_as_loaded(meta_model, parse_dtype(dtype))
    no_split = _no_split_classes(model, no_split_module_classes)
    budget = _strategy_max_memory(model, caps, strategy, no_split)
    with _quiet_absent_devices():
        device_map = hf_accelerate.infer_auto_device_map(
            model,
            max_memory=dict(budget),  # transformers converts and reorders it in place: give it a copy
            no_split_module_classes=no_split,
            tied_parameters=_tied_parameters(model),
            no_placement_params=getattr(model, "_no_placement_params", None),
        )
    return dict(device_map)


# -- steps ---------------------------------------------------------------------------------------
def _check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidSpecError(
            f"unknown strategy {strategy!r}; from_pretrained plans device_map={', '.join(map(repr, STRATEGIES))}"
        )
    return strategy


def _accelerate_caps(max_memory: Mapping[int | str, int | str], strategy: str) -> dict[int | str, int]:
    """Integer caps in accelerate's device order; a new dict."""
    caps = parse_max_memory(max_memory)
    other = [d for d in caps if not isinstance(d, int) and d not in _NAMED_DEVICES]
    if other:
        raise InvalidSpecError(
            f"max_memory declares {', '.join(map(repr, other))} but accelerate's get_max_memory only "
            "knows GPU ids, 'mps', 'cpu' and 'disk'; declare the accelerator by its integer id"
        )
    gpus = [d for d in caps if isinstance(d, int) and caps[d] > 0]
    if strategy == "balanced_low_0" and len(gpus) > 1 and gpus != list(range(len(gpus))):
        # get_balanced_memory(low_zero=True) reads max_memory[0] and max_memory[1..n-1] by index
        raise InvalidSpecError(
            f"strategy='balanced_low_0' assumes GPU ids 0..{len(gpus) - 1} (transformers "
            f"get_balanced_memory indexes them so) but max_memory declares GPUs {gpus}; number them from 0"
        )
    return caps


def _model_as_loaded(meta_model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A fresh meta model whose tensors have the dtypes ``from_pretrained`` gives them before placing."""
    if isinstance(meta_model, PreTrainedModel):
        cls = type(meta_model)
        if dtype not in _INIT_DTYPES:
            # get_init_context sets torch's default dtype, which only takes these (int8 and fp8 load
            # through a quantization_config, which this baseline does not model)
            raise InvalidSpecError(
                f"dtype={dtype} cannot be from_pretrained's dtype (it becomes torch's default dtype); "
                f"use one of {', '.join(str(d).removeprefix('torch.') for d in _INIT_DTYPES)}"
            )
        try:
            with contextlib.ExitStack() as stack:
                # modeling_utils.py from_pretrained: `with ContextManagers(model_init_context): model = cls(config)`
                for context in cls.get_init_context(dtype, False, False, None):
                    stack.enter_context(context)
                return cls(copy.deepcopy(meta_model.config))
        except Exception as exc:  # transformers raises many types here; we report them all as one
            raise TraceError(f"cannot build {cls.__name__} from its config as from_pretrained does: {exc}") from exc
    if any(p.device.type != "meta" for p in meta_model.parameters()):
        raise InvalidSpecError(
            f"{type(meta_model).__name__} has weights in memory and no transformers config; build it under "
            "`with torch.device('meta'):` and pass that, or pass a PreTrainedModel"
        )
    return copy.deepcopy(meta_model).to(dtype)  # Module.to(dtype) casts floating tensors only


def _no_split_classes(model: nn.Module, extra: Sequence[str]) -> set[str]:
    """The model's ``_no_split_modules`` plus ``extra``, each of which must name a module class."""
    if isinstance(extra, str):
        extra = (extra,)
    present = {type(m).__name__ for m in model.modules()}
    unknown = [c for c in extra if c not in present]
    if unknown:
        raise InvalidSpecError(
            f"no_split_module_classes names {', '.join(map(repr, unknown))} but no module of "
            f"{type(model).__name__} has that class; classes present are e.g. {', '.join(sorted(present)[:6])}"
        )
    return set(getattr(model, "_no_split_modules", None) or ()) | set(extra)


def _tied_parameters(model: nn.Module) -> list[list[str]] | None:
    """None lets transformers read ``model.all_tied_weights_keys``; a plain module has none of those."""
    if hasattr(model, "all_tied_weights_keys"):
        return None
    return find_tied_parameters(model) or [[]]


def _strategy_max_memory(
    model: nn.Module, caps: dict[int | str, int], strategy: str, no_split: set[str]
) -> dict[int | str, int]:
    """transformers ``_get_device_map``'s first step, on a copy of ``caps``."""
    with _quiet_absent_devices():
        if strategy == "sequential":
            budget = hf_accelerate.get_max_memory(dict(caps))
        else:
            budget = hf_accelerate.get_balanced_memory(
                model,
                max_memory=dict(caps),
                no_split_module_classes=no_split,
                hf_quantizer=None,
                low_zero=strategy == "balanced_low_0",
            )
    return {device: int(size) for device, size in budget.items()}


@contextlib.contextmanager
def _quiet_absent_devices() -> Iterator[None]:
    """Silence accelerate ``get_max_memory``'s "Device N is not available" for declared GPUs."""
    log = logging.getLogger("accelerate.utils.modeling")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
