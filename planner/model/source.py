"""Resolve what the user calls "the model" into a config and a meta-device model.

Accepted forms, tried in this order: a :class:`LayerGraph`; an ``nn.Module`` instance (a
``torch.compile`` wrapper is unwrapped); an existing path (a directory holding ``config.json``, or a
JSON file of any name whose content says what it is: a transformers config has ``model_type``, a
layerplan graph has ``nodes`` and ``edges``); a catalog name (``layerplan models``); a Hub id, read
through ``AutoConfig`` from the local Hugging Face cache only (this tool never downloads).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoConfig, PretrainedConfig

from layerplan.planner.graph import LayerGraph
from layerplan.planner.model import catalog
from layerplan.planner.model.meta import build_meta_model
from layerplan.solver import InvalidSpecError

__all__ = ["ModelSource", "resolve_source"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSource:
    """A resolved model.

    Attributes:
        name: display name (catalog name, path, Hub id or class name).
        kind: ``"catalog"``, ``"path"``, ``"hub-cache"``, ``"module"`` or ``"graph"``.
        config: its transformers config, or ``None`` for a plain ``nn.Module`` or a graph.
        module: the user's module when one was given (never modified).
        graph: an already traced graph (a graph JSON or a :class:`LayerGraph`): nothing to build.
        path: the file or directory read, if any (an input the output must not overwrite).
    """

    name: str
    kind: str
    config: PretrainedConfig | None
    module: nn.Module | None = None
    graph: LayerGraph | None = None
    path: str | None = None

    def meta_model(self, *, attn_implementation: str | None = None) -> nn.Module:
        """A fresh model on the meta device (tied weights tied); the user's module is left alone.

        Args:
            attn_implementation: ``"sdpa"`` / ``"eager"`` for a model built here (a user's module on
                meta keeps its own).

        A user's module is traced as is only when every weight is on meta and no accelerate hook
        is attached (``cpu_offload`` / ``dispatch_model`` hooks would load weights into it during
        the trace); otherwise a meta copy is built from its config.

        Raises:
            InvalidSpecError: a plain ``nn.Module`` (no config) with weights in memory or hooks.
            TraceError: transformers cannot build the config.
        """
        if self.module is not None:
            hooked = any(hasattr(m, "_hf_hook") for m in self.module.modules())
            if not hooked and all(t.device.type == "meta" for t in self.module.parameters()):
                return self.module
            if self.config is None:
                what = "accelerate hooks" if hooked else "weights in memory"
                raise InvalidSpecError(
                    f"{self.name} has {what} and no transformers config, so layerplan cannot trace a copy; "
                    "build it under `with torch.device('meta'):` and pass that, or pass a PreTrainedModel"
                )
            return build_meta_model(self.config, auto_class=type(self.module),
                                    attn_implementation=attn_implementation)
        assert self.config is not None
        return build_meta_model(self.config, attn_implementation=attn_implementation)


def resolve_source(model: str | os.PathLike | nn.Module | LayerGraph) -> ModelSource:
    """Resolve ``model`` (see the module docstring for the accepted forms).

    Raises:
        InvalidSpecError: nothing matches; the message lists the closest catalog names, or says the
            Hub id is not in the local cache and how to proceed offline.
    """
    if isinstance(model, LayerGraph):
        return ModelSource(name=model.model, kind="graph", config=None, graph=model)
    if isinstance(model, nn.Module):
        model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule wraps the user's module
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
    if path.is_file() and path.name != "config.json":
        return _sniff_file(path)
    directory = path if path.is_dir() else path.parent
    if not (directory / "config.json").is_file():
        raise InvalidSpecError(f"{str(directory)!r} holds no config.json; pass a Hugging Face model directory")
    return ModelSource(name=str(path), kind="path", config=_read_config(directory / "config.json"), path=str(path))


def _read_config(file: Path) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(str(file), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidSpecError(f"cannot read {str(file)!r} as a transformers config: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _sniff_file(path: Path) -> ModelSource:
    """A JSON file of any name: a transformers config (``model_type``) or a layerplan graph (``nodes``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpecError(f"cannot read {str(path)!r}: {_first_line(exc)}") from None
    except json.JSONDecodeError as exc:
        raise InvalidSpecError(
            f"{str(path)!r} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); pass a model directory, "
            "a transformers config.json or a graph JSON from `layerplan trace`"
        ) from None
    if isinstance(data, dict) and "model_type" in data:
        return ModelSource(name=str(path), kind="path", config=_read_config(path), path=str(path))
    if isinstance(data, dict) and ("nodes" in data or "format_version" in data):
        return ModelSource(name=str(path), kind="graph", config=None, graph=LayerGraph.from_dict(data), path=str(path))
    raise InvalidSpecError(
        f"{str(path)!r} is JSON but neither a transformers config (no 'model_type') nor a layerplan graph "
        "(no 'nodes'); pass a model directory, its config.json, or a graph JSON from `layerplan trace`"
    )


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
