"""``layerplan capacity ...``: the inverse questions (:mod:`layerplan.planner.capacity`) on the command line.

Each subcommand takes the same model, workload, device and solve options (and spec file) as
``layerplan plan``, answers with a table or ``--format json``, and exits 0 when it found an
answer, 3 when nothing fits, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from layerplan.planner import cli as _cli
from layerplan.solver import InvalidSpecError

__all__ = ["add_capacity_parser"]

_EPILOG = """\
Every answer is made of plans the solver proves: the fewest GPUs N fits and N-1 is proven not to
(by the solver, or because their memory cannot hold the weights and KV cache); the largest batch
or context fits and the next step is proven not to. The model, workload and solve options are the
ones of `layerplan plan` (a spec file works too; its [prices] table, preset = US dollars per GPU-hour,
gives cheapest and compare their prices, and --price overrides it). Setups are written TYPE*COUNT[+TYPE*COUNT][+cpu=SIZE]
[+disk=SIZE], optionally NAME:..., with the presets of `layerplan devices`.

examples:
  layerplan capacity min-devices llama-2-70b --device-type h100-sxm a100-80gb l4 --seq-len 4096 --batch-size 8
  layerplan capacity min-devices llama-2-70b --device-type rtx-4090 --max-memory cpu=256GiB
  layerplan capacity max-workload llama-2-70b --setup h100-sxm*8 --vary batch --seq-len 4096
  layerplan capacity max-workload llama-2-70b --setup h100-sxm*8 --vary both --plot plots/
  layerplan capacity cheapest llama-2-70b --max-ms-per-token 60 --price h100-sxm=2.49
  layerplan capacity compare llama-2-70b --setup h100-sxm*4 --setup a100-80gb*4 --setup l40s*8+cpu=512GiB

exit codes: 0 answered, 1 model could not be traced, 2 bad input, 3 nothing fits, 130 interrupted
"""


def _common(sub, name: str, help_text: str, func) -> argparse.ArgumentParser:  # noqa: ANN001
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli._add_source_args(p)
    _cli._add_workload_args(p)
    _cli._add_device_args(p)
    _cli._add_solve_args(p, pins=False)
    _cli._add_output_args(p)
    p.set_defaults(func=func)
    return p


def _setup_arg(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument("--setup", action="extend", nargs="+", metavar="SETUP", required=required,
                   help="hardware as TYPE*COUNT[+cpu=SIZE], e.g. h100-sxm*8 or big:a100-80gb*4+cpu=512GiB (repeatable)")


def _price_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--price", action="extend", nargs="+", metavar="TYPE=USD",
                   help="US dollars per GPU-hour, e.g. h100-sxm=2.49 (defaults: RunPod list prices, March 2026; "
                        "see --format json's price_source)")


def add_capacity_parser(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    """Add ``capacity`` and its four subcommands to ``sub``."""
    capacity = sub.add_parser("capacity", help="inverse questions: fewest GPUs, largest workload, cheapest hardware",
                              description="Capacity planning: questions answered by many proven plans.",
                              epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    questions = capacity.add_subparsers(dest="question", required=True, metavar="QUESTION", parser_class=_cli._Parser)
    m = _common(questions, "min-devices", "the fewest GPUs of each --device-type NAME that run the model "
                "(with and without offload when --max-memory gives cpu/disk)", cmd_min_devices)
    m.add_argument("--max-devices", type=int, default=64, metavar="N", help="most GPUs tried (default 64)")
    m.add_argument("--no-offload", action="store_true", help="only answer without cpu/disk offload")
    m.add_argument("--gpu-memory", metavar="SIZE", help="memory of each GPU instead of the preset's (e.g. a MIG slice)")
    w = _common(questions, "max-workload", "the largest batch, the longest context, or the (batch, context) frontier "
                "that fits the devices (--setup, or --max-memory and --device-type)", cmd_max_workload)
    _setup_arg(w)
    w.add_argument("--vary", choices=["batch", "context", "both"], default="batch",
                   help="batch: largest batch at --seq-len; context: longest seq_len at --batch-size; "
                        "both: the longest context at batch 1, 2, 4, ... (default batch)")
    w.add_argument("--step", type=int, metavar="N", help="grid of the search (default 1 sequence, 256 tokens)")
    w.add_argument("--limit", type=int, metavar="N",
                   help="largest value tried (default 4096 sequences; the model's positions)")
    w.add_argument("--batch-sizes", type=int, nargs="+", metavar="B", help="batch sizes of the frontier (--vary both)")
    w.add_argument("--plot", metavar="DIR", help="also draw the frontier (--vary both) as PNG and SVG into DIR")
    c = _common(questions, "cheapest", "the cheapest setup (GPU types and counts at their prices) that runs the model, "
                "within a latency or throughput target", cmd_cheapest)
    _price_arg(c)
    c.add_argument("--max-ms-per-token", type=float, metavar="MS", help="latency target (cost model estimate)")
    c.add_argument("--min-tokens-per-s", type=float, metavar="TPS", help="throughput target over the batch")
    c.add_argument("--max-devices", type=int, default=8, metavar="N", help="most GPUs in a setup (default 8)")
    c.add_argument("--mix", type=int, choices=[1, 2], default=2, help="most GPU types in one setup (default 2)")
    c.add_argument("--plot", metavar="DIR", help="also draw cost vs latency of the setups planned (PNG and SVG)")
    k = _common(questions, "compare", "the model on each --setup, side by side (what-if)", cmd_compare)
    _setup_arg(k, required=True)
    _price_arg(k)


def _type_names(args: argparse.Namespace) -> list[str]:
    """``--device-type NAME ...`` as the types to count or buy (not the ``GPU=NAME`` form of plan)."""
    names = list(getattr(args, "device_type", None) or [])
    given = [n for n in names if "=" in n]
    if given:
        raise InvalidSpecError(f"--device-type {given[0]!r}: here it takes preset names, "
                               "e.g. --device-type h100-sxm l4")
    args.device_type = None
    return names


def _spec(args: argparse.Namespace):  # noqa: ANN202 - a PlanSpec
    return _cli._prepared(args, besides=("prices",))


def _setups(args: argparse.Namespace) -> list[Any]:
    from layerplan.planner.capacity import parse_setup

    return [parse_setup(s) for s in (args.setup or [])]


def _prices(args: argparse.Namespace) -> dict[str, Any]:
    """The spec file's ``[prices]`` table (preset = US dollars per GPU-hour), then ``--price`` over it."""
    path = _cli._spec_file(args)
    table = _cli.read_toml(path).get("prices", {}) if path else {}
    if not isinstance(table, dict):
        raise InvalidSpecError(f"[prices] in {path} is not a table; write e.g. [prices] h100-sxm = 2.49")
    return {**table, **_cli._key_values(getattr(args, "price", None), flag="--price", example="h100-sxm=2.49")}


def _write(spec, result, render) -> None:  # noqa: ANN001
    _cli._emit(spec, lambda: json.dumps(result.to_dict(), indent=2, default=str), render)


def cmd_min_devices(args: argparse.Namespace, err: Console) -> int:
    names = _type_names(args)
    if not names:
        raise InvalidSpecError("min-devices needs the GPU type: pass --device-type NAME [NAME ...] "
                               "(see `layerplan devices`)")
    spec = _spec(args)
    from layerplan.planner.capacity import min_devices
    from layerplan.planner.output.capacity_report import render_min_devices

    with err.status(f"Counting GPUs for {spec.model.source} ..."):
        result = min_devices(spec, names, offload=False if args.no_offload else None, max_devices=args.max_devices,
                             gpu_memory=args.gpu_memory)
    _write(spec, result, lambda c: render_min_devices(result, c))
    return _cli.EXIT_OK if result.num_devices is not None else _cli.EXIT_INFEASIBLE


def cmd_max_workload(args: argparse.Namespace, err: Console) -> int:
    setups = _setups(args)
    if len(setups) > 1:
        raise InvalidSpecError("max-workload takes one --setup; use `layerplan capacity compare` for several")
    if args.plot is not None and args.vary != "both":
        raise InvalidSpecError("--plot draws the frontier: use it with --vary both")
    spec = _spec(args)
    if args.plot is not None:
        from layerplan.planner.output.plots import check_plot_dir

        check_plot_dir(args.plot)
    from layerplan.planner.capacity import frontier, max_batch, max_context
    from layerplan.planner.output.capacity_report import render_frontier, render_largest

    setup = setups[0] if setups else None
    grid = {k: v for k, v in (("step", args.step), ("limit", args.limit)) if v is not None}
    with err.status(f"Searching the largest workload of {spec.model.source} (a plan per point) ..."):
        if args.vary == "batch":
            result = max_batch(spec, setup=setup, **grid)
        elif args.vary == "context":
            result = max_context(spec, setup=setup, **grid)
        else:
            result = frontier(spec, setup=setup, batch_sizes=args.batch_sizes, **grid)
    if args.vary == "both":
        _write(spec, result, lambda c: render_frontier(result, c))
        if args.plot is not None:
            from layerplan.planner.output.plots import plot_frontier

            for path in plot_frontier(result, args.plot):
                err.print(f"wrote {path}")
        return _cli.EXIT_OK if result.pairs() else _cli.EXIT_INFEASIBLE
    _write(spec, result, lambda c: render_largest(result, c))
    return _cli.EXIT_OK if result.value is not None else _cli.EXIT_INFEASIBLE


def cmd_cheapest(args: argparse.Namespace, err: Console) -> int:
    names = _type_names(args)
    spec = _spec(args)
    if args.plot is not None:
        from layerplan.planner.output.plots import check_plot_dir

        check_plot_dir(args.plot)
    from layerplan.planner.capacity import cheapest
    from layerplan.planner.output.capacity_report import render_cheapest

    with err.status(f"Pricing setups for {spec.model.source} (cheapest first) ..."):
        result = cheapest(spec, device_types=names or None, prices=_prices(args) or None,
                          max_ms_per_token=args.max_ms_per_token, min_tokens_per_s=args.min_tokens_per_s,
                          max_devices=args.max_devices, mix=args.mix)
    _write(spec, result, lambda c: render_cheapest(result, c))
    if args.plot is not None:
        from layerplan.planner.output.plots import plot_cost_latency

        for path in plot_cost_latency(result, args.plot):
            err.print(f"wrote {path}")
    return _cli.EXIT_OK if result.best is not None else _cli.EXIT_INFEASIBLE


def cmd_compare(args: argparse.Namespace, err: Console) -> int:
    setups = _setups(args)
    spec = _spec(args)
    from layerplan.planner.capacity import compare_setups
    from layerplan.planner.output.capacity_report import render_comparison

    with err.status(f"Planning {spec.model.source} on {len(setups)} setups ..."):
        result = compare_setups(spec, setups, prices=_prices(args) or None)
    _write(spec, result, lambda c: render_comparison(result, c))
    return _cli.EXIT_OK if any(r.probe.fits for r in result.rows) else _cli.EXIT_INFEASIBLE
