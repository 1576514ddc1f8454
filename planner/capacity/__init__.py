"""Capacity planning: the inverse questions, each answered by plans the solver proves.

* :func:`min_devices` -- the fewest GPUs of a type that run the model at the workload;
* :func:`max_workload` -- the largest batch at a context, the longest context at a batch, and
  the (batch, context) frontier for given devices;
* :func:`cheapest` -- the cheapest setup (GPU types and counts, at their prices) that runs it,
  optionally within a latency or throughput target;
* :func:`compare_setups` -- the same model and workload on several setups, side by side;
* :func:`sweep` -- every point of a spec file's ``[sweep]`` grid, one tidy table (:class:`SweepRow`).
"""

from layerplan.planner.capacity.cheapest import Candidate, Cheapest, Comparison, cheapest, compare_setups
from layerplan.planner.capacity.max_workload import Frontier, Largest, frontier, max_batch, max_context
from layerplan.planner.capacity.min_devices import DeviceCount, MinDevices, min_devices, min_devices_on_graph
from layerplan.planner.capacity.probe import Probe
from layerplan.planner.capacity.setups import DEFAULT_PRICES, PRICE_SOURCE, Setup, parse_prices, parse_setup
from layerplan.planner.capacity.sweep import SweepResult, sweep
from layerplan.planner.capacity.sweep_grid import SweepGrid
from layerplan.planner.capacity.sweep_table import SweepRow, read_csv

__all__ = [
    "DEFAULT_PRICES", "PRICE_SOURCE", "Candidate", "Cheapest", "Comparison", "DeviceCount", "Frontier", "Largest",
    "MinDevices", "Probe", "Setup", "SweepGrid", "SweepResult", "SweepRow", "cheapest", "compare_setups", "frontier",
    "max_batch", "max_context", "min_devices", "min_devices_on_graph", "parse_prices", "parse_setup", "read_csv",
    "sweep",
]
