"""When nothing fits and no cpu was declared, the error quotes what offloading to host RAM would cost
-- on the hardware the user declared, not on defaults (regression: links and host link were dropped)."""

from __future__ import annotations

import re

import pytest

import layerplan
from layerplan.planner.hardware import detect_max_memory

# GPUs too small for the tiny Llama (about 700 KB of float32 weights), declared as slow PCIe 3 cards.
HARDWARE = {"device_types": {0: "rtx-3090", 1: "rtx-3090"}, "host_link": "pcie3", "interconnect": "pcie"}


def test_the_offload_hint_is_priced_on_the_declared_hardware(tiny_llama_dir):
    caps = {0: "250KB", 1: "250KB"}
    with pytest.raises(layerplan.InfeasiblePlanError) as info:
        layerplan.plan(tiny_llama_dir, max_memory=caps, reserve=0, seq_len=16, dtype="float32", **HARDWARE)
    quoted = re.search(r"at an estimated ([0-9.]+) ms per token", str(info.value))
    assert quoted is not None, str(info.value)
    # The oracle: the same plan asked for explicitly, with this machine's RAM as the cpu cap.
    ram = detect_max_memory()["cpu"]
    explicit = layerplan.plan(tiny_llama_dir, max_memory={**caps, "cpu": ram}, reserve=0, seq_len=16,
                              dtype="float32", time_limit_s=10, **HARDWARE)
    assert quoted.group(1) == f"{explicit.timing.per_token_s * 1e3:.1f}"
    # ... and it differs from the price on default hardware (a100 figures, PCIe 4 host link).
    default = layerplan.plan(tiny_llama_dir, max_memory={**caps, "cpu": ram}, reserve=0, seq_len=16,
                             dtype="float32", time_limit_s=10)
    assert f"{default.timing.per_token_s * 1e3:.1f}" != quoted.group(1)
