"""From what the user calls "the model" to a LayerGraph: sources, the meta build, the catalog,
tracing, measurement under FakeTensorMode, and the config estimate."""

from layerplan.planner.model.source import ModelSource, resolve_source
from layerplan.planner.model.trace import trace_model

__all__ = ["ModelSource", "resolve_source", "trace_model"]
