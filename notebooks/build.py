"""Write the capacity-planning notebooks from the cells below and execute them in place (nbclient),
so that every notebook in this folder is saved with its outputs.

    python notebooks/build.py            # all of them
    python notebooks/build.py 02         # the ones whose file name starts with 02

The test suite (tests/test_notebooks.py) executes copies of the saved notebooks again, so a
notebook that stops running fails the build. The cells use layerplan's public API only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

_SETUP = '''\
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets

import layerplan
from layerplan import cheapest, compare_setups, frontier, max_batch, min_devices, parse_setup
from layerplan.planner.output.plots import plot_cost_latency, plot_frontier, plot_layout, plot_memory
from IPython.display import Image, display

def show(paths):
    """Display the PNG of a plot (the SVG is written beside it)."""
    display(Image(filename=str(next(p for p in paths if p.suffix == ".png"))))
'''

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_will_it_fit_70b.ipynb": [
        ("md", "# Will Llama-2-70B fit, and how fast?\n\nThe fewest GPUs of each type that serve Llama-2-70B "
               "(fp16) at batch 8 with a 4096-token context, with and without offloading weights to 512 GiB of "
               "host RAM, and the estimated time per token on each. Every count is proven: N GPUs fit, and N-1 "
               "are shown not to, by the solver or because their memory cannot hold the weights and KV cache."),
        ("code", _SETUP),
        ("code", 'spec = layerplan.PlanSpec.from_dict({\n'
                 '    "model": {"source": "llama-2-70b"},\n'
                 '    "workload": {"batch_size": 8, "seq_len": 4096},\n'
                 '    "devices": {"max_memory": {"cpu": "512GiB"}},\n'
                 '})\n'
                 'answer = min_devices(spec, ["h100-sxm", "a100-80gb", "l40s", "rtx-4090"])\n'
                 'print(f"{\'type\':<10} {\'offload\':<8} {\'GPUs\':>4} {\'ms/token\':>9}  why one fewer does not fit")\n'
                 'for a in answer.answers:\n'
                 '    why = a.proof if len(a.proof) < 90 else a.proof[:87] + "..."\n'
                 '    print(f"{a.device_type:<10} {\'yes\' if a.offload else \'no\':<8} {a.num_devices:>4} "\n'
                 '          f"{a.ms_per_token:>9.1f}  {why}")\n'
                 'print(f"{answer.plans_solved} plans solved in {answer.seconds:.1f} s")'),
        ("md", "Offloading lets one GPU run the model, but every token then streams the offloaded layers over "
               "PCIe: compare the times. Beyond the minimum, more GPUs do not make one token faster -- the "
               "layers still run one after the other, as a pipeline -- but they hold a larger batch: the "
               "largest batch at this context on 2, 4 and 8 H100s, and what it does to throughput."),
        ("code", 'result = compare_setups(spec, [parse_setup(f"h100-sxm*{n}") for n in (2, 4, 8)])\n'
                 'for row in result.rows:\n'
                 '    largest = max_batch(spec, setup=row.setup, limit=1024)\n'
                 '    ms = largest.plan.timing.per_token_s * 1e3\n'
                 '    print(f"{row.setup.name:<12} ${row.price_per_hour:>6.2f}/h  batch 8: {row.probe.ms_per_token:5.1f} ms/token; "\n'
                 '          f"largest batch {largest.value:>4}: {ms:6.1f} ms/token, {largest.value / ms * 1e3:7.0f} tokens/s")'),
        ("md", "The plan on two H100s: memory per device at peak (weights, KV cache, activations, reserve "
               "against the cap), and which device holds which layers."),
        ("code", 'two = next(r for r in result.rows if r.setup.num_gpus == 2).probe.plan\n'
                 'show(plot_memory(two, "figures", stem="70b_memory"))\n'
                 'show(plot_layout(two, "figures", stem="70b_layout"))'),
    ],
    "02_max_batch_and_context_8xh100.ipynb": [
        ("md", "# How far does an 8×H100 box go? The batch × context frontier of Llama-3.3-70B\n\n"
               "For each batch size, the longest context (prompt + 256 new tokens) that fits eight H100 SXM "
               "80 GB in bf16, on a 4096-token grid. Each point is a real plan, and the next grid step is proven "
               "not to fit; a larger batch never fits a longer context, so each search starts below the last."),
        ("code", _SETUP),
        ("code", 'spec = layerplan.PlanSpec.from_dict({"model": {"source": "llama-3.3-70b"},\n'
                 '                                     "workload": {"max_new_tokens": 256}})\n'
                 'box = parse_setup("8xH100:h100-sxm*8")\n'
                 'result = frontier(spec, setup=box, batch_sizes=[1, 4, 16, 64, 256], step=4096)\n'
                 'for batch, point in result.points:\n'
                 '    print(f"batch {batch:>4}: longest context {point.value or \'none\':>6} tokens  ({point.proof[:70]})")\n'
                 'print(f"{sum(len(p.probes) for _, p in result.points)} plans in {result.seconds:.1f} s")'),
        ("code", 'show(plot_frontier(result, "figures", stem="8xh100_frontier"))'),
        ("md", "The largest batch at a fixed 8192-token context, exactly (step 1):"),
        ("code", 'at_8k = spec.replace(workload=layerplan.WorkloadSpec(seq_len=8192, max_new_tokens=256))\n'
                 'largest = max_batch(at_8k, setup=box)\n'
                 'print(f"largest batch at 8192 tokens: {largest.value}; next: {largest.proof[:100]}")'),
    ],
    "03_cheapest_for_a_latency_target.ipynb": [
        ("md", "# The cheapest hardware for a latency target\n\nMixtral-8x7B (bf16) at batch 4 and a 4096-token "
               "context: the cheapest setup of one GPU type, or two mixed, with at most 8 GPUs, whose estimated "
               "time per token is at most 60 ms. Setups are tried cheapest first, so every cheaper one was "
               "planned (or ruled out by its memory) and missed. Prices: the defaults, which cite their source "
               "and date; pass `prices={...}` for your own."),
        ("code", _SETUP),
        ("code", 'spec = layerplan.PlanSpec.from_dict({"model": {"source": "mixtral-8x7b"},\n'
                 '                                     "workload": {"batch_size": 4, "seq_len": 4096}})\n'
                 'result = cheapest(spec, max_ms_per_token=60, max_devices=8, mix=2)\n'
                 'for label, c in (("cheapest", result.best), ("runner-up", result.runner_up)):\n'
                 '    print(f"{label:<10} {c.setup.name:<28} ${c.price_per_hour:.2f}/h  {c.probe.ms_per_token:.1f} ms/token")\n'
                 'print(f"proven cheapest: {result.proven}; {len(result.candidates)} setups tried; prices: {result.price_source}")'),
        ("code", 'show(plot_cost_latency(result, "figures", stem="mixtral_cost_latency"))'),
        ("md", "Without a target, the cheapest setup that merely fits:"),
        ("code", 'fits = cheapest(spec, max_devices=8, mix=2)\n'
                 'print(f"{fits.best.setup.name}: ${fits.best.price_per_hour:.2f}/h, {fits.best.probe.ms_per_token:.1f} ms/token")'),
    ],
}


def build(name: str, cells: list[tuple[str, str]], *, timeout_s: int = 900) -> Path:
    """Write notebook ``name`` from ``cells`` and execute it in this folder; returns its path."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    path = HERE / name
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    prefixes = sys.argv[1:] or [""]
    for name, cells in NOTEBOOKS.items():
        if any(name.startswith(p) for p in prefixes):
            print(f"executed {build(name, cells)}")
