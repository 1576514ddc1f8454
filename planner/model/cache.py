"""An on-disk cache of traced graphs: the second plan of the same model at the same workload is
solve-only.

A traced graph is a pure function of the model's config, the dtype, the declared workload, the
extra no-split classes, the versions of layerplan, torch, transformers and accelerate, the graph
format, and the source of the code that traces (``planner/model/*.py`` and ``planner/graph.py``: a
development checkout changes it without changing its version): :func:`graph_key` hashes exactly these. Entries are graph JSON files
(:meth:`LayerGraph.to_json`), written atomically; an unreadable entry is ignored and replaced.

Location, first that applies: ``cache_dir`` of ``[model]`` (``--cache-dir``), ``$LAYERPLAN_CACHE_DIR``,
``$XDG_CACHE_HOME/layerplan/graphs``, ``~/.cache/layerplan/graphs`` (the XDG base-directory
convention, as Hugging Face's ``~/.cache/huggingface``). Only models given by name or path are
cached: an ``nn.Module`` may differ from its config in ways the key cannot see.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from layerplan.planner.graph import GRAPH_FORMAT_VERSION, LayerGraph
from layerplan.planner.provenance import library_versions
from layerplan.solver import InvalidSpecError

__all__ = ["cache_dir", "graph_key", "load_cached", "store"]



def cache_dir(override: str | None = None) -> Path:
    """The cache folder (see the module docstring for the order); not created here."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("LAYERPLAN_CACHE_DIR"):
        return Path(os.environ["LAYERPLAN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "layerplan" / "graphs"


@functools.cache
def _tracing_code_digest() -> str:
    """sha256 of the tracing code's source files, read once per process."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for file in sorted([*root.glob("*.py"), root.parent / "graph.py"]):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def graph_key(
    config: dict[str, Any], *, dtype: str, workload: dict[str, Any], no_split: tuple[str, ...],
    quantization: str | None = None,
) -> str:
    """A hex digest of everything a traced graph depends on (see the module docstring).

    Args:
        config: the model config's ``to_dict()`` (``_name_or_path`` and ``transformers_version``
            are left out: they name a copy, not a model).
        dtype: the resolved weight dtype name (``"bfloat16"``).
        workload: the declared workload (``WorkloadSpec.to_dict()``); defaults are resolved
            from the config, which is in the key.
        no_split: the extra no-split classes.
        quantization: the declared ``[model] quantization`` (the config's own is in ``config``).
    """
    config = {k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version")}
    payload = {"config": config, "dtype": dtype, "workload": workload, "no_split": sorted(no_split),
               "versions": library_versions(), "format": GRAPH_FORMAT_VERSION, "quantization": quantization,
               "code": _tracing_code_digest()}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_cached(folder: Path, key: str) -> LayerGraph | None:
    """The cached graph under ``key``, or None when absent or unreadable."""
    path = folder / f"{key}.json"
    try:
        return LayerGraph.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, InvalidSpecError):
        return None


def store(folder: Path, key: str, graph: LayerGraph) -> bool:
    """Write ``graph`` under ``key`` (atomically: a temporary file renamed into place).

    Returns:
        Whether it was written; a folder that cannot be created or written is skipped silently
        (the cache only saves time).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as file:
            file.write(graph.to_json(indent=None))
        os.replace(file.name, folder / f"{key}.json")
        return True
    except OSError:
        return False
