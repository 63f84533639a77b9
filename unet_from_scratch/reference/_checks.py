"""Input checks shared by the reference functions.

Each raises ValueError with one line that says what was expected and what came, so a wrong call fails at the
door instead of as a shape error deep inside a matmul.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float_array(x, name: str, ndim: int | None = None, layout: str | None = None) -> np.ndarray:
    """Return ``x`` unchanged if it is a float32/float64 ndarray of rank ``ndim``; else raise ValueError.

    ``layout`` (e.g. ``"(N, C, H, W)"``) is only used in the message.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        shape = f" {layout}" if layout else ""
        raise ValueError(f"{name} must have {ndim} dimensions{shape}, got shape {x.shape}")
    return x


def check_finite(x: np.ndarray, name: str) -> np.ndarray:
    """Raise ValueError if ``x`` holds NaN or infinity (they would poison every sum downstream)."""
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s)")
    return x


def check_int_array(x, name: str, ndim: int | None = None, layout: str | None = None) -> np.ndarray:
    """Return ``x`` if it is an integer (or bool) ndarray of rank ``ndim``; else raise ValueError."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise ValueError(f"{name} must be an integer array, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        shape = f" {layout}" if layout else ""
        raise ValueError(f"{name} must have {ndim} dimensions{shape}, got shape {x.shape}")
    return x


def check_same_dtype(**arrays: np.ndarray) -> None:
    """Raise ValueError unless every given array has the same dtype."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise ValueError(f"dtypes must match, got {listed}")
