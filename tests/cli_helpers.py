"""Running the CLI in-process and reading its one-line errors (shared by the CLI tests)."""

from __future__ import annotations

from layerplan.planner.cli import main

__all__ = ["one_line", "run"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:  # noqa: ANN001
    """``(exit code, stdout, stderr)`` of ``layerplan ARGV``."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The single non-empty line of ``err``; fails on a traceback or more lines."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]
