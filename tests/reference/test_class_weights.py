"""Class weights: hand-worked counts, scikit-learn's "balanced" weights, and the median-frequency formula by loops."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_class_weight

from unet_from_scratch.reference.class_weights import class_weights, class_weights_from_counts

# Both sides compute n / (k * count) or a ratio of two such numbers in float64: a few ulps apart at most.
RTOL = 1e-12


@st.composite
def label_images(draw, max_classes=6, all_present=False):
    """(labels (N, H, W) int, num_classes): small random label images; with ``all_present`` every class occurs."""
    num_classes = draw(st.integers(1, max_classes))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    seed = draw(st.integers(0, 2**32 - 1))
    labels = np.random.default_rng(seed).integers(0, num_classes, size=shape)
    if all_present:
        labels = np.concatenate([labels.ravel(), np.arange(num_classes)])[None, None, :]
    return labels, num_classes


def median_frequency_by_loops(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Eigen & Fergus (2015), one image and one class at a time; 0 for an absent class."""
    freq = {}
    for c in range(num_classes):
        count = sum(int((image == c).sum()) for image in labels)
        pixels = sum(image.size for image in labels if (image == c).any())
        if count:
            freq[c] = count / pixels
    median = float(np.median(list(freq.values())))
    return np.array([median / freq[c] if c in freq else 0.0 for c in range(num_classes)])


def test_balanced_hand_worked():
    # counts {0: 36, 1: 91, 2: 160}: n = 287, k = 3, w_c = n / (k count_c). (A quoted 2.63/1.04/0.59 is not this.)
    labels = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [36, 91, 160])).reshape(7, 41)
    weights = class_weights(labels, 3)
    np.testing.assert_allclose(weights, [287 / 108, 287 / 273, 287 / 480], rtol=RTOL)
    np.testing.assert_allclose(weights, [2.66, 1.05, 0.60], atol=0.005)


@settings(deadline=None)
@given(label_images(all_present=True))
def test_balanced_matches_sklearn(case):
    labels, num_classes = case
    expected = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels.ravel())
    np.testing.assert_allclose(class_weights(labels, num_classes, "balanced"), expected, rtol=RTOL)


@settings(deadline=None)
@given(label_images())
def test_balanced_gives_every_present_class_the_same_total_weight(case):
    labels, num_classes = case
    weights = class_weights(labels, num_classes, "balanced")
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    present = counts > 0
    np.testing.assert_allclose(weights[present] * counts[present], labels.size / num_classes, rtol=RTOL)
    assert np.all(weights[~present] == 0.0)


def test_median_frequency_hand_worked():
    # Class 0: 3 pixels, only in image A (4 pixels) -> 3/4. Class 1: 3 pixels, in A and B (8) -> 3/8.
    # Class 2: 2 pixels, only in B -> 2/4. Class 3 is absent. Median of (3/4, 3/8, 1/2) is 1/2.
    labels = np.array([[[0, 0], [0, 1]], [[1, 1], [2, 2]]])
    np.testing.assert_allclose(
        class_weights(labels, 4, "median_frequency"), [(1 / 2) / (3 / 4), (1 / 2) / (3 / 8), 1.0, 0.0], rtol=RTOL
    )


@settings(deadline=None)
@given(label_images())
def test_median_frequency_matches_the_formula_by_loops(case):
    labels, num_classes = case
    expected = median_frequency_by_loops(labels, num_classes)
    np.testing.assert_allclose(class_weights(labels, num_classes, "median_frequency"), expected, rtol=RTOL)


def test_one_image_two_classes_median_frequency_equals_balanced():
    # One image with both classes: freq_c = count_c / n, median = 1/2, so w_c = n / (2 count_c): the balanced weight.
    labels = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_allclose(class_weights(labels, 2, "median_frequency"), [12 / 18, 12 / 6], rtol=RTOL)
    np.testing.assert_allclose(class_weights(labels, 2, "balanced"), [12 / 18, 12 / 6], rtol=RTOL)


@pytest.mark.parametrize("method", ["balanced", "median_frequency"])
def test_permuting_class_ids_permutes_the_weights(method):
    labels = np.random.default_rng(1).integers(0, 5, size=(3, 6, 7))
    perm = np.array([3, 0, 4, 1, 2])
    expected = class_weights(labels, 5, method)
    np.testing.assert_allclose(class_weights(perm[labels], 5, method)[perm], expected, rtol=RTOL)


@pytest.mark.parametrize("method", ["balanced", "median_frequency"])
def test_absent_classes_get_zero_and_nothing_is_infinite(method):
    labels = np.array([[0, 0, 2], [2, 2, 2]])
    weights = class_weights(labels, 4, method)
    assert np.all(np.isfinite(weights))
    assert weights[1] == 0.0 and weights[3] == 0.0
    assert weights[0] > weights[2] > 0.0


def test_from_counts_matches_labels():
    labels = np.array([[[0, 1, 1], [2, 2, 2]], [[0, 0, 0], [0, 1, 0]]])
    counts = [6, 3, 3]
    image_pixels = [12, 12, 6]  # class 2 appears in the first image only
    np.testing.assert_allclose(class_weights_from_counts(counts), class_weights(labels, 3), rtol=RTOL)
    np.testing.assert_allclose(
        class_weights_from_counts(counts, image_pixels, "median_frequency"),
        class_weights(labels, 3, "median_frequency"),
        rtol=RTOL,
    )


def test_num_classes_may_be_a_numpy_integer():
    labels = np.array([[0, 1, 1], [2, 2, 2]])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.ravel())
    np.testing.assert_allclose(class_weights(labels, np.int64(3)), expected, rtol=RTOL)


@pytest.mark.parametrize(
    "labels, num_classes, method, match",
    [
        (np.array([[0.0, 1.0]]), 2, "balanced", "integer"),
        (np.array([[0, 2]]), 2, "balanced", r"\[0, 2\)"),
        (np.array([[0, -1]]), 2, "balanced", r"\[0, 2\)"),
        (np.array([[0, 1]]), 0, "balanced", "num_classes"),
        (np.array([[0, 1]]), 2.0, "balanced", "num_classes"),
        (np.array([[0, 1]]), True, "balanced", "num_classes must be a positive integer, got True"),
        (np.array([[0, 1]]), 2**40, "median_frequency", "num_classes must be at most 65536"),  # before allocating
        (np.array([[0, 1]]), 2, "inverse", "method"),
        (np.zeros((0, 3), dtype=int), 2, "balanced", "at least one pixel"),
        ([[0, 1]], 2, "balanced", "numpy array"),
    ],
)
def test_bad_inputs_raise(labels, num_classes, method, match):
    with pytest.raises(ValueError, match=match):
        class_weights(labels, num_classes, method)


@pytest.mark.parametrize(
    "counts, image_pixels, method, match",
    [
        ([3, -1], None, "balanced", "counts"),
        ([[3, 1]], None, "balanced", "counts"),
        ([3, 1], None, "median_frequency", "image_pixels"),
        ([3, 1], [2, 4], "median_frequency", "image_pixels"),
        ([3, 1], None, "sqrt", "method"),
    ],
)
def test_bad_counts_raise(counts, image_pixels, method, match):
    with pytest.raises(ValueError, match=match):
        class_weights_from_counts(counts, image_pixels, method)
