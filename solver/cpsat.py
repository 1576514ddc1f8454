"""The CP-SAT placement model: the exact solver for any :class:`PlacementProblem`.

The model follows the rules of :mod:`solver.problem` (sections in the order of OR-Tools'
``examples/python/line_balancing_sat.py``: data, variables, constraints, objective, hint, solve,
extract):

* ``on[node,device]`` (bool): the node is placed on the device;
* ``start[node,device]`` (bool, accelerators): a block of the device starts at this non-follower
  node; at most one per accelerator makes its nodes one contiguous run;
* ``level[node]`` (int, ``ordered`` only): index, in accelerator order, of the block the node is in
  or follows; non-decreasing along the non-follower nodes, so blocks appear in device order;
* ``sent[edge,device]`` (bool): the edge's tensor is sent to this compute device, i.e. a consumer
  computes there and the producer does not (offloaded nodes compute on the execution device).

The objective is lexicographic and solved in two phases on one model: minimise ``offload_cost``;
then constrain it to at most the value found and minimise ``transfer_bytes``, hinted with the first
phase's placement. A phase is skipped when the placement in hand already scores 0 on it (nothing
can beat 0), e.g. when the chain hint offloads nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.sat.python import cp_model

from solver._feasibility import check_capacity, structural_infeasibility
from solver.dp import chain_hint
from solver.errors import InvalidSpecError, LayerplanError
from solver.problem import PlacementProblem, evaluate, violations
from solver.solution import Solution, Status

__all__ = ["solve"]

#: CP-SAT's random seed. Fixed, so one worker gives the same placement on every run; several
#: workers race, and may return another placement of the same (proven) objective.
_RANDOM_SEED = 20240527
#: Share of the remaining time the offload phase may use when a transfer phase follows.
_OFFLOAD_PHASE_SHARE = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class _Model:
    """The CP-SAT model of one problem and the handles needed to hint, solve and extract."""

    model: cp_model.CpModel
    on: tuple[tuple[cp_model.IntVar, ...], ...]  # on[node][device]
    start: dict[tuple[int, int], cp_model.IntVar]  # (node, accelerator) -> var
    level: dict[int, cp_model.IntVar]  # non-follower node -> var
    sent: dict[tuple[int, int], cp_model.IntVar]  # (edge index, compute device) -> var
    offload_cost: cp_model.LinearExprT
    transfer_bytes: cp_model.LinearExprT
    has_offload_cost: bool
    has_transfer: bool


def solve(
    problem: PlacementProblem,
    *,
    time_limit_s: float = 30.0,
    num_workers: int = 8,
    use_hint: bool = True,
) -> Solution:
    """Optimal placement of ``problem`` by CP-SAT, lexicographically: offload cost, then transfer.

    Args:
        problem: the placement problem (any edges, tied groups, pins, ``ordered`` either way).
        time_limit_s: wall-clock budget in seconds for the whole call (hint included); when two
            phases run, the offload phase may use at most half of what is left.
        num_workers: CP-SAT search workers (threads), >= 1.
        use_hint: start the search from :func:`solver.dp.chain_hint`'s placement.

    Returns:
        A :class:`Solution` with ``solver="cp-sat"``. ``status`` is OPTIMAL when every phase was
        proven optimal; FEASIBLE when a phase hit the time limit, with ``bound`` = CP-SAT's proven
        lower bound on ``transfer_bytes`` among placements whose offload cost is at most the one
        returned (when the offload phase itself is unproven, its own gap is not reported). When
        CP-SAT finds nothing in time (status UNKNOWN) but the hint or an earlier phase gave a
        placement, that placement comes back as FEASIBLE. With ``num_workers=1`` the result is
        the same on every run (fixed seed); with more, CP-SAT's workers race and another
        placement of the same proven objective may come back.

    Raises:
        InvalidSpecError: ``time_limit_s <= 0`` or ``num_workers < 1``.
        InfeasiblePlanError: no placement exists; from the pre-checks (a node or tied group larger
            than every cap it may use, the model larger than all caps together, too many bytes
            pinned to one device) or proven by CP-SAT (contiguity, order, pins).
        LayerplanError: CP-SAT neither found a placement nor proved there is none within
            ``time_limit_s``, or rejected the model.
    """
    if not (isinstance(time_limit_s, (int, float)) and time_limit_s > 0 and math.isfinite(time_limit_s)):
        raise InvalidSpecError(f"time_limit_s={time_limit_s!r}; expected a finite number of seconds > 0")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidSpecError(f"num_workers={num_workers!r}; expected an int >= 1")
    started = time.perf_counter()
    deadline = started + time_limit_s
    check_capacity(problem)
    if not problem.nodes:
        return _solution(problem, (), Status.OPTIMAL, bound=0, started=started)
    built = _build(problem)

    # Hint.
    placement = chain_hint(problem) if use_hint else None

    # Solve: one phase per objective that the placement in hand does not already bring to 0.
    phases = []
    if built.has_offload_cost:
        phases.append(("offload_cost", built.offload_cost))
    if built.has_transfer:
        phases.append(("transfer_bytes", built.transfer_bytes))
    if not phases:
        phases.append(("feasibility", 0))
    proven = True
    bound = 0
    for index, (name, objective) in enumerate(phases):
        is_last = index == len(phases) - 1
        if placement is not None and name != "feasibility" and _score(problem, placement, name) == 0:
            built.model.add(objective <= 0)  # Nothing beats 0; later phases keep it.
            continue
        if name != "feasibility":
            built.model.minimize(objective)
        built.model.clear_hints()
        if placement is not None:
            _add_hint(built, problem, placement)
        remaining = deadline - time.perf_counter()
        # A phase before the last keeps time for the next unless no placement is known yet.
        limit = remaining if is_last or placement is None else remaining * _OFFLOAD_PHASE_SHARE
        solver = _solver(time_limit_s=max(limit, 0.01), num_workers=num_workers)
        status = solver.solve(built.model)

        # Extract.
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            placement = _extract(built, solver)
            value = _score(problem, placement, name) if name != "feasibility" else 0
            proven = proven and status == cp_model.OPTIMAL
            if not is_last:
                built.model.add(objective <= value)
            elif name == "transfer_bytes":
                bound = min(value, _proven_bound(solver))
        elif status == cp_model.INFEASIBLE:
            if index > 0 or placement is not None:
                raise LayerplanError(
                    f"CP-SAT declared the {name} phase infeasible although a placement is known; "
                    "this is a bug in layerplan's solver: please report it with the problem"
                )
            raise structural_infeasibility(problem)
        elif status == cp_model.MODEL_INVALID:
            raise LayerplanError(
                f"CP-SAT rejected the placement model ({built.model.validate()}); this is a bug "
                "in layerplan's solver: please report it with the problem"
            )
        elif placement is not None:  # UNKNOWN, but an earlier phase or the hint gave a placement.
            proven = False
            if name == "transfer_bytes":
                bound = min(_score(problem, placement, name), _proven_bound(solver))
            break
        else:
            raise LayerplanError(
                f"CP-SAT neither found a placement nor proved that none exists within "
                f"time_limit_s={time_limit_s}; raise time_limit_s"
            )
    assert placement is not None
    if proven or not built.has_transfer:  # Without a transfer phase the transfer is always 0.
        bound = evaluate(problem, placement).transfer_bytes
    return _solution(
        problem, placement, Status.OPTIMAL if proven else Status.FEASIBLE, bound=bound, started=started
    )


def _build(problem: PlacementProblem) -> _Model:
    """The CP-SAT model of ``problem``: data, variables, constraints and both objectives."""
    # Data.
    nodes, devices = problem.nodes, problem.devices
    n, k = len(nodes), len(devices)
    accs = problem.accelerators
    offs = [d for d in range(k) if not devices[d].is_accelerator]
    exec_device = problem.execution_device
    chain = [i for i in range(n) if not problem.is_follower(i)]  # contiguity is over these
    model = cp_model.CpModel()

    # Variables.
    on = tuple(
        tuple(model.new_bool_var(f"on[{nodes[i].name},{devices[d].name}]") for d in range(k))
        for i in range(n)
    )
    start = {
        (i, d): model.new_bool_var(f"start[{nodes[i].name},{devices[d].name}]")
        for d in accs
        for i in chain
    }
    level = (
        {i: model.new_int_var(0, len(accs) - 1, f"level[{nodes[i].name}]") for i in chain}
        if problem.ordered and len(accs) > 1
        else {}
    )
    # Where a node computes: an accelerator runs what it holds; the execution device also runs
    # every offloaded node. With one compute device or none, no tensor is ever sent.
    compute_devices = accs if len(accs) > 1 else ()
    runs_on = {
        (i, c): on[i][c] + (sum(on[i][o] for o in offs if o != c) if c == exec_device else 0)
        for i in range(n)
        for c in problem.computing_devices
    }
    sent = {
        (e, c): model.new_bool_var(f"sent[{nodes[edge.producer].name}:{e},{devices[c].name}]")
        for e, edge in enumerate(problem.edges)
        if edge.size_bytes > 0
        for c in compute_devices
    }
    # A tensor is sent to a compute device when a consumer runs there and its producer does not.
    for (e, c), var in sent.items():
        edge = problem.edges[e]
        for consumer in edge.consumers:
            model.add(var >= runs_on[consumer, c] - runs_on[edge.producer, c])

    # Constraints.
    # Each node is placed on exactly one device.
    for i in range(n):
        model.add_exactly_one(on[i])
    # What a device holds never exceeds its cap (solver.accounting): its weights, and with runtime
    # memory, on a device that computes, also KV, working set, received tensors, streaming, reserve.
    runtime = _runtime_terms(problem, model, on, runs_on, sent) if problem.has_runtime_memory else {}
    for d, device in enumerate(devices):
        held = [nodes[i].size_bytes * on[i][d] for i in range(n) if nodes[i].size_bytes > 0]
        held += runtime.get(d, [])
        if held:
            model.add(sum(held) <= device.cap_bytes)
    # Tied-group followers sit on their anchor's device.
    for group in problem.tied_groups:
        for follower in group[1:]:
            for d in range(k):
                model.add(on[follower][d] == on[group[0]][d])
    # Pinned nodes sit on their device.
    for i, d in problem.pins:
        model.add(on[i][d] == 1)
    # Each accelerator holds one contiguous run of non-follower nodes: a block starts wherever a
    # node is on it and the previous non-follower node is not, and at most once.
    for d in accs:
        for t, i in enumerate(chain):
            previous = on[chain[t - 1]][d] if t > 0 else 0
            model.add(start[i, d] >= on[i][d] - previous)
        model.add_at_most_one(start[i, d] for i in chain)
    # With ordered=True the blocks follow the device order: the level never decreases and equals
    # the accelerator's rank on each of its nodes.
    for t, i in enumerate(chain):
        if i not in level:
            continue
        if t > 0:
            model.add(level[i] >= level[chain[t - 1]])
        for rank, d in enumerate(accs):
            model.add(level[i] == rank).only_enforce_if(on[i][d])

    # Objective (minimised by the caller, one phase each).
    offload_terms = [
        nodes[i].size_bytes * devices[o].offload_cost * on[i][o]
        for i in range(n)
        for o in offs
        if nodes[i].size_bytes * devices[o].offload_cost > 0
    ]
    transfer_terms = [problem.edges[e].size_bytes * var for (e, _), var in sent.items()]
    return _Model(
        model=model,
        on=on,
        start=start,
        level=level,
        sent=sent,
        offload_cost=sum(offload_terms),
        transfer_bytes=sum(transfer_terms),
        has_offload_cost=bool(offload_terms),
        has_transfer=bool(transfer_terms),
    )


def _runtime_terms(
    problem: PlacementProblem,
    model: cp_model.CpModel,
    on: tuple[tuple[cp_model.IntVar, ...], ...],
    runs_on: dict[tuple[int, int], cp_model.LinearExprT],
    sent: dict[tuple[int, int], cp_model.IntVar],
) -> dict[int, list]:
    """Per computing device, the runtime bytes of :mod:`solver.accounting` as linear terms.

    ``runs_on[i, c]`` (0/1 expression) says node ``i`` computes on ``c``; ``used[c]`` that ``c``
    computes anything (it then pays its reserve); ``work[c]`` >= each working set run there;
    ``stream[c]`` (execution device only) >= each offloaded node's bytes. All of these only ever
    raise a device's load, so minimal values are the accounting's exact values.
    """
    nodes, devices = problem.nodes, problem.devices
    n = len(nodes)
    offs = [d for d, dev in enumerate(devices) if not dev.is_accelerator]
    exec_device = problem.execution_device
    max_work = max((x.work_bytes for x in nodes), default=0)
    terms: dict[int, list] = {}
    for c in problem.computing_devices:
        runs = [runs_on[i, c] for i in range(n)]
        held: list = [nodes[i].kv_bytes * runs[i] for i in range(n) if nodes[i].kv_bytes]
        if max_work:
            work = model.new_int_var(0, max_work, f"work[{devices[c].name}]")
            for i in range(n):
                if nodes[i].work_bytes:
                    model.add(work >= nodes[i].work_bytes * runs[i])
            held.append(work)
        held += [problem.edges[e].size_bytes * var for (e, d), var in sent.items() if d == c]
        if c == exec_device:
            streamed = [i for i in range(n) if nodes[i].size_bytes] if offs else []
            if streamed:
                biggest = max(nodes[i].size_bytes for i in streamed)
                stream = model.new_int_var(0, biggest, f"stream[{devices[c].name}]")
                for i in streamed:
                    for o in offs:
                        if o != c:
                            model.add(stream >= nodes[i].size_bytes * on[i][o])
                held.append(stream)
        if devices[c].reserve_bytes:
            used = model.new_bool_var(f"used[{devices[c].name}]")
            for i in range(n):
                model.add(used >= runs[i])
            held.append(devices[c].reserve_bytes * used)
        terms[c] = held
    return terms


def _add_hint(built: _Model, problem: PlacementProblem, assignment: Sequence[int]) -> None:
    """Hint every variable with its value under ``assignment`` (a complete, feasible start)."""
    for i, row in enumerate(built.on):
        for d, var in enumerate(row):
            built.model.add_hint(var, int(assignment[i] == d))
    chain = [i for i in range(len(problem.nodes)) if not problem.is_follower(i)]
    accs = problem.accelerators
    previous = None
    current_rank = 0
    for i in chain:
        d = assignment[i]
        for a in accs:
            if (i, a) in built.start:
                built.model.add_hint(built.start[i, a], int(d == a and previous != a))
        if d in accs:
            current_rank = accs.index(d)
        if i in built.level:
            built.model.add_hint(built.level[i], current_rank)
        previous = d
    compute = [problem.compute_device(d) for d in assignment]
    for (e, c), var in built.sent.items():
        edge = problem.edges[e]
        receives = any(compute[x] == c for x in edge.consumers)
        built.model.add_hint(var, int(receives and compute[edge.producer] != c))


def _solver(*, time_limit_s: float, num_workers: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = _RANDOM_SEED
    # The LP of the caps and block constraints proves most structural infeasibility at the root;
    # CP-SAT's portfolio has a worker with the full linearisation ("max_lp") from 8 workers on.
    if num_workers == 1:
        solver.parameters.linearization_level = 2
    elif num_workers < 8:
        solver.parameters.extra_subsolvers.append("max_lp")
    return solver


def _proven_bound(solver: cp_model.CpSolver) -> int:
    """CP-SAT's proven lower bound on the objective it minimised, as whole bytes (>= 0)."""
    return max(0, math.ceil(solver.best_objective_bound - 1e-6))


def _extract(built: _Model, solver: cp_model.CpSolver) -> tuple[int, ...]:
    """The device index of each node in the solver's best solution."""
    return tuple(
        next(d for d, var in enumerate(row) if solver.boolean_value(var)) for row in built.on
    )


def _score(problem: PlacementProblem, assignment: Sequence[int], name: str) -> int:
    """The value of one objective (``"offload_cost"`` or ``"transfer_bytes"``) of a placement."""
    return getattr(evaluate(problem, assignment), name)


def _solution(
    problem: PlacementProblem,
    assignment: tuple[int, ...],
    status: Status,
    *,
    bound: int,
    started: float,
) -> Solution:
    assert not violations(problem, assignment), violations(problem, assignment)
    return Solution(
        assignment=assignment,
        status=status,
        objective=evaluate(problem, assignment),
        bound=bound,
        wall_time_s=time.perf_counter() - started,
        solver="cp-sat",
    )
