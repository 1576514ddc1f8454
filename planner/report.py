"""Human-readable views of plans and the catalog (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from planner import catalog
from planner.adapter import Plan
from solver import format_bytes

__all__ = ["render_plan", "render_models"]


def render_plan(plan: Plan, console: Console) -> None:
    """Print the per-device blocks, the cut edges and the solver status of ``plan``."""
    g = plan.graph
    console.print(
        f"[bold]{g.model}[/bold] ({g.model_class}), {g.dtype}: {len(g.nodes)} nodes, "
        f"{format_bytes(g.total_bytes)} of weights and buffers"
    )
    w = g.workload
    if w:
        console.print(
            f"workload: batch {w['batch_size']}, prompt {w['prompt_len']} + {w['max_new_tokens']} new "
            f"tokens (context {w['context_len']}), phase {w['phase']}, KV cache {w['kv_dtype']} "
            f"({format_bytes(g.total_kv_bytes)} in all), attention {w['attn_implementation']}"
        )
    placement = Table(title="Placement", title_justify="left")
    placement.add_column("device")
    placement.add_column("nodes held (runs in execution order)")
    placement.add_column("nodes", justify="right")
    for u in plan.usage:
        placement.add_row(str(u.device), _runs(g, u.nodes), str(len(u.nodes)))
    console.print(placement)
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
    gap = "" if s.status.value == "optimal" else f", bound {format_bytes(s.bound)}, gap {100 * s.gap:.1f}%"
    console.print(
        f"status [bold]{s.status.value}[/bold] ({s.solver}, {s.wall_time_s:.2f} s; trace "
        f"{plan.trace_time_s:.2f} s): {format_bytes(plan.transfer_bytes)} cross devices per forward{gap}; "
        f"{format_bytes(plan.offloaded_bytes)} offloaded"
    )
    for note in g.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


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
