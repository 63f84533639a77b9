"""The size arithmetic of a U-Net, torch-free: which input sides fit, what comes out, how much context is consumed.

One side length at a time (heights and widths follow the same rules). With ``padding="valid"`` every unpadded
3x3 convolution takes 2 pixels, so each pair of them takes 4, and every 2x2 max-pool must see an even side (an odd
one would drop a row and the skip would no longer be centred). Walking a side ``n`` through the network:

    contracting path, ``depth`` times:   n -> n - 4, must be even and >= 2, then n -> n / 2
    bottleneck:                          n -> n - 4
    expanding path, ``depth`` times:     n -> 2 n - 4       (the up-convolution doubles, two convolutions shrink)
    ``extra_convs`` 3x3 convolutions:    n -> n - 2 each    (the attention U-Net has 2 before its head)

This admits n = 2^depth · b + 4 · (2^(depth+1) - 1) for a bottleneck output b large enough that the expanding path
stays positive; for the paper's depth 4 that is n = 16 b + 124 with b >= 4 (188, 204, ..., 572, ...), and the
output is n - 184. With ``padding="same"`` (zero padding 1) the convolutions keep the side: any n divisible by
2^depth works and the output has the input's side.

The output of a valid network is the centre of its input, ``context_margin`` pixels in from every side (92 for the
paper's network; 0 for "same"): the context overlap-tile inference supplies by mirroring. Valid sides recur every
2^depth pixels (``grid_step``), and so does the network's max-pool grid: two windows of one image give the same
output where they overlap only if their origins differ by a multiple of 2^depth.

Used by ``nn`` (a model's ``output_size``/``valid_input_size`` and its input check), ``inference`` (tiles) and the
training crops. Imports nothing, so any floor may use it.
"""

from __future__ import annotations

import numbers

PADDINGS = ("valid", "same")


def _check_int(value, name: str, minimum: int) -> int:
    """``value`` as an int if it is an integer (Python or NumPy, not bool) >= ``minimum``; else ValueError."""
    what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_architecture(depth: int, padding: str, extra_convs: int = 0) -> None:
    """ValueError unless ``depth`` >= 1 is an int, ``padding`` is "valid" or "same" and ``extra_convs`` >= 0."""
    _check_int(depth, "depth", 1)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    _check_int(extra_convs, "extra_convs", 0)


def trace(size: int, depth: int, padding: str, extra_convs: int = 0) -> int | None:
    """The output side for an input side ``size``, or None where some layer would not fit (no checks of the
    arguments: the inner loop of the functions below)."""
    per_conv = 2 if padding == "valid" else 0  # pixels one 3x3 convolution takes
    for _ in range(depth):  # contracting path: two convs, then a 2x2 max-pool that must not drop a row
        size -= 2 * per_conv
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= 2 * per_conv  # bottleneck
    for _ in range(depth):  # expanding path: the up-conv doubles, two convs shrink
        if size < 1:
            return None
        size = 2 * size - 2 * per_conv
    size -= extra_convs * per_conv  # further 3x3 convs before the output (the attention U-Net has them)
    return size if size >= 1 else None


def output_size(input_size: int, depth: int = 4, padding: str = "valid", extra_convs: int = 0) -> int:
    """Output side length of a U-Net for an input side length (572 -> 388 with the paper's defaults).

    ``extra_convs`` counts 3x3 convolutions after the expanding path (0 for ``UNet``). Raises ValueError naming
    the nearest valid sizes if ``input_size`` is not one.
    """
    check_architecture(depth, padding, extra_convs)
    size = trace(input_size, depth, padding, extra_convs)
    if size is None:
        raise ValueError(size_message("input size", input_size, depth, padding, extra_convs))
    return size


def valid_input_size(n: int, depth: int = 4, padding: str = "valid", extra_convs: int = 0) -> int:
    """The smallest valid input side length >= n (n itself if it is valid): 570 -> 572 for the paper's network."""
    check_architecture(depth, padding, extra_convs)
    n = max(int(n), 1)
    while trace(n, depth, padding, extra_convs) is None:  # valid sizes recur every 2^depth: a short walk
        n += 1
    return n


def size_message(what: str, n: int, depth: int, padding: str, extra_convs: int = 0) -> str:
    """The one-line error for a side ``n`` that does not fit, naming the nearest valid sides below and above."""
    below = next((m for m in range(n, 0, -1) if trace(m, depth, padding, extra_convs) is not None), None)
    above = valid_input_size(n, depth, padding, extra_convs)
    if below is None:
        nearest = f"the smallest valid size is {above}"
    else:
        nearest = f"the nearest valid sizes are {below} and {above}"
    return f"{what} {n} does not fit a U-Net of depth {depth} with {padding!r} padding: {nearest}"


def context_margin(depth: int = 4, padding: str = "valid", extra_convs: int = 0) -> int:
    """Pixels the network consumes on each side, (input - output) / 2: 92 for the paper's network, 0 for "same".

    The same for every valid input: a conv pair at level l takes 4 pixels of its own, 4 · 2^l of the input, so
    input - output = 4 (2^depth - 1) down + 4 · 2^depth at the bottom + 4 (2^depth - 1) up + 2 · extra_convs,
    and the margin is 6 · 2^depth - 4 + extra_convs for "valid" (92 at the paper's depth 4).
    """
    n = valid_input_size(1, depth, padding, extra_convs)
    difference = n - trace(n, depth, padding, extra_convs)
    return difference // 2


def grid_step(depth: int) -> int:
    """2^depth: valid input sides recur with this period, and windows whose origins differ by a multiple of it see
    the same max-pool grid (so a valid network gives them the same output where they overlap)."""
    return 2 ** _check_int(depth, "depth", 1)


def covering_input(size: int, depth: int = 4, padding: str = "valid", extra_convs: int = 0) -> tuple[int, int]:
    """(input side, output side) of the smallest output window that covers ``size`` >= 1 pixels.

    The output side is the smallest valid output >= ``size``; the input side is output + 2 · ``context_margin``.
    """
    size = _check_int(size, "size", 1)
    n = valid_input_size(size, depth, padding, extra_convs)
    while trace(n, depth, padding, extra_convs) < size:  # valid sides recur every 2^depth; a few steps at most
        n = valid_input_size(n + 1, depth, padding, extra_convs)
    return n, trace(n, depth, padding, extra_convs)
