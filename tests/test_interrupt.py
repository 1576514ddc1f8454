"""Ctrl-C: the CP-SAT search stops at once (not at its time limit) and the CLI exits 130 in one line."""

from __future__ import annotations

import _thread
import random
import threading

import pytest
from ortools.sat.python import cp_model

from layerplan.planner import cli
from layerplan.solver import Device, DeviceKind, Edge, Node, PlacementProblem, solve


def _hard_problem() -> PlacementProblem:
    """400 nodes with skip edges on 8 tight GPUs: CP-SAT (asked for by name: the block DP would
    take it) does not prove it in seconds."""
    rng = random.Random(0)
    n = 400
    nodes = tuple(Node(name=f"n{i}", size_bytes=rng.randint(10, 100)) for i in range(n))
    edges = tuple(Edge(producer=i, consumers=(j,), size_bytes=rng.randint(1, 50))
                  for i in range(n) for j in (i + 1, i + 7) if j < n)
    cap = sum(x.size_bytes for x in nodes) // 7
    devices = tuple(Device(name=str(g), kind=DeviceKind.ACCELERATOR, cap_bytes=cap) for g in range(8))
    return PlacementProblem(nodes=nodes, edges=edges, devices=(*devices, Device(name="cpu", kind=DeviceKind.CPU,
                                                                                 cap_bytes=10**9)), ordered=False)


def test_ctrl_c_during_the_search_stops_cp_sat_and_raises(monkeypatch):
    solve_calls, stops = [], []
    original_solve, original_stop = cp_model.CpSolver.solve, cp_model.CpSolver.stop_search

    def solve_then_interrupt(self, *args, **kwargs):  # Ctrl-C 0.3 s into the first search
        if not solve_calls:
            threading.Timer(0.3, _thread.interrupt_main).start()
        solve_calls.append(1)
        return original_solve(self, *args, **kwargs)

    def stop(self):
        stops.append(1)
        return original_stop(self)

    monkeypatch.setattr(cp_model.CpSolver, "solve", solve_then_interrupt)
    monkeypatch.setattr(cp_model.CpSolver, "stop_search", stop)
    with pytest.raises(KeyboardInterrupt):
        solve(_hard_problem(), time_limit_s=600, method="cp-sat")
    assert stops == [1]  # the running search was told to stop, rather than left to its 600 s limit
    assert len(solve_calls) == 1  # and no later phase started


def test_cli_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("layerplan.planner.api.plan", interrupted)
    code = cli.main(["plan", "gpt2", "--max-memory", "cpu=4GiB"])
    err = capsys.readouterr().err
    assert code == 130
    assert [line for line in err.splitlines() if line.strip()] == ["interrupted"]
