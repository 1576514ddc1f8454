"""Package attributes resolved on first use (PEP 562 module ``__getattr__``).

Used by the ``layerplan``, ``layerplan.planner`` and ``layerplan.planner.spec`` packages so that
importing them stays cheap: validating a spec must not import torch (about 2 s), and
``layerplan.solver`` must stay free of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, namespace: dict[str, Any], names: Mapping[str, str]) -> tuple[
    Callable[[str], Any], Callable[[], list[str]]
]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each public name to the module
    that defines it; a resolved name is cached in the package's ``namespace``.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
