"""Rich tables of the capacity answers (:mod:`layerplan.planner.capacity`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from layerplan.solver import format_bytes

if TYPE_CHECKING:
    from layerplan.planner.capacity import Candidate, Cheapest, Comparison, Frontier, Largest, MinDevices

__all__ = ["render_cheapest", "render_comparison", "render_frontier", "render_largest", "render_min_devices"]


_KIND = {"bound": "memory bound", "infeasible": "proven by the solver", "unknown": "undecided", "fits": "fits",
         "slow": "latency floor"}


_VERDICT = {"bound": "too small (memory)", "infeasible": "proven not to fit", "unknown": "undecided", "fits": "fits",
            "slow": "too slow (floor)"}


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _proof(proven: bool, text: str) -> str:
    return text if proven else f"[yellow]not proven[/yellow]: {text}"


def render_min_devices(result: MinDevices, console: Console) -> None:
    """One row per (type, offload): N, the proof that N-1 does not fit, ms per token at N."""
    table = Table(title=f"{result.model}: fewest GPUs", title_justify="left")
    for col, justify in (("device type", "left"), ("offload", "left"), ("GPUs", "right"), ("ms/token", "right"),
                         ("offloaded", "right"), ("why one fewer does not fit", "left"), ("plans", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    notes = []
    for a in result.answers:
        offloaded = format_bytes(a.plan.offloaded_bytes) if a.plan is not None else "-"
        solved = sum(1 for p in a.probes if p.verdict != "bound")
        below = [p for p in a.probes if p.value is not None and a.num_devices and p.value == a.num_devices - 1]
        why = f"{below[0].value}: {_KIND[below[0].verdict]}" if below else a.proof
        table.add_row(a.device_type, "cpu/disk" if a.offload else "no", str(a.num_devices or "none"),
                      _ms(a.ms_per_token), offloaded, _proof(a.proven, why), str(solved))
        if below or a.num_devices is None:
            notes.append(f"{a.device_type}{' with offload' if a.offload else ''}: {a.proof}")
    console.print(table)
    for note in notes:
        console.print(f"  {note}", highlight=False)
    console.print(f"{result.plans_solved} plans solved in {result.seconds:.2f} s (tracing included)")


def render_largest(result: Largest, console: Console) -> None:
    """The largest batch or context, its proof and the plan's estimate."""
    what = "batch size" if result.field == "batch_size" else "context (seq_len)"
    fixed = ", ".join(f"{k} {v}" for k, v in result.fixed.items()) or "the defaults"
    if result.value is None:
        console.print(f"[bold red]nothing fits[/bold red]: {what} {result.probes[0].value} already does not "
                      f"({result.proof}), at {fixed}")
        return
    plan = result.plan
    ms = plan.timing.per_token_s * 1e3 if plan is not None and plan.timing is not None else None
    console.print(f"largest {what}: [bold]{result.value}[/bold] (step {result.step}, limit {result.limit}) at {fixed}; "
                  f"{_ms(ms)} ms per token there")
    console.print(f"next step: {_proof(result.proven, result.proof)}")
    console.print(f"{len(result.probes)} plans: " + ", ".join(f"{p.value} {p.verdict}" for p in result.probes))


def render_frontier(result: Frontier, console: Console) -> None:
    """Batch size -> longest context, each with its proof."""
    table = Table(title=f"{result.model} on {result.setup}: longest context per batch size", title_justify="left")
    for col, justify in (("batch", "right"), ("longest seq_len", "right"), ("ms/token", "right"),
                         ("next step", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for batch, point in result.points:
        plan = point.plan
        ms = plan.timing.per_token_s * 1e3 if plan is not None and plan.timing is not None else None
        nxt = point.next_probe
        short = f"{nxt.value}: {_KIND[nxt.verdict]}" if nxt is not None else point.proof
        table.add_row(str(batch), str(point.value or "none"), _ms(ms), _proof(point.proven, short))
    console.print(table)
    reasons = dict.fromkeys(p.next_probe.reason for _, p in result.points if p.next_probe is not None)
    for reason in reasons:
        console.print(f"  {reason}", highlight=False)
    plans = sum(len(p.probes) for _, p in result.points)
    console.print(f"{plans} plans in {result.seconds:.2f} s (each traced at its workload; the graph cache keeps them)")


def _row(c: Candidate) -> list[str]:
    price = f"${c.price_per_hour:.2f}" if c.price_per_hour is not None else "-"
    tps = f"{c.tokens_per_s:.1f}" if c.tokens_per_s is not None else "-"
    plan = c.probe.plan
    peak = max((u.utilisation for u in plan.usage if u.device not in ("cpu", "disk")), default=0.0) if plan else None
    verdict = _VERDICT[c.probe.verdict] + ("" if c.meets or not c.probe.fits else " (misses target)")
    return [c.setup.name, price, verdict,
            _ms(c.probe.ms_per_token), tps, f"{100 * peak:.0f}%" if peak is not None else "-",
            format_bytes(plan.offloaded_bytes) if plan is not None else "-"]


def _candidates_table(title: str, rows: list[Candidate]) -> Table:
    table = Table(title=title, title_justify="left")
    for col, justify in (("setup", "left"), ("$/hour", "right"), ("verdict", "left"), ("ms/token", "right"),
                         ("tokens/s", "right"), ("peak GPU used", "right"), ("offloaded", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in rows:
        table.add_row(*_row(c))
    return table


def render_cheapest(result: Cheapest, console: Console, *, shown: int = 12) -> None:
    """The answer and runner-up, then the setups tried that needed a plan (cheapest first)."""
    if result.best is None:
        console.print(f"[bold red]no setup meets the target[/bold red] ({result.target}) among the "
                      f"{len(result.candidates)} tried")
    else:
        b = result.best
        console.print(f"cheapest that {'meets: ' + result.target if result.target != 'fits' else 'fits'}: "
                      f"[bold]{b.setup.name}[/bold] at ${b.price_per_hour:.2f}/hour, "
                      f"{_ms(b.probe.ms_per_token)} ms per token"
                      + ("" if result.proven else " [yellow](a cheaper setup was undecided)[/yellow]"))
        if result.runner_up is not None:
            r = result.runner_up
            console.print(f"runner-up: {r.setup.name} at ${r.price_per_hour:.2f}/hour, "
                          f"{_ms(r.probe.ms_per_token)} ms per token")
    solved = [c for c in result.candidates if c.probe.verdict not in ("bound", "slow")]
    console.print(_candidates_table(f"setups planned ({len(solved)} of {len(result.candidates)} tried; the others "
                                    "were ruled out by their memory or their latency floor alone)", solved[:shown]))
    console.print(f"prices: {result.price_source}; {result.seconds:.2f} s")


def render_comparison(result: Comparison, console: Console) -> None:
    """One row per setup."""
    console.print(_candidates_table(f"{result.model}: setups compared", list(result.rows)))
    console.print(f"{len(result.rows)} plans in {result.seconds:.2f} s")
