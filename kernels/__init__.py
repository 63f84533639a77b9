"""Triton kernels, importable as ``unet_from_scratch.kernels``: the fused segmentation loss and flash attention.

This floor uses torch and triton only. Triton is Linux-only, so importing this package never requires it:
``HAS_TRITON`` says whether it is installed and ``triton_runs_on`` whether a kernel can take given tensors —
CUDA tensors, or CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before the kernels are
defined, as the tests do). Callers such as ``unet_from_scratch.nn`` fall back to plain torch otherwise.
"""

from __future__ import annotations

import importlib.util
import os

HAS_TRITON = importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton's CPU interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_runs_on(*tensors) -> bool:
    """Whether a Triton kernel can run on these torch tensors here and now."""
    if not HAS_TRITON or not tensors:
        return False
    devices = {t.device.type for t in tensors if t is not None}
    if devices == {"cuda"}:
        return True
    return devices == {"cpu"} and interpreting()
