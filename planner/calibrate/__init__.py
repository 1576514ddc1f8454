"""Calibration: load a model with its plan, run the declared workload for real, and compare the
measured memory and time per device with the plan's predictions (:func:`calibrate`); the measured
figures form a :class:`CalibrationProfile` that the cost model can use instead of datasheet presets
(:func:`with_calibration`, :func:`calibrated_hardware`).

By concern: :mod:`.checkpoint` (the folder to load: real or random weights), :mod:`.memory`
(allocator peaks, resident bytes), :mod:`.timing` (per-node hooks), :mod:`.run` (load + run),
:mod:`.figures` (effective FLOP/s and bandwidth), :mod:`.report` (predicted vs measured),
:mod:`.profile` (the JSON profile, torch-free), :mod:`.apply` (profile -> overrides), :mod:`.api`.
Names are imported on first use: reading a profile does not import torch.
"""

from layerplan.planner._lazy import lazy_exports

_PUBLIC = {
    "CalibrationProfile": "layerplan.planner.calibrate.profile",
    "ProfileEntry": "layerplan.planner.calibrate.profile",
    "LayerTime": "layerplan.planner.calibrate.profile",
    "load_profile": "layerplan.planner.calibrate.profile",
    "CalibrationResult": "layerplan.planner.calibrate.report",
    "Compared": "layerplan.planner.calibrate.report",
    "DeviceFidelity": "layerplan.planner.calibrate.report",
    "render_calibration": "layerplan.planner.calibrate.report",
    "calibrate": "layerplan.planner.calibrate.api",
    "DEFAULT_DECODE_STEPS": "layerplan.planner.calibrate.api",
    "calibrated_hardware": "layerplan.planner.calibrate.apply",
    "profile_overrides": "layerplan.planner.calibrate.apply",
    "with_calibration": "layerplan.planner.calibrate.apply",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
