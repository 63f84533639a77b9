"""A seeded train/validation split of item indices."""

from __future__ import annotations

import numpy as np


def train_val_split(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split 0..n-1 into (train, val) index arrays (int64, each sorted), the same for the same ``seed``.

    The validation split holds round(n * val_fraction) items, at least one when ``val_fraction`` > 0 and n >= 2;
    the training split always keeps at least one.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    n_val = min(max(round(n * val_fraction), 1 if val_fraction > 0 else 0), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
