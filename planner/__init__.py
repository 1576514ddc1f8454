"""layerplan's planner: everything that knows PyTorch and Hugging Face, by concern -- ``spec``
(what the user declares), ``model`` (sources, meta build, catalog, trace, measure, estimate),
``hardware`` (presets, parsing, resolution, detection, costing), ``output`` (device_map, report),
``baselines`` (accelerate's maps, compare), ``capacity`` (the inverse questions, many plans each),
``calibrate`` (load a plan, run it, measure).

Public surface: :func:`plan` (trace + solve), :func:`trace`, :func:`plan_graph`,
:func:`evaluate_map`, the capacity questions (:func:`min_devices`, :func:`max_batch`,
:func:`max_context`, :func:`frontier`, :func:`cheapest`, :func:`compare_setups` on
:class:`Setup`), :func:`calibrate`, :class:`PlanSpec` and its sections, the :class:`Plan` and
:class:`LayerGraph` data, and the error hierarchy. Names are imported on first use, so that
validating a spec does not import torch.
"""

from layerplan.planner._lazy import lazy_exports

_PUBLIC = {
    "InfeasiblePlanError": "layerplan.solver.errors",
    "InvalidSpecError": "layerplan.solver.errors",
    "LayerplanError": "layerplan.solver.errors",
    "TraceError": "layerplan.solver.errors",
    "LayerGraph": "layerplan.planner.graph",
    "Plan": "layerplan.planner.output.adapter",
    "plan": "layerplan.planner.api",
    "plan_graph": "layerplan.planner.api",
    "trace": "layerplan.planner.api",
    "evaluate_map": "layerplan.planner.api",
    "min_devices": "layerplan.planner.capacity",
    "max_batch": "layerplan.planner.capacity",
    "max_context": "layerplan.planner.capacity",
    "frontier": "layerplan.planner.capacity",
    "cheapest": "layerplan.planner.capacity",
    "compare_setups": "layerplan.planner.capacity",
    "Setup": "layerplan.planner.capacity",
    "parse_setup": "layerplan.planner.capacity",
    "sweep": "layerplan.planner.capacity",
    "calibrate": "layerplan.planner.calibrate",
    "PlanSpec": "layerplan.planner.spec",
    "ModelSpec": "layerplan.planner.spec",
    "DevicesSpec": "layerplan.planner.spec",
    "WorkloadSpec": "layerplan.planner.spec",
    "SolveSpec": "layerplan.planner.spec",
    "OutputSpec": "layerplan.planner.spec",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
