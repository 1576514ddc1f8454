"""Every catalog model plans under 4 x 40 GiB + cpu, and the map covers every parameter."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import check_device_map, compute_module_sizes, find_tied_parameters
from layerplan import planner
from layerplan.planner import api
from layerplan.planner.model import catalog
from layerplan.planner.model.quantization import from_config, quantized_bytes
from layerplan.solver import violations

GIB = 2**30
HARDWARE = {0: "40GiB", 1: "40GiB", 2: "40GiB", 3: "40GiB", "cpu": "2TiB"}


def _context(name: str) -> int:
    """512 tokens, or the model's own context where it is shorter (Whisper's decoder: 448)."""
    return min(512, api._model_context(catalog.CATALOG[name].to_config()) or 512)


@pytest.mark.parametrize("name", catalog.catalog_names())
def test_catalog_model_plans_on_four_40gib_gpus_and_cpu(name):
    graph, meta = planner.trace(name, seq_len=_context(name))
    plan = planner.plan(graph, max_memory=HARDWARE, time_limit_s=20)

    check_device_map(meta, plan.device_map)  # raises if a parameter is not covered
    assert violations(plan.problem, plan.solution.assignment) == []
    # from_pretrained keeps _keep_in_fp32_modules_strict in float32 at bfloat16 (DeepSeek-V3's router)
    strict = meta._keep_in_fp32_modules_strict or [] if meta.dtype == torch.bfloat16 else []
    kept = {n: torch.float32 for n, _ in meta.named_parameters() if any(k in n for k in strict)}
    sizes = compute_module_sizes(meta, dtype=meta.dtype, special_dtypes=kept)
    quantization = from_config(meta.config)  # gpt-oss: MXFP4 experts (their sizes: test_quantization.py)
    stored = quantized_bytes(meta, quantization, meta.dtype.itemsize) if quantization else {}
    expected = sizes[""] - sum(sizes[k] for k in stored) + sum(stored.values())
    assert sum(u.weights_bytes for u in plan.usage) == expected
    for u in plan.usage:
        assert u.used_bytes <= u.cap_bytes
    # Whatever fits on the GPUs stays there: cpu is only for what 160 GiB cannot hold.
    gpus = [u for u in plan.usage if isinstance(u.device, int)]
    largest = max(n.size_bytes + n.kv_bytes for n in graph.nodes)
    assert plan.offloaded_bytes == 0 or all(u.free_bytes < 2 * largest for u in gpus)
    # tied parameters end up on one device
    for group in find_tied_parameters(meta):
        holders = {graph.node_of(p) for p in group}
        devices = {plan.solution.assignment[graph.index(h)] for h in holders}
        assert len(devices) == 1, (group, devices)


def test_t5_11b_plans_where_cpsat_presolve_once_claimed_infeasible(tmp_path):
    """The latency plan of t5-11b on 2 x 40 GiB + cpu: CP-SAT 9.15's presolve proved the
    utilisation phase infeasible although the time phase had just found a placement
    (google/or-tools#5274); the phase is solved again without presolve."""
    plan = planner.plan("t5-11b", max_memory={0: "40GiB", 1: "40GiB", "cpu": "1TiB"}, offload_folder=tmp_path,
                        cache=False)
    assert plan.status == "optimal"
    assert violations(plan.problem, plan.solution.assignment) == []
