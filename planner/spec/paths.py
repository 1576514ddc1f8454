"""Paths the user names, checked before any work: folders that must be (or become) directories,
output files that must be writable and must not overwrite an input."""

from __future__ import annotations

import os
from pathlib import Path

from layerplan.solver import InvalidSpecError

__all__ = ["check_folder", "check_output", "make_folder"]


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_folder(folder: object, *, what: str) -> str:
    """``folder`` as a string, after checking it is a directory or can be created as one.

    Nothing is created: the nearest existing parent must be a writable directory.

    Raises:
        InvalidSpecError: not a path, an existing file, or under a file or an unwritable folder.
    """
    if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder).strip():
        raise InvalidSpecError(f"{what}={folder!r}; expected a folder path")
    text = os.path.expanduser(os.fspath(folder))
    if os.path.exists(text) and not os.path.isdir(text):
        raise InvalidSpecError(f"{what}={text!r} is a file, not a folder; give a folder path")
    parent = _nearest_existing(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise InvalidSpecError(f"{what}={text!r} cannot be created: {parent!r} is a file; give a folder path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidSpecError(f"{what}={text!r}: {parent!r} is not writable; give a folder you can write to")
    return text


def check_output(path: str | os.PathLike, *, inputs: tuple[str, ...] = ()) -> str:
    """``path`` as a string, after checking that a file can be written there.

    Args:
        path: the output file.
        inputs: files this run reads (spec file, model config, graph JSON, device_map); the output
            must not be one of them.

    Raises:
        InvalidSpecError: a directory, a missing or unwritable folder, or one of ``inputs``.
    """
    text = os.path.expanduser(os.fspath(path))
    if os.path.isdir(text):
        raise InvalidSpecError(f"output {text!r} is a directory; give a file name, e.g. {os.path.join(text, 'plan.json')!r}")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise InvalidSpecError(f"output {text!r}: folder {folder!r} does not exist; create it or write elsewhere")
    if os.path.exists(text) and not os.access(text, os.W_OK) or not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidSpecError(f"output {text!r} is not writable; choose another path")
    for given in inputs:
        if given and os.path.exists(given) and os.path.exists(text) and os.path.samefile(given, text):
            raise InvalidSpecError(f"output {text!r} is also an input ({given!r}); writing it would destroy it")
    return text


def make_folder(folder: str | os.PathLike, *, what: str, holds: str) -> Path:
    """``folder`` as a directory to write into, created (with its parents) if missing.

    Args:
        what: how the message names it (``"--plot"``); holds: what goes in it, for the message.

    Raises:
        InvalidSpecError: it is a file, or cannot be created.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise InvalidSpecError(f"{what} {os.fspath(folder)!r} is a file; give a folder for {holds}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidSpecError(f"{what} {os.fspath(folder)!r} cannot be created ({exc.strerror}); "
                               "give a writable folder") from None
    return path
