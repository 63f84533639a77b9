"""The U-Net weight map: values worked out from the geometry, symmetries, and the fast map against the naive one."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from unet_from_scratch.reference.weight_map import (
    MIN_SIGMA,
    TOLERANCE,
    separation_border,
    unet_weight_map,
    unet_weight_map_naive,
)

# The promise: the fast map is within 1e-4 of the naive one (the module keeps it within TOLERANCE = 1e-5).
PROMISED = 1e-4
# Symmetries move pixels without changing any distance (squared distances are integers, their roots identical),
# and hand-worked values are one exp and a few float64 operations: a few ulps of the values (up to ~11) at most.
EXACT = dict(rtol=1e-12, atol=1e-12)


def random_cell_labels(shape, num_cells, rng, radius=(6.0, 14.0)) -> np.ndarray:
    """Synthetic instance labels (H, W) int32: ``num_cells`` random ellipses painted in turn, ids 1..num_cells.

    Semi-axes are drawn from ``radius`` and centres anywhere in the image, so some cells are cut by the edges; a
    later cell paints over an earlier one where they overlap, which leaves touching cells (and now and then an id
    split in two or painted out, so ids are not always contiguous).
    """
    height, width = shape
    labels = np.zeros(shape, dtype=np.int32)
    for k in range(1, num_cells + 1):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        a, b = rng.uniform(*radius, size=2)
        angle = rng.uniform(0, np.pi)
        reach = math.ceil(max(a, b))
        rows = slice(max(int(cy) - reach, 0), min(int(cy) + reach + 2, height))
        cols = slice(max(int(cx) - reach, 0), min(int(cx) + reach + 2, width))
        yy, xx = np.mgrid[rows, cols]
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
        labels[rows, cols][(u / a) ** 2 + (v / b) ** 2 <= 1.0] = k
    return labels


@st.composite
def cell_images(draw, max_side=64, max_cells=12):
    """Random ellipse cells (touching, cut by the edges, isolated) in an image of at most max_side x max_side."""
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    num_cells = draw(st.integers(0, max_cells))
    largest = draw(st.floats(0.5, 12.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return random_cell_labels(shape, num_cells, rng, radius=(0.5, largest))


# Pixel noise: ids scattered at random, so cells touch everywhere and one id is often several pieces.
noise_images = hnp.arrays(np.int16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=16), elements=st.integers(0, 5))
# The paper's w0 = 10, sigma = 5 and neighbours; small sigmas make the windows much smaller than the image.
w0s = st.floats(0.0, 20.0)
sigmas = st.floats(0.5, 8.0)
class_weight_choices = st.sampled_from([None, "balanced", "median_frequency", (0.25, 3.0)])


def two_squares(side=5, gap=5, margin=3):
    """Two side x side squares on one row, ``gap`` background columns apart: labels and the squares' columns."""
    labels = np.zeros((side + 2 * margin, 2 * side + gap + 2 * margin), dtype=np.int32)
    a_cols = (margin, margin + side - 1)  # first and last column of each square
    b_cols = (margin + side + gap, margin + 2 * side + gap - 1)
    labels[margin : margin + side, a_cols[0] : a_cols[1] + 1] = 1
    labels[margin : margin + side, b_cols[0] : b_cols[1] + 1] = 2
    return labels, a_cols, b_cols


def paper_term(d1, d2, w0=10.0, sigma=5.0):
    return w0 * math.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive])
def test_two_squares_hand_worked(weight_map):
    labels, (_, a_last), (b_first, _) = two_squares(side=5, gap=5, margin=3)
    top = 3  # first row of the squares
    w = weight_map(labels, class_weights=None)

    centre_row, centre_col = top + 2, (a_last + b_first) // 2
    d_a, d_b = centre_col - a_last, b_first - centre_col  # 3 and 3 pixels: the centre of the 5-pixel gap
    np.testing.assert_allclose(w[centre_row, centre_col], 1.0 + paper_term(d_a, d_b), **EXACT)  # 1 + 10 e^(-36/50)
    np.testing.assert_allclose(w[centre_row, centre_col], 1.0 + 10.0 * math.exp(-36 / 50), **EXACT)

    # Two rows above the squares and one column left of the centre: the nearest pixels are the squares' corners.
    row, col = top - 2, centre_col - 1
    d_a, d_b = math.hypot(2, col - a_last), math.hypot(2, b_first - col)  # sqrt(8) and sqrt(20)
    np.testing.assert_allclose(w[row, col], 1.0 + paper_term(d_a, d_b), **EXACT)

    assert np.all(w[labels > 0] == 1.0)  # no border term on cell pixels

    # The class weights: balanced over {background, cell} on this 11 x 21 image with 50 cell pixels.
    n, n_cell = labels.size, 50
    wb = weight_map(labels)
    np.testing.assert_allclose(wb[centre_row, centre_col], n / (2 * (n - n_cell)) + paper_term(3, 3), **EXACT)
    np.testing.assert_allclose(wb[labels > 0], n / (2 * n_cell), **EXACT)


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive])
def test_only_the_two_nearest_cells_count(weight_map):
    labels, (_, a_last), (b_first, _) = two_squares(side=5, gap=5, margin=6)
    centre_row, centre_col = 6 + 2, (a_last + b_first) // 2
    labels[centre_row + 4 :, centre_col] = 3  # a third cell 4 pixels below the centre, farther than the squares' 3
    w = weight_map(labels, w0=7.0, sigma=3.0, class_weights=None)
    np.testing.assert_allclose(w[centre_row, centre_col], 1.0 + paper_term(3, 3, w0=7.0, sigma=3.0), **EXACT)


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive])
def test_cells_cut_by_the_image_edge(weight_map):
    labels = np.zeros((4, 12), dtype=np.int32)
    labels[:, :2] = 5  # a cell against the left edge, columns 0-1
    labels[:, 9:] = 2  # one against the right edge, columns 9-11
    w = weight_map(labels, class_weights=None)
    for col in range(2, 9):
        np.testing.assert_allclose(w[:, col], 1.0 + paper_term(col - 1, 9 - col), **EXACT)


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive])
def test_no_cells_and_one_cell_have_no_border_term(weight_map):
    empty = np.zeros((6, 7), dtype=np.int64)
    np.testing.assert_array_equal(weight_map(empty, class_weights=None), np.ones((6, 7)))
    np.testing.assert_allclose(weight_map(empty), 42 / (2 * 42), **EXACT)  # balanced: background n / (2 n)

    one = empty.copy()
    one[2:4, 1:3] = 9  # one cell: no second nearest cell, so by convention w = w_c
    w = weight_map(one, w0=10.0, sigma=5.0)
    np.testing.assert_allclose(w[one == 0], 42 / (2 * 38), **EXACT)
    np.testing.assert_allclose(w[one > 0], 42 / (2 * 4), **EXACT)


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive])
def test_bool_mask_is_split_into_cells_but_an_integer_mask_is_one_cell(weight_map):
    labels, _, _ = two_squares()
    np.testing.assert_allclose(weight_map(labels > 0), weight_map(labels), **EXACT)
    # A 0/1 integer array is read as instance labels: one cell with id 1, hence no border term.
    np.testing.assert_array_equal(weight_map((labels > 0).astype(np.uint8), class_weights=None), 1.0)


def test_explicit_and_median_frequency_class_weights():
    labels, _, _ = two_squares()
    cells = labels > 0
    w = unet_weight_map(labels, w0=0.0, class_weights=(0.5, 4.0))
    np.testing.assert_array_equal(w, np.where(cells, 4.0, 0.5))
    # One image with both classes: median frequency equals balanced (see test_class_weights).
    np.testing.assert_allclose(
        unet_weight_map(labels, class_weights="median_frequency"), unet_weight_map(labels), **EXACT
    )


@settings(deadline=None)
@given(cell_images(), st.integers(0, 2**32 - 1), class_weight_choices)
def test_instance_id_permutation_changes_nothing(labels, seed, class_weights):
    rng = np.random.default_rng(seed)
    ids = np.unique(labels[labels > 0])
    # Shuffled, non-contiguous ids; for every other seed beyond the image size and int32 (the sparse-id path).
    scale = 2**33 if seed % 2 else 1
    new_ids = rng.permutation(np.arange(1, 4 * ids.size + 2))[: ids.size] * scale
    relabelled = np.zeros(labels.shape, dtype=np.int64)
    for old, new in zip(ids, new_ids):
        relabelled[labels == old] = new
    expected = unet_weight_map(labels, 10.0, 5.0, class_weights)
    np.testing.assert_allclose(unet_weight_map(relabelled, 10.0, 5.0, class_weights), expected, **EXACT)


@settings(deadline=None)
@given(cell_images(), sigmas)
def test_flips_and_transposes_move_the_map_with_the_image(labels, sigma):
    w = unet_weight_map(labels, sigma=sigma)
    for move in (np.flipud, np.fliplr, np.transpose, lambda a: np.rot90(a, 1)):
        np.testing.assert_allclose(unet_weight_map(np.ascontiguousarray(move(labels)), sigma=sigma), move(w), **EXACT)


@settings(deadline=None)
@given(cell_images(max_side=40), st.integers(0, 24), st.integers(0, 24))
def test_translation_moves_the_map_with_the_image(labels, dy, dx):
    height, width = labels.shape
    canvas = np.zeros((height + 24, width + 24), dtype=labels.dtype)
    at_origin, shifted = canvas.copy(), canvas.copy()
    at_origin[:height, :width] = labels
    shifted[dy : dy + height, dx : dx + width] = labels
    # Same canvas and same cells: the balanced class weights agree too.
    np.testing.assert_allclose(
        unet_weight_map(shifted)[dy : dy + height, dx : dx + width],
        unet_weight_map(at_origin)[:height, :width],
        **EXACT,
    )


@settings(deadline=None)
@given(cell_images(), w0s, sigmas, class_weight_choices)
def test_fast_matches_naive_on_cells(labels, w0, sigma, class_weights):
    fast = unet_weight_map(labels, w0, sigma, class_weights)
    naive = unet_weight_map_naive(labels, w0, sigma, class_weights)
    assert fast.dtype == naive.dtype == np.float64
    np.testing.assert_allclose(fast, naive, rtol=0, atol=PROMISED)
    # Stronger, from the derivation in weight_map.py: within TOLERANCE everywhere, and exact wherever the naive
    # border term is at least TOLERANCE.
    assert np.max(np.abs(fast - naive), initial=0.0) < TOLERANCE
    term = naive - unet_weight_map_naive(labels, 0.0, sigma, class_weights)
    np.testing.assert_allclose(fast[term >= TOLERANCE], naive[term >= TOLERANCE], **EXACT)


@settings(deadline=None)
@given(noise_images, w0s, sigmas)
def test_fast_matches_naive_on_pixel_noise(labels, w0, sigma):
    for image in (labels, separation_border(labels)):
        fast, naive = unet_weight_map(image, w0, sigma), unet_weight_map_naive(image, w0, sigma)
        np.testing.assert_allclose(fast, naive, rtol=0, atol=PROMISED)


@pytest.mark.parametrize("distance", [24, 25, 26, 27, 28])
def test_fast_is_exact_at_the_reach_of_its_windows(distance):
    # Two one-pixel cells `distance` apart on a line: with w0 = 10, sigma = 5 the term on the line between them is
    # 10 exp(-distance^2 / 50), at or just past TOLERANCE = 1e-5 for these distances (it drops below at 26.3).
    labels = np.zeros((5, distance + 9), dtype=np.int32)
    labels[2, 4] = 1
    labels[2, 4 + distance] = 2
    fast, naive = unet_weight_map(labels, class_weights=None), unet_weight_map_naive(labels, class_weights=None)
    term = paper_term(distance, 0.0)  # d1 + d2 = distance on the line between the cells
    if term >= TOLERANCE:
        np.testing.assert_allclose(fast[2, 5 : 4 + distance], 1.0 + term, **EXACT)
    assert np.max(np.abs(fast - naive)) < TOLERANCE


def test_separation_border_hand_worked():
    labels = np.zeros((5, 8), dtype=np.uint8)
    labels[1:4, 1:4] = 1
    labels[1:4, 4:7] = 2  # touches cell 1 along columns 3 | 4
    labels[0, 7] = 3  # touches cell 2 diagonally at (1, 6)
    expected = labels.copy()
    expected[1:4, 3:5] = 0
    expected[1, 6] = 0
    expected[0, 7] = 0
    out = separation_border(labels)
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(out, expected)


def separation_border_by_loops(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    height, width = labels.shape
    for i in range(height):
        for j in range(width):
            neighbours = labels[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            if labels[i, j] and np.any((neighbours != 0) & (neighbours != labels[i, j])):
                out[i, j] = 0
    return out


@settings(deadline=None)
@given(noise_images)
def test_separation_border_matches_loops_and_leaves_no_contact(labels):
    out = separation_border(labels)
    np.testing.assert_array_equal(out, separation_border_by_loops(labels))
    np.testing.assert_array_equal(separation_border(out), out)  # nothing left to carve


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint32])
def test_separation_border_is_the_same_for_every_integer_dtype(dtype):
    # An isolated disc touches no other cell and keeps every pixel, whatever the label dtype (int64's maximum
    # used to come back from scipy's float64 cval as the int64 minimum and carve the edge of every cell).
    y, x = np.mgrid[:24, :24]
    labels = np.zeros((24, 24), dtype=dtype)
    labels[(y - 8) ** 2 + (x - 8) ** 2 < 25] = 1
    labels[(y - 15) ** 2 + (x - 16) ** 2 < 20] = 2  # touches cell 1
    labels[20:, :4] = 7  # alone in a corner, at the image edge
    out = separation_border(labels)
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(out, separation_border_by_loops(labels))
    assert np.count_nonzero(out == 7) == np.count_nonzero(labels == 7)


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive, separation_border])
@pytest.mark.parametrize(
    "instances, match",
    [
        (np.zeros((4, 4), dtype=np.float64), "integer"),
        (np.zeros((4, 4), dtype=np.float32), "integer"),
        (np.array([[0, 1], [-2, 1]]), ">= 0"),
        (np.zeros((2, 4, 4), dtype=np.int32), r"2 dimensions \(H, W\)"),
        (np.zeros(4, dtype=np.int32), r"2 dimensions \(H, W\)"),
        ([[0, 1], [1, 0]], "numpy array"),
        (np.zeros((0, 0), dtype=np.int32), r"instances must be a non-empty \(H, W\) image, got shape \(0, 0\)"),
        (np.zeros((0, 5), dtype=bool), r"non-empty \(H, W\) image, got shape \(0, 5\)"),
    ],
)
def test_bad_label_images_raise(weight_map, instances, match):
    with pytest.raises(ValueError, match=match):
        weight_map(instances)


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(w0=-1.0), "w0"),
        (dict(w0=float("inf")), "w0"),
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(sigma=1e-200), r"sigma must be finite and ≥ 0.01, got 1e-200"),  # was a ZeroDivisionError
        (dict(sigma=True), "sigma must be a real number, got True"),
        (dict(w0=10**400), "w0 must be finite"),
        (dict(class_weights="inverse"), "class_weights"),
        (dict(class_weights=(1.0, 2.0, 3.0)), "class_weights"),
        (dict(class_weights=(1.0, -2.0)), "class_weights"),
        (dict(class_weights=(1.0, float("nan"))), "class_weights"),
    ],
)
def test_bad_parameters_raise(weight_map, kwargs, match):
    with pytest.raises(ValueError, match=match):
        weight_map(two_squares()[0], **kwargs)


@pytest.mark.parametrize("weight_map", [unet_weight_map, unet_weight_map_naive])
def test_extreme_but_valid_parameters_give_the_formula(weight_map):
    labels, (_, a_last), (b_first, _) = two_squares(side=5, gap=5, margin=3)
    row, col = 5, a_last + 2  # in the gap: 2 px from square a, 4 px from square b
    # w0 = 1e308 overflowed in the window margin (an OverflowError); the map is finite and follows the formula.
    w = weight_map(labels, w0=1e308, class_weights=None)
    assert np.all(np.isfinite(w))
    assert w[row, col] == pytest.approx(1.0 + paper_term(2.0, 4.0, w0=1e308), rel=1e-12)
    # The smallest sigma: the border term underflows to exactly 0, the map is the class weights alone.
    np.testing.assert_array_equal(weight_map(labels, sigma=MIN_SIGMA, class_weights=None), np.ones(labels.shape))
    # Just above it the term is tiny but computed: sigma = 1 gives exp(-18) at that pixel.
    assert weight_map(labels, sigma=1.0, class_weights=None)[row, col] == pytest.approx(1 + paper_term(2, 4, sigma=1))
    assert weight_map(labels, w0=np.int64(10), sigma=np.float32(5.0), class_weights=None)[row, col] == pytest.approx(
        1 + paper_term(2.0, 4.0)
    )


def test_separation_border_refuses_a_bool_mask():
    with pytest.raises(ValueError, match="bool mask"):
        separation_border(np.ones((3, 3), dtype=bool))
