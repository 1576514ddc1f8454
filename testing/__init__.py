"""layerplan's testing surface for users' property suites: Hypothesis strategies that generate
placement problems (:func:`problems`, :func:`device_sets`), traced workloads and Llama-shaped
LayerGraphs (:func:`workloads`, :func:`layer_graphs`), and :func:`check_plan`, the invariant
checker our own solver tests use (one typed error per broken rule)::

    from hypothesis import given, settings
    from layerplan.testing import problems, check_plan
    import layerplan

    @settings(max_examples=50, deadline=None)
    @given(problems())
    def test_any_generated_problem_solves_to_a_valid_plan(problem):
        try:
            solution = layerplan.solve(problem)
        except layerplan.InfeasiblePlanError:
            return
        check_plan(solution, problem)

The strategies need Hypothesis (``pip install "layerplan[testing]"``); :func:`check_plan` does not.
Neither imports torch.
"""

from layerplan.testing.check import (
    CapError,
    ContiguityError,
    CoverageError,
    ExecutionDeviceError,
    HostError,
    LowZeroError,
    OrderError,
    PinsError,
    PlanCheckError,
    TiesError,
    check_plan,
)

try:
    from layerplan.testing.graphs import layer_graphs, workloads
    from layerplan.testing.strategies import device_sets, problems
except ModuleNotFoundError as exc:  # hypothesis is the optional [testing] extra
    if exc.name != "hypothesis":
        raise
    _MISSING = exc

    def _needs_hypothesis(*_args: object, **_kwargs: object) -> None:
        raise ModuleNotFoundError(
            "layerplan.testing's strategies need hypothesis; install it with: pip install 'layerplan[testing]'"
        ) from _MISSING

    device_sets = problems = layer_graphs = workloads = _needs_hypothesis

__all__ = [
    "CapError",
    "ContiguityError",
    "CoverageError",
    "ExecutionDeviceError",
    "HostError",
    "LowZeroError",
    "OrderError",
    "PinsError",
    "PlanCheckError",
    "TiesError",
    "check_plan",
    "device_sets",
    "layer_graphs",
    "problems",
    "workloads",
]
