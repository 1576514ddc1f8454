"""Keep other libraries' chatter off the user's terminal while layerplan calls them.

transformers and torch warn about their own deprecations (``torch_dtype``, ``past_key_values``,
``TypedStorage``...) and log advice meant for training code when a model is built on the meta
device; none of it is about the user's plan. Inside :func:`quiet`, deprecation and future warnings
are dropped, user warnings raised from torch, transformers and accelerate are dropped, and
transformers' logger only reports errors. Our own messages are exceptions or return values, never
warnings, so nothing of layerplan's is lost.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet"]

_LIBRARIES = r"(torch|transformers|accelerate|huggingface_hub|safetensors)(\.|$)"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence library warnings and transformers' logging for the duration (restored after)."""
    loggers = [logging.getLogger(name) for name in ("transformers", "accelerate", "torch")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", category=UserWarning, module=_LIBRARIES)
        for logger in loggers:
            logger.setLevel(max(logger.level, logging.ERROR))
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
