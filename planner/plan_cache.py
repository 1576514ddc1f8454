"""An on-disk cache of solved placements: a loader that plans the same model on the same devices
on every load solves once.

A placement proven optimal is a pure function of the placement problem (nodes, edges, devices and
caps, ties, pins, order rules), the cost model, the goal and layerplan's code: the solvers are
deterministic (the exact DPs; CP-SAT's interleaved search when no phase hits its time limit, which
a proven optimum means). :func:`plan_key` hashes exactly these, so any change to the model, the
workload, the caps, the hardware or the code is a different key. Only OPTIMAL solutions are stored
(a time-limited FEASIBLE one could improve with more time). An entry holds the assignment, the
bound and the solver's name; the measures and the timing are scored again on reading
(:func:`layerplan.solver.solution_of`), and an entry that is unreadable or no longer a valid
placement of the problem is ignored.

Entries live in ``plans/`` under the graph cache folder
(:func:`layerplan.planner.model.cache.cache_dir`) and are skipped with it (``--no-cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from layerplan.planner.provenance import planner_digest
from layerplan.solver import CostModel, InvalidSpecError, PlacementProblem, Solution, Status, solution_of

__all__ = ["load_plan", "plan_key", "store_plan"]


def plan_key(problem: PlacementProblem, cost: CostModel | None, goal: str) -> str:
    """A hex digest of what an optimal placement depends on (module docstring). The dataclasses'
    ``repr`` is exact (ints, floats as ``repr``, enums by name) and stable across processes."""
    digest = hashlib.sha256(planner_digest().encode())
    for part in (repr(problem), repr(cost), goal):
        digest.update(part.encode())
    return digest.hexdigest()[:32]


def load_plan(folder: Path, key: str, problem: PlacementProblem, cost: CostModel | None, goal: str) -> Solution | None:
    """The stored solution under ``key``, scored again, or None (absent, unreadable, or invalid)."""
    try:
        entry = json.loads((folder / "plans" / f"{key}.json").read_text(encoding="utf-8"))
        return solution_of(problem, entry["assignment"], status=Status.OPTIMAL, goal=goal, cost=cost,
                           bound=int(entry["bound"]), solver=str(entry["solver"]))
    except (OSError, ValueError, KeyError, TypeError, InvalidSpecError):
        return None


def store_plan(folder: Path, key: str, solution: Solution) -> bool:
    """Write ``solution`` under ``key`` when it is OPTIMAL (atomically); whether it was written. A
    folder that cannot be written is skipped silently: the cache only saves time."""
    if solution.status is not Status.OPTIMAL:
        return False
    entry = {"assignment": list(solution.assignment), "bound": solution.bound, "solver": solution.solver}
    target = folder / "plans"
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=target, suffix=".tmp", delete=False, encoding="utf-8") as file:
            json.dump(entry, file)
        os.replace(file.name, target / f"{key}.json")
        return True
    except OSError:
        return False
