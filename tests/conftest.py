"""Test-wide setup: Triton's interpreter on CPU-only machines, the hypothesis profiles, one seed for everything."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# Triton reads TRITON_INTERPRET when a kernel is defined, i.e. when a test module imports it: set it here,
# before collection, so the kernels run on CPU tensors wherever there is no GPU (CI included).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# CI must never hang or flake on a lucky draw: a derandomized, bounded search. Locally hypothesis searches freely.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=30,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") == "true" else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

SEED = 0


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global seeds, so a failure reproduces."""
    np.random.seed(SEED)
    torch.manual_seed(SEED)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded NumPy generator for the test that asks for it."""
    return np.random.default_rng(SEED)
