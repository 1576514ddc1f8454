"""Hardware presets and :func:`layerplan.planner.hardware.presets.build_hardware`: lookups, link choice, dtype
figures, overrides, rate parsing and machine probing. No GPU, no network: CUDA is reported absent
unless a test pretends otherwise."""

from __future__ import annotations

import copy
import math
import shutil

import pytest
import torch

from layerplan.planner import hardware as hw
from layerplan.planner.hardware import (
    ACCELERATORS,
    DISKS,
    HOST_CPU,
    HOST_LINKS,
    NVLINK_LATENCY_S,
    PCIE_LATENCY_S,
    DeviceHardware,
    HardwareSpec,
    build_hardware,
    detect_max_memory,
    lookup_accelerator,
    parse_bandwidth,
    parse_device_types,
    parse_flops,
    parse_links,
    preset_for_device_name,
)
from layerplan.solver.errors import InvalidSpecError

GIB = 2**30
GB = 1e9
TB = 1e12
TFLOPS = 1e12


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch):
    """Same answers on a GPU machine: accelerators without a declared type are never probed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------
# Preset lookup
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("h100-sxm", "h100-sxm"),
        ("H100-SXM", "h100-sxm"),
        ("h100_sxm", "h100-sxm"),
        ("NVIDIA H100 SXM5", "h100-sxm"),
        ("h100 pcie", "h100-pcie"),
        ("H200", "h200"),
        ("h200-sxm", "h200"),
        ("A100-80GB", "a100-80gb"),
        ("a100_sxm4_40gb", "a100-40gb"),
        ("A100 80GB PCIe", "a100-80gb-pcie"),
        ("L40S", "l40s"),
        ("l4", "l4"),
        ("a10", "a10"),
        ("GeForce RTX 4090", "rtx-4090"),
        ("rtx3090", "rtx-3090"),
        ("Tesla V100-SXM2-32GB", "v100"),
        ("AMD Instinct MI300X", "mi300x"),
    ],
)
def test_lookup_accepts_common_spellings(spelling, name):
    assert lookup_accelerator(spelling).name == name


@pytest.mark.parametrize("ambiguous", ["h100", "a100", "a100-pcie"])
def test_lookup_refuses_ambiguous_short_names(ambiguous):
    # "h100" could be SXM or PCIe, "a100" 40 or 80 GB, "a100-pcie" 40 or 80 GB: no silent pick.
    with pytest.raises(InvalidSpecError):
        lookup_accelerator(ambiguous)


def test_unknown_type_is_one_line_with_suggestion_and_valid_names():
    with pytest.raises(InvalidSpecError) as excinfo:
        lookup_accelerator("h100-sxn")
    message = one_line_error(excinfo)
    assert "'h100-sxn'" in message
    assert "did you mean 'h100-sxm'?" in message
    for name in ACCELERATORS:
        assert name in message


def test_unknown_type_through_build_hardware_names_the_device():
    with pytest.raises(InvalidSpecError) as excinfo:
        build_hardware([0, "cpu"], device_types={0: "a100-80g"})
    message = one_line_error(excinfo)
    assert "GPU 0" in message and "did you mean 'a100-80gb'?" in message


def test_unknown_type_far_from_everything_has_no_suggestion():
    with pytest.raises(InvalidSpecError) as excinfo:
        lookup_accelerator("potato")
    assert "did you mean" not in one_line_error(excinfo)


@pytest.mark.parametrize(
    ("device_name", "preset"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA A100-PCIE-40GB", None),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L40", None),
        ("NVIDIA L4", "l4"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA A10G", None),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA GeForce RTX 3090", "rtx-3090"),
        ("NVIDIA GeForce RTX 3090 Ti", None),
        ("Tesla V100-SXM2-32GB", "v100"),
        ("Tesla V100-SXM2-16GB", None),
        ("AMD Instinct MI300X", "mi300x"),
    ],
)
def test_driver_names_map_to_presets_or_nothing(device_name, preset):
    assert preset_for_device_name(device_name) == preset


def test_undeclared_gpu_is_identified_from_its_driver_name(monkeypatch):
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA A10G"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: names[i])
    spec = build_hardware([0, 1], reported_names=hw.detect_device_names())
    assert spec.device(0).preset == "h100-sxm"
    assert spec.device(1).preset == hw.DEFAULT_ACCELERATOR
    assert any("'NVIDIA A10G'" in note for note in spec.notes)
    assert not any("GPU 0" in note for note in spec.notes)


def test_accelerator_without_type_gets_default_and_a_note():
    spec = build_hardware([0, "mps", "cpu"])
    assert spec.device(0).preset == spec.device("mps").preset == "a100-80gb"
    (note,) = spec.notes
    assert "GPU 0" in note and "'mps'" in note and "--device-type 0,mps=NAME" in note
    # Assumed types never get an assumed NVLink: PCIe 4.0 (the A100's host link) between them.
    assert spec.link(0, "mps") == 31.5 * GB


# ---------------------------------------------------------------------------------------------
# Declared devices
# ---------------------------------------------------------------------------------------------


def test_device_type_for_undeclared_device_is_an_error():
    with pytest.raises(InvalidSpecError) as excinfo:
        build_hardware([0, "cpu"], device_types={1: "h100-sxm"})
    message = one_line_error(excinfo)
    assert "GPU 1" in message and "not a declared device" in message


def test_device_type_for_cpu_is_an_error():
    with pytest.raises(InvalidSpecError, match="accelerators only"):
        build_hardware([0, "cpu"], device_types={"cpu": "h100-sxm"})


def test_two_types_for_one_device_is_an_error():
    with pytest.raises(InvalidSpecError, match="two device types"):
        build_hardware([0], device_types={0: "l4", "cuda:0": "a10"})


def test_repeated_device_key_is_an_error():
    with pytest.raises(InvalidSpecError, match="repeat"):
        build_hardware([0, "cuda:0"])


def test_inputs_are_not_modified():
    device_types = {0: "H100-SXM", "1": "h100_sxm"}
    links = {(0, 1): "25GB/s"}
    overrides = {"cpu": {"read_bytes_per_s": "20GB/s"}}
    before = copy.deepcopy((device_types, links, overrides))
    build_hardware([0, 1, "cpu"], device_types=device_types, links=links, overrides=overrides)
    assert (device_types, links, overrides) == before


# ---------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "per_direction"),
    [
        ("h100-sxm", 450 * GB),  # NVLink 900 GB/s bidirectional, NVSwitch: 450 GB/s each way
        ("h200", 450 * GB),
        ("a100-80gb", 300 * GB),  # NVLink 600 GB/s bidirectional
        ("mi300x", 64 * GB),  # one 128 GB/s (bidirectional) Infinity Fabric link per pair
    ],
)
def test_auto_uses_nvlink_between_two_gpus_of_one_board(preset, per_direction):
    spec = build_hardware([0, 1], device_types={0: preset, 1: preset})
    assert spec.link(0, 1) == per_direction
    assert spec.link_latency_s == NVLINK_LATENCY_S


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # SXM5 (PCIe 5.0 host link) and a PCIe 4.0 card: the slower host link, 31.5 GB/s.
        ("h100-sxm", "l40s", 31.5 * GB),
        # Both PCIe 5.0: 63 GB/s, still PCIe -- an SXM module and a card share no NVLink.
        ("h100-sxm", "h100-pcie", 63 * GB),
        # Two NVLink boards of different products are two boards: PCIe 4.0 of the A100.
        ("h100-sxm", "a100-80gb", 31.5 * GB),
        # Two PCIe cards that *could* be bridged are not assumed bridged.
        ("a100-80gb-pcie", "a100-80gb-pcie", 31.5 * GB),
    ],
)
def test_auto_uses_pcie_through_the_host_otherwise(a, b, expected):
    spec = build_hardware([0, 1], device_types={0: a, 1: b})
    assert spec.link(0, 1) == expected
    assert spec.link_latency_s == PCIE_LATENCY_S


def test_bridgeable_cards_get_a_note():
    spec = build_hardware([0, 1], device_types={0: "a100-80gb-pcie", 1: "a100-80gb-pcie"})
    assert any("NVLink bridge" in note for note in spec.notes)


def test_interconnect_pcie_ignores_nvlink():
    spec = build_hardware([0, 1], device_types={0: "h100-sxm", 1: "h100-sxm"}, interconnect="pcie")
    assert spec.link(0, 1) == 63 * GB


def test_interconnect_nvlink_uses_a_bridge_for_two_cards():
    spec = build_hardware([0, 1], device_types={0: "a100-80gb-pcie", 1: "a100-80gb-pcie"}, interconnect="nvlink")
    assert spec.link(0, 1) == 300 * GB  # bridge: 600 GB/s bidirectional


def test_interconnect_nvlink_refuses_bridges_across_three_cards():
    with pytest.raises(InvalidSpecError, match="two-card NVLink bridge"):
        build_hardware([0, 1, 2], device_types=dict.fromkeys((0, 1, 2), "a100-80gb-pcie"), interconnect="nvlink")


def test_interconnect_nvlink_refuses_a_card_without_nvlink():
    with pytest.raises(InvalidSpecError) as excinfo:
        build_hardware([0, 1], device_types={0: "h100-sxm", 1: "l4"}, interconnect="nvlink")
    assert "GPU 1" in one_line_error(excinfo)


def test_unknown_interconnect_is_an_error():
    with pytest.raises(InvalidSpecError, match="interconnect"):
        build_hardware([0, 1], interconnect="infiniband")


@pytest.mark.parametrize(
    ("pair", "value", "expected"),
    [
        ((0, 1), "25GB/s", 25 * GB),
        ((1, 0), 12e9, 12 * GB),  # either order
        ((0, 1), "pcie", 63 * GB),  # both H100 SXM: PCIe 5.0 host links
        (("0", "cuda:1"), "pcie3", 15.75 * GB),
    ],
)
def test_declared_link_wins_over_interconnect(pair, value, expected):
    spec = build_hardware([0, 1, "cpu"], device_types={0: "h100-sxm", 1: "h100-sxm"}, links={pair: value})
    assert spec.link(0, 1) == spec.link(1, 0) == expected
    assert spec.link_latency_s == PCIE_LATENCY_S


def test_declared_nvlink_link_uses_the_bridge():
    types = dict.fromkeys((0, 1, 2), "rtx-3090")
    spec = build_hardware([0, 1, 2], device_types=types, links={(0, 1): "nvlink"})
    assert spec.link(0, 1) == 56.25 * GB  # RTX 3090 bridge: 112.5 GB/s bidirectional
    assert spec.link(1, 2) == 31.5 * GB


@pytest.mark.parametrize(
    ("links", "match"),
    [
        ({(0, 2): "1GB/s"}, "not a declared device"),
        ({(0, 0): "1GB/s"}, "itself"),
        ({(0, 1): "1GB/s", (1, 0): "2GB/s"}, "twice"),
        ({(0, "cpu"): "nvlink"}, "not an accelerator"),
        ({(0, 1): "nvlink"}, "has none"),  # L4 has no NVLink at all
        ({(0, 1): "fast"}, "not a bandwidth"),
    ],
)
def test_bad_declared_links(links, match):
    with pytest.raises(InvalidSpecError, match=match):
        build_hardware([0, 1, "cpu"], device_types={0: "l4", 1: "l4"}, links=links)


def test_matrix_is_symmetric_with_an_infinite_diagonal():
    spec = build_hardware(
        [0, 1, 2, "cpu", "disk"],
        device_types={0: "h100-sxm", 1: "h100-sxm", 2: "l40s"},
        links={(2, "cpu"): "20GB/s"},
        disk_read="nvme-gen3",
    )
    k = len(spec.devices)
    assert len(spec.link_bytes_per_s) == k and all(len(row) == k for row in spec.link_bytes_per_s)
    for i in range(k):
        assert spec.link_bytes_per_s[i][i] == math.inf
        for j in range(k):
            assert spec.link_bytes_per_s[i][j] == spec.link_bytes_per_s[j][i]
    assert spec.link(0, 1) == 450 * GB
    assert spec.link(0, 2) == 31.5 * GB  # L40S is PCIe 4.0
    assert spec.link(0, "cpu") == 63 * GB and spec.link(2, "cpu") == 20 * GB
    assert spec.link(0, "disk") == spec.link("cpu", "disk") == 3.5 * GB  # disk slower than the link


def test_host_link_is_the_slower_of_card_and_platform():
    # H100 SXM (PCIe 5.0) in a PCIe 3.0 platform: 15.75 GB/s; the cpu device reads at that rate.
    spec = build_hardware([0, "cpu"], device_types={0: "h100-sxm"}, host_link="pcie3")
    assert spec.link(0, "cpu") == spec.device("cpu").read_bytes_per_s == 15.75 * GB
    assert (spec.host_link, spec.host_link_bytes_per_s) == ("pcie3", 15.75 * GB)
    # An A100 (PCIe 4.0) in a PCIe 5.0 platform still runs at PCIe 4.0.
    spec = build_hardware([0, "cpu"], device_types={0: "a100-80gb"}, host_link="pcie5")
    assert (spec.host_link, spec.host_link_bytes_per_s) == ("pcie4", 31.5 * GB)
    # A measured rate.
    spec = build_hardware([0, "cpu"], device_types={0: "h100-sxm"}, host_link="25GB/s")
    assert (spec.host_link, spec.link(0, "cpu")) == ("25GB/s", 25 * GB)


def test_disk_defaults_with_a_note_and_accepts_presets_and_rates():
    spec = build_hardware([0, "cpu", "disk"], device_types={0: "a100-80gb"})
    disk = spec.device("disk")
    assert (disk.preset, disk.read_bytes_per_s) == ("nvme-gen4", 7.45 * GB)
    assert disk.flops_per_s == 0 and disk.memory_bytes is None
    assert any("disk_read" in note for note in spec.notes)
    spec = build_hardware([0, "disk"], device_types={0: "a100-80gb"}, disk_read="hdd")
    assert spec.device("disk").read_bytes_per_s == 270e6 and not spec.notes
    spec = build_hardware([0, "disk"], device_types={0: "a100-80gb"}, disk_read="2GB/s")
    assert spec.device("disk").preset == "custom" and spec.link(0, "disk") == 2 * GB
    # A measured read rate given as an override replaces the default, and its note.
    spec = build_hardware([0, "disk"], device_types={0: "a100-80gb"}, overrides={"disk": {"read_bytes_per_s": 1e9}})
    assert spec.link(0, "disk") == 1 * GB and not spec.notes


def test_cpu_only():
    spec = build_hardware(["cpu", "disk"], disk_read="sata-ssd")
    assert spec.device("cpu").flops_per_s == HOST_CPU.flops_per_s
    assert spec.host_link == "pcie4"
    assert spec.link("cpu", "disk") == 560e6


# ---------------------------------------------------------------------------------------------
# dtype and overrides
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float32", 67 * TFLOPS),  # non-tensor FP32
        ("bfloat16", 989.5 * TFLOPS),  # datasheet 1,979* with sparsity / 2
        ("bf16", 989.5 * TFLOPS),
        (torch.float16, 989.5 * TFLOPS),
        ("fp8", 1979 * TFLOPS),  # 3,958* / 2
        ("int8", 1979 * TFLOPS),
    ],
)
def test_dtype_selects_the_flops_figure(dtype, expected):
    spec = build_hardware([0], dtype=dtype, device_types={0: "h100-sxm"})
    assert spec.device(0).flops_per_s == pytest.approx(expected)
    assert spec.notes == ()


def test_fp8_on_a100_falls_back_to_bf16_with_a_note():
    spec = build_hardware([0, 1], dtype="float8_e4m3fn", device_types={0: "a100-80gb", 1: "h100-sxm"})
    assert spec.device(0).flops_per_s == 312 * TFLOPS
    assert spec.device(1).flops_per_s == 1979 * TFLOPS
    (note,) = spec.notes
    assert "float8_e4m3fn" in note and "bfloat16" in note and "GPU 0" in note and "GPU 1" not in note


def test_bf16_on_v100_falls_back_to_fp32_with_a_note():
    spec = build_hardware([0], dtype="bfloat16", device_types={0: "v100"})
    assert spec.device(0).flops_per_s == 15.7 * TFLOPS
    assert any("float32" in note for note in spec.notes)


def test_dtype_without_figures_is_an_error():
    with pytest.raises(InvalidSpecError, match="float64"):
        build_hardware([0], dtype=torch.float64, device_types={0: "h100-sxm"})


def test_overrides_apply():
    spec = build_hardware(
        [0, 1, "cpu"],
        device_types={0: "h100-sxm", 1: "h100-sxm"},
        overrides={
            0: {"flops_per_s": "500TFLOPS", "mem_bytes_per_s": "2TB/s", "memory_bytes": "40GiB"},
            "cpu": {"read_bytes_per_s": "20GB/s", "flops_per_s": 1e12},
        },
    )
    gpu = spec.device(0)
    assert (gpu.flops_per_s, gpu.mem_bytes_per_s, gpu.memory_bytes) == (500 * TFLOPS, 2 * TB, 40 * GIB)
    assert spec.device(1).flops_per_s == 989.5 * TFLOPS  # untouched
    assert spec.device("cpu").flops_per_s == 1e12
    # A measured cpu read rate is the link from every accelerator to the cpu.
    assert spec.link(0, "cpu") == spec.link(1, "cpu") == 20 * GB


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({2: {"flops_per_s": 1e12}}, "not a declared device"),
        ({0: {"flops": 1e12}}, "unknown field"),
        ({0: {"mem_bytes_per_s": "fast"}}, "not a bandwidth"),
        ({0: {"flops_per_s": "-1TFLOPS"}}, "FLOP rate"),
        ({0: {"memory_bytes": "0GiB"}}, "> 0"),
    ],
)
def test_bad_overrides(overrides, match):
    with pytest.raises(InvalidSpecError, match=match):
        build_hardware([0, "cpu"], device_types={0: "h100-sxm"}, overrides=overrides)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (900e9, 900e9),  # numbers are bytes/s
        (64, 64.0),
        ("9e11", 9e11),
        ("900GB/s", 900e9),  # 900 x 10^9
        ("3.35TB/s", 3.35e12),  # 3.35 x 10^12
        ("64GiB/s", 64 * 2**30),  # 68,719,476,736
        ("25 GB/s", 25e9),
        ("25GBps", 25e9),
        ("1.5 MB/s", 1.5e6),
        ("512KiB/s", 512 * 1024),
        ("100Gb/s", 12.5e9),  # bits: 100 x 10^9 / 8
        ("1 GB/S", 1e9),
        ("pcie4", 31.5e9),  # 16 GT/s x 16 lanes x 128/130 / 8
        ("PCIe5", 63e9),
        ("nvme-gen4", 7.45e9),
        ("NVMe Gen5", 14.7e9),
    ],
)
def test_parse_bandwidth(value, expected):
    assert parse_bandwidth(value) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "value",
    [
        "", "fast", "900GB", "GB/s", "-5GB/s", "0GB/s", "25gb/s", "64iB/s", "inf", "nan",
        0, -1, float("nan"), float("inf"), True, None, [900e9],
    ],
)
def test_parse_bandwidth_rejects(value):
    with pytest.raises(InvalidSpecError) as excinfo:
        parse_bandwidth(value, what="host_link")
    assert "host_link" in one_line_error(excinfo)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("989TFLOPS", 989e12),
        ("1.979 PFLOPS", 1.979e15),
        ("500GFLOP/s", 500e9),
        ("624TOPS", 624e12),
        ("67e12", 67e12),
        (19.5e12, 19.5e12),
    ],
)
def test_parse_flops(value, expected):
    assert parse_flops(value) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("value", ["", "fast", "989TB/s", "989 TFLOPZ", "-1TFLOPS", "0TFLOPS", 0, True, None])
def test_parse_flops_rejects(value):
    with pytest.raises(InvalidSpecError) as excinfo:
        parse_flops(value, what="flops_per_s")
    assert "flops_per_s" in one_line_error(excinfo)


def test_parse_device_types():
    assert parse_device_types(["0=H100-SXM", "1,2=a100_80gb", "mps=l4"]) == {
        0: "h100-sxm", 1: "a100-80gb", 2: "a100-80gb", "mps": "l4",
    }


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (["0h100-sxm"], "KEY=VALUE"),
        (["0=h100-sxm", "0=l4"], "two device types"),
        (["gpu0=h100-sxm"], "unknown device"),
        (["0=h100-sxn"], "did you mean 'h100-sxm'"),
    ],
)
def test_parse_device_types_rejects(items, match):
    with pytest.raises(InvalidSpecError, match=match):
        parse_device_types(items)


def test_parse_links():
    assert parse_links(["0-1=nvlink", "0-2=25GB/s", "1-cpu=pcie4", "1-2=PCIe"]) == {
        (0, 1): "nvlink", (0, 2): 25e9, (1, "cpu"): 31.5e9, (1, 2): "pcie",
    }


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (["0-0=nvlink"], "itself"),
        (["0-1=1GB/s", "1-0=2GB/s"], "twice"),
        (["0=nvlink"], "two devices"),
        (["0-1-2=nvlink"], "two devices"),
        (["0-1=fast"], "not a bandwidth"),
    ],
)
def test_parse_links_rejects(items, match):
    with pytest.raises(InvalidSpecError, match=match):
        parse_links(items)


def test_parsed_cli_strings_feed_build_hardware():
    spec = build_hardware(
        [0, 1, 2, "cpu"],
        device_types=parse_device_types(["0,1=a100-80gb-pcie", "2=l4"]),
        links=parse_links(["0-1=nvlink", "1-2=10GB/s"]),
    )
    assert spec.link(0, 1) == 300 * GB and spec.link(1, 2) == 10 * GB and spec.link(0, 2) == 31.5 * GB


# ---------------------------------------------------------------------------------------------
# HardwareSpec
# ---------------------------------------------------------------------------------------------


def _device(key):
    return DeviceHardware(
        key=key, preset="x", flops_per_s=1.0, mem_bytes_per_s=1.0, memory_bytes=None, read_bytes_per_s=0.0
    )


def test_spec_rejects_an_asymmetric_matrix():
    with pytest.raises(InvalidSpecError, match="symmetric"):
        HardwareSpec(
            devices=(_device(0), _device(1)),
            link_bytes_per_s=((math.inf, 1.0), (2.0, math.inf)),
            link_latency_s=0.0, host_link="pcie4", host_link_bytes_per_s=1.0,
        )


def test_spec_rejects_a_finite_diagonal():
    with pytest.raises(InvalidSpecError, match="inf"):
        HardwareSpec(
            devices=(_device(0),), link_bytes_per_s=((0.0,),),
            link_latency_s=0.0, host_link="pcie4", host_link_bytes_per_s=1.0,
        )


def test_spec_link_lookup():
    spec = build_hardware([0, 1, "cpu"], device_types={0: "h100-sxm", 1: "h100-sxm"})
    assert spec.keys == (0, 1, "cpu")
    assert spec.link("cuda:0", "1") == 450 * GB
    assert spec.link(0, 0) == math.inf
    with pytest.raises(InvalidSpecError, match="not in this hardware spec"):
        spec.link(0, "disk")


# ---------------------------------------------------------------------------------------------
# Presets: relations that a typo would break
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(ACCELERATORS.values()), ids=list(ACCELERATORS))
def test_accelerator_preset_sanity(preset):
    assert lookup_accelerator(preset.name) is preset
    assert 8 * GIB <= preset.memory_bytes <= 256 * GIB
    assert preset.memory_bytes % GIB == 0
    assert 100 * GB <= preset.mem_bytes_per_s <= 10 * TB
    flops = preset.flops_per_s
    assert 5 * TFLOPS <= flops["float32"] <= 200 * TFLOPS
    for dtype, value in flops.items():
        assert value >= flops["float32"], dtype
    for half in ("bfloat16", "float16"):
        if half in flops:
            # Dense: no part in the table reaches 1.5 PFLOPS at 16 bits; H100's sparse 1,979 would.
            assert flops[half] <= 1.5e15
    if "bfloat16" in flops and "float16" in flops:
        assert flops["bfloat16"] == flops["float16"]
    if "float8_e4m3fn" in flops:
        # FP8 is twice BF16 on every part; 2 % slack for the L40S datasheet, which prints
        # BF16 362.05 but FP8 733 (not 724.1).
        assert flops["float8_e4m3fn"] == pytest.approx(2 * flops["bfloat16"], rel=0.02)
    assert 0 <= preset.nvlink_bytes_per_s <= 1 * TB and 0 <= preset.nvlink_bridge_bytes_per_s <= 1 * TB
    assert not (preset.nvlink_bytes_per_s and preset.nvlink_bridge_bytes_per_s)  # board or bridge
    assert preset.host_link in HOST_LINKS
    assert "http" in preset.source


def test_h200_differs_from_h100_only_in_memory():
    h100, h200 = ACCELERATORS["h100-sxm"], ACCELERATORS["h200"]
    assert dict(h100.flops_per_s) == dict(h200.flops_per_s)
    assert (h100.memory_bytes, h200.memory_bytes) == (80 * GIB, 141 * GIB)
    assert (h100.mem_bytes_per_s, h200.mem_bytes_per_s) == (3.35 * TB, 4.8 * TB)


def test_host_links_double_each_generation():
    # 8 GT/s x 16 lanes x 128/130 / 8 bits = 15.75 GB/s; each generation doubles the rate.
    assert HOST_LINKS["pcie3"].bytes_per_s == 15.75 * GB
    assert HOST_LINKS["pcie4"].bytes_per_s == 2 * HOST_LINKS["pcie3"].bytes_per_s
    assert HOST_LINKS["pcie5"].bytes_per_s == 2 * HOST_LINKS["pcie4"].bytes_per_s


def test_disks_are_ordered_and_sourced():
    order = ["nvme-gen5", "nvme-gen4", "nvme-gen3", "sata-ssd", "hdd"]
    assert list(DISKS) == order
    rates = [DISKS[name].bytes_per_s for name in order]
    assert rates == sorted(rates, reverse=True)
    assert 100e6 <= rates[-1] and rates[0] <= 20 * GB
    assert all("http" in DISKS[name].source for name in order)


def test_host_cpu_arithmetic():
    # 56 cores x 2.0 GHz x 2 FMA units x 16 FP32 lanes x 2 FLOP = 7.168 TFLOPS;
    # 8 channels x 4800 MT/s x 8 bytes = 307.2 GB/s.
    assert HOST_CPU.flops_per_s == pytest.approx(7.168e12)
    assert HOST_CPU.mem_bytes_per_s == pytest.approx(307.2e9)


def test_latency_defaults_are_microseconds():
    assert 1e-6 <= NVLINK_LATENCY_S <= PCIE_LATENCY_S <= 100e-6


# ---------------------------------------------------------------------------------------------
# Probing the machine
# ---------------------------------------------------------------------------------------------


def test_detect_max_memory_reports_cpu_and_disk(tmp_path):
    memory = detect_max_memory(offload_folder=str(tmp_path))
    assert memory.get("cpu", memory.get("mps", 0)) > 0
    # Free space moves while other processes write; 1 GiB of slack.
    assert abs(memory["disk"] - shutil.disk_usage(tmp_path).free) <= GIB
    assert all(isinstance(v, int) for v in memory.values())


def test_detect_max_memory_without_folder_has_no_disk():
    assert "disk" not in detect_max_memory()


def test_detect_max_memory_measures_a_missing_folder_at_its_parent(tmp_path):
    missing = tmp_path / "not" / "yet"
    memory = detect_max_memory(offload_folder=missing)
    assert not missing.exists()
    assert abs(memory["disk"] - shutil.disk_usage(tmp_path).free) <= GIB
