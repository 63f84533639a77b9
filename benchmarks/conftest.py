"""Benchmark-wide setup.

CI runs every benchmark once with ``--benchmark-disable`` so they never rot; ``smoke`` lets a benchmark whose
full size takes minutes (a naive baseline on a 1024x1024 image, say) run a small size then, keeping its code
path exercised without spending CI's time. Timings are only ever taken with benchmarking enabled.
"""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info


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


@pytest.fixture(scope="module")
def same_threads_as_numpy():
    """torch on as many threads as NumPy's BLAS (threadpoolctl's report; 2 if it sees no BLAS), restored after: a
    NumPy/torch ratio compares the two on equal cores."""
    counts = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    saved = torch.get_num_threads()
    torch.set_num_threads(max(counts, default=2))
    yield
    torch.set_num_threads(saved)
