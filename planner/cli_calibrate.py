"""``layerplan calibrate SPEC|MODEL ...``: plan, load the model with the plan, run the workload, and
print predicted vs measured memory and time per device (thin: flags -> spec -> :func:`calibrate`).

Wired into :func:`layerplan.planner.cli.build_parser` by :func:`add_calibrate_parser`. Every input
(the spec, ``--model-dir``, ``--decode-steps``, the output paths) is checked before any model is
traced or loaded; errors are the CLI's (exit 2 bad input, 3 infeasible).
"""

from __future__ import annotations

import argparse
import json
import os

from rich.console import Console

__all__ = ["add_calibrate_parser", "cmd_calibrate"]

_HELP = "load the model with its plan, run the workload for real, and compare measured with predicted memory and time"


def add_calibrate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to ``sub`` (the CLI's subparsers): the ``plan`` flags
    (model, workload, devices, solve, output) and its own."""
    from layerplan.planner import cli

    p = cli._subcommand(sub, "calibrate", _HELP, cmd_calibrate)
    cli._add_solve_args(p)
    cli._add_output_args(p)
    g = p.add_argument_group("calibration")
    g.add_argument("--model-dir", metavar="DIR",
                   help="save_pretrained folder to load (default: the model's folder when it holds weights, "
                        "else random weights of its shapes in a temporary folder)")
    g.add_argument("--decode-steps", type=int, metavar="N",
                   help="decode steps to run at most (default 4; the declared --max-new-tokens when fewer)")
    g.add_argument("--calibration-out", metavar="FILE",
                   help="write the measured figures as a calibration profile (JSON; merged into FILE when it is one)")
    return p


def _checked(args: argparse.Namespace):  # noqa: ANN202 - (PlanSpec, decode steps, profile path or None)
    """The spec, decode steps and profile path, validated before anything is traced.

    Raises:
        InvalidSpecError: see :func:`layerplan.planner.cli._prepared`; a negative ``--decode-steps``;
            a ``--model-dir`` that is not a folder; an unwritable ``--calibration-out``.
    """
    from layerplan.planner import cli
    from layerplan.planner.calibrate.api import DEFAULT_DECODE_STEPS
    from layerplan.planner.spec.paths import check_output
    from layerplan.solver import InvalidSpecError

    spec = cli._prepared(args)
    steps = DEFAULT_DECODE_STEPS if args.decode_steps is None else args.decode_steps
    if steps < 0:
        raise InvalidSpecError(f"--decode-steps {steps}; expected an integer >= 0")
    if args.model_dir is not None and not os.path.isdir(args.model_dir):
        raise InvalidSpecError(f"--model-dir {args.model_dir!r} is not a folder; give a save_pretrained folder")
    out = args.calibration_out
    if out is not None:
        check_output(out, inputs=cli._inputs(args, spec))
    return spec, steps, out


def cmd_calibrate(args: argparse.Namespace, err: Console) -> int:
    """Run ``layerplan calibrate``; exit 0 when the run was measured (whatever the errors found)."""
    from layerplan.planner import cli

    spec, steps, out = _checked(args)
    from layerplan.planner.calibrate.api import calibrate
    from layerplan.planner.calibrate.profile import CalibrationProfile
    from layerplan.planner.calibrate.report import render_calibration

    with err.status(f"Calibrating {spec.model.source}: planning, loading with the plan, running the workload ..."):
        result = calibrate(spec, model_dir=args.model_dir, decode_steps=steps)
    if out is not None:
        profile = result.profile
        if os.path.exists(out):
            profile = CalibrationProfile.load(out).merged(profile)
        profile.save(out)
        count = len(profile.entries)
        err.print(f"wrote {count} calibration entr{'y' if count == 1 else 'ies'} to {out}")
    cli._emit(spec, lambda: json.dumps(result.to_dict(), indent=2), lambda c: render_calibration(result, c))
    return cli.EXIT_OK
