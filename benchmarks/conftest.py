"""Benchmark-wide setup.

CI runs every benchmark once with ``--benchmark-disable`` so they never rot; ``smoke`` lets a benchmark whose
full size takes minutes (a naive baseline on a 1024x1024 image, say) run a small size then, keeping its code
path exercised without spending CI's time. Timings are only ever taken with benchmarking enabled.
"""

import numpy as np
import pytest
import torch


@pytest.fixture
def smoke(request) -> bool:
    """True when benchmarks are disabled (a single correctness pass, as in CI)."""
    return bool(request.config.getoption("benchmark_disable"))


@pytest.fixture(autouse=True)
def _seed_everything():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
