"""The checkpoint a calibration loads: the user's model directory when it holds weights, else a
temporary one with random weights of the right shapes (``from_config`` + ``save_pretrained``), so
that a catalog name or a bare ``config.json`` can be measured too. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoConfig, PretrainedConfig

from layerplan.planner.model.meta import auto_class_for
from layerplan.planner.model.source import resolve_source
from layerplan.planner.quiet import quiet
from layerplan.planner.spec import PlanSpec, parse_dtype
from layerplan.solver import InvalidSpecError

__all__ = ["checkpoint", "has_weights"]

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def has_weights(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``save_pretrained`` checkpoint's weights (safetensors or bin)."""
    path = Path(folder)
    return path.is_dir() and any(any(path.glob(p)) for p in _WEIGHT_PATTERNS)


def _config_of(spec: PlanSpec, model_dir: str | None) -> tuple[PretrainedConfig, str | None]:
    """The model's config, and the folder that already holds its weights (None: make them).

    Raises:
        InvalidSpecError: ``model_dir`` has no config.json, or the spec's model has no config.
    """
    if model_dir is not None:
        if not (Path(model_dir) / "config.json").is_file():
            raise InvalidSpecError(f"--model-dir {model_dir!r} holds no config.json; give a save_pretrained folder")
        return AutoConfig.from_pretrained(model_dir), (model_dir if has_weights(model_dir) else None)
    source = resolve_source(spec.model.source)
    if source.config is None:
        raise InvalidSpecError(f"{source.name} has no transformers config to load a model from; calibrate a "
                               "model directory, catalog name or config.json (--model-dir DIR)")
    folder = source.path if source.path is not None and has_weights(source.path) else None
    return source.config, folder


@contextlib.contextmanager
def checkpoint(spec: PlanSpec, *, model_dir: str | None = None, dtype: str) -> Iterator[tuple[str, bool]]:
    """Context manager yielding ``(folder, random_weights)``: a folder ``from_pretrained`` loads.

    Args:
        spec: the plan's spec (its ``[model] source`` when ``model_dir`` is None).
        model_dir: a ``save_pretrained`` folder; without weights, its config gets random ones.
        dtype: the dtype random weights are written in (the plan's).

    Raises:
        InvalidSpecError: no config to build from.
    """
    config, folder = _config_of(spec, model_dir)
    if folder is not None:
        yield folder, False
        return
    with tempfile.TemporaryDirectory(prefix="layerplan-calibrate-") as tmp, quiet():
        cls = auto_class_for(config)
        build = cls.from_config if hasattr(cls, "from_config") else cls._from_config
        torch.manual_seed(0)
        build(config, dtype=parse_dtype(dtype)).save_pretrained(tmp)
        yield tmp, True
