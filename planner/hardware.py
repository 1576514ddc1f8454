"""Device properties for the cost model: accelerator, host-link, disk and host-CPU presets with
their published sources, and :func:`build_hardware`, which resolves the declared devices into one
:class:`HardwareSpec` (peak FLOP/s, memory bandwidth, link bandwidth between every pair).

Every figure below is a vendor's published peak (datasheet or architecture whitepaper), never a
measurement made by layerplan; each entry names its source. Conventions:

* Rates are ``float`` bytes per second or FLOP per second; capacities are ``int`` bytes.
* Tensor-core figures are **dense**: datasheets mark the 2:4-sparsity figures with ``*``; those
  are halved here (NVIDIA footnote: "Shown with sparsity. Specifications are one-half lower without
  sparsity").
* ``"float32"`` is the peak for IEEE FP32 inputs without reduced-precision modes: NVIDIA's
  non-tensor FP32 (PyTorch leaves TF32 off for matmuls by default,
  ``torch.backends.cuda.matmul.allow_tf32 = False``), AMD's FP32 matrix peak (full FP32 on the
  matrix cores).
* GeForce cards publish two tensor figures for FP16; the one with FP32 accumulate is used, since
  cuBLAS runs PyTorch's half-precision GEMMs with an FP32 compute type.
* GPU memory "GB" in datasheets is binary (an A100 80GB reports 81920 MiB), so ``memory_bytes``
  is N GiB; usable memory is a little less (driver, ECC). Caps come from ``max_memory``; this is a
  default and a display value.
* Link bandwidth is per direction (datasheets quote NVLink and PCIe bidirectionally: 900 GB/s
  NVLink = 450 GB/s each way).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import torch

from planner.spec import parse_device, parse_dtype, parse_size
from solver.errors import InvalidSpecError

__all__ = [
    "ACCELERATORS",
    "DEFAULT_ACCELERATOR",
    "DEFAULT_DISK",
    "DEFAULT_HOST_LINK",
    "DISKS",
    "FLOPS_DTYPES",
    "HOST_CPU",
    "HOST_LINKS",
    "NVLINK_LATENCY_S",
    "PCIE_LATENCY_S",
    "AcceleratorPreset",
    "BandwidthPreset",
    "DeviceHardware",
    "HardwareSpec",
    "HostCpuPreset",
    "build_hardware",
    "detect_max_memory",
    "lookup_accelerator",
    "parse_bandwidth",
    "parse_device_types",
    "parse_flops",
    "parse_links",
    "preset_for_device_name",
]

_GIB = 2**30
_TERA = 1e12
_GIGA = 1e9

#: dtype names a preset may give a FLOP/s figure for (``str(torch.dtype)`` without ``torch.``).
FLOPS_DTYPES = ("float32", "float16", "bfloat16", "float8_e4m3fn", "int8")

# When a preset publishes no figure for a dtype, the kernels that run instead: fp8 / int8 weights are
# dequantised and multiplied in 16-bit (e.g. fp8 on an A100), bf16 without bf16 tensor cores runs
# at FP32 speed (V100). The first of these the preset has is used, with a note.
_FALLBACK = {
    "float8_e4m3fn": ("bfloat16", "float16"),
    "int8": ("float16", "bfloat16"),
    "bfloat16": ("float32",),
    "float16": ("float32",),
}


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class BandwidthPreset:
    """A named bandwidth: a host link (PCIe x16) or a disk's sequential read.

    Attributes:
        name: lower-case key, e.g. ``"pcie4"``, ``"nvme-gen4"``.
        description: what it is, in words.
        bytes_per_s: bytes per second, per direction for links.
        source: where the figure comes from (title and URL) and how it was derived.
    """

    name: str
    description: str
    bytes_per_s: float
    source: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bytes_per_s) and self.bytes_per_s > 0):
            raise InvalidSpecError(f"preset {self.name!r}: bytes_per_s={self.bytes_per_s!r} must be > 0")


#: PCIe x16, per direction. Each lane moves ``GT/s x 128/130`` bits (128b/130b encoding since
#: PCIe 3.0): gen3 8 GT/s x 16 lanes x 128/130 / 8 = 15.75 GB/s; gen4 doubles (31.5 GB/s), gen5
#: doubles again (63 GB/s). Protocol overhead leaves ~80-90 % of this for cudaMemcpy.
HOST_LINKS: Mapping[str, BandwidthPreset] = MappingProxyType({
    p.name: p
    for p in (
        BandwidthPreset(
            name="pcie3", description="PCIe 3.0 x16", bytes_per_s=15.75 * _GIGA,
            source="PCI-SIG, PCI Express Base Specification 3.0: 8 GT/s per lane, 128b/130b "
                   "(https://pcisig.com/specifications)",
        ),
        BandwidthPreset(
            name="pcie4", description="PCIe 4.0 x16", bytes_per_s=31.5 * _GIGA,
            source="PCI-SIG, PCI Express Base Specification 4.0: 16 GT/s per lane, 128b/130b "
                   "(https://pcisig.com/specifications)",
        ),
        BandwidthPreset(
            name="pcie5", description="PCIe 5.0 x16", bytes_per_s=63 * _GIGA,
            source="PCI-SIG, PCI Express Base Specification 5.0: 32 GT/s per lane, 128b/130b "
                   "(https://pcisig.com/specifications)",
        ),
    )
})

#: Sequential read of one drive: the vendor's "up to" figure for a representative model (best
#: case, large files, fresh drive); a RAID or a slower model changes it -- pass ``disk_read``.
DISKS: Mapping[str, BandwidthPreset] = MappingProxyType({
    p.name: p
    for p in (
        BandwidthPreset(
            name="nvme-gen5", description="PCIe 5.0 x4 NVMe SSD (Samsung 9100 PRO 1TB)",
            bytes_per_s=14_700e6,
            source="Samsung 9100 PRO product page: sequential read up to 14,700 MB/s (1TB) "
                   "(https://semiconductor.samsung.com/consumer-storage/internal-ssd/9100-pro/)",
        ),
        BandwidthPreset(
            name="nvme-gen4", description="PCIe 4.0 x4 NVMe SSD (Samsung 990 PRO)",
            bytes_per_s=7_450e6,
            source="Samsung 990 PRO product page: sequential read up to 7,450 MB/s "
                   "(https://semiconductor.samsung.com/consumer-storage/internal-ssd/990-pro/)",
        ),
        BandwidthPreset(
            name="nvme-gen3", description="PCIe 3.0 x4 NVMe SSD (Samsung 970 EVO Plus)",
            bytes_per_s=3_500e6,
            source="Samsung 970 EVO Plus product page: sequential read up to 3,500 MB/s "
                   "(https://semiconductor.samsung.com/consumer-storage/internal-ssd/970evoplus/)",
        ),
        BandwidthPreset(
            name="sata-ssd", description="SATA III SSD (Samsung 870 EVO)", bytes_per_s=560e6,
            source="Samsung 870 EVO product page: sequential read up to 560 MB/s, the SATA 6 Gb/s "
                   "ceiling (https://semiconductor.samsung.com/consumer-storage/internal-ssd/870evo/)",
        ),
        BandwidthPreset(
            name="hdd", description="7200 rpm enterprise HDD (Seagate Exos X18), outer tracks",
            bytes_per_s=270e6,
            source="Seagate Exos X18 data sheet: max sustained transfer rate OD 270 MB/s; inner "
                   "tracks are about half (https://www.seagate.com/products/enterprise-drives/exos-x/x18/)",
        ),
    )
})


@dataclass(frozen=True, kw_only=True, slots=True)
class HostCpuPreset:
    """The host CPU, for nodes that compute on ``"cpu"``.

    Attributes:
        name: lower-case key.
        description: what it is, in words.
        flops_per_s: peak FLOP/s, used for every dtype.
        mem_bytes_per_s: peak DRAM bandwidth, bytes per second.
        source: where the figures come from and the arithmetic.
    """

    name: str
    description: str
    flops_per_s: float
    mem_bytes_per_s: float
    source: str


#: One Sapphire Rapids socket, a common host of H100 servers (e.g. DGX H100 has two 8480C).
#: DRAM: 8 channels x DDR5-4800 x 8 bytes = 8 x 4.8e9 x 8 = 307.2 GB/s.
#: FLOP/s: 56 cores x 2.0 GHz base x 2 AVX-512 FMA units x 16 FP32 lanes x 2 FLOP per FMA
#: = 7.168e12 (FP32). The AMX BF16/INT8 units are not counted (conservative: PyTorch uses them only
#: through oneDNN for some ops), so the same figure serves every dtype. Dual-socket hosts have twice
#: the bandwidth, but one process rarely gets both sockets' memory.
HOST_CPU = HostCpuPreset(
    name="xeon-8480plus",
    description="Intel Xeon Platinum 8480+ (Sapphire Rapids), one socket",
    flops_per_s=56 * 2.0e9 * 2 * 16 * 2,
    mem_bytes_per_s=8 * 4.8e9 * 8,
    source="Intel ARK, Intel Xeon Platinum 8480+ Processor: 56 cores, 2.00 GHz base, 8 channels "
           "DDR5-4800 (https://ark.intel.com); AVX-512 with 2 FMA units per core (Intel 64 and "
           "IA-32 Architectures Optimization Reference Manual)",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class AcceleratorPreset:
    """Published peak figures of one accelerator model.

    Attributes:
        name: lower-case key, e.g. ``"h100-sxm"``.
        description: the product, in words.
        memory_bytes: device memory (datasheet GB read as GiB, see the module docstring).
        mem_bytes_per_s: peak device-memory bandwidth, bytes per second.
        flops_per_s: dtype name (:data:`FLOPS_DTYPES`) -> dense peak FLOP/s (OP/s for int8);
            ``"float32"`` is always present; a dtype without tensor-core support is absent.
        nvlink_bytes_per_s: bandwidth between two GPUs of the preset's usual NVLink / Infinity
            Fabric baseboard, per direction (with NVSwitch: the whole per-GPU NVLink bandwidth);
            0 when the product has no such board.
        nvlink_bridge_bytes_per_s: bandwidth of the optional NVLink bridge that joins two PCIe
            cards, per direction; 0 when there is none. Only used when the user says the cards
            are bridged (``interconnect="nvlink"`` or a ``links`` entry ``"nvlink"``).
        host_link: the card's own host interface, a :data:`HOST_LINKS` key.
        source: datasheet title and URL.
        aliases: other spellings accepted by :func:`lookup_accelerator` (compared after
            lower-casing and dropping everything but letters and digits).
    """

    name: str
    description: str
    memory_bytes: int
    mem_bytes_per_s: float
    flops_per_s: Mapping[str, float]
    nvlink_bytes_per_s: float = 0.0
    nvlink_bridge_bytes_per_s: float = 0.0
    host_link: str
    source: str
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "flops_per_s", MappingProxyType(dict(self.flops_per_s)))
        unknown = set(self.flops_per_s) - set(FLOPS_DTYPES)
        assert not unknown, f"{self.name}: unknown dtypes {sorted(unknown)}"
        assert "float32" in self.flops_per_s, f"{self.name}: no float32 figure"
        assert self.host_link in HOST_LINKS, f"{self.name}: unknown host link {self.host_link!r}"
        assert self.memory_bytes > 0 and self.mem_bytes_per_s > 0


def _dense(sparse_tflops: float) -> float:
    """FLOP/s from a datasheet figure given with 2:4 sparsity (TFLOPS): half of it."""
    return sparse_tflops * _TERA / 2


_H100_SOURCE = (
    "NVIDIA H100 Tensor Core GPU Datasheet "
    "(https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet)"
)
_A100_SOURCE = (
    "NVIDIA A100 Tensor Core GPU Datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/"
    "Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf)"
)
# A100 figures are dense in the datasheet's first column (312 | 624* TFLOPS).
_A100_FLOPS = {"float32": 19.5 * _TERA, "bfloat16": 312 * _TERA, "float16": 312 * _TERA, "int8": 624 * _TERA}
# H100 SXM5 / H200 SXM: FP32 67 TFLOPS; BF16/FP16 1,979*; FP8 3,958*; INT8 3,958* TOPS.
_H100_SXM_FLOPS = {
    "float32": 67 * _TERA, "bfloat16": _dense(1979), "float16": _dense(1979),
    "float8_e4m3fn": _dense(3958), "int8": _dense(3958),
}

ACCELERATORS: Mapping[str, AcceleratorPreset] = MappingProxyType({
    p.name: p
    for p in (
        AcceleratorPreset(
            name="h100-sxm", description="NVIDIA H100 SXM5 80GB",
            memory_bytes=80 * _GIB, mem_bytes_per_s=3350 * _GIGA, flops_per_s=_H100_SXM_FLOPS,
            # NVLink 900 GB/s bidirectional; NVSwitch gives every pair the full 450 GB/s each way.
            nvlink_bytes_per_s=450 * _GIGA, host_link="pcie5", source=_H100_SOURCE,
            aliases=("h100sxm5", "h100sxm580gb", "h10080gbhbm3", "h100sxm80gb"),
        ),
        AcceleratorPreset(
            name="h100-pcie", description="NVIDIA H100 PCIe 80GB",
            memory_bytes=80 * _GIB, mem_bytes_per_s=2000 * _GIGA,
            # FP32 51 TFLOPS; BF16/FP16 1,513*; FP8 3,026*; INT8 3,026* TOPS.
            flops_per_s={
                "float32": 51 * _TERA, "bfloat16": _dense(1513), "float16": _dense(1513),
                "float8_e4m3fn": _dense(3026), "int8": _dense(3026),
            },
            # NVLink bridge for two cards: 600 GB/s bidirectional.
            nvlink_bridge_bytes_per_s=300 * _GIGA, host_link="pcie5",
            source=_H100_SOURCE + " (2022 edition, H100 PCIe column) and NVIDIA H100 PCIe Product "
                   "Brief PB-11133-001 (https://www.nvidia.com/content/dam/en-zz/Solutions/gtcs22/"
                   "data-center/h100/PB-11133-001_v01.pdf)",
            aliases=("h100pcie80gb", "h10080gbpcie"),
        ),
        AcceleratorPreset(
            name="h200", description="NVIDIA H200 SXM 141GB",
            memory_bytes=141 * _GIB, mem_bytes_per_s=4800 * _GIGA, flops_per_s=_H100_SXM_FLOPS,
            nvlink_bytes_per_s=450 * _GIGA, host_link="pcie5",
            source="NVIDIA H200 Tensor Core GPU, specifications (H200 SXM column) "
                   "(https://www.nvidia.com/en-us/data-center/h200/)",
            aliases=("h200sxm", "h200sxm5", "h200141gb", "h200sxm141gb"),
        ),
        AcceleratorPreset(
            name="a100-80gb", description="NVIDIA A100 SXM4 80GB",
            memory_bytes=80 * _GIB, mem_bytes_per_s=2039 * _GIGA, flops_per_s=_A100_FLOPS,
            # NVLink 600 GB/s bidirectional; NVSwitch on HGX A100 gives every pair 300 GB/s each way.
            nvlink_bytes_per_s=300 * _GIGA, host_link="pcie4", source=_A100_SOURCE,
            aliases=("a100sxm80gb", "a100sxm480gb", "a10080gbsxm", "a10080gbsxm4"),
        ),
        AcceleratorPreset(
            name="a100-40gb", description="NVIDIA A100 SXM4 40GB",
            memory_bytes=40 * _GIB, mem_bytes_per_s=1555 * _GIGA, flops_per_s=_A100_FLOPS,
            nvlink_bytes_per_s=300 * _GIGA, host_link="pcie4", source=_A100_SOURCE,
            aliases=("a100sxm40gb", "a100sxm440gb", "a10040gbsxm", "a10040gbsxm4"),
        ),
        AcceleratorPreset(
            name="a100-80gb-pcie", description="NVIDIA A100 PCIe 80GB",
            memory_bytes=80 * _GIB, mem_bytes_per_s=1935 * _GIGA, flops_per_s=_A100_FLOPS,
            # NVLink bridge for two cards: 600 GB/s bidirectional.
            nvlink_bridge_bytes_per_s=300 * _GIGA, host_link="pcie4", source=_A100_SOURCE,
            aliases=("a100pcie80gb", "a10080gbpcie4"),
        ),
        AcceleratorPreset(
            name="l40s", description="NVIDIA L40S 48GB",
            memory_bytes=48 * _GIB, mem_bytes_per_s=864 * _GIGA,
            # FP32 91.6 TFLOPS; BF16/FP16 362.05 | 733*; FP8 733 | 1,466*; INT8 733 | 1,466* TOPS
            # (as printed: 733 is not exactly 2 x 362.05, the datasheet rounds differently).
            flops_per_s={
                "float32": 91.6 * _TERA, "bfloat16": 362.05 * _TERA, "float16": 362.05 * _TERA,
                "float8_e4m3fn": 733 * _TERA, "int8": 733 * _TERA,
            },
            host_link="pcie4",
            source="NVIDIA L40S Datasheet (https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413)",
        ),
        AcceleratorPreset(
            name="l4", description="NVIDIA L4 24GB",
            memory_bytes=24 * _GIB, mem_bytes_per_s=300 * _GIGA,
            # FP32 30.3 TFLOPS; BF16/FP16 242*; FP8 485*; INT8 485* TOPS.
            flops_per_s={
                "float32": 30.3 * _TERA, "bfloat16": _dense(242), "float16": _dense(242),
                "float8_e4m3fn": _dense(485), "int8": _dense(485),
            },
            host_link="pcie4",
            source="NVIDIA L4 Tensor Core GPU Datasheet "
                   "(https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet)",
        ),
        AcceleratorPreset(
            name="a10", description="NVIDIA A10 24GB",
            memory_bytes=24 * _GIB, mem_bytes_per_s=600 * _GIGA,
            # FP32 31.2 TFLOPS; BF16/FP16 125 | 250*; INT8 250 | 500* TOPS. No FP8.
            # (AWS's A10G is a different part with lower tensor throughput: not this preset.)
            flops_per_s={"float32": 31.2 * _TERA, "bfloat16": 125 * _TERA, "float16": 125 * _TERA, "int8": 250 * _TERA},
            host_link="pcie4",
            source="NVIDIA A10 Tensor Core GPU Datasheet (https://www.nvidia.com/content/dam/en-zz/"
                   "Solutions/Data-Center/a10/pdf/datasheet-new/nvidia-a10-datasheet.pdf)",
        ),
        AcceleratorPreset(
            name="rtx-4090", description="NVIDIA GeForce RTX 4090 24GB",
            memory_bytes=24 * _GIB, mem_bytes_per_s=1008 * _GIGA,
            # FP32 82.6 TFLOPS; FP16/BF16 tensor with FP32 accumulate 165.2 | 330.4*;
            # FP8 with FP32 accumulate 330.3 | 660.6*; INT8 660.6 | 1321.2* TOPS.
            flops_per_s={
                "float32": 82.6 * _TERA, "bfloat16": 165.2 * _TERA, "float16": 165.2 * _TERA,
                "float8_e4m3fn": 330.3 * _TERA, "int8": 660.6 * _TERA,
            },
            host_link="pcie4",
            source="NVIDIA Ada GPU Architecture whitepaper, Appendix A, GeForce RTX 4090 "
                   "(https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf)",
            aliases=("4090", "rtx409024gb"),
        ),
        AcceleratorPreset(
            name="rtx-3090", description="NVIDIA GeForce RTX 3090 24GB",
            memory_bytes=24 * _GIB, mem_bytes_per_s=936 * _GIGA,
            # FP32 35.6 TFLOPS; FP16/BF16 tensor with FP32 accumulate 71 | 142*; INT8 284 | 568* TOPS.
            flops_per_s={"float32": 35.6 * _TERA, "bfloat16": 71 * _TERA, "float16": 71 * _TERA, "int8": 284 * _TERA},
            # NVLink bridge: 112.5 GB/s bidirectional.
            nvlink_bridge_bytes_per_s=56.25 * _GIGA, host_link="pcie4",
            source="NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A, GeForce RTX 3090 "
                   "(https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf)",
            aliases=("3090", "rtx309024gb"),
        ),
        AcceleratorPreset(
            name="v100", description="NVIDIA Tesla V100 SXM2 32GB",
            memory_bytes=32 * _GIB, mem_bytes_per_s=900 * _GIGA,
            # FP32 15.7 TFLOPS; Tensor (FP16) 125 TFLOPS, dense (Volta has no sparsity). No BF16
            # or INT8 tensor cores.
            flops_per_s={"float32": 15.7 * _TERA, "float16": 125 * _TERA},
            # NVLink 300 GB/s bidirectional = 6 links x 25 GB/s each way. The usual V100 board
            # (DGX-1 / HGX-1 hybrid cube-mesh, AWS p3.16xlarge) joins a pair by 1 or 2 links, some
            # pairs by none: one link (25 GB/s) is assumed; declare better pairs with ``links``.
            nvlink_bytes_per_s=25 * _GIGA, host_link="pcie3",
            source="NVIDIA Tesla V100 GPU Accelerator Datasheet (https://images.nvidia.com/content/"
                   "technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf)",
            aliases=("v100sxm2", "v100sxm232gb", "v10032gb", "v100sxm232"),
        ),
        AcceleratorPreset(
            name="mi300x", description="AMD Instinct MI300X 192GB",
            memory_bytes=192 * _GIB, mem_bytes_per_s=5300 * _GIGA,
            # FP32 matrix 163.4 TFLOPS; BF16/FP16 1307.4 | 2614.9*; FP8 2614.9 | 5229.8*;
            # INT8 2614.9 | 5229.8* TOPS.
            flops_per_s={
                "float32": 163.4 * _TERA, "bfloat16": 1307.4 * _TERA, "float16": 1307.4 * _TERA,
                "float8_e4m3fn": 2614.9 * _TERA, "int8": 2614.9 * _TERA,
            },
            # 7 Infinity Fabric links of 128 GB/s (bidirectional) per GPU; the 8-GPU platform is a
            # full mesh, so a pair shares one link: 64 GB/s each way.
            nvlink_bytes_per_s=64 * _GIGA, host_link="pcie5",
            source="AMD Instinct MI300X Accelerator Data Sheet (https://www.amd.com/content/dam/amd/"
                   "en/documents/instinct-tech-docs/data-sheets/amd-instinct-mi300x-data-sheet.pdf)",
            aliases=("mi300x192gb",),
        ),
    )
})

#: Preset used for an accelerator with no declared type that cannot be identified (a note says so).
DEFAULT_ACCELERATOR = "a100-80gb"
#: Host link used when there is no accelerator to take it from.
DEFAULT_HOST_LINK = "pcie4"
#: Disk used for ``"disk"`` when ``disk_read`` is not given (a note says so).
DEFAULT_DISK = "nvme-gen4"

#: Seconds per transfer over NVLink / Infinity Fabric, and over PCIe. ASSUMPTIONS, not datasheet
#: figures: the order of magnitude of one small cudaMemcpyPeer / NCCL send-recv (a few
#: microseconds of launch and synchronisation, more through the host). Measure a machine with CUDA
#: samples' ``p2pBandwidthLatencyTest`` or nccl-tests and pass the result instead.
NVLINK_LATENCY_S = 5e-6
PCIE_LATENCY_S = 10e-6

_VENDOR_WORDS = ("nvidia", "amd", "tesla", "geforce", "instinct", "radeon")


def _compact(name: str) -> str:
    """``"NVIDIA H100-SXM"`` -> ``"h100sxm"``: lower case, letters and digits only, vendor words off."""
    text = re.sub(r"[^a-z0-9]", "", name.lower())
    changed = True
    while changed:
        changed = False
        for word in _VENDOR_WORDS:
            if text.startswith(word) and len(text) > len(word):
                text, changed = text[len(word):], True
    return text


_SPELLINGS: Mapping[str, str] = MappingProxyType({
    spelling: preset.name
    for preset in ACCELERATORS.values()
    for spelling in (_compact(preset.name), *preset.aliases)
})


def _preset_names() -> str:
    return ", ".join(sorted(ACCELERATORS))


def lookup_accelerator(name: str, *, what: str = "device type") -> AcceleratorPreset:
    """The accelerator preset called ``name``, in any common spelling.

    ``"h100-sxm"``, ``"H100-SXM"``, ``"h100_sxm"``, ``"NVIDIA H100 SXM5"`` and ``"h100sxm"`` all name
    the same preset; ambiguous short names (``"h100"``, ``"a100"``) are refused.

    Raises:
        InvalidSpecError: unknown name; the one-line message lists the valid names and suggests the
            closest one (difflib).
    """
    if not isinstance(name, str):
        raise InvalidSpecError(f"{what}={name!r} is not a name; valid types: {_preset_names()}")
    key = _compact(name)
    if key in _SPELLINGS:
        return ACCELERATORS[_SPELLINGS[key]]
    close = difflib.get_close_matches(key, list(_SPELLINGS), n=1, cutoff=0.6)
    hint = f"did you mean {_SPELLINGS[close[0]]!r}? " if close else ""
    raise InvalidSpecError(f"unknown accelerator {name!r} ({what}); {hint}valid types: {_preset_names()}")


# ``torch.cuda.get_device_name`` strings -> preset, first match wins. Names as the drivers report
# them, e.g. "NVIDIA H100 80GB HBM3" (SXM5), "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe",
# "Tesla V100-SXM2-32GB", "NVIDIA GeForce RTX 4090", "AMD Instinct MI300X". Variants without a
# preset of their own (H100 NVL, H200 NVL, A100 PCIe 40GB, V100 16GB, RTX 4090 D, A10G, L40)
# match nothing rather than a near miss.
_DEVICE_NAME_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), preset)
    for pattern, preset in (
        (r"\bh200\b(?!.*\bnvl\b)", "h200"),
        (r"\bh100\b.*\bpcie\b", "h100-pcie"),
        (r"\bh100\b.*\b(sxm5?|hbm3)\b", "h100-sxm"),
        (r"\ba100\b.*\bsxm4?\b.*\b80\s*gb\b", "a100-80gb"),
        (r"\ba100\b.*\bsxm4?\b.*\b40\s*gb\b", "a100-40gb"),
        (r"\ba100\b.*\b80\s*gb\b.*\bpcie\b", "a100-80gb-pcie"),
        (r"\bl40s\b", "l40s"),
        (r"\bl4\b", "l4"),
        (r"\ba10\b", "a10"),
        (r"\brtx 4090$", "rtx-4090"),
        (r"\brtx 3090$", "rtx-3090"),
        (r"\bv100\b.*\bsxm2\b.*\b32\s*gb\b", "v100"),
        (r"\bmi300x\b", "mi300x"),
    )
)


def preset_for_device_name(device_name: str) -> str | None:
    """The preset for a driver-reported device name (``torch.cuda.get_device_name``), or None.

    >>> preset_for_device_name("NVIDIA H100 80GB HBM3")
    'h100-sxm'
    >>> preset_for_device_name("NVIDIA A10G") is None
    True
    """
    text = device_name.strip().replace("-", " ").replace("_", " ")
    for pattern, preset in _DEVICE_NAME_PATTERNS:
        if pattern.search(text):
            return preset
    return None


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------

_RATE = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*"
    r"(?P<prefix>[kKmMgGtTpP]?)(?P<binary>i?)(?P<unit>[bB])\s*(?i:/\s*s(?:ec)?|ps)$"
)
_DECIMAL = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}
_BINARY = {"k": 2.0**10, "m": 2.0**20, "g": 2.0**30, "t": 2.0**40, "p": 2.0**50}


def _bandwidth_preset(text: str) -> BandwidthPreset | None:
    key = _compact(text)
    for preset in (*HOST_LINKS.values(), *DISKS.values()):
        if _compact(preset.name) == key:
            return preset
    return None


def _positive(value: float, text: object, what: str, example: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise InvalidSpecError(f"{what}={text!r} must be a finite number > 0, e.g. {example!r}")
    return float(value)


def parse_bandwidth(value: float | str, *, what: str = "bandwidth") -> float:
    """Bytes per second from a number (bytes/s), a rate string or a preset name.

    Accepted strings: ``"900GB/s"`` (9e11), ``"64GiB/s"`` (64·2³⁰), ``"3.35TB/s"`` (3.35e12),
    ``"25 GB/s"``, ``"25GBps"``, bits with a capital prefix and lower-case b (``"100Gb/s"`` =
    12.5e9), a plain number string (``"9e11"``), a host link (``"pcie4"``) or a disk
    (``"nvme-gen4"``) from :data:`HOST_LINKS` / :data:`DISKS`. All-lower-case bit/byte spellings
    such as ``"gb/s"`` are refused as ambiguous.

    Raises:
        InvalidSpecError: not a rate, not > 0, or ambiguous; one line naming the value.
    """
    example = "900GB/s"
    if isinstance(value, bool):
        raise InvalidSpecError(f"{what}={value!r} is not a bandwidth; expected bytes/s or e.g. {example!r}")
    if isinstance(value, (int, float)):
        return _positive(float(value), value, what, example)
    if not isinstance(value, str):
        raise InvalidSpecError(f"{what}={value!r} is not a bandwidth; expected bytes/s or e.g. {example!r}")
    text = value.strip()
    preset = _bandwidth_preset(text)
    if preset is not None:
        return preset.bytes_per_s
    try:
        return _positive(float(text), value, what, example)
    except ValueError:
        pass
    match = _RATE.match(text)
    if match is None:
        names = ", ".join([*HOST_LINKS, *DISKS])
        raise InvalidSpecError(
            f"{what}={value!r} is not a bandwidth; expected bytes per second such as '900GB/s', "
            f"'64GiB/s', '3.35TB/s', or one of {names}"
        )
    prefix, binary, unit = match["prefix"], match["binary"], match["unit"]
    if unit == "b" and prefix in ("m", "g", "t", "p"):
        raise InvalidSpecError(
            f"{what}={value!r} is ambiguous; write {prefix.upper()}B/s for bytes or {prefix.upper()}b/s for bits"
        )
    if binary and not prefix:
        raise InvalidSpecError(f"{what}={value!r} is not a bandwidth; a binary unit needs a prefix, e.g. '64GiB/s'")
    scale = _BINARY[prefix.lower()] if binary else _DECIMAL[prefix.lower()]
    rate = float(match["number"]) * scale / (8 if unit == "b" else 1)
    return _positive(rate, value, what, example)


_FLOPS = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*(?P<prefix>[kKMGTP]?)\s*(?:flop|op)(?:s|/s)$",
    re.IGNORECASE,
)


def parse_flops(value: float | str, *, what: str = "flops_per_s") -> float:
    """FLOP per second from a number or a string such as ``"989TFLOPS"`` (9.89e14),
    ``"1.979 PFLOPS"``, ``"500GFLOP/s"`` or ``"624TOPS"`` (integer ops, for int8).

    Raises:
        InvalidSpecError: not a rate or not > 0.
    """
    example = "989TFLOPS"
    if isinstance(value, bool):
        raise InvalidSpecError(f"{what}={value!r} is not a FLOP rate; expected e.g. {example!r}")
    if isinstance(value, (int, float)):
        return _positive(float(value), value, what, example)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _positive(float(text), value, what, example)
        except ValueError:
            pass
        match = _FLOPS.match(text)
        if match is not None:
            rate = float(match["number"]) * _DECIMAL[match["prefix"].lower()]
            return _positive(rate, value, what, example)
    raise InvalidSpecError(
        f"{what}={value!r} is not a FLOP rate; expected FLOP per second such as '989TFLOPS' or '67e12'"
    )


def _split_assignment(item: str, *, what: str, example: str) -> tuple[str, str]:
    if not isinstance(item, str) or item.count("=") != 1:
        raise InvalidSpecError(f"{what} {item!r} is not KEY=VALUE; expected e.g. {example!r}")
    left, right = (part.strip() for part in item.split("="))
    if not left or not right:
        raise InvalidSpecError(f"{what} {item!r} is not KEY=VALUE; expected e.g. {example!r}")
    return left, right


def parse_device_types(items: Sequence[str]) -> dict[int | str, str]:
    """``["0=h100-sxm", "1,2=a100-80gb"]`` -> ``{0: "h100-sxm", 1: "a100-80gb", 2: "a100-80gb"}``.

    Names are checked and returned in canonical form (see :func:`lookup_accelerator`).

    Raises:
        InvalidSpecError: malformed item, unknown device or type, a device given twice.
    """
    out: dict[int | str, str] = {}
    for item in items:
        left, right = _split_assignment(item, what="device type", example="0=h100-sxm")
        preset = lookup_accelerator(right, what=f"device type in {item!r}")
        for part in left.split(","):
            key = parse_device(part.strip())
            if key in out:
                raise InvalidSpecError(f"device {part.strip()!r} has two device types; give each device once")
            out[key] = preset.name
    return out


def parse_links(items: Sequence[str]) -> dict[tuple[int | str, int | str], float | str]:
    """``["0-1=nvlink", "0-2=25GB/s", "1-cpu=pcie4"]`` -> ``{(0, 1): "nvlink", (0, 2): 25e9, (1, "cpu"): 31.5e9}``.

    A value is ``"nvlink"`` or ``"pcie"`` (resolved by :func:`build_hardware` from the two devices'
    presets) or a bandwidth (:func:`parse_bandwidth`).

    Raises:
        InvalidSpecError: malformed item, unknown device, a device linked to itself, a pair given twice.
    """
    out: dict[tuple[int | str, int | str], float | str] = {}
    for item in items:
        left, right = _split_assignment(item, what="link", example="0-1=nvlink")
        ends = left.split("-")
        if len(ends) != 2:
            raise InvalidSpecError(f"link {item!r} does not name two devices; expected e.g. '0-1=nvlink'")
        a, b = (parse_device(end.strip()) for end in ends)
        if a == b:
            raise InvalidSpecError(f"link {item!r} joins device {a!r} to itself; name two different devices")
        if (a, b) in out or (b, a) in out:
            raise InvalidSpecError(f"link {left!r} is given twice; give each pair once")
        kind = right.lower()
        out[(a, b)] = kind if kind in ("nvlink", "pcie") else parse_bandwidth(right, what=f"link {left}")
    return out


def _dtype_name(dtype: str | torch.dtype) -> str:
    name = str(parse_dtype(dtype)).removeprefix("torch.")
    if name not in FLOPS_DTYPES:
        raise InvalidSpecError(f"dtype={dtype!r} has no FLOP/s figures; expected one of {', '.join(FLOPS_DTYPES)}")
    return name


# --------------------------------------------------------------------------------------------------
# Resolved hardware
# --------------------------------------------------------------------------------------------------


def _label(key: int | str) -> str:
    return f"GPU {key}" if isinstance(key, int) else repr(key)


def _fmt_rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / _GIGA:.4g} GB/s"


def _fmt_flops(flops_per_s: float) -> str:
    return f"{flops_per_s / _TERA:.4g} TFLOPS"


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceHardware:
    """One declared device with the figures the cost model uses.

    Attributes:
        key: accelerate's device key (``0``, ``"cpu"``, ``"disk"``, ``"mps"``, ``"xpu:0"``).
        preset: the preset the figures come from (an :data:`ACCELERATORS`, :data:`HOST_CPU` or
            :data:`DISKS` name; ``"custom"`` for a disk given as a number).
        flops_per_s: peak FLOP/s at the plan's dtype; 0 for ``"disk"`` (it never computes).
        mem_bytes_per_s: peak bandwidth of the device's own memory; 0 for ``"disk"``.
        memory_bytes: the preset's memory; None for ``"cpu"`` and ``"disk"`` (their caps come
            only from ``max_memory``).
        read_bytes_per_s: ``"cpu"``: the host link that carries offloaded weights from RAM to the
            execution device; ``"disk"``: the disk's sequential read (the caller combines it with
            the host link); accelerators: 0 (unused).
    """

    key: int | str
    preset: str
    flops_per_s: float
    mem_bytes_per_s: float
    memory_bytes: int | None
    read_bytes_per_s: float

    def __post_init__(self) -> None:
        for name in ("flops_per_s", "mem_bytes_per_s", "read_bytes_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidSpecError(f"device {self.key!r}: {name}={value!r} must be a finite number >= 0")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise InvalidSpecError(f"device {self.key!r}: memory_bytes={self.memory_bytes!r} must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class HardwareSpec:
    """Figures for every declared device and every pair of them.

    Attributes:
        devices: one entry per declared device, in the declared order.
        link_bytes_per_s: ``k x k`` bandwidth matrix over ``devices`` in that order, bytes per
            second per direction, symmetric. The diagonal is ``inf``: moving data within a device
            costs no transfer. Accelerator-cpu is the accelerator's host link; accelerator-disk
            is the slower of the disk read and that host link; cpu-disk is the disk read.
        link_latency_s: seconds added per transfer: :data:`NVLINK_LATENCY_S` when every pair of
            devices talks over NVLink, else :data:`PCIE_LATENCY_S`.
        host_link: the host link in words (a :data:`HOST_LINKS` name, or the rate given).
        host_link_bytes_per_s: its bandwidth, per direction.
        notes: assumptions made while resolving (defaults, fallbacks), one sentence each.
    """

    devices: tuple[DeviceHardware, ...]
    link_bytes_per_s: tuple[tuple[float, ...], ...]
    link_latency_s: float
    host_link: str
    host_link_bytes_per_s: float
    notes: tuple[str, ...] = ()
    _index: Mapping[int | str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        devices = tuple(self.devices)
        matrix = tuple(tuple(float(x) for x in row) for row in self.link_bytes_per_s)
        object.__setattr__(self, "devices", devices)
        object.__setattr__(self, "link_bytes_per_s", matrix)
        object.__setattr__(self, "notes", tuple(self.notes))
        keys = [d.key for d in devices]
        if not keys:
            raise InvalidSpecError("a hardware spec needs at least one device")
        if len(set(keys)) != len(keys):
            raise InvalidSpecError(f"devices {keys!r} repeat a key; give each device once")
        k = len(keys)
        if len(matrix) != k or any(len(row) != k for row in matrix):
            raise InvalidSpecError(f"link_bytes_per_s must be {k} x {k} for devices {keys!r}")
        for i in range(k):
            if matrix[i][i] != math.inf:
                raise InvalidSpecError(f"link_bytes_per_s[{i}][{i}] must be inf (a device to itself)")
            for j in range(i + 1, k):
                if matrix[i][j] != matrix[j][i]:
                    raise InvalidSpecError(
                        f"link between {keys[i]!r} and {keys[j]!r} is {matrix[i][j]!r} one way and "
                        f"{matrix[j][i]!r} the other; links are symmetric"
                    )
                if not (math.isfinite(matrix[i][j]) and matrix[i][j] > 0):
                    raise InvalidSpecError(
                        f"link between {keys[i]!r} and {keys[j]!r} is {matrix[i][j]!r}; it must be finite and > 0"
                    )
        if not (math.isfinite(self.link_latency_s) and self.link_latency_s >= 0):
            raise InvalidSpecError(f"link_latency_s={self.link_latency_s!r} must be a finite number >= 0")
        object.__setattr__(self, "_index", MappingProxyType({key: i for i, key in enumerate(keys)}))

    @property
    def keys(self) -> tuple[int | str, ...]:
        """Device keys in order."""
        return tuple(d.key for d in self.devices)

    def _position(self, key: int | str) -> int:
        device = parse_device(key)
        if device not in self._index:
            raise InvalidSpecError(
                f"device {key!r} is not in this hardware spec (devices: {', '.join(map(str, self.keys))})"
            )
        return self._index[device]

    def device(self, key: int | str) -> DeviceHardware:
        """The entry of device ``key`` (any spelling :func:`planner.spec.parse_device` accepts)."""
        return self.devices[self._position(key)]

    def link(self, a_key: int | str, b_key: int | str) -> float:
        """Bandwidth between two devices, bytes per second per direction (``inf`` when equal)."""
        return self.link_bytes_per_s[self._position(a_key)][self._position(b_key)]


_OVERRIDE_FIELDS = ("flops_per_s", "mem_bytes_per_s", "memory_bytes", "read_bytes_per_s")


def _parse_override(key: int | str, name: str, value: float | str) -> float | int:
    what = f"overrides[{key!r}][{name!r}]"
    if name == "flops_per_s":
        return parse_flops(value, what=what)
    if name == "memory_bytes":
        size = parse_size(value if not isinstance(value, float) else int(value), what=what)
        if size <= 0:
            raise InvalidSpecError(f"{what}={value!r} must be > 0")
        return size
    if name in ("mem_bytes_per_s", "read_bytes_per_s"):
        return parse_bandwidth(value, what=what)
    raise InvalidSpecError(
        f"overrides[{key!r}] has unknown field {name!r}; expected one of {', '.join(_OVERRIDE_FIELDS)}"
    )


def _check_declared(key: int | str, declared: Sequence[int | str], *, what: str, fix: str) -> int | str:
    device = parse_device(key)
    if device not in declared:
        raise InvalidSpecError(
            f"{what} names {_label(device)}, which is not a declared device "
            f"({', '.join(map(str, declared))}); {fix}"
        )
    return device


def _resolve_types(
    accelerators: Sequence[int | str],
    declared: Sequence[int | str],
    device_types: Mapping[int | str, str] | None,
    notes: list[str],
) -> tuple[dict[int | str, AcceleratorPreset], frozenset[int | str]]:
    """Preset per accelerator, and the accelerators that got :data:`DEFAULT_ACCELERATOR`."""
    given: dict[int | str, AcceleratorPreset] = {}
    for key, name in (device_types or {}).items():
        device = _check_declared(key, declared, what=f"device type {name!r}", fix="declare it or drop its device type")
        if device in ("cpu", "disk"):
            raise InvalidSpecError(
                f"device type {name!r} given for {device!r}; device types apply to accelerators only"
            )
        if device in given:
            raise InvalidSpecError(f"{_label(device)} has two device types; give each device once")
        given[device] = lookup_accelerator(name, what=f"device type for {_label(device)}")
    default = ACCELERATORS[DEFAULT_ACCELERATOR]
    out: dict[int | str, AcceleratorPreset] = {}
    undeclared: list[int | str] = []
    for key in accelerators:
        if key in given:
            out[key] = given[key]
            continue
        if isinstance(key, int) and torch.cuda.is_available() and key < torch.cuda.device_count():
            reported = torch.cuda.get_device_name(key)
            preset = preset_for_device_name(reported)
            if preset is not None:
                out[key] = ACCELERATORS[preset]
                continue
            notes.append(f"{_label(key)} reports itself as {reported!r}, which matches no preset")
        undeclared.append(key)
        out[key] = default
    if undeclared:
        notes.append(
            f"no device type for {', '.join(map(_label, undeclared))}: assumed {default.description} "
            f"figures and PCIe links; pass --device-type {','.join(map(str, undeclared))}=NAME"
        )
    return out, frozenset(undeclared)


def _flops_at(presets: Mapping[int | str, AcceleratorPreset], dtype: str, notes: list[str]) -> dict[int | str, float]:
    out: dict[int | str, float] = {}
    fell_back: dict[tuple[str, str], list[int | str]] = {}
    for key, preset in presets.items():
        if dtype in preset.flops_per_s:
            out[key] = preset.flops_per_s[dtype]
            continue
        used = next(d for d in _FALLBACK[dtype] if d in preset.flops_per_s)
        out[key] = preset.flops_per_s[used]
        fell_back.setdefault((preset.name, used), []).append(key)
    for (name, used), keys in fell_back.items():
        preset = ACCELERATORS[name]
        notes.append(
            f"{preset.description} has no {dtype} figure: {', '.join(map(_label, keys))} "
            f"use its {used} peak ({_fmt_flops(preset.flops_per_s[used])})"
        )
    return out


def _nvlink(pa: AcceleratorPreset, pb: AcceleratorPreset, *, declared: bool) -> float | None:
    """NVLink bandwidth between two presets: on one board automatically (same SXM/OAM product),
    or through whatever NVLink each has (board or bridge) when the user declared it."""
    if not declared:
        same_board = pa.name == pb.name and pa.nvlink_bytes_per_s > 0
        return pa.nvlink_bytes_per_s if same_board else None
    a = pa.nvlink_bytes_per_s or pa.nvlink_bridge_bytes_per_s
    b = pb.nvlink_bytes_per_s or pb.nvlink_bridge_bytes_per_s
    return min(a, b) if a > 0 and b > 0 else None


def _no_nvlink_error(key: int | str, preset: AcceleratorPreset, what: str) -> InvalidSpecError:
    with_link = sorted(p.name for p in ACCELERATORS.values() if p.nvlink_bytes_per_s or p.nvlink_bridge_bytes_per_s)
    return InvalidSpecError(
        f"{what} asks for NVLink but {_label(key)} ({preset.description}) has none "
        f"(NVLink presets: {', '.join(with_link)}); use 'pcie' or a bandwidth"
    )


def build_hardware(
    device_keys: Sequence[int | str],
    *,
    dtype: str | torch.dtype = "bfloat16",
    device_types: Mapping[int | str, str] | None = None,
    interconnect: str = "auto",
    links: Mapping[tuple[int | str, int | str], float | str] | None = None,
    host_link: str | float | None = None,
    disk_read: str | float | None = None,
    overrides: Mapping[int | str, Mapping[str, float | str]] | None = None,
) -> HardwareSpec:
    """Resolve the declared devices into peak figures and a link matrix.

    Args:
        device_keys: accelerate device keys in order (accelerators, then ``"cpu"``, then ``"disk"``),
            e.g. ``list(parse_max_memory(...))``.
        dtype: the plan's compute dtype; picks each accelerator's FLOP/s. A preset without a figure
            for it uses the 16-bit (fp8/int8) or FP32 (bf16 on V100) peak, with a note.
        device_types: accelerator key -> preset name (any spelling :func:`lookup_accelerator`
            takes). Accelerators left out are identified from ``torch.cuda.get_device_name`` when
            CUDA is available (the only probe of the machine), else get
            :data:`DEFAULT_ACCELERATOR` with a note.
        interconnect: between accelerators: ``"auto"`` (NVLink between two GPUs of the same
            NVLink-board product, e.g. two H100 SXM; PCIe through the host otherwise), ``"nvlink"``
            (every pair; cards with only a bridge are allowed when there are two) or ``"pcie"``.
            PCIe between two accelerators runs at the slower of their host links.
        links: ``(a, b)`` -> bandwidth (:func:`parse_bandwidth` forms) or ``"nvlink"`` / ``"pcie"``;
            wins over ``interconnect`` for that pair, in both directions.
        host_link: the platform's PCIe (``"pcie4"``, ``"25GB/s"``, bytes/s); each accelerator's host
            link is the slower of it and the card's own. Default: the cards' own links.
        disk_read: the offload disk's sequential read (``"nvme-gen4"``, ``"2GB/s"``, bytes/s).
            Default :data:`DEFAULT_DISK`, with a note, when ``"disk"`` is declared.
        overrides: device -> ``{"flops_per_s", "mem_bytes_per_s", "memory_bytes",
            "read_bytes_per_s"}`` -> value (``"989TFLOPS"``, ``"3.35TB/s"``, ``"80GiB"`` or
            numbers). A ``"cpu"`` / ``"disk"`` ``read_bytes_per_s`` override also sets their links.

    Returns:
        A :class:`HardwareSpec` over ``device_keys`` in order. The inputs are not modified.

    Raises:
        InvalidSpecError: a repeated or unknown device, a type or override for an undeclared
            device, an unknown preset name, NVLink asked of a device without it, a bad rate.
    """
    keys = [parse_device(k) for k in device_keys]
    if not keys:
        raise InvalidSpecError("no devices declared; declare at least one, e.g. [0, 'cpu']")
    if len(set(keys)) != len(keys):
        raise InvalidSpecError(f"device_keys {list(device_keys)!r} repeat a device; give each device once")
    if interconnect not in ("auto", "nvlink", "pcie"):
        raise InvalidSpecError(f"interconnect={interconnect!r} is not one of 'auto', 'nvlink', 'pcie'")
    dtype_name = _dtype_name(dtype)
    notes: list[str] = []
    accelerators = [k for k in keys if k not in ("cpu", "disk")]
    presets, assumed = _resolve_types(accelerators, keys, device_types, notes)
    flops = _flops_at(presets, dtype_name, notes)
    host_of, host_name, host_bytes_per_s = _host_links(presets, host_link)
    disk_name, disk_bytes_per_s = _disk(disk_read) if "disk" in keys else ("custom", 0.0)

    devices: dict[int | str, DeviceHardware] = {}
    for key in keys:
        if key == "cpu":
            devices[key] = DeviceHardware(
                key=key, preset=HOST_CPU.name, flops_per_s=HOST_CPU.flops_per_s,
                mem_bytes_per_s=HOST_CPU.mem_bytes_per_s, memory_bytes=None, read_bytes_per_s=host_bytes_per_s,
            )
        elif key == "disk":
            devices[key] = DeviceHardware(
                key=key, preset=disk_name, flops_per_s=0.0, mem_bytes_per_s=0.0, memory_bytes=None,
                read_bytes_per_s=disk_bytes_per_s,
            )
        else:
            devices[key] = DeviceHardware(
                key=key, preset=presets[key].name, flops_per_s=flops[key],
                mem_bytes_per_s=presets[key].mem_bytes_per_s, memory_bytes=presets[key].memory_bytes,
                read_bytes_per_s=0.0,
            )
    read_overridden = _apply_overrides(devices, overrides)
    if "disk" in keys and disk_read is None and "disk" not in read_overridden:
        notes.append(
            f"no disk_read given: assumed {DISKS[DEFAULT_DISK].description} ({_fmt_rate(disk_bytes_per_s)}); "
            "pass disk_read for the offload folder's drive"
        )

    # Links: accelerator pairs by interconnect, accelerator-cpu over its host link, anything-disk
    # no faster than the disk; then the declared links win.
    if interconnect == "nvlink" and len(accelerators) > 2:
        for key in accelerators:
            if not presets[key].nvlink_bytes_per_s:
                raise InvalidSpecError(
                    f"interconnect='nvlink' with {len(accelerators)} accelerators, but {_label(key)} "
                    f"({presets[key].description}) has at most a two-card NVLink bridge; declare the "
                    "bridged pairs with links, e.g. {(0, 1): 'nvlink'}"
                )
    cpu_read = devices["cpu"].read_bytes_per_s if "cpu" in read_overridden else None
    disk_bw = devices["disk"].read_bytes_per_s if "disk" in devices else 0.0
    pairs: dict[frozenset[int | str], tuple[float, bool]] = {}  # pair -> (bytes/s, over NVLink)
    bridgeable: set[frozenset[int | str]] = set()
    for i, a in enumerate(accelerators):
        for b in accelerators[i + 1:]:
            pair = frozenset((a, b))
            if interconnect == "nvlink":
                pairs[pair] = (_declared_nvlink(a, b, presets, what="interconnect='nvlink'"), True)
                continue
            # "auto" never assumes NVLink for an accelerator whose type was itself assumed.
            known = not {a, b} & assumed
            board = _nvlink(presets[a], presets[b], declared=False) if interconnect == "auto" and known else None
            if board is not None:
                pairs[pair] = (board, True)
                continue
            pairs[pair] = (min(host_of[a], host_of[b]), False)
            both_bridgeable = presets[a].nvlink_bridge_bytes_per_s and presets[b].nvlink_bridge_bytes_per_s
            if interconnect == "auto" and known and both_bridgeable:
                bridgeable.add(pair)
        if "cpu" in devices:
            pairs[frozenset((a, "cpu"))] = (cpu_read if cpu_read is not None else host_of[a], False)
        if "disk" in devices:
            pairs[frozenset((a, "disk"))] = (min(disk_bw, host_of[a]), False)
    if "cpu" in devices and "disk" in devices:
        pairs[frozenset(("cpu", "disk"))] = (disk_bw, False)
    for (a, b), value in _declared_links(links, keys):
        pairs[frozenset((a, b))] = _declared_link(a, b, value, presets, host_of)
        bridgeable.discard(frozenset((a, b)))

    if bridgeable:
        cards = [x for x in accelerators if any(x in pair for pair in bridgeable)]
        notes.append(
            f"{', '.join(map(_label, cards))} could be joined by two-card NVLink bridges; assumed PCIe "
            "between them (declare bridged pairs with links, e.g. {(0, 1): 'nvlink'})"
        )
    matrix = tuple(
        tuple(math.inf if a == b else pairs[frozenset((a, b))][0] for b in keys) for a in keys
    )
    all_nvlink = bool(pairs) and all(nvlink for _, nvlink in pairs.values())
    return HardwareSpec(
        devices=tuple(devices[key] for key in keys),
        link_bytes_per_s=matrix,
        link_latency_s=NVLINK_LATENCY_S if all_nvlink else PCIE_LATENCY_S,
        host_link=host_name,
        host_link_bytes_per_s=host_bytes_per_s,
        notes=tuple(notes),
    )


def _host_links(
    presets: Mapping[int | str, AcceleratorPreset], host_link: str | float | None
) -> tuple[dict[int | str, float], str, float]:
    """Each accelerator's host link in bytes/s (the slower of its card's and the platform's), and
    the host link of the execution device (the first accelerator, where accelerate streams
    offloaded weights) in words and bytes/s."""
    platform = None if host_link is None else parse_bandwidth(host_link, what="host_link")
    platform_name = ""
    if platform is not None:
        named = _bandwidth_preset(host_link) if isinstance(host_link, str) else None
        platform_name = named.name if named is not None else (
            host_link.strip() if isinstance(host_link, str) else _fmt_rate(platform))
    card = {key: HOST_LINKS[preset.host_link].bytes_per_s for key, preset in presets.items()}
    host_of = {key: bw if platform is None else min(bw, platform) for key, bw in card.items()}
    if presets:
        execution = next(iter(presets))
        slower_is_card = platform is None or card[execution] <= platform
        name = presets[execution].host_link if slower_is_card else platform_name
        return host_of, name, host_of[execution]
    if platform is not None:
        return host_of, platform_name, platform
    return host_of, DEFAULT_HOST_LINK, HOST_LINKS[DEFAULT_HOST_LINK].bytes_per_s


def _disk(disk_read: str | float | None) -> tuple[str, float]:
    """The disk preset name (``"custom"`` for a rate) and its read bandwidth; :data:`DEFAULT_DISK`
    when ``disk_read`` is None."""
    if disk_read is None:
        return DEFAULT_DISK, DISKS[DEFAULT_DISK].bytes_per_s
    named = _bandwidth_preset(disk_read) if isinstance(disk_read, str) else None
    return (named.name if named is not None else "custom"), parse_bandwidth(disk_read, what="disk_read")


def _apply_overrides(
    devices: dict[int | str, DeviceHardware], overrides: Mapping[int | str, Mapping[str, float | str]] | None
) -> set[int | str]:
    """Replace overridden fields in ``devices`` (a dict local to the caller); the devices whose
    ``read_bytes_per_s`` was overridden."""
    read_overridden: set[int | str] = set()
    for key, fields in (overrides or {}).items():
        device = _check_declared(key, list(devices), what="overrides", fix="override only declared devices")
        if not isinstance(fields, Mapping):
            raise InvalidSpecError(f"overrides[{key!r}]={fields!r} is not a mapping of field -> value")
        parsed = {name: _parse_override(key, name, value) for name, value in fields.items()}
        devices[device] = replace(devices[device], **parsed)
        if "read_bytes_per_s" in parsed:
            read_overridden.add(device)
    return read_overridden


def _declared_links(
    links: Mapping[tuple[int | str, int | str], float | str] | None, keys: Sequence[int | str]
) -> list[tuple[tuple[int | str, int | str], float | str]]:
    """``links`` with normalised, declared, distinct, non-repeated device pairs."""
    out: list[tuple[tuple[int | str, int | str], float | str]] = []
    seen: set[frozenset[int | str]] = set()
    for pair, value in (links or {}).items():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise InvalidSpecError(f"links key {pair!r} is not a pair of devices such as (0, 1)")
        a, b = (_check_declared(x, keys, what=f"link {pair!r}", fix="link only declared devices") for x in pair)
        if a == b:
            raise InvalidSpecError(f"link {pair!r} joins {_label(a)} to itself; name two different devices")
        if frozenset((a, b)) in seen:
            raise InvalidSpecError(f"link {a}-{b} is given twice; give each pair once")
        seen.add(frozenset((a, b)))
        out.append(((a, b), value))
    return out


def _declared_nvlink(a: int | str, b: int | str, presets: Mapping[int | str, AcceleratorPreset], *, what: str) -> float:
    bw = _nvlink(presets[a], presets[b], declared=True)
    if bw is None:
        bad = a if not (presets[a].nvlink_bytes_per_s or presets[a].nvlink_bridge_bytes_per_s) else b
        raise _no_nvlink_error(bad, presets[bad], what)
    return bw


def _declared_link(
    a: int | str,
    b: int | str,
    value: float | str,
    presets: Mapping[int | str, AcceleratorPreset],
    host_of: Mapping[int | str, float],
) -> tuple[float, bool]:
    """Bandwidth and NVLink-ness of one ``links`` entry."""
    what = f"link {a}-{b}"
    kind = value.strip().lower() if isinstance(value, str) else None
    if kind in ("nvlink", "pcie"):
        for x in (a, b):
            if x in ("cpu", "disk"):
                raise InvalidSpecError(
                    f"{what}={value!r}: {x!r} is not an accelerator; give a bandwidth such as '25GB/s'"
                )
        if kind == "nvlink":
            return _declared_nvlink(a, b, presets, what=what), True
        return min(host_of[a], host_of[b]), False
    return parse_bandwidth(value, what=what), False


def detect_max_memory(*, offload_folder: str | os.PathLike[str] | None = None) -> dict[int | str, int]:
    """Probe this machine for the memory a plan may use, as accelerate would.

    This is NOT pure: it calls ``accelerate.utils.get_max_memory()``, which creates a CUDA context
    on every visible GPU and reads its free memory (``torch.cuda.mem_get_info``) and the available
    RAM (``psutil.virtual_memory().available``) for ``"cpu"`` (accelerate reports ``"mps"``
    instead of ``"cpu"`` on Apple silicon). Nothing is modified.

    Args:
        offload_folder: where offloaded weights would go; adds ``"disk"`` = its free space
            (``shutil.disk_usage``). A folder that does not exist yet is measured at its nearest
            existing parent, where it would be created.

    Returns:
        Device key -> bytes, in accelerate's order (GPUs, then ``"mps"``/``"cpu"``, then ``"disk"``).
    """
    from accelerate.utils import get_max_memory

    memory: dict[int | str, int] = {key: int(value) for key, value in get_max_memory().items()}
    if offload_folder is not None:
        path = os.path.abspath(os.fspath(offload_folder))
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        memory["disk"] = shutil.disk_usage(path).free
    return memory
