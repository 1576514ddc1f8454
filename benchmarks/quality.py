"""Plan quality: layerplan vs accelerate's ``device_map`` strategies, under one accounting.

For each catalog model x workload the model is traced once (:func:`layerplan.planner.api.trace`); the graph
and the meta model are reused for every hardware setting and strategy. Per (model, hardware,
workload, strategy), as :func:`layerplan.planner.baselines.compare.compare` does without re-tracing:

* **layerplan**: ``plan_graph(graph, strategy=...)`` (CP-SAT, default 1 GiB reserve per GPU), timed;
* **accelerate**: ``accelerate_device_map(meta_model, strategy=...)``, what
  ``from_pretrained(device_map=strategy, max_memory=...)`` places (:mod:`layerplan.planner.baselines.accelerate`), timed;
  its map is then measured by ``evaluate_map`` (not timed).

Both plans are charged by layerplan's accounting (weights + KV cache + activations + streaming buffer
+ reserve, :mod:`layerplan.solver.accounting`) and timed by its cost model (:mod:`layerplan.solver.cost`):

* ``overflow``: some device holds more than its cap. layerplan must never overflow (the run exits
  with status 1 if it does); ``refused``: layerplan proved that nothing fits;
* ``offloaded``: weight bytes on ``cpu`` / ``disk``;
* ``ms/token``: ``plan.timing.per_token_s`` (prefill included, spread over the generated tokens);
* ``plan s``: seconds to produce the device_map, tracing excluded for both tools (layerplan's
  trace, shared by every setting and strategy, is reported apart);
* ratios are layerplan / accelerate; the time-per-token ratio only where **both fit** (layerplan
  solved, accelerate within every cap), since a map that overflows does not run at all.

``"auto"`` and ``"sequential"`` are solved for latency, ``"balanced"`` and ``"balanced_low_0"`` for
balance (:mod:`layerplan.planner.spec.strategies`): only for the first two is a slower layerplan plan suspicious.
A case is flagged *suspect* when layerplan proved a latency optimum that is slower than an
accelerate map that fits and breaks no layerplan placement rule (``Plan.violations``), i.e. a map
inside layerplan's own search space.

Usage::

    python benchmarks/quality.py                                   # 5 models, 4 settings, ~11 min
    python benchmarks/quality.py --models llama-2-70b --hardware tight 2xh100+2x4090 --json /tmp/q.json
    python benchmarks/quality.py --all-models --time-limit 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# accelerate warns that the declared GPUs are absent on this machine: planning is what is measured.
logging.getLogger("accelerate.utils.modeling").setLevel(logging.ERROR)

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402

from layerplan.planner.model import catalog  # noqa: E402
from layerplan.planner.output.adapter import Plan  # noqa: E402
from layerplan.planner.api import trace  # noqa: E402
from layerplan.planner.baselines.compare import compare_strategy  # noqa: E402
from layerplan.planner.spec import PlanSpec  # noqa: E402
from layerplan.planner.graph import LayerGraph  # noqa: E402
from layerplan.planner.spec.sizes import parse_max_memory  # noqa: E402
from layerplan.planner.spec.strategies import Strategy  # noqa: E402
from layerplan.solver import Goal  # noqa: E402

_GIB = 2**30

#: (batch size, total context in tokens); the context is capped at the model's own.
WORKLOADS = ((1, 4096), (8, 2048))
#: Spans 7B to 70B, dense and MoE, fp16 / bf16 / fp32 checkpoints, MHA and GQA; with
#: :data:`DEFAULT_HARDWARE`, about 11 minutes on 2 CPU cores with the default time limit.
DEFAULT_MODELS = ("llama-2-7b", "mistral-7b", "gemma-2-9b", "mixtral-8x7b", "llama-2-70b")
#: Host RAM declared next to the GPUs of the settings that fit on GPUs.
_HOST_RAM = "512GiB"


@dataclass(frozen=True, kw_only=True, slots=True)
class Setting:
    """One hardware setting: declared devices and their caps (never detected).

    Attributes:
        name: table label.
        device_types: accelerator key -> :mod:`layerplan.planner.hardware.presets` preset.
        caps: the ``max_memory`` to plan with, from the traced graph (most settings ignore it).
        disk: whether ``"disk"`` is declared (an offload folder is then passed).
    """

    name: str
    device_types: Mapping[int, str]
    caps: Callable[[LayerGraph], dict[int | str, int | str]]
    disk: bool = False


def _ceil_gib(num_bytes: float) -> int:
    return math.ceil(num_bytes / _GIB) * _GIB


def _tight_caps(graph: LayerGraph) -> dict[int | str, int | str]:
    """Two L4s too small for the model, host RAM for a quarter of it, the rest on disk.

    Each GPU: its 1 GiB reserve + half the KV cache + the largest working set + a quarter of the
    weights, rounded up to a GiB and at most the L4's 24 GiB; cpu: a quarter of the weights. So
    about half the weights must leave the GPUs whatever the model, and, for the larger ones, the disk.
    """
    weight_bytes = graph.total_bytes
    work_bytes = max(n.work_bytes for n in graph.nodes)
    gpu_bytes = min(24 * _GIB, _ceil_gib(_GIB + graph.total_kv_bytes / 2 + work_bytes + weight_bytes / 4))
    return {0: gpu_bytes, 1: gpu_bytes, "cpu": _ceil_gib(weight_bytes / 4), "disk": "4TiB"}


HARDWARE = {
    s.name: s
    for s in (
        Setting(name="2xa100-80gb", device_types={0: "a100-80gb", 1: "a100-80gb"},
                caps=lambda g: {0: "80GiB", 1: "80GiB", "cpu": _HOST_RAM}),
        Setting(name="4xa100-40gb", device_types={i: "a100-40gb" for i in range(4)},
                caps=lambda g: {0: "40GiB", 1: "40GiB", 2: "40GiB", 3: "40GiB", "cpu": _HOST_RAM}),
        Setting(name="2xh100+2x4090", device_types={0: "h100-sxm", 1: "h100-sxm", 2: "rtx-4090", 3: "rtx-4090"},
                caps=lambda g: {0: "80GiB", 1: "80GiB", 2: "24GiB", 3: "24GiB", "cpu": _HOST_RAM}),
        Setting(name="a100-80gb+l4", device_types={0: "a100-80gb", 1: "l4"},
                caps=lambda g: {0: "80GiB", 1: "24GiB", "cpu": _HOST_RAM}),
        Setting(name="tight", device_types={0: "l4", 1: "l4"}, caps=_tight_caps, disk=True),
    )
}
#: Homogeneous, heterogeneous and offloading; ``--hardware 2xh100+2x4090`` adds a second heterogeneous one.
DEFAULT_HARDWARE = ("2xa100-80gb", "4xa100-40gb", "a100-80gb+l4", "tight")


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    """One (model, hardware, workload, strategy) case; sizes in bytes, times in seconds.

    ``lp_*`` is layerplan, ``acc_*`` accelerate; ``*_per_token_s`` is None without a plan.
    """

    model: str
    hardware: str
    workload: str
    strategy: str
    max_memory: dict[str, int]
    trace_s: float
    lp_status: str  # "optimal", "feasible" (time limit) or "refused"
    lp_error: str | None
    lp_overflow_bytes: int
    lp_offloaded_bytes: int | None
    lp_per_token_s: float | None
    lp_planning_s: float
    acc_error: str | None
    acc_overflow_bytes: int
    acc_violations: tuple[str, ...]
    acc_offloaded_bytes: int | None
    acc_per_token_s: float | None
    acc_planning_s: float

    @property
    def lp_fits(self) -> bool:
        return self.lp_per_token_s is not None and self.lp_overflow_bytes == 0

    @property
    def acc_fits(self) -> bool:
        return self.acc_per_token_s is not None and self.acc_overflow_bytes == 0

    @property
    def both_fit(self) -> bool:
        return self.lp_fits and self.acc_fits

    @property
    def per_token_ratio(self) -> float | None:
        """layerplan / accelerate time per token, where both fit."""
        if not self.both_fit:
            return None
        assert self.lp_per_token_s is not None and self.acc_per_token_s is not None
        return self.lp_per_token_s / self.acc_per_token_s

    @property
    def planning_ratio(self) -> float:
        return self.lp_planning_s / self.acc_planning_s

    @property
    def suspect(self) -> bool:
        """layerplan's proven latency optimum is slower than a fitting, rule-abiding accelerate map."""
        ratio = self.per_token_ratio
        return (Strategy.parse(self.strategy).default_goal is Goal.LATENCY and self.lp_status == "optimal"
                and not self.acc_violations and ratio is not None and ratio > 1 + 1e-6)


def _per_token_s(plan: Plan) -> float:
    assert plan.timing is not None, "every device has a preset: the cost model has what it needs"
    return plan.timing.per_token_s


def run_case(
    graph: LayerGraph,
    meta_model: nn.Module,
    *,
    model: str,
    workload: str,
    trace_s: float,
    setting: Setting,
    strategy: Strategy,
    time_limit_s: float,
    offload_folder: str,
) -> Row:
    """Plan one case with both tools and measure both plans (see the module docstring)."""
    caps = setting.caps(graph)
    spec = PlanSpec.from_kwargs(graph, max_memory=caps, time_limit_s=time_limit_s, device_types=setting.device_types,
                                offload_folder=offload_folder if setting.disk else None)
    mine, theirs_entry = compare_strategy(graph, meta_model, spec, strategy=strategy)
    ours, lp_error, lp_planning_s = mine.plan, mine.error, mine.planning_s
    theirs, acc_error, acc_planning_s = theirs_entry.plan, theirs_entry.error, theirs_entry.planning_s
    return Row(
        model=model, hardware=setting.name, workload=workload, strategy=strategy.value,
        max_memory={str(k): v for k, v in parse_max_memory(caps).items()},
        trace_s=trace_s,
        lp_status=ours.status if ours is not None else "refused",
        lp_error=lp_error,
        lp_overflow_bytes=mine.overflow_bytes,
        lp_offloaded_bytes=ours.offloaded_bytes if ours is not None else None,
        lp_per_token_s=_per_token_s(ours) if ours is not None else None,
        lp_planning_s=lp_planning_s,
        acc_error=acc_error,
        acc_overflow_bytes=theirs_entry.overflow_bytes,
        acc_violations=tuple(map(str, theirs.violations)) if theirs is not None else (),
        acc_offloaded_bytes=theirs.offloaded_bytes if theirs is not None else None,
        acc_per_token_s=_per_token_s(theirs) if theirs is not None else None,
        acc_planning_s=acc_planning_s,
    )


def _model_context(name: str) -> int | None:
    """The catalog model's context in tokens (the config keys :func:`layerplan.planner.api.trace` reads)."""
    config = catalog.lookup(name).config
    found = (config.get(k) for k in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"))
    return next((v for v in found if isinstance(v, int) and v > 0), None)


def _workload_label(graph: LayerGraph) -> str:
    """``"b8/2k"``: batch size / total context as traced (after capping at the model's context)."""
    context = graph.workload.context_len
    return f"b{graph.batch_size}/{context // 1024}k" if context % 1024 == 0 else f"b{graph.batch_size}/{context}"


def _gib(num_bytes: int | None) -> str:
    return "-" if num_bytes is None else f"{num_bytes / _GIB:.1f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


def case_table(rows: Sequence[Row]) -> Table:
    """One row per case: both tools' outcome, offload (GiB), ms/token, planning time and ratios."""
    table = Table(title="layerplan (lp) vs accelerate (acc) per case, layerplan's accounting and cost model",
                  caption="overflow/offloaded in GiB; tpt = time per token, ratio only where both fit; "
                          "acc rules = layerplan placement rules accelerate's map breaks; "
                          "red: layerplan overflow; yellow: suspect (see --help)")
    columns = ("model", "hardware", "workload", "strategy", "lp status", "lp offl", "lp ms/tok", "lp plan s",
               "acc over", "acc rules", "acc offl", "acc ms/tok", "acc plan s", "tpt ratio", "plan ratio")
    for col in columns:
        table.add_column(col, justify="left" if col in columns[:5] else "right")
    for r in rows:
        style = "red" if r.lp_overflow_bytes else "yellow" if r.suspect else None
        table.add_row(
            r.model, r.hardware, r.workload, r.strategy, r.lp_status, _gib(r.lp_offloaded_bytes),
            _ms(r.lp_per_token_s), f"{r.lp_planning_s:.2f}",
            "error" if r.acc_error else _gib(r.acc_overflow_bytes) if r.acc_overflow_bytes else "fits",
            str(len(r.acc_violations)), _gib(r.acc_offloaded_bytes), _ms(r.acc_per_token_s),
            f"{r.acc_planning_s:.2f}", _ratio(r.per_token_ratio), _times(r.planning_ratio), style=style,
        )
    return table


def summary_table(rows: Sequence[Row], hardware: Sequence[str], strategies: Sequence[Strategy]) -> Table:
    """Per hardware setting and strategy, over models and workloads."""
    table = Table(title="Summary per hardware setting and strategy (ratios = layerplan / accelerate)",
                  caption="tpt = time per token, over the cases where both fit (n); faster = layerplan "
                          "strictly faster there; balanced* strategies are solved for balance, not latency")
    columns = ("hardware", "strategy", "cases", "acc overflow", "acc error", "lp refused", "lp overflow",
               "both fit", "median tpt", "geomean tpt", "lp faster", "lp slower", "median plan")
    for col in columns:
        table.add_column(col, justify="left" if col in columns[:2] else "right")
    for name in hardware:
        for strategy in strategies:
            group = [r for r in rows if r.hardware == name and r.strategy == strategy.value]
            if not group:
                continue
            ratios = [x for r in group if (x := r.per_token_ratio) is not None]
            table.add_row(
                name, strategy.value, str(len(group)),
                str(sum(r.acc_overflow_bytes > 0 for r in group)),
                str(sum(r.acc_error is not None for r in group)),
                str(sum(r.lp_status == "refused" for r in group)),
                str(sum(r.lp_overflow_bytes > 0 for r in group)),
                str(len(ratios)),
                _ratio(statistics.median(ratios) if ratios else None),
                _ratio(math.exp(statistics.fmean(map(math.log, ratios))) if ratios else None),
                str(sum(x < 1 - 1e-6 for x in ratios)),
                str(sum(x > 1 + 1e-6 for x in ratios)),
                _times(statistics.median(r.planning_ratio for r in group)),
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=catalog.catalog_names(),
                        metavar="MODEL", help=f"catalog models (default: {' '.join(DEFAULT_MODELS)})")
    models.add_argument("--all-models", action="store_true", help="every catalog model")
    parser.add_argument("--hardware", nargs="+", default=list(DEFAULT_HARDWARE), choices=list(HARDWARE),
                        help=f"hardware settings (default: {' '.join(DEFAULT_HARDWARE)})")
    parser.add_argument("--strategies", nargs="+", default=[s.value for s in Strategy],
                        choices=[s.value for s in Strategy])
    parser.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT limit per plan (s)")
    parser.add_argument("--json", metavar="FILE", help="write every case (and the run's settings) to FILE")
    args = parser.parse_args()
    names = catalog.catalog_names() if args.all_models else args.models
    settings = [HARDWARE[h] for h in args.hardware]
    strategies = [Strategy.parse(s) for s in args.strategies]

    console = Console(width=max(Console().width, 200))  # the wide table reads badly when wrapped
    started = time.perf_counter()
    rows: list[Row] = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    with progress, tempfile.TemporaryDirectory(prefix="layerplan-quality-") as offload_folder:
        task = progress.add_task("", total=len(names) * len(WORKLOADS) * len(settings) * len(strategies))
        for name in names:
            model_context = _model_context(name)
            for batch, context in WORKLOADS:
                progress.update(task, description=f"{name} b{batch}: tracing")
                began = time.perf_counter()
                graph, meta_model = trace(name, batch_size=batch, seq_len=min(context, model_context or context))
                trace_s = time.perf_counter() - began
                label = _workload_label(graph)
                for setting in settings:
                    for strategy in strategies:
                        progress.update(task, description=f"{name} {label} {setting.name} {strategy.value}")
                        rows.append(run_case(graph, meta_model, model=name, workload=label, trace_s=trace_s,
                                             setting=setting, strategy=strategy, time_limit_s=args.time_limit,
                                             offload_folder=offload_folder))
                        progress.advance(task)
    total_s = time.perf_counter() - started

    console.print(case_table(rows))
    console.print(summary_table(rows, args.hardware, strategies))
    traces = {(r.model, r.workload): r.trace_s for r in rows}
    console.print(
        f"{len(rows)} cases ({len(names)} models x {len(WORKLOADS)} workloads x {len(settings)} settings x "
        f"{len(strategies)} strategies) in {total_s:.0f} s, of which tracing {sum(traces.values()):.0f} s "
        f"({len(traces)} traces); time limit {args.time_limit:g} s, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs."
    )
    suspects = [r for r in rows if r.suspect]
    for r in suspects:
        console.print(f"[yellow]suspect[/]: {r.model} {r.hardware} {r.workload} {r.strategy}: layerplan "
                      f"(optimal) {_ms(r.lp_per_token_s)} ms/token > accelerate {_ms(r.acc_per_token_s)} ms/token "
                      "with a map that fits and breaks no rule")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"models": names, "hardware": args.hardware, "strategies": args.strategies,
                       "workloads": WORKLOADS, "time_limit_s": args.time_limit, "total_s": total_s,
                       "cases": [dataclasses.asdict(r) | {"per_token_ratio": r.per_token_ratio,
                                                          "planning_ratio": r.planning_ratio,
                                                          "suspect": r.suspect} for r in rows]}, f, indent=1)
        console.print(f"wrote {len(rows)} cases to {args.json}")
    overflowing = [r for r in rows if r.lp_overflow_bytes]
    if overflowing:
        r = overflowing[0]
        sys.exit(f"layerplan overflowed a cap in {len(overflowing)} case(s), e.g. {r.model} {r.hardware} "
                 f"{r.workload} {r.strategy} by {_gib(r.lp_overflow_bytes)} GiB: a solver bug")


if __name__ == "__main__":
    main()
