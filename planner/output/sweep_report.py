"""The rich summary table of a sweep (:func:`layerplan.planner.capacity.sweep`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerplan.solver import format_bytes

if TYPE_CHECKING:
    from layerplan.planner.capacity.sweep import SweepResult
    from layerplan.planner.capacity.sweep_table import SweepRow

__all__ = ["render_sweep"]

_STATUS = {"fits": "[green]fits[/green]", "infeasible": "[red]infeasible[/red]", "bound": "[red]too small[/red]",
           "unknown": "[yellow]undecided[/yellow]", "error": "[bold red]error[/bold red]"}


def _fullest(row: SweepRow) -> str:
    """The fullest accelerator (else device) of a fitting row: ``"72% of 3.00 MiB"``."""
    pairs = [(u / c if c else 0.0, d, c) for d, u, c in zip(row.devices, row.used_bytes, row.cap_bytes)]
    gpus = [p for p in pairs if p[1] not in ("cpu", "disk")] or pairs
    if not gpus:
        return "-"
    share, _, cap = max(gpus)
    return f"{share:.0%} of {format_bytes(cap)}"


#: Short headers of the axis columns (the table files keep the full names).
_HEADERS = {"batch_size": "batch", "seq_len": "context", "prompt_len": "prompt", "max_new_tokens": "new",
            "quantization": "quant", "kv_dtype": "kv dtype"}


def render_sweep(result: SweepResult, console: Console) -> None:
    """One line per point: the swept values, the verdict, how full the fullest GPU is (used over
    its cap), offloaded bytes (when any point offloads) and ms per token; then each distinct
    error with the points it stopped (the proofs of the points that do not fit are in the
    table files' ``message`` column)."""
    axes = result.grid.names
    offload = any(r.offloaded_bytes for r in result.rows)
    table = Table(title=f"{result.model}: sweep of {len(result.rows)} points", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    for axis in axes:
        table.add_column(_HEADERS.get(axis, axis), no_wrap=True)
    for col in ("status", "fullest GPU", *(["offloaded"] if offload else []), "ms/token"):
        table.add_column(col, justify="left" if col == "status" else "right", no_wrap=True)
    for row in result.rows:
        offloaded = [format_bytes(row.offloaded_bytes) if row.offloaded_bytes is not None else "-"] if offload else []
        ms = f"{row.ms_per_token:.3g}" if row.ms_per_token is not None else "-"
        table.add_row(str(row.index), *(str(getattr(row, a)) for a in axes), _STATUS.get(row.status, row.status),
                      _fullest(row) if row.fits else "-", *offloaded, ms)
    console.print(table)
    errors: dict[str, list[int]] = {}
    for row in result.errors:
        errors.setdefault(row.message, []).append(row.index)
    for message, indices in errors.items():
        console.print(Text.assemble(("error ", "bold red"), f"at #{', #'.join(map(str, indices))}: {message}"))
    fits = sum(r.fits for r in result.rows)
    console.print(f"{fits} of {len(result.rows)} points fit; {len(result.errors)} errors; "
                  f"{result.resumed} read from the journal; {result.seconds:.2f} s", highlight=False)
    for path in result.files:
        console.print(f"wrote {path}", highlight=False)
