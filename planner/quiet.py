"""Keep other libraries' chatter off the user's terminal while layerplan calls them.

transformers and torch warn about their own deprecations (``torch_dtype``, ``past_key_values``,
``TypedStorage``...) and log advice meant for training code when a model is built on the meta
device; none of it is about the user's plan. Inside :func:`quiet`, deprecation and future warnings
are dropped, user warnings raised from torch, transformers and accelerate are dropped,
transformers' logger only reports errors, and failures layerplan catches itself are not logged. Our own messages are exceptions or return values, never
warnings, so nothing of layerplan's is lost.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet"]

_LIBRARIES = r"(torch|transformers|accelerate|huggingface_hub|safetensors)(\.|$)"
#: Loggers that report, at ERROR with a traceback, failures layerplan catches and turns into a
#: note (FakeTensor's "failed while attempting to run meta for aten._grouped_mm" when a model's
#: forward refuses float32 on meta and is measured again in bfloat16).
_CAUGHT = ("torch._subclasses.fake_tensor",)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence library warnings and transformers' logging for the duration (restored after)."""
    loggers = [logging.getLogger(name) for name in ("transformers", "accelerate", "torch")]
    caught = [logging.getLogger(name) for name in _CAUGHT]
    levels = [logger.level for logger in loggers + caught]
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", category=UserWarning, module=_LIBRARIES)
        for logger in loggers:
            _set_level(logger, max(logger.level, logging.ERROR))
        for logger in caught:
            _set_level(logger, logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers + caught, levels):
                _set_level(logger, level)


def _set_level(logger: logging.Logger, level: int) -> None:
    """``logger.setLevel(level)`` unless it is at that level already (a nested :func:`quiet`):
    each call clears the cached levels of every logger, ~0.5 ms with torch's and transformers'."""
    if logger.level != level:
        logger.setLevel(level)
