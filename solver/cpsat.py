"""The CP-SAT placement model: the exact solver for any :class:`PlacementProblem`.

The model follows the rules of :mod:`layerplan.solver.problem` (sections in the order of OR-Tools'
``examples/python/line_balancing_sat.py``: data, variables, constraints, objective, hint, solve,
extract):

* ``on[node,device]`` (bool): the node is placed on the device;
* ``start[node,device]`` (bool, accelerators): a block of the device starts at this non-follower
  node; at most one per accelerator makes its nodes one contiguous run;
* ``open[node]`` (bool, inline-offloadable nodes only: :attr:`~layerplan.solver.problem.Node.offload_inline`):
  the execution device's block is open after this node (the node is on it, or offloaded to cpu/disk
  with the block open before it), so the next node on it continues that block rather than starting
  one; a problem without such nodes has no ``open`` variable and the model it had before;
* ``level[node]`` (int, ``ordered`` only): index, in accelerator order, of the block the node is in
  or follows; non-decreasing along the non-follower nodes, so blocks appear in device order;
* ``sent[edge,device]`` (bool): the edge's tensor is sent to this compute device, i.e. a consumer
  computes there and the producer does not (offloaded nodes compute on the execution device);
* for the timed goals, ``moved[edge,device]`` (int, ns) when links differ by source, and
  ``bottleneck_ns``; for ``balanced``, ``max_utilisation``; for :func:`least_extra_memory`,
  ``extra[device]`` (slack on each cap).

The objective is the goal's lexicographic list of measures (:mod:`layerplan.solver.goals`), solved in phases on
one model: minimise the first; constrain it to at most the value found and minimise the next,
hinted with the previous phase's placement. A phase is skipped when the placement in hand already
scores 0 on it (nothing can beat 0), e.g. when the chain hint offloads nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from layerplan.solver import block_dp
from layerplan.solver._feasibility import check_capacity, structural_infeasibility
from layerplan.solver._relaxed import links_unused, relaxed_start
from layerplan.solver._symmetry import canonical_assignment, group_runs, interchangeable_groups
from layerplan.solver.cost import CostModel, edge_time_ns, node_time_ns, timing
from layerplan.solver.errors import InfeasiblePlanError, InvalidSpecError, LayerplanError
from layerplan.solver.goals import UTILISATION_SCALE, Goal, Measure, balance_devices, score, scores
from layerplan.solver.hint import chain_hint
from layerplan.solver.problem import PlacementProblem, evaluate, format_bytes, violations
from layerplan.solver.solution import Solution, Status
from ortools.sat.python import cp_model

__all__ = ["least_extra_memory", "solution_of", "solve"]

#: CP-SAT's random seed. Fixed, so one worker gives the same placement on every run; several
#: workers race, and may return another placement of the same (proven) objective.
_RANDOM_SEED = 20240527
#: Share of the remaining time the offload phase may use when a transfer phase follows.
_OFFLOAD_PHASE_SHARE = 0.5
#: Share of the time limit the block DP may use before CP-SAT takes over.
_DP_SHARE = 0.5
#: Nodes x devices past which a timed-out block DP's placement is returned rather than handed to
#: CP-SAT (whose model of such a problem takes minutes to build: :func:`_too_big_for_cpsat`).
_CPSAT_MAX_CELLS = 100_000
#: Most seconds spent looking for the least extra memory once a problem is known infeasible.
_EXPLAIN_TIME_S = 10.0
#: CP-SAT's deterministic interleaved search (see :func:`_solver`); about 2-6x slower than the
#: default racing portfolio on 70B-class problems, the price of "same input, same plan".
_INTERLEAVE = True


@dataclass(frozen=True, kw_only=True, slots=True)
class _Model:
    """The CP-SAT model of one problem and the handles needed to hint, solve and extract."""

    model: cp_model.CpModel
    on: tuple[tuple[cp_model.IntVar, ...], ...]  # on[node][device]
    start: dict[tuple[int, int], cp_model.IntVar]  # (node, accelerator) -> var
    level: dict[int, cp_model.IntVar]  # non-follower node -> var
    open_at: dict[int, cp_model.IntVar]  # inline-offloadable node -> the execution device's block is open after it
    sent: dict[tuple[int, int], cp_model.IntVar]  # (edge index, compute device) -> var
    measures: dict[Measure, cp_model.LinearExprT | None]  # measure -> expression (None: constant)
    extra: dict[int, cp_model.IntVar] | None = None  # device -> slack on its cap (least_extra_memory)


def solve(
    problem: PlacementProblem,
    *,
    goal: Goal | str = Goal.TRANSFERS,
    cost: CostModel | None = None,
    time_limit_s: float = 30.0,
    num_workers: int = 8,
    use_hint: bool = True,
    explain: bool = True,
    method: str = "auto",
) -> Solution:
    """Optimal placement of ``problem`` for ``goal`` (:mod:`layerplan.solver.goals`): by the exact
    block DP (:mod:`layerplan.solver.block_dp`) where it applies, else by CP-SAT. Where only
    links that depend on the sender stand in the DP's way (GPUs on two hosts), an untimed goal is
    solved by the DP without the links, and a timed one starts CP-SAT from the DP's placements on
    relaxed links, with the fastest-links optimum as a proven bound on the headline
    (:mod:`layerplan.solver._relaxed`; ``solver`` is then ``"dp+cp-sat"``).

    Args:
        problem: the placement problem (any edges, tied groups, pins, ``ordered`` and
            ``low_zero`` either way).
        goal: what to minimise; ``latency`` and ``throughput`` need ``cost``.
        cost: speeds, links and per-node work (:class:`layerplan.solver.cost.CostModel`); when given, the
            solution carries its :class:`~layerplan.solver.cost.Timing` whatever the goal.
        time_limit_s: wall-clock budget in seconds for the whole call (hint included); a phase
            before the last may use at most half of what is left.
        num_workers: CP-SAT search workers (threads), >= 1. The search is CP-SAT's deterministic
            interleaved search, so the same problem gives the same placement on every run and for
            any number of workers, as long as no phase hits ``time_limit_s``.
        use_hint: start the search from :func:`layerplan.solver.hint.chain_hint`'s placement.
        explain: on infeasibility, also solve for the least extra memory per device that would
            make the problem fit (:func:`least_extra_memory`) and say it in the error.
        method: ``"auto"`` (the block DP when :func:`layerplan.solver.block_dp.applies`, CP-SAT
            when it does not or gives up: too many trade-offs, half the time limit spent, or no
            valid placement, which CP-SAT then proves and explains), ``"dp"`` (the block DP or an
            error) or ``"cp-sat"``.

    Returns:
        A :class:`Solution` with ``solver="dp"`` or ``"cp-sat"``. A DP solution is OPTIMAL unless
        the DP ran out of its share of the time on a problem too large for CP-SAT's model
        (nodes x devices > 100k) or with ``method="dp"``: then its best placement comes back
        FEASIBLE, with ``bound`` the headline's proven optimum if that phase finished, else 0. ``status`` is OPTIMAL when every phase was
        proven optimal; FEASIBLE when a phase hit the time limit, with ``bound`` = CP-SAT's proven
        lower bound on the goal's headline measure (given the earlier measures). When CP-SAT finds
        nothing in time but the hint or an earlier phase gave a placement, that placement comes
        back as FEASIBLE.

    Raises:
        InvalidSpecError: ``time_limit_s <= 0``, ``num_workers < 1``, an unknown goal or method,
            a goal that needs a cost model without one (or one that does not match the problem),
            or ``method="dp"`` for a problem the block DP does not apply to.
        InfeasiblePlanError: no placement exists; from the pre-checks (a node or tied group larger
            than every cap it may use, the model larger than all caps together, too many bytes
            pinned to one device) or proven by CP-SAT (contiguity, order, pins). ``extra_bytes``
            holds the least extra bytes per device that would make it fit, when found.
        LayerplanError: CP-SAT neither found a placement nor proved there is none within
            ``time_limit_s``, or rejected the model.
    """
    goal = Goal.parse(goal)
    if not (isinstance(time_limit_s, (int, float)) and time_limit_s > 0 and math.isfinite(time_limit_s)):
        raise InvalidSpecError(f"time_limit_s={time_limit_s!r}; expected a finite number of seconds > 0")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidSpecError(f"num_workers={num_workers!r}; expected an int >= 1")
    if goal.needs_cost and cost is None:
        raise InvalidSpecError(
            f"objective {goal.value!r} needs a cost model (device speeds, links, node FLOPs); "
            "pass cost=... or use objective 'transfers' or 'balanced'"
        )
    if method not in ("auto", "dp", "cp-sat"):
        raise InvalidSpecError(f"method={method!r}; expected 'auto', 'dp' or 'cp-sat'")
    if cost is not None:
        cost.check(problem)
    started = time.perf_counter()
    deadline = started + time_limit_s
    start: tuple[int, ...] | None = None
    headline_bound: int | None = None
    if method != "cp-sat":
        found = _solve_by_dp(problem, goal, cost, started=started, deadline=deadline, required=method == "dp")
        if found is not None:
            return found
        start, headline_bound = relaxed_start(problem, goal, cost, started=time.perf_counter(),
                                              deadline=started + (deadline - started) * _DP_SHARE)
    try:
        return _solve(problem, goal, cost, deadline=deadline, started=started, num_workers=num_workers,
                      use_hint=use_hint, start=start, headline_bound=headline_bound)
    except InfeasiblePlanError as exc:
        if not explain or exc.extra_bytes:
            raise
        budget = max(min(_EXPLAIN_TIME_S, deadline - time.perf_counter()), 1.0)
        extra = least_extra_memory(problem, time_limit_s=budget, num_workers=num_workers)
        if not extra:
            raise
        where = ", ".join(f"{format_bytes(b)} on {problem.devices[d].name!r}" for d, b in sorted(extra.items()))
        raise InfeasiblePlanError(
            f"{exc}; the least extra memory that makes it fit: {where}",
            missing_bytes=exc.missing_bytes,
            node=exc.node,
            extra_bytes={problem.devices[d].name: b for d, b in sorted(extra.items())},
        ) from None


def _solve_by_dp(
    problem: PlacementProblem, goal: Goal, cost: CostModel | None, *, started: float, deadline: float,
    required: bool,
) -> Solution | None:
    """The block DP's optimum, or None when it does not apply or gives up (see :func:`solve`)."""
    if links_unused(problem, goal, cost):
        cost_for_dp = None  # the goal times nothing: the links that differ by sender do not matter
    else:
        cost_for_dp = cost
    reason = block_dp.applies(problem, cost_for_dp)
    if reason is not None:
        if required:
            raise InvalidSpecError(f"method='dp' does not apply to this problem ({reason}); use method='auto'")
        return None
    try:
        check_capacity(problem)
    except InfeasiblePlanError:
        return None  # :func:`_solve` raises it again, with the least extra memory when asked
    try:
        found = block_dp.solve_blocks(problem, goal, cost_for_dp, deadline=started + (deadline - started) * _DP_SHARE)
    except block_dp.OutOfTime as exc:
        if required and exc.placement is None:
            raise
        if exc.placement is not None and (required or _too_big_for_cpsat(problem)):
            return _unproven(problem, exc, goal=goal, cost=cost, started=started)
        return None
    except block_dp.OutOfLabels:
        if required:
            raise
        return None
    if found is None:
        if required:
            raise structural_infeasibility(problem)
        return None
    placement = canonical_assignment(problem, found, cost=cost)
    headline = score(problem, placement, goal.headline, cost)
    return _solution(problem, placement, Status.OPTIMAL, goal=goal, cost=cost, bound=headline, started=started,
                     solver="dp")


def _too_big_for_cpsat(problem: PlacementProblem) -> bool:
    """Whether CP-SAT's model would take longer to build than a plan may (measured: 16k nodes
    over 65 devices, 3.1M Booleans, over two minutes before its search starts)."""
    return len(problem.nodes) * len(problem.devices) > _CPSAT_MAX_CELLS


def _unproven(
    problem: PlacementProblem, exc: block_dp.OutOfTime, *, goal: Goal, cost: CostModel | None, started: float
) -> Solution:
    """The timed-out block DP's best placement as a FEASIBLE solution: its bound is the headline's
    proven optimum when that phase finished (gap 0 on it, a later measure unproven), else 0."""
    placement = canonical_assignment(problem, exc.placement, cost=cost)
    return _solution(problem, placement, Status.FEASIBLE, goal=goal, cost=cost,
                     bound=exc.bound if exc.bound is not None else 0, started=started, solver="dp")


def _solve(
    problem: PlacementProblem,
    goal: Goal,
    cost: CostModel | None,
    *,
    deadline: float,
    started: float,
    num_workers: int,
    use_hint: bool,
    start: tuple[int, ...] | None = None,
    headline_bound: int | None = None,
) -> Solution:
    """:func:`solve` after argument checks: pre-checks, hint, one CP-SAT phase per measure.

    ``start`` (a valid placement) replaces the hint; ``headline_bound`` is a proven lower bound on
    the goal's headline measure (:func:`layerplan.solver._relaxed.relaxed_start`): a start that
    meets it settles the headline phase without a search."""
    check_capacity(problem)
    if not problem.nodes:
        return _solution(problem, (), Status.OPTIMAL, goal=goal, cost=cost, bound=0, started=started)
    built = _build(problem, goal=goal, cost=cost)

    # Hint, relabelled into the canonical order the model's symmetry constraints ask for.
    placement = start if start is not None else chain_hint(problem) if use_hint else None
    if placement is not None:
        placement = canonical_assignment(problem, placement, cost=cost)

    # Solve: one phase per non-constant measure that the placement in hand does not already bring
    # to 0 (nothing beats 0).
    phases = [(name, built.measures[name]) for name in goal.measures if built.measures[name] is not None]
    if not phases:
        phases.append(("feasibility", 0))
    proven = True
    bound: int | None = None
    for index, (name, objective) in enumerate(phases):
        is_last = index == len(phases) - 1
        if placement is not None and name != "feasibility" and score(problem, placement, name, cost) == 0:
            built.model.add(objective <= 0)
            if name == goal.headline:
                bound = 0
            continue
        if name == goal.headline and headline_bound is not None and placement is not None \
                and score(problem, placement, name, cost) <= headline_bound:
            built.model.add(objective <= headline_bound)  # the start meets a proven bound: optimal
            bound = headline_bound
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
        status = _run(solver, built.model)
        if status == cp_model.INFEASIBLE and placement is not None:
            # A valid placement is in hand, so this phase is feasible: CP-SAT 9.15's presolve can
            # wrongly prove otherwise (google/or-tools#5274, seen on t5-11b); solve it again without.
            solver = _solver(time_limit_s=max(deadline - time.perf_counter(), 0.01), num_workers=num_workers)
            solver.parameters.cp_model_presolve = False
            status = _run(solver, built.model)

        # Extract.
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            placement = canonical_assignment(problem, _extract(built, solver), cost=cost)
            value = score(problem, placement, name, cost) if name != "feasibility" else 0
            proven = proven and status == cp_model.OPTIMAL
            if not is_last:
                built.model.add(objective <= value)
            if name == goal.headline:
                bound = value if status == cp_model.OPTIMAL else min(value, _proven_bound(solver))
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
            if name == goal.headline:
                bound = min(score(problem, placement, name, cost), _proven_bound(solver))
            break
        else:
            raise LayerplanError(
                "CP-SAT neither found a placement nor proved that none exists within the time "
                "limit; raise time_limit_s"
            )
    assert placement is not None
    headline_value = score(problem, placement, goal.headline, cost)
    if proven or built.measures[goal.headline] is None:  # a constant headline is its own bound
        bound = headline_value
    if headline_bound is not None:  # two proven lower bounds: the larger holds
        bound = max(bound or 0, min(headline_bound, headline_value))
    return _solution(
        problem, placement, Status.OPTIMAL if proven else Status.FEASIBLE, goal=goal, cost=cost,
        bound=0 if bound is None else bound, started=started, solver="cp-sat" if start is None else "dp+cp-sat",
    )


def least_extra_memory(
    problem: PlacementProblem, *, time_limit_s: float = 10.0, num_workers: int = 8
) -> dict[int, int] | None:
    """The least total extra bytes, per device, whose addition to the caps makes ``problem`` fit.

    Every cap constraint gets a slack ``extra[d] >= 0``; CP-SAT minimises ``sum(extra)``, then,
    among those, the extra on accelerators (host RAM and disk are cheaper to add), then the largest
    single ``extra[d]`` (spread rather than pile up).

    Returns:
        ``{device index: extra bytes}`` for the devices that need more (empty when the problem
        already fits), or None when memory alone cannot make it fit (pins against the device
        order, for instance) or nothing was found within ``time_limit_s``.
    """
    if not problem.nodes:
        return {}
    built = _build(problem, goal=Goal.TRANSFERS, cost=None, slack=True)
    assert built.extra is not None
    extra = built.extra
    largest = built.model.new_int_var(0, problem.total_bytes + _runtime_ceiling(problem), "largest_extra")
    for v in extra.values():
        built.model.add(largest >= v)
    phases = [
        sum(extra.values()),
        sum(v for d, v in extra.items() if problem.devices[d].is_accelerator),
        largest,
    ]
    deadline = time.perf_counter() + time_limit_s
    best = None
    for index, objective in enumerate(phases):
        built.model.minimize(objective)
        remaining = deadline - time.perf_counter()
        limit = remaining if index == len(phases) - 1 else remaining * _OFFLOAD_PHASE_SHARE
        solver = _solver(time_limit_s=max(limit, 0.01), num_workers=num_workers)
        if _run(solver, built.model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            break
        best = {d: solver.value(v) for d, v in extra.items()}
        built.model.add(objective <= solver.value(objective))
    if best is None:
        return None
    return {d: b for d, b in best.items() if b > 0}


def _build(
    problem: PlacementProblem, *, goal: Goal, cost: CostModel | None, slack: bool = False
) -> _Model:
    """The CP-SAT model of ``problem``: data, variables, constraints and the goal's measures.

    With ``slack``, every cap gets an ``extra[d] >= 0`` (see :func:`least_extra_memory`).
    """
    model = cp_model.CpModel()
    v = _variables(problem, model, slack=slack)
    loads = _add_caps(problem, model, v)
    _add_placement_rules(problem, model, v)
    _add_symmetry_breaking(problem, model, v, cost)
    measures = _measures(problem, model, v, loads, goal=goal, cost=cost)
    return _Model(model=model, on=v.on, start=v.start, level=v.level, open_at=v.open_at, sent=v.sent,
                  measures=measures, extra=v.extra)


@dataclass(frozen=True, slots=True)
class _Vars:
    """The decision variables of :func:`_build` and the index sets they range over."""

    chain: list[int]  # non-follower nodes, in order: contiguity is over these
    offs: list[int]  # cpu / disk devices
    on: tuple[tuple[cp_model.IntVar, ...], ...]  # on[node][device]
    start: dict[tuple[int, int], cp_model.IntVar]  # (node, accelerator): a block starts here
    level: dict[int, cp_model.IntVar]  # non-follower node -> rank of its accelerator (ordered)
    open_at: dict[int, cp_model.IntVar]  # inline-offloadable non-follower node -> the execution device's block is open after it
    runs_on: dict[tuple[int, int], cp_model.LinearExprT]  # (node, computing device) -> 0/1
    sent: dict[tuple[int, int], cp_model.IntVar]  # (edge, compute device): the tensor is received there
    extra: dict[int, cp_model.IntVar] | None  # device -> slack on its cap


def _variables(problem: PlacementProblem, model: cp_model.CpModel, *, slack: bool) -> _Vars:
    """Variables, and the definition of ``sent`` (a tensor is sent to a compute device when a
    consumer runs there and its producer does not)."""
    nodes, devices = problem.nodes, problem.devices
    n, k = len(nodes), len(devices)
    accs = problem.accelerators
    offs = [d for d in range(k) if not devices[d].is_accelerator]
    chain = [i for i in range(n) if not problem.is_follower(i)]
    on = tuple(
        tuple(model.new_bool_var(f"on[{nodes[i].name},{devices[d].name}]") for d in range(k))
        for i in range(n)
    )
    start = {
        (i, d): model.new_bool_var(f"start[{nodes[i].name},{devices[d].name}]") for d in accs for i in chain
    }
    level = (
        {i: model.new_int_var(0, len(accs) - 1, f"level[{nodes[i].name}]") for i in chain}
        if problem.ordered and len(accs) > 1
        else {}
    )
    open_at = {
        i: model.new_bool_var(f"open[{nodes[i].name}]") for i in _inline_nodes(problem) if not problem.is_follower(i)
    }
    # Where a node computes: an accelerator runs what it holds; the execution device also runs
    # every offloaded node. With one compute device or none, no tensor is ever sent.
    exec_device = problem.execution_device
    runs_on = {
        (i, c): on[i][c] + (sum(on[i][o] for o in offs if o != c) if c == exec_device else 0)
        for i in range(n)
        for c in problem.computing_devices
    }
    sent = {
        (e, c): model.new_bool_var(f"sent[{nodes[edge.producer].name}:{e},{devices[c].name}]")
        for e, edge in enumerate(problem.edges)
        if edge.size_bytes > 0
        for c in (accs if len(accs) > 1 else ())
    }
    extra = (
        {d: model.new_int_var(0, problem.total_bytes + _runtime_ceiling(problem), f"extra[{devices[d].name}]")
         for d in range(k)}
        if slack else None
    )
    for (e, c), var in sent.items():
        edge = problem.edges[e]
        for consumer in edge.consumers:
            model.add(var >= runs_on[consumer, c] - runs_on[edge.producer, c])
    return _Vars(chain=chain, offs=offs, on=on, start=start, level=level, open_at=open_at, runs_on=runs_on,
                 sent=sent, extra=extra)


def _inline_nodes(problem: PlacementProblem) -> list[int]:
    """The nodes that may sit offloaded inside the execution device's block (:attr:`Node.offload_inline`),
    none when there is no accelerator or nowhere to offload to."""
    if not problem.has_inline_offload:
        return []
    return [i for i, node in enumerate(problem.nodes) if node.offload_inline]


def _add_caps(
    problem: PlacementProblem, model: cp_model.CpModel, v: _Vars
) -> dict[int, list[cp_model.LinearExprT]]:
    """Each node on one device, and every device within its cap; returns each device's loads (one
    per peak it holds: its load is the largest)."""
    nodes, on = problem.nodes, v.on
    # Each node is placed on exactly one device.
    for i in range(len(nodes)):
        model.add_exactly_one(on[i])
    # What a device holds never exceeds its cap (solver.accounting): its weights, and with runtime
    # memory, on a device that computes, also KV, working set, received tensors, streaming, reserve;
    # a working set that peaks before any KV cache exists is a second peak, without the cache.
    runtime = _runtime_terms(problem, model, on, v.runs_on, v.sent) if problem.has_runtime_memory else {}
    loads: dict[int, list[cp_model.LinearExprT]] = {}
    for d, device in enumerate(problem.devices):
        weights = [nodes[i].size_bytes * on[i][d] for i in range(len(nodes)) if nodes[i].size_bytes > 0]
        for extra_terms in runtime.get(d, [[]]):
            held = weights + extra_terms
            if held:
                loads.setdefault(d, []).append(sum(held))
                model.add(loads[d][-1] <= device.cap_bytes + (v.extra[d] if v.extra is not None else 0))
    return loads


def _add_placement_rules(problem: PlacementProblem, model: cp_model.CpModel, v: _Vars) -> None:
    """Ties, pins, one block per accelerator, device order, the execution-device rule, low_zero."""
    nodes, on, chain, accs = problem.nodes, v.on, v.chain, problem.accelerators
    n, k = len(nodes), len(problem.devices)
    exec_device = problem.execution_device
    # Tied-group followers sit on their anchor's device.
    for group in problem.tied_groups:
        for follower in group[1:]:
            for d in range(k):
                model.add(on[follower][d] == on[group[0]][d])
    # Pinned nodes sit on their device.
    for i, d in problem.pins:
        model.add(on[i][d] == 1)
    # Each accelerator holds one contiguous run of non-follower nodes: a block starts exactly
    # where a node is on it and the previous non-follower node is not, and at most once. On the
    # execution device, an inline-offloadable node stored on cpu/disk keeps its block open
    # (``open[node]``, problem.py: Node.offload_inline).
    for d in accs:
        for t, i in enumerate(chain):
            if t == 0:
                previous = 0
            elif d == exec_device and chain[t - 1] in v.open_at:
                previous = v.open_at[chain[t - 1]]
            else:
                previous = on[chain[t - 1]][d]
            model.add(v.start[i, d] >= on[i][d] - previous)
            model.add(v.start[i, d] <= on[i][d])
        model.add_at_most_one(v.start[i, d] for i in chain)
    # The execution device's block is open after an inline-offloadable node when the node is on
    # it, or offloaded with the block open before it.
    for t, i in enumerate(chain):
        if i in v.open_at:
            before = v.open_at.get(chain[t - 1], on[chain[t - 1]][exec_device]) if t > 0 else 0
            model.add(v.open_at[i] <= on[i][exec_device] + before)
            model.add(v.open_at[i] <= on[i][exec_device] + sum(on[i][o] for o in v.offs))
    # An inline-offloadable node computes where its host (the node before it) computes.
    for i in range(n):
        host = problem.host_of(i)
        if host is not None:
            for c in problem.computing_devices:
                model.add(v.runs_on[i, c] == v.runs_on[host, c])
    # With ordered=True the blocks follow the device order: the level never decreases and equals
    # the accelerator's rank on each of its nodes.
    for t, i in enumerate(chain):
        if i not in v.level:
            continue
        if t > 0:
            model.add(v.level[i] >= v.level[chain[t - 1]])
        for rank, d in enumerate(accs):
            model.add(v.level[i] == rank).only_enforce_if(on[i][d])
    # When anything is offloaded, the execution device stores a node (accelerate's main_device is
    # the first accelerator in the device_map).
    streamed = [(i, o) for i in range(n) for o in v.offs if o != exec_device]
    if streamed and exec_device in accs:
        holds = model.new_bool_var(f"holds[{problem.devices[exec_device].name}]")
        model.add(holds <= sum(on[i][exec_device] for i in range(n)))
        for i, o in streamed:
            model.add(holds >= on[i][o])
    # With low_zero the first accelerator stores no more weight bytes than any other one.
    if problem.low_zero and len(accs) > 1:
        def stored(d: int) -> cp_model.LinearExprT:
            return sum(nodes[i].size_bytes * on[i][d] for i in range(n))

        for d in accs[1:]:
            model.add(stored(accs[0]) <= stored(d))


def _add_symmetry_breaking(problem: PlacementProblem, model: cp_model.CpModel, v: _Vars, cost: CostModel | None) -> None:
    """Interchangeable accelerators (same cap, reserve, speed and links, no pins) hold their blocks
    in canonical order (:mod:`layerplan.solver._symmetry`): this only removes relabellings of
    placements, never an objective value. ``used[d]`` = 1 when a block starts on ``d``."""
    chain, exec_device = v.chain, problem.execution_device
    for group in interchangeable_groups(problem, cost):
        used = {d: sum(v.start[i, d] for i in chain) for d in group}
        # The execution device trades places only while nothing is offloaded; then it is used
        # whenever a later member is (an offloading placement uses it anyway).
        conditional = bool(v.offs) and exec_device in group
        members = [d for d in group if not (conditional and d == exec_device)]
        if problem.ordered:
            # Blocks already follow the device order: within each run of consecutive members the
            # used ones come first.
            for run in group_runs(problem, group):
                for a, b in zip(run, run[1:]):
                    model.add(used[a] >= used[b])
            continue
        position = {
            d: sum(t * v.start[i, d] for t, i in enumerate(chain)) + len(chain) * (1 - used[d])
            for d in members
        }
        for a, b in zip(members, members[1:]):
            model.add(position[a] <= position[b])
        if conditional and members:
            model.add(used[exec_device] >= used[members[0]])


def _measures(
    problem: PlacementProblem,
    model: cp_model.CpModel,
    v: _Vars,
    loads: dict[int, list[cp_model.LinearExprT]],
    *,
    goal: Goal,
    cost: CostModel | None,
) -> dict[Measure, cp_model.LinearExprT | None]:
    """Objective measures (minimised by the caller, one phase each; None when constant)."""
    nodes, devices = problem.nodes, problem.devices
    offload_terms = [
        nodes[i].size_bytes * devices[o].offload_cost * v.on[i][o]
        for i in range(len(nodes))
        for o in v.offs
        if nodes[i].size_bytes * devices[o].offload_cost > 0
    ]
    transfer_terms = [problem.edges[e].size_bytes * var for (e, _), var in v.sent.items()]
    measures: dict[Measure, cp_model.LinearExprT | None] = {
        Measure.OFFLOAD_COST: sum(offload_terms) if offload_terms else None,
        Measure.TRANSFER_BYTES: sum(transfer_terms) if transfer_terms else None,
        Measure.MAX_UTILISATION: (
            _utilisation(problem, model, loads) if Measure.MAX_UTILISATION in goal.measures else None
        ),
        Measure.TIME_NS: None,
        Measure.BOTTLENECK_NS: None,
    }
    if cost is not None and goal.needs_cost:
        measures.update(_time_measures(problem, cost, model, v.on, v.runs_on, v.sent, goal))
    return measures


def _runtime_ceiling(problem: PlacementProblem) -> int:
    """An upper bound of the runtime bytes any device can be charged (slack variable domains)."""
    return (
        problem.total_kv_bytes
        + max((x.work_bytes for x in problem.nodes), default=0)
        + sum(e.size_bytes for e in problem.edges)
        + max((x.size_bytes for x in problem.nodes), default=0)
        + max((d.reserve_bytes for d in problem.devices), default=0)
    )


def _utilisation(
    problem: PlacementProblem, model: cp_model.CpModel, loads: dict[int, list[cp_model.LinearExprT]]
) -> cp_model.IntVar | None:
    """``util >= ceil(UTILISATION_SCALE * load / cap)`` on every balance device, for each of its
    peaks (:func:`layerplan.solver.goals.max_utilisation`); None when no balance device holds anything."""
    devices = [d for d in balance_devices(problem) if d in loads]
    if not devices:
        return None
    util = model.new_int_var(0, UTILISATION_SCALE, "max_utilisation")
    for d in devices:
        for load in loads[d]:
            model.add(UTILISATION_SCALE * load <= util * problem.devices[d].cap_bytes)
    return util


def _time_measures(
    problem: PlacementProblem,
    cost: CostModel,
    model: cp_model.CpModel,
    on: tuple[tuple[cp_model.IntVar, ...], ...],
    runs_on: dict[tuple[int, int], cp_model.LinearExprT],
    sent: dict[tuple[int, int], cp_model.IntVar],
    goal: Goal,
) -> dict[str, cp_model.LinearExprT | None]:
    """``time_ns`` and ``bottleneck_ns`` as linear expressions, exactly as :func:`layerplan.solver.cost.timing`.

    A node stored on ``d`` costs its weighted compute (plus streaming when offloaded) on ``d``'s
    compute device. A tensor sent to ``c`` costs the transfer from wherever its producer runs:
    ``moved[e, c] >= T(e, s, c) * (runs_on[producer, s] + sent[e, c] - 1)`` for every source ``s``
    (a single term ``T * sent[e, c]`` when every source is as fast).
    """
    n, k = len(problem.nodes), len(problem.devices)
    p, q = cost.prefill_steps, cost.decode_steps
    computing = problem.computing_devices
    stage: dict[int, list] = {c: [] for c in computing}
    stage_max: dict[int, int] = {c: 0 for c in computing}
    for i in range(n):
        worst = {c: 0 for c in computing}
        for d in range(k):
            cp, cd, sp, sd = node_time_ns(problem, cost, i, d)
            weight = p * (cp + sp) + q * (cd + sd)
            c = problem.compute_device(d)
            worst[c] = max(worst[c], weight)
            if weight:
                stage[c].append(weight * on[i][d])
        for c in computing:
            stage_max[c] += worst[c]
    for (e, c), var in sent.items():
        edge = problem.edges[e]
        times = {}
        for s in computing:
            if s != c:
                tp, td = edge_time_ns(problem, cost, e, s, c)
                times[s] = p * tp + q * td
        stage_max[c] += max(times.values(), default=0)
        if len(set(times.values())) <= 1:
            if times and next(iter(times.values())):
                stage[c].append(next(iter(times.values())) * var)
            continue
        moved = model.new_int_var(0, max(times.values()), f"moved[{problem.nodes[edge.producer].name}:{e},{c}]")
        for s, t in times.items():
            model.add(moved >= t * (runs_on[edge.producer, s] + var - 1))
        stage[c].append(moved)
    total = [term for terms in stage.values() for term in terms]
    out: dict[Measure, cp_model.LinearExprT | None] = {Measure.TIME_NS: sum(total) if total else None, Measure.BOTTLENECK_NS: None}
    if Measure.BOTTLENECK_NS in goal.measures and total:
        bottleneck = model.new_int_var(0, max(stage_max.values()), "bottleneck_ns")
        for c, terms in stage.items():
            if terms:
                model.add(bottleneck >= sum(terms))
        out[Measure.BOTTLENECK_NS] = bottleneck
    return out


def _runtime_terms(
    problem: PlacementProblem,
    model: cp_model.CpModel,
    on: tuple[tuple[cp_model.IntVar, ...], ...],
    runs_on: dict[tuple[int, int], cp_model.LinearExprT],
    sent: dict[tuple[int, int], cp_model.IntVar],
) -> dict[int, list[list]]:
    """Per computing device, the runtime bytes of :mod:`layerplan.solver.accounting` as linear
    terms: one list of terms per peak the device must hold, the charge being the largest.

    ``runs_on[i, c]`` (0/1 expression) says node ``i`` computes on ``c``; ``used[c]`` that ``c``
    computes anything (it then pays its reserve); ``work[c]`` >= each working set run there beside
    the KV cache; ``stream[c]`` (execution device only) >= each offloaded node's bytes. With
    ``before_kv_cache`` nodes, ``pre[c]`` >= each of their working sets, and the device holds two
    peaks, each within its cap: received + streaming + reserve + ``pre[c]``, and the same + KV cache
    + ``work[c]`` (``max(a, b) <= cap`` is ``a <= cap`` and ``b <= cap``). All of these variables
    only ever raise a device's load, so minimal values are the accounting's exact values.
    """
    nodes, devices = problem.nodes, problem.devices
    n = len(nodes)
    offs = [d for d, dev in enumerate(devices) if not dev.is_accelerator]
    exec_device = problem.execution_device
    max_work = max((x.work_bytes for x in nodes if not x.before_kv_cache), default=0)
    max_pre = max((x.work_bytes for x in nodes if x.before_kv_cache), default=0)
    terms: dict[int, list[list]] = {}
    for c in problem.computing_devices:
        runs = [runs_on[i, c] for i in range(n)]
        beside: list = [nodes[i].kv_bytes * runs[i] for i in range(n) if nodes[i].kv_bytes]
        if max_work:
            beside.append(_largest(model, max_work, f"work[{devices[c].name}]",
                                   [(nodes[i].work_bytes, runs[i]) for i in range(n) if not nodes[i].before_kv_cache]))
        held: list = [problem.edges[e].size_bytes * var for (e, d), var in sent.items() if d == c]
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
        terms[c] = [beside + held]
        if max_pre:
            pre = _largest(model, max_pre, f"pre[{devices[c].name}]",
                           [(nodes[i].work_bytes, runs[i]) for i in range(n) if nodes[i].before_kv_cache])
            terms[c].append([pre, *held])
    return terms


def _largest(
    model: cp_model.CpModel, ceiling: int, name: str, weighted: Sequence[tuple[int, cp_model.LinearExprT]]
) -> cp_model.IntVar:
    """An integer variable ``>= b * x`` for each ``(b, x)`` of ``weighted`` (``x`` 0/1), in ``0..ceiling``."""
    var = model.new_int_var(0, ceiling, name)
    for size, runs in weighted:
        if size:
            model.add(var >= size * runs)
    return var


def _add_hint(built: _Model, problem: PlacementProblem, assignment: Sequence[int]) -> None:
    """Hint every variable with its value under ``assignment`` (a complete, feasible start)."""
    for i, row in enumerate(built.on):
        for d, var in enumerate(row):
            built.model.add_hint(var, int(assignment[i] == d))
    chain = [i for i in range(len(problem.nodes)) if not problem.is_follower(i)]
    accs = problem.accelerators
    exec_device = problem.execution_device
    previous = None
    x_open = False  # the execution device's block is open (inline-offloaded nodes keep it so)
    current_rank = 0
    for i in chain:
        d = assignment[i]
        for a in accs:
            if (i, a) in built.start:
                was_open = x_open if a == exec_device else previous == a
                built.model.add_hint(built.start[i, a], int(d == a and not was_open))
        if d in accs:
            current_rank = accs.index(d)
        if i in built.level:
            built.model.add_hint(built.level[i], current_rank)
        x_open = d == exec_device or (x_open and problem.inline_offloaded(i, d))
        if i in built.open_at:
            built.model.add_hint(built.open_at[i], int(x_open))
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
    # Deterministic parallel search: the workers' subsolvers run interleaved in fixed batches, so
    # the placement returned does not depend on thread timing (CP-SAT sat_parameters.proto:
    # "interleave_search ... the search is deterministic (independently of num_workers!)").
    solver.parameters.interleave_search = _INTERLEAVE
    # Ctrl-C is ours (:func:`_run`): CP-SAT's handler would turn it into a quiet early stop.
    solver.parameters.catch_sigint_signal = False
    # The LP of the caps and block constraints proves most structural infeasibility at the root.
    if num_workers == 1:
        solver.parameters.linearization_level = 2
    return solver


def _run(solver: cp_model.CpSolver, model: cp_model.CpModel) -> int:
    """``solver.solve(model)``, interruptible: the search runs in a worker thread (CP-SAT releases
    the GIL) while this thread waits, so Ctrl-C stops the search (``stop_search``) at once and
    re-raises ``KeyboardInterrupt`` here instead of waiting out the time limit (CP-SAT's own SIGINT
    handler is off: :func:`_solver`)."""
    result: list[int] = []
    done = threading.Event()

    def search() -> None:
        try:
            result.append(solver.solve(model))
        finally:
            done.set()

    # An Event, not Thread.join(timeout): a join interrupted by KeyboardInterrupt can mark a live
    # thread as finished (CPython gh-90882), and the interpreter would then exit under CP-SAT's feet.
    worker = threading.Thread(target=search, name="cp-sat", daemon=True)
    worker.start()
    try:
        while not done.wait(0.05):
            pass
    except KeyboardInterrupt:
        solver.stop_search()
        done.wait()
        raise
    worker.join()
    return result[0]


def _proven_bound(solver: cp_model.CpSolver) -> int:
    """CP-SAT's proven lower bound on the objective it minimised, as whole bytes (>= 0)."""
    return max(0, math.ceil(solver.best_objective_bound - 1e-6))


def _extract(built: _Model, solver: cp_model.CpSolver) -> tuple[int, ...]:
    """The device index of each node in the solver's best solution."""
    return tuple(
        next(d for d, var in enumerate(row) if solver.boolean_value(var)) for row in built.on
    )


def solution_of(
    problem: PlacementProblem, assignment: Sequence[int], *, status: Status, goal: Goal | str,
    cost: CostModel | None, bound: int, solver: str,
) -> Solution:
    """A :class:`Solution` for an ``assignment`` found earlier (a stored plan), with every measure
    and the timing scored again from ``problem`` and ``cost``; ``wall_time_s`` is this call's.

    Raises:
        InvalidSpecError: ``assignment`` is not a valid placement of ``problem`` (one line per
            broken rule, as :func:`layerplan.solver.problem.violations` words them).
    """
    assignment = tuple(assignment)
    if len(assignment) != len(problem.nodes) or not all(isinstance(d, int) and 0 <= d < len(problem.devices)
                                                        for d in assignment):
        raise InvalidSpecError(f"the assignment has {len(assignment)} device indices for {len(problem.nodes)} nodes "
                               f"and {len(problem.devices)} devices; give one index per node")
    broken = violations(problem, assignment)
    if broken:
        raise InvalidSpecError("; ".join(str(v) for v in broken))
    return _solution(problem, assignment, status, goal=Goal.parse(goal), cost=cost, bound=bound,
                     started=time.perf_counter(), solver=solver)


def _solution(
    problem: PlacementProblem,
    assignment: tuple[int, ...],
    status: Status,
    *,
    goal: Goal,
    cost: CostModel | None,
    bound: int,
    started: float,
    solver: str = "cp-sat",
) -> Solution:
    assert not violations(problem, assignment), violations(problem, assignment)
    timed = (Measure.TIME_NS, Measure.BOTTLENECK_NS) if cost is not None else ()
    measures = dict.fromkeys((Measure.OFFLOAD_COST, Measure.TRANSFER_BYTES, Measure.MAX_UTILISATION, *goal.measures, *timed))
    return Solution(
        assignment=assignment,
        status=status,
        objective=evaluate(problem, assignment),
        bound=bound,
        wall_time_s=time.perf_counter() - started,
        solver=solver,
        goal=goal.value,
        values={name.value: value for name, value in scores(problem, assignment, measures, cost).items()},
        timing=timing(problem, cost, assignment) if cost is not None else None,
    )
