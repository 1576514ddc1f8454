"""Resolve what the user calls "the model" into a config and a meta-device model.

Accepted forms, tried in this order: an ``nn.Module`` instance; an existing path (a directory holding
``config.json``, or a ``config.json`` file); a catalog name (``layerplan models``); a Hub id, read
through ``AutoConfig`` from the local Hugging Face cache only (this tool never downloads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoConfig, PretrainedConfig

from layerplan.planner.model import catalog
from layerplan.planner.model.meta import build_meta_model
from layerplan.solver import InvalidSpecError

__all__ = ["ModelSource", "resolve_source"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSource:
    """A resolved model.

    Attributes:
        name: display name (catalog name, path, Hub id or class name).
        kind: ``"catalog"``, ``"path"``, ``"hub-cache"`` or ``"module"``.
        config: its transformers config, or ``None`` for a plain ``nn.Module``.
        module: the user's module when one was given (never modified).
    """

    name: str
    kind: str
    config: PretrainedConfig | None
    module: nn.Module | None = None

    def meta_model(self, *, attn_implementation: str | None = None) -> nn.Module:
        """A fresh model on the meta device (tied weights tied); the user's module is left alone.

        Args:
            attn_implementation: ``"sdpa"`` / ``"eager"`` for a model built here (a user's module on
                meta keeps its own).

        Raises:
            InvalidSpecError: a plain ``nn.Module`` (no config) whose weights are not on meta.
            TraceError: transformers cannot build the config.
        """
        if self.module is not None:
            if all(t.device.type == "meta" for t in self.module.parameters()):
                return self.module
            if self.config is None:
                raise InvalidSpecError(
                    f"{self.name} has weights in memory and no transformers config; build it under "
                    "`with torch.device('meta'):` and pass that, or pass a PreTrainedModel"
                )
            return build_meta_model(self.config, auto_class=type(self.module),
                                    attn_implementation=attn_implementation)
        assert self.config is not None
        return build_meta_model(self.config, attn_implementation=attn_implementation)


def resolve_source(model: str | os.PathLike | nn.Module) -> ModelSource:
    """Resolve ``model`` (see the module docstring for the accepted forms).

    Raises:
        InvalidSpecError: nothing matches; the message lists the closest catalog names, or says the
            Hub id is not in the local cache and how to proceed offline.
    """
    if isinstance(model, nn.Module):
        config = getattr(model, "config", None)
        return ModelSource(
            name=type(model).__name__,
            kind="module",
            config=config if isinstance(config, PretrainedConfig) else None,
            module=model,
        )
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(path)
    entry = catalog.lookup(text)
    if entry is not None:
        return ModelSource(name=entry.name, kind="catalog", config=entry.to_config())
    if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
        return _from_hub_cache(text)
    suggestions = catalog.closest_names(text)
    hint = f"did you mean {', '.join(suggestions)}? " if suggestions else ""
    raise InvalidSpecError(
        f"unknown model {text!r}: not a path, a catalog name or a Hub id; {hint}"
        "run `layerplan models` for the catalog, or pass a directory holding config.json"
    )


def _from_path(path: Path) -> ModelSource:
    directory = path if path.is_dir() else path.parent
    if path.is_file() and path.name != "config.json":
        raise InvalidSpecError(f"{str(path)!r} is a file but not a config.json; pass the model directory or its config.json")
    if not (directory / "config.json").is_file():
        raise InvalidSpecError(f"{str(directory)!r} holds no config.json; pass a Hugging Face model directory")
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidSpecError(f"cannot read {str(directory / 'config.json')!r}: {exc}") from exc
    return ModelSource(name=str(path), kind="path", config=config)


def _from_hub_cache(repo_id: str) -> ModelSource:
    try:
        config = AutoConfig.from_pretrained(repo_id, local_files_only=True)
    except (OSError, ValueError) as exc:
        suggestions = catalog.closest_names(repo_id)
        hint = f" (closest catalog names: {', '.join(suggestions)})" if suggestions else ""
        raise InvalidSpecError(
            f"Hub id {repo_id!r} is not in the local Hugging Face cache and layerplan does not download; "
            f"use a catalog name{hint}, a local directory holding config.json, or run "
            f"`huggingface-cli download {repo_id} config.json` where you have network"
        ) from exc
    return ModelSource(name=repo_id, kind="hub-cache", config=config)
