"""Plots of plans and capacity answers (matplotlib, written as PNG and SVG).

Each plot is two steps: a ``*_data`` function that turns the result into the numbers drawn (plain
lists, what the tests compare against the tables), and a ``plot_*`` function that draws them and
returns the files written. matplotlib is imported only when drawing, with the non-interactive
Agg backend, so a plot never opens a window or needs a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerplan.planner.spec.paths import make_folder
from layerplan.solver import InvalidSpecError

if TYPE_CHECKING:
    from layerplan.planner.capacity import Cheapest, Frontier, SweepResult
    from layerplan.planner.output.adapter import Plan

__all__ = [
    "KINDS", "check_plot_dir", "cost_latency_data", "frontier_data", "layout_data", "memory_data",
    "plot_cost_latency", "plot_frontier", "plot_layout", "plot_memory", "plot_sweep_fits", "plot_sweep_latency",
    "sweep_fits_data", "sweep_latency_data",
]

#: The stacked kinds of bytes of :func:`memory_data`, bottom to top (:class:`DeviceUsage` fields).
KINDS = ("weights", "kv", "activation", "streaming", "reserve")
_GIB = 2**30


def check_plot_dir(folder: str | os.PathLike) -> Path:
    """``folder`` as a directory plots can be written to (created if missing).

    Raises:
        InvalidSpecError: it is a file, or cannot be created.
    """
    return make_folder(folder, what="--plot", holds="the PNG and SVG files")


def _save(fig: Any, folder: str | os.PathLike, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    out = check_plot_dir(folder)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


# -- one plan ----------------------------------------------------------------------------------------
def memory_data(plan: Plan) -> dict[str, Any]:
    """Per device: bytes of each kind in :data:`KINDS` and the cap (``plan.usage``'s figures).

    Returns:
        ``{"devices": [...], "caps": [...], "weights": [...], "kv": [...], ...}``, bytes.
    """
    usage = plan.usage
    data: dict[str, Any] = {"devices": [str(u.device) for u in usage], "caps": [u.cap_bytes for u in usage]}
    for kind in KINDS:
        data[kind] = [getattr(u, f"{kind}_bytes") for u in usage]
    return data


def plot_memory(plan: Plan, folder: str | os.PathLike, *, stem: str = "memory") -> list[Path]:
    """Stacked bars of :func:`memory_data` (GiB) with each device's cap marked; returns the files."""
    data = memory_data(plan)
    fig, ax = _figure()
    bottom = [0.0] * len(data["devices"])
    for kind in KINDS:
        values = [b / _GIB for b in data[kind]]
        ax.bar(data["devices"], values, bottom=bottom, label=kind)
        bottom = [a + b for a, b in zip(bottom, values)]
    ax.scatter(data["devices"], [c / _GIB for c in data["caps"]], marker="_", s=800, color="black", label="cap")
    ax.set_ylabel("GiB")
    ax.set_title(f"{plan.graph.model}: memory per device at peak")
    ax.legend(fontsize="small")
    return _save(fig, folder, stem)


def layout_data(plan: Plan) -> list[tuple[int, int, str]]:
    """The plan's layer-to-device layout as runs ``(first node index, count, device)`` in graph order."""
    device_of = {n: str(u.device) for u in plan.usage for n in u.nodes}
    runs: list[tuple[int, int, str]] = []
    for i, node in enumerate(plan.graph.nodes):
        device = device_of[node.name]
        if runs and runs[-1][2] == device and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, device)
        else:
            runs.append((i, 1, device))
    return runs


def plot_layout(plan: Plan, folder: str | os.PathLike, *, stem: str = "layout") -> list[Path]:
    """The layout as one strip: each run of nodes coloured by the device that holds it."""
    runs = layout_data(plan)
    devices = list(dict.fromkeys(d for _, _, d in runs))
    fig, ax = _figure(9.0, 1.8)
    colours = {d: f"C{i % 10}" for i, d in enumerate(devices)}
    for start, count, device in runs:
        ax.broken_barh([(start, count)], (0, 1), color=colours[device])
    for device in devices:
        ax.bar(0, 0, color=colours[device], label=device)
    ax.set_yticks([])
    ax.set_xlim(0, len(plan.graph.nodes))
    ax.set_xlabel("node (execution order)")
    ax.legend(ncol=min(len(devices), 8), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.6))
    ax.set_title(f"{plan.graph.model}: which device holds which nodes")
    return _save(fig, folder, stem)


# -- capacity answers --------------------------------------------------------------------------------
def frontier_data(result: Frontier) -> list[tuple[int, int]]:
    """``(batch size, longest context)`` of each point that fits (:meth:`Frontier.pairs`)."""
    return result.pairs()


def plot_frontier(result: Frontier, folder: str | os.PathLike, *, stem: str = "frontier") -> list[Path]:
    """The (batch, context) frontier as a step line on log2 batch: each batch between two points fits
    at least the next point's context (a larger batch never fits a longer one), so the area under it fits."""
    pairs = frontier_data(result)
    fig, ax = _figure()
    ax.step([b for b, _ in pairs], [c for _, c in pairs], where="pre", marker="o")
    ax.fill_between([b for b, _ in pairs], [c for _, c in pairs], step="pre", alpha=0.2,
                    label="fits (a larger batch never fits a longer context)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("longest context (tokens)")
    ax.set_title(f"{result.model} on {result.setup}")
    ax.legend()
    return _save(fig, folder, stem)


def cost_latency_data(result: Cheapest) -> list[tuple[str, float, float]]:
    """``(setup, $ per hour, ms per token)`` of every setup tried that fits."""
    return [(c.setup.name, c.price_per_hour, c.probe.ms_per_token) for c in result.candidates
            if c.probe.fits and c.price_per_hour is not None and c.probe.ms_per_token is not None]


def plot_cost_latency(result: Cheapest, folder: str | os.PathLike, *, stem: str = "cost_latency") -> list[Path]:
    """Each fitting setup as a point (price per hour, ms per token), the cheapest answer marked."""
    points = cost_latency_data(result)
    fig, ax = _figure()
    ax.scatter([p for _, p, _ in points], [m for _, _, m in points], s=18, label="setups that fit")
    if result.best is not None and result.best.probe.ms_per_token is not None:
        ax.scatter([result.best.price_per_hour], [result.best.probe.ms_per_token], s=90, marker="*", color="C3",
                   label=f"cheapest: {result.best.setup.name}")
    ax.set_xlabel("US dollars per hour")
    ax.set_ylabel("ms per generated token")
    ax.set_title(f"{result.model}: cost vs latency ({result.target})")
    ax.legend(fontsize="small")
    return _save(fig, folder, stem)


# -- sweeps ------------------------------------------------------------------------------------------
def _groups(result: SweepResult, placed: tuple[str, ...]) -> list[tuple[str, list[Any]]]:
    """The rows grouped by the swept axes other than ``placed`` (which a plot's axes show), in
    grid order, each group titled by those axes' values (its setup when no other axis is swept)."""
    rest = [a for a in result.grid.names if a not in placed]
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in result.rows:
        groups.setdefault(tuple(getattr(row, a) for a in rest), []).append(row)

    def title(row: Any) -> str:
        parts = [f"{a}={getattr(row, a)}" for a in rest if a != "setup"]
        return " ".join([str(row.setup), *parts] if "setup" in rest or not parts else parts)

    return [(title(members[0]), members) for members in groups.values()]


def _panels(count: int, width: float, height: float) -> tuple[Any, Any]:
    """``count`` axes side by side, each ``width`` x ``height`` inches (Agg, as :func:`_figure`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, count, squeeze=False, figsize=(width * count + 0.6, height))
    return fig, axes[0]


def sweep_fits_data(result: SweepResult) -> list[dict[str, Any]]:
    """Per panel (one per setup, and per value of any other swept axis but the lengths): whether
    each (batch size, context) point fits.

    Args:
        result: a :class:`~layerplan.planner.capacity.sweep.SweepResult`.

    Returns:
        ``[{"title": str, "batch_sizes": [...], "contexts": [...], "fits": [[...], ...]}]`` where
        ``fits[i][j]`` is True, False, or None (an error, or no such point) at ``contexts[i]``
        tokens (``seq_len``) and ``batch_sizes[j]`` sequences. Rows without a batch size or
        context are left out.
    """
    panels = []
    for title, members in _groups(result, ("batch_size", "seq_len", "prompt_len")):
        members = [r for r in members if r.batch_size is not None and r.seq_len is not None]
        if not members:
            continue
        batches = sorted({r.batch_size for r in members})
        contexts = sorted({r.seq_len for r in members})
        cell = {(r.seq_len, r.batch_size): (r.fits if r.status != "error" else None) for r in members}
        panels.append({"title": title, "batch_sizes": batches, "contexts": contexts,
                       "fits": [[cell.get((c, b)) for b in batches] for c in contexts]})
    return panels


def plot_sweep_fits(result: SweepResult, folder: str | os.PathLike, *, stem: str = "sweep_fits") -> list[Path]:
    """:func:`sweep_fits_data` as heatmaps side by side: green fits, red does not, grey no answer."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    panels = sweep_fits_data(result)
    if not panels:
        raise InvalidSpecError("no sweep point has a batch size and a context to draw")
    fig, axes = _panels(len(panels), 3.6, 3.6)
    colours = ListedColormap(["#d62728", "#2ca02c"]).with_extremes(bad="#bbbbbb")
    for ax, panel in zip(axes, panels):
        grid = np.array([[np.nan if v is None else float(v) for v in line] for line in panel["fits"]])
        ax.imshow(np.ma.masked_invalid(grid), cmap=colours, vmin=0, vmax=1, origin="lower", aspect="auto")
        ax.set_xticks(range(len(panel["batch_sizes"])), [str(b) for b in panel["batch_sizes"]])
        ax.set_yticks(range(len(panel["contexts"])), [str(c) for c in panel["contexts"]])
        ax.set_xlabel("batch size")
        ax.set_title(panel["title"], fontsize="small")
    axes[0].set_ylabel("context (tokens)")
    fig.suptitle("fits (green) or not (red); grey: no answer", fontsize="small")
    return _save(fig, folder, stem)


def sweep_latency_data(result: SweepResult) -> list[dict[str, Any]]:
    """Per line (one per setup, and per value of any other swept axis but the batch size): the
    cost model's milliseconds per generated token at each batch size that fits (``result``: a
    :class:`~layerplan.planner.capacity.sweep.SweepResult`).

    Returns:
        ``[{"label": str, "batch_sizes": [...], "ms_per_token": [...]}]``, batch sizes
        increasing; lines without a fitting point are left out.
    """
    lines = []
    for label, members in _groups(result, ("batch_size",)):
        members = sorted((r for r in members if r.fits and r.ms_per_token is not None), key=lambda r: r.batch_size)
        if not members:
            continue
        lines.append({"label": label, "batch_sizes": [r.batch_size for r in members],
                      "ms_per_token": [r.ms_per_token for r in members]})
    return lines


def plot_sweep_latency(result: SweepResult, folder: str | os.PathLike, *, stem: str = "sweep_latency") -> list[Path]:
    """:func:`sweep_latency_data` as lines on log2 batch size."""
    lines = sweep_latency_data(result)
    fig, ax = _figure()
    for line in lines:
        ax.plot(line["batch_sizes"], line["ms_per_token"], marker="o", label=line["label"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per generated token (estimate)")
    ax.set_title(f"{result.model}: latency of the points that fit", fontsize="small")
    if lines:
        ax.legend(fontsize="small")
    return _save(fig, folder, stem)
