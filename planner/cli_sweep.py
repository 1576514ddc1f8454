"""``layerplan sweep SPEC.toml``: every point of a spec file's ``[sweep]`` grid planned
(:func:`layerplan.planner.capacity.sweep`), one tidy table (CSV and JSON), optional plots.

Exit codes: 0 some point fits, 1 every point failed to trace, 2 bad input, 3 no point fits,
130 interrupted (the finished points are kept: run the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from layerplan.planner import cli as _cli
from layerplan.solver import InvalidSpecError

__all__ = ["add_sweep_parser", "cmd_sweep"]

_EPILOG = """\
The spec file is a plan's spec (see `layerplan plan --help`) with a [sweep] table listing values
per axis; the grid is their product, each point one plan:

  [sweep]
  batch_size = [1, 4, 16]
  seq_len = [2048, 8192]                 # also prompt_len, max_new_tokens
  dtype = ["bfloat16", "float16"]        # also kv_dtype
  quantization = ["none", "nf4"]
  setup = ["h100-sxm*8", "a100-80gb*8+cpu=512GiB"]   # default: the spec's [devices]
  strategy = ["auto", "balanced"]

Each finished point is appended to DIR/points.jsonl: running the same command again skips them
(an interrupted sweep resumes). The table is DIR/sweep.csv and DIR/sweep.json, one row per point:
the axis values, status (fits, infeasible, bound, unknown, error), per-device used/cap bytes,
offloaded bytes, estimated ms per token and planning seconds.

examples:
  layerplan sweep spec.toml
  layerplan sweep spec.toml --out runs/70b --jobs 4 --plot runs/70b/plots
  layerplan sweep spec.toml --format json > sweep.json

exit codes: 0 some point fits, 1 every point failed to trace, 2 bad input, 3 no point fits,
  130 interrupted (the finished points are kept; run again to resume)
"""


def add_sweep_parser(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``sweep`` to ``sub``."""
    p = sub.add_parser("sweep", help="plan every point of a spec file's [sweep] grid into one table (CSV, JSON)",
                       description="Plan every point of a spec file's [sweep] grid: batch sizes, contexts, dtypes, "
                                   "quantizations, setups, strategies.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC.toml", help="a spec file with a [sweep] table")
    p.add_argument("--out", metavar="DIR", help="folder for points.jsonl, sweep.csv and sweep.json "
                                                "(default: SPEC-sweep/ beside the spec file)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--plot", metavar="DIR", help="also draw fits over batch x context and ms/token vs batch "
                                                 "(PNG and SVG) into DIR")
    p.add_argument("--format", choices=["table", "json"], default="table", help="stdout format (default table)")
    p.set_defaults(func=cmd_sweep)


def default_out(spec: str) -> Path:
    """``runs/spec.toml`` -> ``runs/spec-sweep``."""
    path = Path(spec)
    return path.with_name(f"{path.stem}-sweep")


class _Bar:
    """A rich progress bar on stderr, started on the first report (so a bad spec's one-line
    error is printed without one)."""

    def __init__(self, err: Console) -> None:
        self.err = err
        self.bar: Progress | None = None
        self.task = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if self.bar is None:
            self.bar = Progress(TextColumn("[bold]sweep[/bold]"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.description}"), console=self.err,
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total)
        self.bar.update(self.task, completed=done, total=total, description=label)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def cmd_sweep(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.capacity.sweep import check_sweep, sweep
    from layerplan.planner.capacity.sweep_table import Journal

    if not str(args.spec).lower().endswith(".toml"):
        raise InvalidSpecError(f"sweep takes a spec file with a [sweep] table (SPEC.toml), not {args.spec!r}")
    out = Path(args.out) if args.out is not None else default_out(args.spec)
    check_sweep(args.spec, out_dir=out, jobs=args.jobs)
    if args.plot is not None:
        from layerplan.planner.output.plots import check_plot_dir

        check_plot_dir(args.plot)
    bar = _Bar(err)
    try:
        result = sweep(args.spec, out_dir=out, jobs=args.jobs, progress=bar)
    except KeyboardInterrupt:
        bar.close()  # before the line, so the bar does not overwrite it
        err.print(f"{len(Journal(out).read())} finished points kept in {Journal(out).path}; "
                  "run the same command to resume", highlight=False, soft_wrap=True)
        raise
    finally:
        bar.close()
    _print(result, args.format)
    if args.plot is not None:
        from layerplan.planner.output.plots import plot_sweep_fits, plot_sweep_latency

        paths = plot_sweep_latency(result, args.plot)
        if any(r.batch_size is not None and r.seq_len is not None for r in result.rows):
            paths = plot_sweep_fits(result, args.plot) + paths
        for path in paths:
            err.print(f"wrote {path}", highlight=False)
    return _exit_code(result)


def _print(result, fmt: str) -> None:  # noqa: ANN001 - a SweepResult
    if fmt == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    from layerplan.planner.output.sweep_report import render_sweep

    render_sweep(result, Console())


def _exit_code(result) -> int:  # noqa: ANN001 - a SweepResult
    if any(r.fits for r in result.rows):
        return _cli.EXIT_OK
    if result.rows and len(result.errors) == len(result.rows):
        return _cli.EXIT_TRACE
    return _cli.EXIT_INFEASIBLE
