"""Input checks shared by the reference functions (and by ``unet_from_scratch.data``), and the checking policy.

Every check raises ValueError with one line that says what was expected and what came, so a wrong call fails at
the door instead of as a shape error deep inside a matmul, or as a NaN.

The checking policy, one rule for the whole reference:

1. Shapes, dtypes and parameters are always checked. A parameter is anything that is not the data flowing
   through: sizes, strides, probabilities, coefficients, class counts (``check_int``, ``check_real``), and a
   layer's own weights and biases, which must also be finite (a NaN weight turns a whole output channel into
   NaN). Python ints and NumPy integers (``np.int64(8)``) are ints; ``True`` is not.
2. Data values (NaN, infinity) are checked wherever a bad value would not stay where it is: where it would be
   hidden inside a scalar (the losses, the metrics, the weight maps and class weights), stored for good
   (``batch_norm``'s running statistics), spread over a whole row through a sum (``softmax``, ``log_softmax``,
   ``scaled_dot_product_attention``), or make a choice undefined (the maximum of ``max_pool2d``, which rejects
   NaN and accepts infinities).
3. Data values are *not* checked in the layers that are sums or selections of their input, where a NaN or an
   infinity reaches exactly the outputs that read it, visibly, as in torch: ``conv2d``, ``conv_transpose2d``,
   ``center_crop``, ``crop_and_concat``, ``dropout`` and every backward's upstream gradient.
4. Empty inputs are refused where the result would be undefined (a mean over no pixel, a softmax over no class,
   attention over no key, statistics of an empty batch) and allowed where an empty output is the exact answer
   (an empty batch through a convolution).

Each module's docstring says which of its inputs rule 2 covers.
"""

from __future__ import annotations

import math

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)

# The most classes a metric or a class-weight count takes: every class id of a uint16 label map. The metrics' counts
# are 4 (N, C) int64 arrays, 2 MiB per image at the limit; checked before anything is allocated.
MAX_CLASSES = 2**16


def is_int(value) -> bool:
    """True for a Python int or a NumPy integer; False for bool (an ``int`` subclass) and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, minimum: int | None = 1, what: str | None = None) -> int:
    """``value`` as a Python int if it is an int or NumPy integer (not bool) >= ``minimum``; else ValueError.

    The message says "a positive integer" for ``minimum == 1``, "an integer >= m" otherwise (``what`` overrides).
    """
    if what is None:
        what = "a positive integer" if minimum == 1 else "an integer" if minimum is None else f"an integer >= {minimum}"
    if not is_int(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_num_classes(num_classes) -> int:
    """``num_classes`` as an int in [1, MAX_CLASSES]; else ValueError."""
    check_int(num_classes, "num_classes")
    if num_classes > MAX_CLASSES:
        raise ValueError(f"num_classes must be at most {MAX_CLASSES} (MAX_CLASSES), got {num_classes}")
    return int(num_classes)


def check_real(
    value,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> float:
    """``value`` as a Python float if it is a finite real number within the bounds; else ValueError.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones. Python and NumPy ints and
    floats (and 0-d NumPy arrays of them) are accepted; bool and str are not. Returning a Python float keeps a
    float32 array float32 when it is multiplied by the value.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # a Python int beyond float range, e.g. 10**400
        number = math.inf
    bounds = []
    if minimum is not None:
        bounds.append(f"≥ {minimum}")
    if above is not None:
        bounds.append(f"> {above}")
    if maximum is not None:
        bounds.append(f"≤ {maximum}")
    if below is not None:
        bounds.append(f"< {below}")
    ok = math.isfinite(number)
    ok = ok and (minimum is None or number >= minimum) and (maximum is None or number <= maximum)
    ok = ok and (above is None or number > above) and (below is None or number < below)
    if not ok:
        bound = f" and {' and '.join(bounds)}" if bounds else ""
        raise ValueError(f"{name} must be finite{bound}, got {value!r}")
    return number


def check_range(value, name: str, minimum: float | None = None, maximum: float | None = None) -> tuple[float, float]:
    """A (low, high) pair of finite numbers with ``minimum <= low <= high <= maximum`` -> two Python floats."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    low = check_real(value[0], f"{name}[0]", minimum, maximum)
    high = check_real(value[1], f"{name}[1]", minimum, maximum)
    if low > high:
        raise ValueError(f"{name} must be a pair (low, high) with low <= high, got {value!r}")
    return low, high


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


def check_cache(cache, layer: str, layers: tuple[str, ...] | None = None) -> dict:
    """Raise ValueError unless ``cache`` is a cache that the forward ``layer`` (or one of ``layers``) returned.

    Every reference layer returns ``(y, cache)`` and its backward takes ``(dy, cache)``; a cache is a dict that
    names the layer that made it, so a cache handed to the wrong backward fails here, in one line.
    """
    made_by = cache.get("layer") if isinstance(cache, dict) else None
    if made_by not in (layers or (layer,)):
        got = f"the cache of {made_by}" if made_by else type(cache).__name__
        raise ValueError(f"cache must be the one {layer} returned, got {got}")
    return cache


def check_same_dtype(**arrays: np.ndarray) -> None:
    """Raise ValueError unless every given array has the same dtype."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise ValueError(f"dtypes must match, got {listed}")
