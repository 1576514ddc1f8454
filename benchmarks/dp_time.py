"""Exact chain DP and CP-SAT hint on large problems: seconds per case, printed (no assertions).

The cases are those of ``tests/test_solver_dp.py`` (where their results are checked): 300 nodes on 8
roomy GPUs with and without offload tiers, a tight 8-GPU split, a 70B-like chain offloading to a
tight cpu and disk, and the hint on a 300-node DAG with a tied head.

Run: ``python benchmarks/dp_time.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.strategies builds the problems

from layerplan.solver import Edge, Node, PlacementProblem, chain_hint, solve_chain_dp  # noqa: E402
from tests.strategies import GiB, chain_of, gpus  # noqa: E402


def cases() -> list[tuple[str, object]]:
    layer = int(1.7 * GiB)
    n = 300
    dag = PlacementProblem(
        nodes=tuple(Node(name=f"n{i}", size_bytes=GiB) for i in range(n)),
        edges=tuple(Edge(producer=i, consumers=tuple(sorted({i + 1, min(n - 1, i + 2)})), size_bytes=2**20)
                    for i in range(n - 1)),
        devices=gpus(*[40 * GiB] * 6, cpu=64 * GiB, disk=1024 * GiB), tied_groups=((0, n - 1),), ordered=False,
    )
    return [
        ("dp: 300 nodes, 8 roomy GPUs", lambda: solve_chain_dp(chain_of(*[GiB] * 300, edge_bytes=2**20,
                                                                          devices=gpus(*[300 * GiB] * 8)))),
        ("dp: 300 nodes, 8 roomy GPUs + cpu + disk", lambda: solve_chain_dp(chain_of(
            *[GiB] * 300, edge_bytes=2**20, devices=gpus(*[300 * GiB] * 8, cpu=64 * GiB, disk=1024 * GiB)))),
        ("dp: 300 nodes, tight 8 x 40 GiB", lambda: solve_chain_dp(chain_of(*[GiB] * 300, edge_bytes=2**20,
                                                                              devices=gpus(*[40 * GiB] * 8)))),
        ("dp: 70B-like, tight cpu + disk", lambda: solve_chain_dp(chain_of(
            GiB, *[layer] * 80, 8192, GiB, edge_bytes=2**27, devices=gpus(40 * GiB, 40 * GiB, cpu=30 * GiB,
                                                                          disk=1024 * GiB)))),
        ("hint: 300-node DAG, tied head", lambda: chain_hint(dag)),
    ]


def main() -> None:
    table = Table(title="exact chain DP and hint")
    table.add_column("case")
    table.add_column("seconds", justify="right")
    for name, run in cases():
        started = time.perf_counter()
        run()
        table.add_row(name, f"{time.perf_counter() - started:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
