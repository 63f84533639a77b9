"""Where the NumPy reference meets its oracles: torch autograd and finite differences.

Every parity test in the project goes through these few functions, so inputs, tolerances and error messages
are the same everywhere, and benchmarks import their torch baselines from the tests rather than restating them.

Tolerances (``TOLERANCES``) are per dtype and per kind, with ``atol`` measured relative to the largest
magnitude of the expected array: two correct implementations that sum the same terms in another order differ
by about ``eps(dtype) * sqrt(terms) * max|term|``, so an absolute floor that ignores the scale is either too
loose for small outputs or too tight for large ones.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# (kind, dtype) -> rtol, atol (atol relative to max|expected|, see above).
TOLERANCES = {
    # float32: eps = 1.2e-7; sums of up to ~10^4 terms in a different order than torch's.
    ("forward", np.dtype(np.float32)): dict(rtol=1e-4, atol=1e-5),
    # Gradients accumulate one more reduction (over the batch and spatial positions) than the forward.
    ("grad", np.dtype(np.float32)): dict(rtol=1e-3, atol=5e-5),
    # float64: eps = 2.2e-16; the same argument leaves ~1e-12 at these sizes.
    ("forward", np.dtype(np.float64)): dict(rtol=1e-9, atol=1e-11),
    ("grad", np.dtype(np.float64)): dict(rtol=1e-8, atol=1e-10),
}


def tolerance(dtype, kind: str = "forward") -> dict:
    """The ``rtol``/``atol`` pair for ``dtype`` and ``kind`` ("forward" or "grad")."""
    return dict(TOLERANCES[(kind, np.dtype(dtype))])


def assert_close(actual, expected, *, kind: str = "forward", dtype=None, name: str = "", rtol=None, atol=None):
    """Assert ``actual`` ≈ ``expected`` within the tolerance of ``dtype`` (default: ``actual``'s dtype).

    ``atol`` is scaled by ``max(1, max|expected|)``; explicit ``rtol``/``atol`` override the table.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
    tol = tolerance(dtype if dtype is not None else actual.dtype, kind)
    if rtol is not None:
        tol["rtol"] = rtol
    if atol is not None:
        tol["atol"] = atol
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(
        actual.astype(np.float64),
        expected.astype(np.float64),
        rtol=tol["rtol"],
        atol=tol["atol"] * scale,
        err_msg=f"{name} ({kind}, {actual.dtype})",
    )


def to_torch(a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    """A torch copy of ``a`` (same dtype), a leaf that records gradients if asked."""
    t = torch.from_numpy(np.array(a, copy=True))
    if requires_grad:
        t.requires_grad_(True)
    return t


def torch_forward_backward(
    fn: Callable[..., torch.Tensor],
    inputs: Sequence,
    dout: np.ndarray | None = None,
    wrt: Sequence[int] = (),
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run ``fn`` on torch copies of ``inputs`` and backpropagate.

    Arrays in ``inputs`` become tensors (those at positions ``wrt`` record gradients); anything else is passed
    through as is. The upstream gradient is ``dout`` (the output's shape) or 1 for a scalar output.
    Returns the output and the gradients with respect to ``inputs[i]`` for ``i`` in ``wrt``, as NumPy arrays.
    """
    args = [to_torch(a, requires_grad=i in wrt) if isinstance(a, np.ndarray) else a for i, a in enumerate(inputs)]
    out = fn(*args)
    grads: list[np.ndarray] = []
    if wrt:
        upstream = torch.ones_like(out) if dout is None else to_torch(dout)
        out.backward(upstream)
        grads = [args[i].grad.numpy() for i in wrt]
    return out.detach().numpy(), grads


def assert_matches_torch(
    ours: Callable[..., tuple[np.ndarray, Sequence[np.ndarray]]],
    theirs: Callable[..., torch.Tensor],
    inputs: Sequence,
    *,
    wrt: Sequence[int] = (),
    dout: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    forward_tol: dict | None = None,
    grad_tol: dict | None = None,
) -> None:
    """The parity check: the same inputs through our forward/backward and through torch autograd.

    ``ours(*inputs, dout)`` returns ``(out, grads)`` with one gradient per index in ``wrt`` (in that order);
    ``dout`` is None for a scalar output. ``theirs(*tensors)`` is the torch statement of the same function.
    """
    out, grads = ours(*inputs, dout)
    ref_out, ref_grads = torch_forward_backward(theirs, inputs, dout=dout, wrt=wrt)
    dtype = np.asarray(out).dtype
    assert_close(out, ref_out, kind="forward", dtype=dtype, name="output", **(forward_tol or {}))
    names = names or [f"grad[{i}]" for i in wrt]
    assert len(grads) == len(wrt), f"expected {len(wrt)} gradients, got {len(grads)}"
    for name, g, rg in zip(names, grads, ref_grads):
        assert_close(g, rg, kind="grad", dtype=dtype, name=name, **(grad_tol or {}))


def numerical_gradient(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout=None, eps: float = 1e-6):
    """Centred finite differences of ``sum(f(x) * dout)`` with respect to ``x`` (float64 in, float64 out).

    ``dout`` defaults to 1 (a scalar ``f``). Cost: two calls of ``f`` per element of ``x``; keep ``x`` small.
    """
    assert x.dtype == np.float64, "finite differences need float64 to be meaningful"
    x = x.copy()
    grad = np.zeros_like(x)
    upstream = 1.0 if dout is None else dout
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = saved + eps
        plus = np.sum(f(x) * upstream)
        x[idx] = saved - eps
        minus = np.sum(f(x) * upstream)
        x[idx] = saved
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def assert_matches_finite_differences(analytic, f, x, dout=None, eps: float = 1e-6, rtol=1e-5, atol=1e-7, name=""):
    """Assert an analytic gradient equals centred finite differences of ``f`` at ``x`` (float64).

    The default tolerances allow the O(eps²) truncation and O(ε_machine / eps) rounding of the difference.
    """
    numeric = numerical_gradient(f, x, dout, eps)
    assert_close(analytic, numeric, kind="grad", dtype=np.float64, name=f"{name} vs finite differences", rtol=rtol, atol=atol)


def float_arrays(shape, dtype=np.float64, bound: float = 4.0):
    """A hypothesis strategy: arrays of ``shape`` with finite values in [-bound, bound], exact in ``dtype``."""
    width = 32 if np.dtype(dtype) == np.float32 else 64
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


def varied_float_arrays(shape, dtype=np.float64, bound: float = 4.0):
    """Like ``float_arrays``, but every element is drawn on its own and all of them differ.

    ``hnp.arrays`` otherwise likes to fill an array with one repeated value: under the derandomized CI profile a
    third of the logits drawn for the loss tests had every value equal, where the softmax is uniform and a wrong
    gradient term can vanish unseen. Distinct values leave no pixel whose logits (or no query whose scores) are all
    equal. Ties, where they matter, are tested by hand.
    """
    width = 32 if np.dtype(dtype) == np.float32 else 64
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)
    return hnp.arrays(np.dtype(dtype), shape, elements=elements, fill=st.nothing(), unique=True)


float_dtypes = st.sampled_from([np.float32, np.float64])


def seeded_arrays(shape, dtype=np.float64, bound: float = 4.0):
    """A hypothesis strategy for arrays too large to draw element by element (conv feature maps).

    Hypothesis draws the seed (and so shrinks and replays failures); NumPy fills ``shape`` with uniform values in
    [-bound, bound]. Use ``float_arrays`` where the array is small enough for hypothesis to draw every element.
    """
    return st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).uniform(-bound, bound, size=shape).astype(dtype)
    )
