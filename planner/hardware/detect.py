"""The only code that probes this machine: free memory per device (accelerate's ``get_max_memory``)
and the names the GPU driver reports. Everything else in :mod:`layerplan.planner.hardware` is pure."""

from __future__ import annotations

import os
import shutil

__all__ = ["detect_device_names", "detect_max_memory"]


def detect_device_names() -> dict[int, str]:
    """GPU index -> the name the driver reports (``torch.cuda.get_device_name``); empty without CUDA.

    Not pure: it initialises CUDA when it is available. :func:`layerplan.planner.hardware.build_hardware`
    maps these names to presets (``preset_for_device_name``) for GPUs given no device type.
    """
    import torch  # here: importing this package must not import torch

    if not torch.cuda.is_available():
        return {}
    return {index: torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())}


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
