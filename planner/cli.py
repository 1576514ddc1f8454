"""``layerplan``: command-line entry point (thin: parse, call the library, print).

Exit codes: 0 plan found, 1 the model could not be traced, 2 bad input, 3 infeasible.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.text import Text

from layerplan.solver import InfeasiblePlanError, InvalidSpecError, LayerplanError, TraceError

__all__ = ["main"]

EXIT_OK, EXIT_TRACE, EXIT_BAD_INPUT, EXIT_INFEASIBLE = 0, 1, 2, 3

_EPILOG = """\
MODEL is a catalog name (see `layerplan models`), a directory holding config.json, a path to a
config.json, a Hub id already in the local Hugging Face cache, or a graph JSON written by
`layerplan trace`. Nothing is ever downloaded.

examples:
  layerplan plan llama-2-70b --max-memory 0=40GiB 1=40GiB cpu=200GiB
  layerplan plan llama-2-70b --max-memory 0=80GiB 1=80GiB 2=24GiB 3=24GiB cpu=200GiB \
      --device-type 0,1=h100-sxm 2,3=rtx-4090 --objective latency
  layerplan plan mixtral-8x7b --max-memory 0=24GiB 1=24GiB cpu=64GiB disk=1TB --offload-folder /tmp/off
  layerplan plan ./my-model --max-memory 0=20GB cpu=64GB --device-map pins.json --format json -o plan.json
  layerplan compare llama-2-13b --max-memory 0=16GiB 1=16GiB cpu=64GiB --device-type 0,1=l4
  layerplan evaluate llama-2-13b --device-map map.json --max-memory 0=16GiB 1=16GiB cpu=64GiB

strategies (accelerate's device_map strings, solved instead of filled greedily):
  auto            any GPU may hold any block; objective latency
  balanced        objective balanced (smallest largest memory utilisation)
  balanced_low_0  GPU 0 stores no more than any other GPU (room for generate()); objective balanced
  sequential      blocks follow the GPU order (GPU 0 first); objective latency
objectives: latency (time per generated token under the cost model), throughput (slowest device,
  for pipelined batches), balanced (largest used/cap), transfers (bytes crossing devices)

Without --max-memory the caps are detected (accelerate's get_max_memory: free GPU memory, available
RAM; the offload folder's free space for disk), and GPUs named by --device-type get their preset's
memory. Times are estimates from a roofline cost model (see `layerplan devices` for the figures).

exit codes: 0 plan found (evaluate: the map fits), 1 model could not be traced, 2 bad input,
  3 infeasible (evaluate: the map does not fit)
"""


def _key_values(items: Sequence[str], *, flag: str, example: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InvalidSpecError(f"{flag} {item!r} is not KEY=VALUE; write e.g. {flag} {example}")
        out[key.strip()] = value.strip()
    return out


def _add_workload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="catalog name, model directory, config.json, Hub id or graph JSON")
    p.add_argument("--dtype", help="weight/activation dtype (bfloat16, float16, float32, ...); "
                                   "default: the checkpoint's published dtype")
    p.add_argument("--batch-size", type=int, default=1, help="sequences per forward pass (default 1)")
    p.add_argument("--seq-len", type=int, metavar="TOKENS",
                   help="total context per sequence, prompt + new tokens (default: the model's context, at most 4096)")
    p.add_argument("--prompt-len", type=int, metavar="TOKENS", help="prompt tokens (default: seq-len minus new tokens)")
    p.add_argument("--max-new-tokens", type=int, metavar="TOKENS",
                   help="tokens generate() adds (default 256, at most a quarter of the context; 0 for encoders)")
    p.add_argument("--kv-dtype", help="KV-cache dtype, e.g. fp8 for a quantised cache (default: --dtype)")
    p.add_argument("--attn-implementation", choices=("sdpa", "eager"),
                   help="attention kernel (eager materialises the score matrix); default: transformers' choice")
    p.add_argument("--phase", choices=("prefill", "decode", "generate"), default="generate",
                   help="which part of generate() must fit: prefill, decode or both (default generate)")
    p.add_argument("--prefill-logits", action="store_true",
                   help="size prefill logits for every prompt position (generate() keeps only the last)")
    p.add_argument("--no-split", action="append", default=[], metavar="CLASS",
                   help="extra module class to keep whole (repeatable), besides the model's _no_split_modules")


def _add_device_args(p: argparse.ArgumentParser, *, required_caps: bool = False) -> None:
    p.add_argument("--max-memory", nargs="+", metavar="DEVICE=SIZE", required=required_caps,
                   help="caps per device, accelerate's max_memory: 0=40GiB 1=40GiB cpu=200GiB disk=1TB "
                        "(GiB = 2^30 bytes, GB = 10^9); default: detected on this machine")
    p.add_argument("--device-type", nargs="+", default=[], metavar="GPU=NAME",
                   help="accelerator presets for the cost model, e.g. 0=h100-sxm 1,2=a100-80gb "
                        "(`layerplan devices` lists them; default a100-80gb, with a note)")
    p.add_argument("--interconnect", choices=("auto", "nvlink", "pcie"), default="auto",
                   help="GPU-to-GPU links: auto (NVLink between SXM boards of one type, else PCIe), "
                        "nvlink or pcie")
    p.add_argument("--link", nargs="+", default=[], metavar="A-B=BANDWIDTH",
                   help="override one link, e.g. 0-1=nvlink 0-2=25GB/s")
    p.add_argument("--host-link", metavar="LINK", help="CPU-GPU link: pcie3, pcie4, pcie5 or a bandwidth (default: each GPU's)")
    p.add_argument("--disk-read", metavar="BANDWIDTH",
                   help="offload drive read speed: nvme-gen5, nvme-gen4, nvme-gen3, sata-ssd, hdd or e.g. 3GB/s")
    p.add_argument("--reserve", nargs="+", default=[], metavar="[DEVICE=]SIZE",
                   help="bytes kept free on each accelerator for the CUDA context and allocator slack "
                        "(default 1GiB); one SIZE for all, or DEVICE=SIZE each")
    p.add_argument("--offload-folder", metavar="DIR", help="folder for disk-offloaded weights (needed if disk is used)")


_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_OBJECTIVES = ("latency", "throughput", "balanced", "transfers")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the output to FILE instead of stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerplan",
        description="Plan where each layer of a large model goes (GPUs, cpu, disk) and get an accelerate "
                    "device_map that from_pretrained loads.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plan", help="solve a placement and print it (table or JSON)", epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_workload_args(p)
    _add_device_args(p)
    p.add_argument("--strategy", choices=_STRATEGIES, default="auto",
                   help="accelerate's device_map strategy, solved (default auto; see below)")
    p.add_argument("--objective", choices=_OBJECTIVES,
                   help="what to minimise (default: the strategy's)")
    p.add_argument("--device-map", metavar="FILE.json",
                   help="a device_map as JSON: a full map is evaluated and kept as is; a partial one "
                        "(e.g. {\"lm_head\": 1}) pins those modules and the rest is solved")
    p.add_argument("--pin", nargs="+", default=[], metavar="MODULE=DEVICE",
                   help="force a module (or every node under a prefix) onto a device, e.g. lm_head=1")
    p.add_argument("--time-limit", type=float, default=30.0, metavar="S",
                   help="solver time limit in seconds (default 30); past it the best plan and its gap are shown")
    _add_output_args(p)
    p.set_defaults(func=cmd_plan)

    t = sub.add_parser("trace", help="trace a model on the meta device and write its layer graph as JSON")
    _add_workload_args(t)
    t.add_argument("-o", "--output", metavar="FILE", help="write the graph JSON to FILE instead of stdout")
    t.set_defaults(func=cmd_trace)

    e = sub.add_parser("evaluate", help="measure a given device_map under layerplan's accounting and cost model",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_workload_args(e)
    _add_device_args(e)
    e.add_argument("--device-map", metavar="FILE.json", required=True, help="the full device_map to evaluate (JSON)")
    _add_output_args(e)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="layerplan vs accelerate (from_pretrained's device_map) for each strategy",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_workload_args(c)
    _add_device_args(c)
    c.add_argument("--strategies", nargs="+", choices=_STRATEGIES, default=list(_STRATEGIES), help="strategies to compare (default all)")
    c.add_argument("--objective", choices=_OBJECTIVES,
                   help="layerplan's objective (default: each strategy's)")
    c.add_argument("--time-limit", type=float, default=30.0, metavar="S", help="solver time limit per plan (default 30)")
    _add_output_args(c)
    c.set_defaults(func=cmd_compare)

    m = sub.add_parser("models", help="list the built-in catalog of published model configs")
    m.set_defaults(func=cmd_models)
    d = sub.add_parser("devices", help="list the accelerator, host-link and disk presets with their sources")
    d.set_defaults(func=cmd_devices)
    return parser


def _load_model_arg(model: str):  # noqa: ANN202
    """A graph JSON written by `layerplan trace`, or the model string as is."""
    path = Path(model)
    if path.suffix == ".json" and path.name != "config.json" and path.is_file():
        from layerplan.planner.graph import LayerGraph

        return LayerGraph.from_json(path.read_text())
    return model


def _workload_kwargs(args: argparse.Namespace) -> dict:
    return {
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "prompt_len": args.prompt_len,
        "max_new_tokens": args.max_new_tokens,
        "kv_dtype": args.kv_dtype,
        "attn_implementation": args.attn_implementation,
        "phase": args.phase,
        "prefill_logits": args.prefill_logits,
        "no_split_module_classes": tuple(args.no_split),
    }


def _reserve_arg(items: list[str]) -> dict[str, str] | str | None:
    """``--reserve 1GiB`` (every accelerator) or ``--reserve 0=2GiB 1=1GiB``."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return items[0]
    return _key_values(items, flag="--reserve", example="0=2GiB")


def _device_kwargs(args: argparse.Namespace) -> dict:
    """The device options shared by plan, evaluate and compare (library keyword arguments)."""
    from layerplan.planner.hardware import parse_device_types, parse_links

    hardware: dict = {"interconnect": args.interconnect}
    if args.link:
        hardware["links"] = parse_links(args.link)
    if args.host_link:
        hardware["host_link"] = args.host_link
    if args.disk_read:
        hardware["disk_read"] = args.disk_read
    return {
        "max_memory": _key_values(args.max_memory, flag="--max-memory", example="0=40GiB") if args.max_memory else None,
        "device_types": parse_device_types(args.device_type) if args.device_type else None,
        "hardware": hardware,
        "offload_folder": args.offload_folder,
        "reserve": _reserve_arg(args.reserve),
    }


def cmd_plan(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.api import plan
    from layerplan.planner.output.report import render_plan

    pins = _key_values(args.pin, flag="--pin", example="lm_head=1")
    with err.status(f"Tracing {args.model} on the meta device and solving ({args.strategy}) ..."):
        result = plan(
            _load_model_arg(args.model),
            strategy=args.strategy,
            objective=args.objective,
            device_map=args.device_map,
            pins=pins,
            time_limit_s=args.time_limit,
            **_device_kwargs(args),
            **_workload_kwargs(args),
        )
    _emit(args.output, result.to_json() if args.format == "json" else None,
          (lambda c: render_plan(result, c)) if args.format == "table" else None)
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.api import evaluate_map, trace
    from layerplan.planner.graph import LayerGraph
    from layerplan.planner.output.report import render_plan

    with err.status(f"Tracing {args.model} on the meta device ..."):
        model = _load_model_arg(args.model)
        graph = model if isinstance(model, LayerGraph) else trace(model, **_workload_kwargs(args))[0]
    result = evaluate_map(graph, args.device_map, **_device_kwargs(args))
    _emit(args.output, result.to_json() if args.format == "json" else None,
          (lambda c: render_plan(result, c)) if args.format == "table" else None)
    return EXIT_OK if result.fits and not result.violations else EXIT_INFEASIBLE


def cmd_compare(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.baselines.compare import compare
    from layerplan.planner.output.report import comparison_to_dict, render_comparison

    with err.status(f"Tracing {args.model}, planning with layerplan and accelerate ..."):
        result = compare(args.model, strategies=args.strategies, objective=args.objective,
                         time_limit_s=args.time_limit, **_device_kwargs(args), **_workload_kwargs(args))
    import json

    _emit(args.output, json.dumps(comparison_to_dict(result), indent=2) if args.format == "json" else None,
          (lambda c: render_comparison(result, c)) if args.format == "table" else None)
    return EXIT_OK


def cmd_devices(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.output.report import render_devices

    render_devices(Console())
    return EXIT_OK


def cmd_trace(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.api import trace

    with err.status(f"Tracing {args.model} on the meta device ..."):
        graph, _ = trace(args.model, **_workload_kwargs(args))
    _emit(args.output, graph.to_json(), None)
    if args.output:
        err.print(f"wrote {len(graph.nodes)} nodes and {len(graph.edges)} edges to {args.output}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace, err: Console) -> int:
    from layerplan.planner.output.report import render_models

    render_models(Console())
    return EXIT_OK


def _emit(output: str | None, text: str | None, render) -> None:  # noqa: ANN001
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            if text is not None:
                fh.write(text + "\n")
            else:
                render(Console(file=fh, width=160))
    elif text is not None:
        sys.stdout.write(text + "\n")
    else:
        render(Console())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    try:
        return args.func(args, err)
    except InfeasiblePlanError as exc:
        return _fail(err, "infeasible", exc, EXIT_INFEASIBLE)
    except InvalidSpecError as exc:
        return _fail(err, "error", exc, EXIT_BAD_INPUT)
    except TraceError as exc:
        return _fail(err, "trace failed", exc, EXIT_TRACE)
    except LayerplanError as exc:
        return _fail(err, "error", exc, EXIT_TRACE)
    except OSError as exc:  # e.g. -o into a missing folder
        return _fail(err, "error", exc, EXIT_BAD_INPUT)


def _fail(err: Console, label: str, exc: Exception, code: int) -> int:
    """One line on stderr, no traceback (the message is printed verbatim, not as rich markup)."""
    err.print(Text.assemble((f"{label}: ", "bold red"), str(exc)), soft_wrap=True)  # never wrapped
    return code


if __name__ == "__main__":
    sys.exit(main())
