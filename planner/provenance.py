"""What a stored result was made with: the library versions and layerplan's own code (torch-free,
so that checking a stored key costs no torch import)."""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

__all__ = ["DISTRIBUTIONS", "library_versions", "planner_digest"]

#: The distributions whose versions a traced graph or a plan depends on.
DISTRIBUTIONS = ("layerplan", "torch", "transformers", "accelerate")


def library_versions() -> dict[str, str]:
    """Distribution name -> installed version (``"none"`` when not installed), read once per
    process as :func:`planner_digest` reads them (reading a distribution's metadata costs ~2 ms)."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    out = []
    for name in DISTRIBUTIONS:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "none"))
    return tuple(out)


@functools.cache
def planner_digest() -> str:
    """sha256 of everything a plan depends on besides its inputs: layerplan's own source files
    (``planner/``, ``solver/``) and :func:`library_versions`, read once per process. A stored
    result keyed with it (a sweep's journal) is not reused by a different layerplan."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(json.dumps(library_versions(), sort_keys=True).encode())
    for file in sorted([*(package / "planner").rglob("*.py"), *(package / "solver").rglob("*.py")]):
        digest.update(str(file.relative_to(package)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
