"""PlanSpec: TOML / dict / keyword forms, round trips, and validation before any model is built."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerplan.planner.spec import (
    DevicesSpec,
    ModelSpec,
    OutputSpec,
    Phase,
    PlanSpec,
    SolveSpec,
    Strategy,
    WorkloadSpec,
)
from layerplan.solver import Goal, InvalidSpecError

GiB = 2**30

EXAMPLE = textwrap.dedent("""\
    [model]
    source = "llama-2-70b"        # catalog name, model dir, config.json path, Hub id, graph JSON
    dtype = "float16"

    [devices]
    max_memory = { 0 = "40GiB", 1 = "40GiB", cpu = "200GiB" }
    types = { "0,1" = "a100-40gb" }
    reserve = "1GiB"

    [workload]
    batch_size = 4
    prompt_len = 2048
    max_new_tokens = 256

    [solve]
    strategy = "auto"
    objective = "latency"
    time_limit_s = 30
    pins = { lm_head = 1 }
""")


def test_the_issue_example_reads_into_typed_sections(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(EXAMPLE)
    spec = PlanSpec.from_toml(path)
    assert spec.model == ModelSpec(source="llama-2-70b", dtype="float16")
    # 40 GiB = 40 * 2**30 bytes; keys as accelerate names devices (int GPU ids).
    assert spec.devices.max_memory == {0: 40 * GiB, 1: 40 * GiB, "cpu": 200 * GiB}
    assert spec.devices.types == {0: "a100-40gb", 1: "a100-40gb"}
    assert spec.devices.reserve == GiB
    assert spec.workload == WorkloadSpec(batch_size=4, prompt_len=2048, max_new_tokens=256)
    assert spec.solve.strategy is Strategy.AUTO and spec.solve.objective is Goal.LATENCY
    assert spec.solve.pins == {"lm_head": 1} and spec.solve.time_limit_s == 30.0


def test_to_toml_reads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(EXAMPLE)
    spec = PlanSpec.from_toml(path)
    again = tmp_path / "again.toml"
    again.write_text(spec.to_toml())
    assert PlanSpec.from_toml(again) == spec
    assert tomllib.loads(spec.to_toml()) == spec.to_dict()


# -- round trips (hypothesis) ------------------------------------------------------------------------
devices_keys = st.sampled_from([0, 1, 2, 3, "cpu", "disk", "mps"])
sizes = st.integers(min_value=0, max_value=2**45)


@st.composite
def devices_specs(draw: st.DrawFn) -> DevicesSpec:
    caps = draw(st.dictionaries(devices_keys, sizes, min_size=1, max_size=5))
    gpus = [k for k in caps if isinstance(k, int)]
    types = {k: draw(st.sampled_from(["a100-80gb", "h100-sxm", "l4", "rtx-4090"])) for k in gpus[: draw(st.integers(0, 2))]}
    reserve = draw(st.one_of(st.none(), sizes, st.dictionaries(st.sampled_from(list(caps)), sizes, max_size=2)))
    links = {}
    if len(gpus) >= 2:
        links = {(gpus[0], gpus[1]): draw(st.one_of(st.sampled_from(["nvlink", "pcie"]),
                                                     st.floats(min_value=1e6, max_value=1e12)))}
    return DevicesSpec(
        max_memory=caps, types=types, reserve=reserve, links=links,
        interconnect=draw(st.sampled_from(["auto", "nvlink", "pcie"])),
        host_link=draw(st.one_of(st.none(), st.sampled_from(["pcie3", "pcie4", "pcie5", "25GB/s"]))),
        disk_read=draw(st.one_of(st.none(), st.sampled_from(["nvme-gen4", "sata-ssd", "3GB/s"]))),
        overrides={k: {"flops_per_s": draw(st.floats(min_value=1e9, max_value=1e16))} for k in gpus[:1]},
    )


@st.composite
def workload_specs(draw: st.DrawFn) -> WorkloadSpec:
    prompt = draw(st.one_of(st.none(), st.integers(1, 10**5)))
    new = draw(st.one_of(st.none(), st.integers(0, 10**4)))
    seq = (prompt + new) if prompt is not None and new is not None and draw(st.booleans()) else None
    return WorkloadSpec(
        batch_size=draw(st.one_of(st.none(), st.integers(1, 512))), prompt_len=prompt, max_new_tokens=new, seq_len=seq,
        kv_dtype=draw(st.one_of(st.none(), st.sampled_from(["fp8", "bfloat16", "float16"]))),
        attn_implementation=draw(st.one_of(st.none(), st.sampled_from(["sdpa", "eager"]))),
        phase=draw(st.one_of(st.none(), st.sampled_from(list(Phase)))),
        prefill_logits=draw(st.one_of(st.none(), st.booleans())),
    )


@st.composite
def plan_specs(draw: st.DrawFn) -> PlanSpec:
    devices = draw(devices_specs())
    declared = list(devices.max_memory)
    module = st.sampled_from(["lm_head", "model.embed_tokens", "model.layers.3", "model.layers"])
    pins = draw(st.dictionaries(module, st.sampled_from(declared), max_size=2))
    return PlanSpec(
        model=ModelSpec(source=draw(st.sampled_from(["llama-2-7b", "./some/dir", "org/model"])),
                        dtype=draw(st.one_of(st.none(), st.sampled_from(["bf16", "float16", "float32"]))),
                        no_split_module_classes=tuple(draw(st.lists(st.sampled_from(["A", "B"]), unique=True)))),
        devices=devices,
        workload=draw(workload_specs()),
        solve=SolveSpec(strategy=draw(st.sampled_from(list(Strategy))),
                        objective=draw(st.one_of(st.none(), st.sampled_from(list(Goal)))),
                        pins=pins, time_limit_s=draw(st.floats(min_value=0.01, max_value=1e4))),
        output=OutputSpec(format=draw(st.sampled_from(["table", "json"]))),
    )


@settings(max_examples=60, deadline=None)
@given(plan_specs())
def test_from_dict_of_to_dict_is_the_same_spec(spec: PlanSpec) -> None:
    assert PlanSpec.from_dict(spec.to_dict()) == spec
    assert PlanSpec.from_dict(tomllib.loads(spec.to_toml())) == spec


@settings(max_examples=40, deadline=None)
@given(devices_specs())
def test_each_section_round_trips_alone(devices: DevicesSpec) -> None:
    assert DevicesSpec.from_dict(devices.to_dict()) == devices


# -- normalisation -----------------------------------------------------------------------------------
def test_python_keys_and_values_are_accepted_in_any_common_form() -> None:
    import torch

    devices = DevicesSpec(max_memory={torch.device("cuda", 1): np.int64(5 * GiB), "cuda:0": "5GiB",
                                      torch.device("cpu"): 10 * GiB})
    assert devices.max_memory == {0: 5 * GiB, 1: 5 * GiB, "cpu": 10 * GiB}
    assert WorkloadSpec(batch_size=np.int32(4)).batch_size == 4


def test_the_users_mappings_are_copied_never_changed() -> None:
    caps = {"0": "10GiB", "cpu": "20GiB"}
    pins = {"lm_head": "0"}
    spec = PlanSpec.from_kwargs("llama-2-7b", max_memory=caps, pins=pins)
    assert caps == {"0": "10GiB", "cpu": "20GiB"} and pins == {"lm_head": "0"}
    assert spec.devices.max_memory == {0: 10 * GiB, "cpu": 20 * GiB} and spec.solve.pins == {"lm_head": 0}


def test_keyword_names_route_to_their_sections() -> None:
    spec = PlanSpec.from_kwargs("gpt2", max_memory={0: "1GiB"}, device_types={0: "NVIDIA H100-SXM"}, batch_size=2,
                                strategy="sequential", dtype="bf16", hardware={"interconnect": "pcie"})
    assert spec.devices.types == {0: "h100-sxm"} and spec.devices.interconnect == "pcie"
    assert spec.workload.batch_size == 2 and spec.solve.strategy is Strategy.SEQUENTIAL
    assert spec.model.dtype == "bfloat16"


# -- bad input: one InvalidSpecError naming the value ------------------------------------------------
BAD_DICTS = [
    ({"model": {"source": "gpt2"}, "devicez": {}}, ["unknown section [devicez]", "did you mean 'devices'"]),
    ({"model": {"source": "gpt2", "dtpye": "bf16"}}, ["unknown key 'dtpye' in [model]", "did you mean 'dtype'"]),
    ({"model": {"dtype": "bf16"}}, ["no [model] source"]),
    ({"model": {"source": "gpt2"}, "devices": {"max_memory": {"0": "80GiBB"}}}, ["'80GiBB' is not a size"]),
    ({"model": {"source": "gpt2"}, "devices": {"max_memory": ["40GiB"]}}, ["max_memory=['40GiB'] is a list"]),
    ({"model": {"source": "gpt2"}, "devices": {"max_memory": "40GiB"}}, ["is a str; expected a mapping"]),
    ({"model": {"source": "gpt2"}, "devices": {"max_memory": {"gpu0": 1}}}, ["unknown device 'gpu0'"]),
    ({"model": {"source": "gpt2"}, "devices": {"max_memory": {"0": "99999999TiB"}}}, ["PiB"]),
    ({"model": {"source": "gpt2"}, "devices": {"types": {"0": "a100-90gb"}}}, ["a100-90gb"]),
    ({"model": {"source": "gpt2"}, "devices": {"max_memory": {"0": 1}, "types": {"1": "l4"}}},
     ["types names device 1, which max_memory does not declare"]),
    ({"model": {"source": "gpt2"}, "devices": {"interconnect": "nvlinc"}}, ["did you mean 'nvlink'"]),
    ({"model": {"source": "gpt2"}, "devices": {"host_link": "pcie9"}}, ["host_link"]),
    ({"model": {"source": "gpt2"}, "devices": {"overrides": {"0": {"flops": 1}}}}, ["unknown field 'flops'"]),
    ({"model": {"source": "gpt2"}, "workload": {"batch_size": 0}}, ["batch_size=0"]),
    ({"model": {"source": "gpt2"}, "workload": {"batch_size": 2.5}}, ["batch_size=2.5"]),
    ({"model": {"source": "gpt2"}, "workload": {"seq_len": 10, "prompt_len": 8, "max_new_tokens": 4}},
     ["seq_len=10 but prompt_len + max_new_tokens"]),
    ({"model": {"source": "gpt2"}, "workload": {"phase": "decoding"}}, ["did you mean 'decode'"]),
    ({"model": {"source": "gpt2"}, "workload": {"kv_dtype": "fp9"}}, ["unknown dtype 'fp9'"]),
    ({"model": {"source": "gpt2"}, "solve": {"strategy": "balancd"}}, ["did you mean 'balanced'"]),
    ({"model": {"source": "gpt2"}, "solve": {"objective": "speed"}}, ["unknown objective 'speed'"]),
    ({"model": {"source": "gpt2"}, "solve": {"time_limit_s": 0}}, ["time_limit_s=0"]),
    ({"model": {"source": "gpt2"}, "solve": {"pins": {"lm_head": "gpu"}}}, ["unknown device 'gpu'"]),
    ({"model": {"source": "gpt2"}, "devices": {"max_memory": {"0": 1}}, "solve": {"pins": {"lm_head": 3}}},
     ["device 3, which is not in max_memory"]),
    ({"model": {"source": "gpt2"}, "solve": {"pins": {"lm_head": 0}, "device_map": {"lm_head": 1}}},
     ["pinned to 0 but the device_map puts it on 1"]),
    ({"model": {"source": "gpt2"}, "output": {"format": "yaml"}}, ["format='yaml'"]),
]


@pytest.mark.parametrize(("data", "words"), BAD_DICTS, ids=[w[0] for _, w in BAD_DICTS])
def test_bad_specs_raise_one_line_naming_the_value(data: dict, words: list[str]) -> None:
    with pytest.raises(InvalidSpecError) as info:
        PlanSpec.from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_spec_never_imports_torch_or_transformers(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(EXAMPLE)
    code = ("import sys; from layerplan.planner.spec import PlanSpec; PlanSpec.from_toml('spec.toml').to_toml(); "
            "assert not {'torch', 'transformers', 'accelerate'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_offload_folder_must_be_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(InvalidSpecError, match="is a file, not a folder"):
        DevicesSpec(offload_folder=str(file))
    with pytest.raises(InvalidSpecError, match="cannot be created"):
        DevicesSpec(offload_folder=str(file / "sub"))
    assert DevicesSpec(offload_folder=str(tmp_path / "new" / "deeper")).offload_folder.endswith("deeper")
    assert not (tmp_path / "new").exists()  # validation creates nothing


def test_bad_toml_is_one_line_with_the_position(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text("[model]\nsource = llama\n")
    with pytest.raises(InvalidSpecError, match=r"not valid TOML.*line 2") as info:
        PlanSpec.from_toml(path)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidSpecError, match="does not exist"):
        PlanSpec.from_toml(tmp_path / "missing.toml")
    assert os.path.exists(path)
