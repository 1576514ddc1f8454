"""``layerplan``: command-line entry point (thin: flags + spec file -> :class:`PlanSpec` -> library -> print).

Every subcommand builds one :class:`PlanSpec` from an optional TOML spec file and the flags given
(a flag replaces the file's value of its field), validates it and any output path before importing
torch or building a model, then calls the library.

Exit codes: 0 plan found, 1 the model could not be traced, 2 bad input, 3 infeasible, 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from layerplan.planner.quiet import quiet
from layerplan.planner.spec import PlanSpec
from layerplan.planner.spec.files import read_toml
from layerplan.planner.spec.quantization import METHODS
from layerplan.planner.spec.paths import check_output
from layerplan.solver import InfeasiblePlanError, InvalidSpecError, LayerplanError, TraceError

__all__ = ["main", "build_parser", "spec_from_args"]

EXIT_OK, EXIT_TRACE, EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_EPILOG = """\
SOURCE is a spec file (*.toml, the declarative form: see README) or the model itself: a catalog name
(see `layerplan models`), a directory holding config.json, a transformers config file, a Hub id
already in the local Hugging Face cache, or a graph JSON written by `layerplan trace`. Nothing is
ever downloaded. Flags override the spec file's fields; repeated flags (--max-memory, --pin, ...)
merge, and the same key given twice with different values is an error.

examples:
  layerplan plan spec.toml
  layerplan plan spec.toml --batch-size 8 --format json -o plan.json
  layerplan plan llama-2-70b --max-memory 0=40GiB 1=40GiB cpu=200GiB
  layerplan plan llama-2-70b --max-memory 0=80GiB 1=80GiB 2=24GiB 3=24GiB cpu=200GiB \\
      --device-type 0,1=h100-sxm 2,3=rtx-4090 --objective latency
  layerplan plan mixtral-8x7b --max-memory 0=24GiB 1=24GiB cpu=64GiB disk=1TB --offload-folder /tmp/off
  layerplan compare llama-2-13b --max-memory 0=16GiB 1=16GiB cpu=64GiB --device-type 0,1=l4
  layerplan evaluate llama-2-13b --device-map map.json --max-memory 0=16GiB 1=16GiB cpu=64GiB
  layerplan capacity min-devices llama-2-70b --device-type h100-sxm l4 --batch-size 8   (see capacity --help)
  layerplan sweep spec.toml --out runs/ --jobs 2   (a [sweep] grid; see sweep --help)
  layerplan calibrate ./my-model --max-memory cpu=8GiB --calibration-out cpu.json
  layerplan plan ./my-model --max-memory cpu=8GiB --calibration cpu.json

strategies (accelerate's device_map strings, solved instead of filled greedily):
  auto            any GPU may hold any block; objective latency
  balanced        objective balanced (smallest largest memory utilisation)
  balanced_low_0  GPU 0 stores no more than any other GPU (room for generate()); objective balanced
  sequential      blocks follow the GPU order (GPU 0 first); objective latency
objectives: latency (time per generated token under the cost model), throughput (slowest device,
  for pipelined batches), balanced (largest used/cap), transfers (bytes crossing devices)

Without --max-memory (or [devices] max_memory) the caps are detected (accelerate's get_max_memory:
free GPU memory, available RAM; the offload folder's free space for disk), and GPUs named by
--device-type get their preset's memory. Times are estimates from a roofline cost model (see
`layerplan devices` for the figures).

exit codes: 0 plan found (evaluate: the map fits), 1 model could not be traced, 2 bad input,
  3 infeasible (evaluate: the map does not fit), 130 interrupted
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the bad value and the closest valid one
    (``--help`` still prints the full usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = ""
        unknown = re.findall(r"(--?[\w-]+)", message.partition("unrecognized arguments:")[2])
        if unknown:
            close = difflib.get_close_matches(unknown[0], _all_options(self), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = [c.strip(" '") for c in choice.group(2).split(",")]
            close = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        sys.stderr.write(f"layerplan: error: {message}{hint} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _all_options(parser: argparse.ArgumentParser) -> list[str]:
    options = [o for action in parser._actions for o in action.option_strings]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options += _all_options(sub)
    return sorted(set(options))


# -- flags -------------------------------------------------------------------------------------------
def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", nargs="?",
                   help="a spec file (*.toml) or a model: catalog name, model directory, config file, Hub id, graph JSON")
    p.add_argument("--model", metavar="MODEL", help="the model, overriding the spec file's [model] source")
    p.add_argument("--dtype", help="weight/activation dtype (bfloat16, float16, float32, ...); "
                                   "default: the checkpoint's published dtype")
    p.add_argument("--quantization", metavar="METHOD",
                   help="plan the weights as loaded quantized: " + ", ".join(METHODS)
                        + " (none: ignore the checkpoint's quantization_config); default: the checkpoint's own")
    p.add_argument("--no-split", action="extend", nargs="+", metavar="CLASS",
                   help="extra module class to keep whole (repeatable), besides the model's _no_split_modules")
    p.add_argument("--trace-time-limit", type=float, metavar="S",
                   help="seconds the meta forwards may take (default 120); past it the rest is estimated from the config")
    p.add_argument("--no-cache", dest="cache", action="store_const", const=False,
                   help="trace the model again instead of reading the graph cache (and do not write it)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="graph cache folder (default $LAYERPLAN_CACHE_DIR, else ~/.cache/layerplan/graphs)")


def _add_workload_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload ([workload] in a spec file)")
    g.add_argument("--batch-size", type=int, metavar="N", help="sequences per forward pass (default 1)")
    g.add_argument("--seq-len", type=int, metavar="TOKENS",
                   help="total context per sequence, prompt + new tokens (default: the model's context, at most 4096)")
    g.add_argument("--prompt-len", type=int, metavar="TOKENS", help="prompt tokens (default: seq-len minus new tokens)")
    g.add_argument("--max-new-tokens", type=int, metavar="TOKENS",
                   help="tokens generate() adds (default 256, at most a quarter of the context; 0 for encoders)")
    g.add_argument("--kv-dtype", help="KV-cache dtype, e.g. fp8 for a quantised cache (default: --dtype)")
    g.add_argument("--attn-implementation", metavar="{sdpa,eager}",
                   help="attention kernel (eager materialises the score matrix); default: transformers' choice")
    g.add_argument("--phase", metavar="{prefill,decode,generate}",
                   help="which part of generate() must fit: prefill, decode or both (default generate)")
    g.add_argument("--prefill-logits", action="store_const", const=True,
                   help="size prefill logits for every prompt position (generate() keeps only the last)")
    g.add_argument("--images-per-prompt", type=int, metavar="N",
                   help="images per prompt of a vision-language model (default 1; 0: text only); "
                        "their tokens count in --prompt-len")


def _add_device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("devices ([devices] in a spec file)")
    g.add_argument("--max-memory", action="extend", nargs="+", metavar="DEVICE=SIZE",
                   help="caps per device, accelerate's max_memory: 0=40GiB 1=40GiB cpu=200GiB disk=1TB "
                        "(GiB = 2^30 bytes, GB = 10^9); default: detected on this machine")
    g.add_argument("--device-type", action="extend", nargs="+", metavar="GPU=NAME",
                   help="accelerator presets for the cost model, e.g. 0=h100-sxm 1,2=a100-80gb "
                        "(`layerplan devices` lists them; default a100-80gb, with a note)")
    g.add_argument("--interconnect", metavar="{auto,nvlink,pcie}",
                   help="GPU-to-GPU links: auto (NVLink between SXM boards of one type, else PCIe), nvlink or pcie")
    g.add_argument("--link", action="extend", nargs="+", metavar="A-B=BANDWIDTH",
                   help="override one link, e.g. 0-1=nvlink 0-2=25GB/s")
    g.add_argument("--host-link", metavar="LINK", help="CPU-GPU link: pcie3, pcie4, pcie5 or a bandwidth (default: each GPU's)")
    g.add_argument("--hosts", action="extend", nargs="+", metavar="DEVICES=HOST",
                   help="devices on several hosts, e.g. 0-7=node-a 8-15=node-b (cpu/disk are the first GPU's "
                        "host's); a multi-host plan exports to --export vllm/sglang, not to a device_map")
    g.add_argument("--inter-host", metavar="NETWORK",
                   help="network between hosts: ib-hdr, ib-ndr, ib-xdr, roce-100g, roce-200g, roce-400g, "
                        "eth-10g, eth-25g or a rate per GPU such as 400Gb/s (default ib-ndr, with a note)")
    g.add_argument("--disk-read", metavar="BANDWIDTH",
                   help="offload drive read speed: nvme-gen5, nvme-gen4, nvme-gen3, sata-ssd, hdd or e.g. 3GB/s")
    g.add_argument("--reserve", action="extend", nargs="+", metavar="[DEVICE=]SIZE",
                   help="bytes kept free on each accelerator for the CUDA context and allocator slack "
                        "(default 1GiB); one SIZE for all, or DEVICE=SIZE each")
    g.add_argument("--offload-folder", metavar="DIR", help="folder for disk-offloaded weights (needed if disk is used)")
    g.add_argument("--calibration", metavar="FILE",
                   help="calibration profile from `layerplan calibrate --calibration-out`: measured device "
                        "figures for the cost model instead of the datasheet presets")


def _add_solve_args(p: argparse.ArgumentParser, *, pins: bool = True) -> None:
    g = p.add_argument_group("solve ([solve] in a spec file)")
    g.add_argument("--strategy", metavar="{auto,balanced,balanced_low_0,sequential}",
                   help="accelerate's device_map strategy, solved (default auto; see below)")
    g.add_argument("--objective", metavar="{latency,throughput,balanced,transfers}",
                   help="what to minimise (default: the strategy's)")
    g.add_argument("--time-limit", type=float, metavar="S",
                   help="solver time limit in seconds (default 30); past it the best plan and its gap are shown")
    if pins:
        g.add_argument("--device-map", metavar="FILE.json",
                       help="a device_map as JSON: a full map is evaluated and kept as is; a partial one "
                            "(e.g. {\"lm_head\": 1}) pins those modules and the rest is solved")
        g.add_argument("--pin", action="extend", nargs="+", metavar="MODULE=DEVICE",
                       help="force a module (or every node under a prefix) onto a device, e.g. lm_head=1")


def _add_output_args(p: argparse.ArgumentParser, *, formats: bool = True) -> None:
    g = p.add_argument_group("output ([output] in a spec file)")
    if formats:
        g.add_argument("--format", metavar="{table,json}", help="output format (default table)")
    g.add_argument("-o", "--output", metavar="FILE", help="write the output to FILE instead of stdout")


def _subcommand(sub, name: str, help_text: str, func: Callable, *, devices: bool = True) -> argparse.ArgumentParser:  # noqa: ANN001
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source_args(p)
    _add_workload_args(p)
    if devices:
        _add_device_args(p)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="layerplan",
        description="Plan where each layer of a large model goes (GPUs, cpu, disk) and get an accelerate "
                    "device_map that from_pretrained loads.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    p = _subcommand(sub, "plan", "solve a placement and print it (table or JSON)", cmd_plan)
    _add_solve_args(p)
    _add_output_args(p)
    p.add_argument("--export", choices=["vllm", "sglang", "pipelining", "llama.cpp", "deepspeed"],
                   metavar="{vllm,sglang,pipelining,llama.cpp,deepspeed}",
                   help="print the plan as an engine's settings instead: vllm/sglang: the per-stage layer "
                        "partition variable, CUDA_VISIBLE_DEVICES, --pipeline-parallel-size (shell lines); "
                        "pipelining: torch.distributed.pipelining split_spec (Python); llama.cpp: -ngl, "
                        "--tensor-split and -ot overrides; deepspeed: PipelineModule parts (Python); "
                        "or --format json")
    p.add_argument("--plot", metavar="DIR", help="also draw the plan (memory per device, layer layout) as PNG and "
                                                 "SVG into DIR")
    t = _subcommand(sub, "trace", "trace a model on the meta device and write its layer graph as JSON",
                    cmd_trace, devices=False)
    _add_output_args(t, formats=False)
    e = _subcommand(sub, "evaluate", "measure a given device_map under layerplan's accounting and cost model",
                    cmd_evaluate)
    e.add_argument("--device-map", metavar="FILE.json", help="the full device_map to evaluate (JSON)")
    _add_output_args(e)
    c = _subcommand(sub, "compare", "layerplan vs accelerate (from_pretrained's device_map) for each strategy",
                    cmd_compare)
    c.add_argument("--strategies", action="extend", nargs="+", metavar="STRATEGY",
                   help="strategies to compare (default all four)")
    _add_solve_args(c, pins=False)
    _add_output_args(c)
    # These build on this module's flag groups, so they are imported here, after it is loaded.
    from layerplan.planner.cli_calibrate import add_calibrate_parser
    from layerplan.planner.cli_capacity import add_capacity_parser
    from layerplan.planner.cli_sweep import add_sweep_parser

    add_calibrate_parser(sub)
    add_capacity_parser(sub)
    add_sweep_parser(sub)
    sub.add_parser("models", help="list the built-in catalog of published model configs").set_defaults(func=cmd_models)
    sub.add_parser("devices", help="list the accelerator, host-link, disk and network presets with their sources"
                   ).set_defaults(func=cmd_devices)
    return parser


# -- flags -> spec -----------------------------------------------------------------------------------
def _key_values(items: Sequence[str] | None, *, flag: str, example: str) -> dict[str, str]:
    """``["0=40GiB", "cpu=200GiB"]`` -> ``{"0": "40GiB", "cpu": "200GiB"}``; repeats must agree."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise InvalidSpecError(f"{flag} {item!r} is not KEY=VALUE; write e.g. {flag} {example}")
        if out.get(key, value) != value:
            raise InvalidSpecError(f"{flag} gives {key} twice, as {out[key]!r} and as {value!r}; give it once")
        out[key] = value
    return out


def _reserve(items: Sequence[str] | None) -> dict[str, str] | str | None:
    """``--reserve 1GiB`` (every accelerator) or ``--reserve 0=2GiB 1=1GiB``."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return items[0]
    return _key_values(items, flag="--reserve", example="0=2GiB")


def _flag_tables(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The fields the flags give, as spec tables (only flags that were given)."""
    get = lambda name: getattr(args, name, None)  # noqa: E731
    tables: dict[str, dict[str, Any]] = {
        "model": {"source": get("model"), "dtype": get("dtype"), "no_split_module_classes": get("no_split"),
                  "quantization": get("quantization"), "trace_time_limit_s": get("trace_time_limit"), "cache": get("cache"), "cache_dir": get("cache_dir")},
        "workload": {k: get(k) for k in ("batch_size", "seq_len", "prompt_len", "max_new_tokens", "kv_dtype",
                                         "attn_implementation", "phase", "prefill_logits", "images_per_prompt")},
        "devices": {
            "max_memory": _key_values(get("max_memory"), flag="--max-memory", example="0=40GiB") or None,
            "types": _key_values(get("device_type"), flag="--device-type", example="0,1=a100-80gb") or None,
            "links": _key_values(get("link"), flag="--link", example="0-1=nvlink") or None,
            "reserve": _reserve(get("reserve")),
            "hosts": _key_values(get("hosts"), flag="--hosts", example="0-7=node-a") or None,
            **{k: get(k) for k in ("interconnect", "host_link", "disk_read", "offload_folder", "calibration",
                                   "inter_host")},
        },
        "solve": {"strategy": get("strategy"), "objective": get("objective"), "time_limit_s": get("time_limit"),
                  "device_map": get("device_map"),
                  "pins": _key_values(get("pin"), flag="--pin", example="lm_head=1") or None},
        "output": {"format": get("format"), "path": get("output")},
    }
    return {name: {k: v for k, v in table.items() if v is not None} for name, table in tables.items()}


def _spec_file(args: argparse.Namespace) -> str | None:
    source = args.source
    return source if source is not None and source.lower().endswith(".toml") else None


def spec_from_args(args: argparse.Namespace, *, besides: Sequence[str] = ()) -> PlanSpec:
    """The :class:`PlanSpec` of a command line: the spec file's tables (if SOURCE is one), the
    model SOURCE otherwise, then every flag given replacing its field. Tables named in
    ``besides`` belong to the subcommand (``capacity``'s ``[prices]``) and are left out.

    Raises:
        InvalidSpecError: the file or any field is invalid, or no model is given.
    """
    path = _spec_file(args)
    tables: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v
                              for k, v in (read_toml(path) if path else {}).items() if k not in besides}
    if path is None and args.source is not None:
        tables.setdefault("model", {})["source"] = args.source
    for name, table in _flag_tables(args).items():
        if table and isinstance(tables.setdefault(name, {}), dict):
            tables[name].update(table)
    if not isinstance(tables.get("model"), dict) or "source" not in tables["model"]:
        raise InvalidSpecError("no model given; pass SOURCE (a spec file or a model name), or --model MODEL")
    return PlanSpec.from_dict(tables)


def _inputs(args: argparse.Namespace, spec: PlanSpec) -> tuple[str, ...]:
    """Files this command reads (the output must not overwrite them)."""
    source = spec.model.source if isinstance(spec.model.source, str) else None
    return tuple(p for p in (_spec_file(args), source, getattr(args, "device_map", None)) if p)


def _prepared(args: argparse.Namespace, *, besides: Sequence[str] = ()) -> PlanSpec:
    """The spec, with the output path checked: everything a mistake can be found in, before tracing."""
    spec = spec_from_args(args, besides=besides)
    if spec.output.path is not None:
        check_output(spec.output.path, inputs=_inputs(args, spec))
    return spec


# -- subcommands -------------------------------------------------------------------------------------
def cmd_plan(args: argparse.Namespace, err: Console) -> int:
    spec = _prepared(args)
    if getattr(args, "plot", None) is not None:
        from layerplan.planner.output.plots import check_plot_dir

        check_plot_dir(args.plot)
    from layerplan.planner.api import plan
    from layerplan.planner.output.report import render_plan

    with err.status(f"Planning {_name(spec)}: tracing on the meta device, then solving ({spec.solve.strategy.value}) ..."):
        result = plan(spec)
    if getattr(args, "plot", None) is not None:
        from layerplan.planner.output.plots import plot_layout, plot_memory

        for path in [*plot_memory(result, args.plot), *plot_layout(result, args.plot)]:
            err.print(f"wrote {path}")
    if getattr(args, "export", None):
        settings = result.export(args.export)
        _emit(spec, lambda: json.dumps(settings.to_dict(), indent=2), lambda c: _render_export(settings, c))
        return EXIT_OK
    _emit(spec, result.to_json, lambda c: render_plan(result, c))
    return EXIT_OK


def _render_export(settings, console: Console) -> None:  # noqa: ANN001 - an EngineExport
    console.print(settings.shell(), markup=False, highlight=False, soft_wrap=True)
    for note in settings.notes:
        console.print(f"# note: {note}", markup=False, highlight=False, soft_wrap=True)


def cmd_evaluate(args: argparse.Namespace, err: Console) -> int:
    spec = _prepared(args)
    if spec.solve.device_map is None:
        raise InvalidSpecError("evaluate needs a device_map: pass --device-map FILE.json (or [solve] device_map)")
    from layerplan.planner.api import evaluate_map, load_graph
    from layerplan.planner.output.report import render_plan

    with err.status(f"Tracing {_name(spec)} on the meta device ..."):
        graph, _ = load_graph(spec)
        result = evaluate_map(graph, spec.solve.device_map, spec)
    _emit(spec, result.to_json, lambda c: render_plan(result, c))
    return EXIT_OK if result.fits and not result.violations else EXIT_INFEASIBLE


def cmd_compare(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.spec import Strategy

    spec = _prepared(args)
    strategies = [Strategy.parse(s) for s in (args.strategies or [s.value for s in Strategy])]
    from layerplan.planner.baselines.compare import compare
    from layerplan.planner.output.report import comparison_to_dict, render_comparison

    with err.status(f"Tracing {_name(spec)}, planning with layerplan and accelerate ..."):
        result = compare(spec, strategies=strategies)
    _emit(spec, lambda: json.dumps(comparison_to_dict(result), indent=2), lambda c: render_comparison(result, c))
    return EXIT_OK


def cmd_trace(args: argparse.Namespace, err: Console) -> int:
    spec = _prepared(args)
    from layerplan.planner.api import trace

    with err.status(f"Tracing {_name(spec)} on the meta device ..."):
        graph, _ = trace(spec)
    spec = spec.replace(output=type(spec.output)(format="json", path=spec.output.path))
    _emit(spec, graph.to_json, None)
    if spec.output.path:
        err.print(f"wrote {len(graph.nodes)} nodes and {len(graph.edges)} edges to {spec.output.path}")
    return EXIT_OK


def cmd_devices(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.output.report import render_devices

    render_devices(Console())
    return EXIT_OK


def cmd_models(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.output.report import render_models

    render_models(Console())
    return EXIT_OK


def _name(spec: PlanSpec) -> str:
    return str(spec.model.source)


def _emit(spec: PlanSpec, text: Callable[[], str], render: Callable[[Console], None] | None) -> None:
    """Write the JSON text or the rendered table to ``spec.output.path`` or stdout."""
    as_json = spec.output.format == "json" or render is None
    if spec.output.path:
        with open(spec.output.path, "w", encoding="utf-8") as fh:
            if as_json:
                fh.write(text() + "\n")
            else:
                render(Console(file=fh, width=160))  # type: ignore[misc]
    elif as_json:
        sys.stdout.write(text() + "\n")
    else:
        render(Console())  # type: ignore[misc]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    err = Console(stderr=True)
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help (0) or a usage error, already printed in one line (2)
            return int(exc.code or 0)
        with quiet():
            return args.func(args, err)
    except KeyboardInterrupt:
        err.print(Text("interrupted", style="bold red"))
        return EXIT_INTERRUPTED
    except InfeasiblePlanError as exc:
        return _fail(err, "infeasible", exc, EXIT_INFEASIBLE)
    except InvalidSpecError as exc:
        return _fail(err, "error", exc, EXIT_BAD_INPUT)
    except TraceError as exc:
        return _fail(err, "trace failed", exc, EXIT_TRACE)
    except LayerplanError as exc:
        return _fail(err, "error", exc, EXIT_TRACE)
    except OSError as exc:  # e.g. the output disappeared between the check and the write
        return _fail(err, "error", exc, EXIT_BAD_INPUT)


def _fail(err: Console, label: str, exc: Exception, code: int) -> int:
    """One line on stderr, no traceback (the message is printed verbatim, not as rich markup)."""
    err.print(Text.assemble((f"{label}: ", "bold red"), str(exc)), soft_wrap=True)  # never wrapped
    return code


if __name__ == "__main__":
    sys.exit(main())
