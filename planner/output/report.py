"""Human-readable views of plans and the catalog (rich tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from layerplan.planner.model import catalog
from layerplan.planner.output.adapter import Plan
from layerplan.solver import format_bytes
from layerplan.solver.goals import UTILISATION_SCALE

if TYPE_CHECKING:  # importing it would import transformers' modeling code (about 5 s) for every report
    from layerplan.planner.baselines.compare import Comparison

__all__ = ["render_plan", "render_models", "render_comparison", "comparison_to_dict", "render_devices"]


def render_plan(plan: Plan, console: Console) -> None:
    """Print the per-device blocks, the cut edges and the solver status of ``plan``."""
    g = plan.graph
    console.print(
        f"[bold]{g.model}[/bold] ({g.model_class}), {g.dtype}: {len(g.nodes)} nodes, "
        f"{format_bytes(g.total_bytes)} of weights and buffers"
        + (f" ({format_bytes(g.total_expert_bytes)} in MoE experts)" if g.total_expert_bytes else "")
    )
    if g.quantization:
        console.print(f"quantized weights: {g.quantization}")
    w = g.workload
    console.print(
        f"workload: batch {w.batch_size}, prompt {w.prompt_len}"
        + (f" ({w.image_tokens} of them for {w.images_per_prompt} image(s))" if w.images_per_prompt else "")
        + f" + {w.max_new_tokens} new tokens (context {w.context_len}), phase {w.phase.value}, KV cache {w.kv_dtype} "
        f"({format_bytes(g.total_kv_bytes)} in all), attention {w.attn_implementation}"
    )
    placement = Table(title="Placement", title_justify="left")
    hosts = plan.hosts
    placement.add_column("device")
    if hosts:
        placement.add_column("host")
    placement.add_column("nodes held (runs in execution order)")
    placement.add_column("nodes", justify="right")
    for u in plan.usage:
        where = (str(u.device), hosts[u.device]) if hosts else (str(u.device),)
        placement.add_row(*where, _runs(g, u.nodes), str(len(u.nodes)))
    console.print(placement)
    if apart := _experts_apart(plan):
        shown = ", ".join(f"{layer} ({a} / experts {b})" for layer, a, b in apart[:3])
        console.print(f"MoE experts placed apart from their layer in {len(apart)} layer(s): {shown}"
                      + (", ..." if len(apart) > 3 else "") + " (the device_map names the layers' parts)")
    # One column per device (usually 2-6), one row per kind of bytes: fits an 80-column terminal.
    memory = Table(title="Memory per device at peak", title_justify="left")
    memory.add_column("bytes")
    for u in plan.usage:
        memory.add_column(str(u.device), justify="right", no_wrap=True)
    rows = (
        ("weights", lambda u: format_bytes(u.weights_bytes)),
        ("KV cache", lambda u: format_bytes(u.kv_bytes)),
        ("activations", lambda u: format_bytes(u.activation_bytes)),
        ("streaming", lambda u: format_bytes(u.streaming_bytes)),
        ("reserve", lambda u: format_bytes(u.reserve_bytes)),
        ("= used", lambda u: format_bytes(u.used_bytes)),
        ("free", lambda u: format_bytes(u.free_bytes)),
        ("cap (max_memory)", lambda u: format_bytes(u.cap_bytes)),
        ("used / cap", lambda u: f"{100 * u.utilisation:.1f}%"),
    )
    for label, cell in rows:
        memory.add_row(label, *(cell(u) for u in plan.usage), end_section=label in ("reserve", "free"))
    console.print(memory)
    if plan.cuts:
        cuts = Table(title="Tensors crossing devices (per forward pass)", title_justify="left")
        for col in ("from node", "to node(s)", "src -> dst", "bytes"):
            cuts.add_column(col)
        for c in plan.cuts:
            consumers = c.consumers[0] if len(c.consumers) == 1 else f"{c.consumers[0]} (+{len(c.consumers) - 1})"
            cuts.add_row(c.producer, consumers, f"{c.src} -> {c.dst}", format_bytes(c.size_bytes))
        console.print(cuts)
    else:
        console.print("No tensor crosses a device boundary.")
    s = plan.solution
    if plan.timing is not None:
        t = plan.timing
        console.print(
            f"estimated: [bold]{t.per_token_s * 1e3:.2f} ms per generated token[/bold] (prefill "
            f"{_ms(t.prefill_ns)}, decode {_ms(t.decode_ns)} per step); over the whole workload "
            f"{_ms(t.total_ns)}: compute {_ms(t.compute_ns)}, transfers {_ms(t.transfer_ns)}, offload "
            f"streaming {_ms(t.streaming_ns)}; busiest device {_ms(t.bottleneck_ns)}"
        )
    if s.status.value == "given":
        fits = "[green]fits[/green]" if plan.fits else "[red]does not fit[/red]: " + ", ".join(
            f"device {u.device} over by {format_bytes(-u.free_bytes)}" for u in plan.usage if u.free_bytes < 0)
        console.print(f"given device_map ({s.solver}), evaluated: {fits}; {format_bytes(plan.transfer_bytes)} "
                      f"cross devices per forward; {format_bytes(plan.offloaded_bytes)} offloaded")
        for v in plan.violations:
            console.print(f"[red]rule broken:[/red] {v}")
    else:
        headline = s.headline
        value = _measure(headline, s.headline_value)
        gap = "" if s.status.value == "optimal" else f", bound {_value(headline, s.bound)}, gap {100 * s.gap:.1f}%"
        console.print(
            f"status [bold]{s.status.value}[/bold] (strategy {plan.strategy}, objective {s.goal}: "
            f"{value}{gap}; {s.solver} {s.wall_time_s:.2f} s, trace {plan.trace_time_s:.2f} s): "
            f"{format_bytes(plan.transfer_bytes)} cross devices per forward; "
            f"{format_bytes(plan.offloaded_bytes)} offloaded"
        )
    if plan.multi_host:
        console.print(f"[yellow]note:[/yellow] the plan spans hosts {', '.join(dict.fromkeys(hosts.values()))}: "
                      "run it as pipeline stages (--export vllm or sglang); the device_map above is not one "
                      "process's from_pretrained map")
    for note in (*g.notes, *plan.hardware_notes):
        console.print(f"[yellow]note:[/yellow] {note}")


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.2f} ms" if ns < 10**10 else f"{ns / 1e9:.2f} s"


_MEASURE_LABELS = {"time_ns": "workload time", "bottleneck_ns": "busiest device time",
                   "max_utilisation": "largest used/cap", "transfer_bytes": "bytes crossing devices"}


def _measure(name: str, value: int) -> str:
    """A goal measure in its unit, labelled."""
    label = _MEASURE_LABELS.get(name, name)
    return f"{label} {_value(name, value)}"


def _value(name: str, value: int) -> str:
    if name.endswith("_ns"):
        return _ms(value)
    if name == "max_utilisation":
        return f"{100 * value / UTILISATION_SCALE:.2f}%"
    if name == "transfer_bytes":
        return format_bytes(value)
    return str(value)


def _experts_apart(plan: Plan) -> list[tuple[str, str, str]]:
    """``(layer, its device, its experts' device)`` for each MoE layer whose experts node
    (:mod:`layerplan.planner.model.experts`) is placed on another device."""
    devices = [plan.problem.devices[d].name for d in plan.solution.assignment]
    return [(plan.graph.nodes[layer].name, devices[layer], devices[experts])
            for experts, layer in plan.graph.experts_layers().items() if devices[experts] != devices[layer]]


def _runs(graph, names: tuple[str, ...]) -> str:  # noqa: ANN001
    """``"a .. c; f"``: the nodes as runs of consecutive positions in execution order."""
    if not names:
        return "-"
    positions = sorted(graph.index(n) for n in names)
    runs: list[list[int]] = [[positions[0], positions[0]]]
    for p in positions[1:]:
        if p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    text = [graph.nodes[a].name if a == b else f"{graph.nodes[a].name} .. {graph.nodes[b].name}" for a, b in runs]
    return "; ".join(text)


def render_models(console: Console) -> None:
    """Print the built-in catalog: name, Hub id, architecture, published parameter count."""
    table = Table(title="Built-in model catalog (published configs, no download needed)", title_justify="left")
    for col, justify in (("name", "left"), ("hub id", "left"), ("model_type", "left"),
                         ("parameters", "right"), ("source of the count", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name in catalog.catalog_names():
        entry = catalog.lookup(name)
        assert entry is not None
        table.add_row(name, entry.hub_id, str(entry.config.get("model_type", "")),
                      f"{entry.published_params / 1e9:.2f}B", entry.params_source)
    console.print(table)


def render_comparison(comparison: Comparison, console: Console) -> None:
    """One row per (strategy, tool): fits or by how much not, memory per device, offload, cuts,
    estimated time per token and planning time, all under layerplan's accounting."""
    w = comparison.workload
    console.print(
        f"[bold]{comparison.model}[/bold]: batch {w.batch_size}, prompt {w.prompt_len} + "
        f"{w.max_new_tokens} new tokens; caps "
        + ", ".join(f"{k}={format_bytes(v)}" for k, v in comparison.max_memory.items())
        + f"; traced once in {comparison.trace_s:.2f} s"
    )
    devices = list(comparison.max_memory)
    strategies = list(dict.fromkeys(e.strategy for e in comparison.entries))
    for strategy in strategies:
        pair = [e for e in comparison.entries if e.strategy == strategy]
        table = Table(title=f'device_map="{strategy}"', title_justify="left")
        table.add_column("", no_wrap=True)
        for e in pair:
            table.add_column(e.tool, justify="right", no_wrap=True)
        rows: list[tuple[str, list[str]]] = [("fits", []), *((f"{d}: used / cap", []) for d in devices),
                                             ("offloaded", []), ("bytes crossing devices", []),
                                             ("est. ms per token", []), ("planning s", [])]
        for e in pair:
            p = e.plan
            if p is None:
                values = ["[red]no plan[/red]"] + ["-"] * (len(rows) - 2)
            else:
                by_device = {u.device: u for u in p.usage}
                values = ["[green]yes[/green]" if p.fits else f"[red]over by {format_bytes(e.overflow_bytes)}[/red]"]
                for d in devices:
                    u = by_device.get(d)
                    values.append("-" if u is None else
                                  f"{'[red]' if u.free_bytes < 0 else ''}{format_bytes(u.used_bytes)}"
                                  f"{'[/red]' if u.free_bytes < 0 else ''} / {format_bytes(u.cap_bytes)}")
                values += [format_bytes(p.offloaded_bytes), format_bytes(p.transfer_bytes),
                           "-" if p.timing is None else f"{p.timing.per_token_s * 1e3:.2f}"]
            values.append(f"{e.planning_s:.2f}")
            for (label, cells), value in zip(rows, values):
                cells.append(value)
        for label, cells in rows:
            table.add_row(label, *cells)
        console.print(table)
        for e in pair:
            if e.plan is None and e.error:
                console.print(f"[red]{e.tool} gave no plan:[/red] {e.error}", soft_wrap=True)
    console.print("used/cap counts KV cache, activations, streaming buffer and reserve, not only weights; "
                  "ms/token is the cost model's estimate (prefill included); an accelerate row that does "
                  "not fit would run out of memory at generate() time.")


def _short(text: str | None, limit: int = 70) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def comparison_to_dict(comparison: Comparison) -> dict:
    """JSON-ready form of a :class:`~layerplan.planner.baselines.compare.Comparison`."""
    return {
        "model": comparison.model,
        "max_memory": {str(k): v for k, v in comparison.max_memory.items()},
        "workload": comparison.workload.to_dict(),
        "trace_s": comparison.trace_s,
        "entries": [
            {
                "tool": e.tool,
                "strategy": e.strategy,
                "error": e.error,
                "planning_s": e.planning_s,
                "overflow_bytes": e.overflow_bytes,
                "plan": None if e.plan is None else e.plan.to_dict(),
            }
            for e in comparison.entries
        ],
    }


def render_devices(console: Console) -> None:
    """Print the hardware presets the cost model uses, with their sources."""
    from layerplan.planner import hardware

    table = Table(title="Accelerator presets (--device-type)", title_justify="left")
    for col, justify in (("name", "left"), ("memory", "right"), ("bandwidth", "right"),
                         ("bf16 dense", "right"), ("NVLink", "right"), ("host link", "left"), ("source", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, preset in hardware.ACCELERATORS.items():
        bf16 = preset.flops_per_s.get("bfloat16")
        table.add_row(name, format_bytes(preset.memory_bytes), f"{preset.mem_bytes_per_s / 1e9:.0f} GB/s",
                      "-" if bf16 is None else f"{bf16 / 1e12:.0f} TFLOPS",
                      f"{preset.nvlink_bytes_per_s / 1e9:.0f} GB/s" if preset.nvlink_bytes_per_s else "-",
                      preset.host_link, preset.source)
    console.print(table)
    links = Table(title="Host links (--host-link) and disks (--disk-read)", title_justify="left")
    for col in ("name", "read", "source"):
        links.add_column(col)
    for group in (hardware.HOST_LINKS, hardware.DISKS):
        for name, preset in group.items():
            links.add_row(name, f"{preset.bytes_per_s / 1e9:.2f} GB/s", preset.source)
    console.print(links)
    from layerplan.planner.hardware.network import INTER_HOST_LINKS

    network = Table(title="Networks between hosts (--inter-host), per GPU", title_justify="left")
    for col in ("name", "rate", "latency (assumed)", "source"):
        network.add_column(col)
    for name, preset in INTER_HOST_LINKS.items():
        network.add_row(name, f"{preset.bytes_per_s / 1e9:.2f} GB/s", f"{preset.latency_s * 1e6:.0f} us", preset.source)
    console.print(network)
    cpu = hardware.HOST_CPU
    console.print(f"host CPU (when nodes compute on it): {cpu.description}, {cpu.flops_per_s / 1e12:.1f} TFLOPS, "
                  f"{cpu.mem_bytes_per_s / 1e9:.0f} GB/s ({cpu.source})")
