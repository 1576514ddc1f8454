"""Device properties for the cost model, as data: accelerator, host-link, disk and host-CPU presets
with their published sources, and the lookup of a preset by name or driver-reported device name.
:mod:`layerplan.planner.hardware.resolve` turns them into one ``HardwareSpec``.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


from layerplan.solver.errors import InvalidSpecError

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
    "HostCpuPreset",
    "lookup_accelerator",
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
