"""layerplan: declarative placement planning for large models.

Declare the model, the devices and the workload (a :class:`PlanSpec`, a TOML file, or keyword
arguments); get a solved, checked accelerate ``device_map``::

    import layerplan

    spec = layerplan.PlanSpec.from_toml("spec.toml")
    plan = layerplan.plan(spec)
    model = AutoModelForCausalLM.from_pretrained(path, **plan.from_pretrained_kwargs())

The packages follow the data flow (``../shared/DESIGN.md``): :mod:`layerplan.planner` (everything
that knows PyTorch and Hugging Face: spec, model, hardware, output, baselines) and
:mod:`layerplan.solver` (the pure integer problem; never imports torch).
"""

from layerplan.planner import _PUBLIC as _PLANNER_PUBLIC
from layerplan.planner._lazy import lazy_exports

# Names resolved on first use (PEP 562), so that `import layerplan.solver` stays free of torch and
# the CLI starts without importing transformers before it has validated its input.
_PUBLIC = dict(_PLANNER_PUBLIC)  # the same public names as layerplan.planner

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
