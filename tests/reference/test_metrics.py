"""The metrics of reference/metrics.py: hand-worked examples (the 3x3 one, empty maps, ignore_index, touching
cells), and random label maps against scikit-learn and torchmetrics."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from sklearn import metrics as skm
from torchmetrics.functional import classification as tmc

from unet_from_scratch.reference.metrics import (
    MAX_CLASSES,
    accuracy,
    confusion,
    dice,
    f1,
    instance_f1,
    iou,
    precision,
    recall,
)
from unet_from_scratch.reference.metrics import _confusion_by_class

# The worked example of the module docstring: tp = 3, fp = 0, fn = 2 for the foreground; 7 of 9 pixels right.
Y_TRUE = np.array([[0, 1, 1], [0, 0, 1], [1, 1, 0]])
Y_PRED = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
PIXEL_SCORES = (iou, dice, precision, recall, f1)
BITS = st.integers(0, 1)
SMALL_BATCH = st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8))  # (N, H, W)


# hand-worked examples --------------------------------------------------------------------------------------------


def test_worked_example_counts():
    tp, fp, fn, tn = confusion(Y_TRUE, Y_PRED, 2)
    # class 0: 4 of its 4 pixels found, 2 foreground pixels taken for it; class 1 the mirror image
    assert tp.tolist() == [[4, 3]] and fp.tolist() == [[2, 0]] and fn.tolist() == [[0, 2]] and tn.tolist() == [[3, 4]]


def test_worked_example_scores():
    assert iou(Y_TRUE, Y_PRED) == pytest.approx(3 / 5)  # union 5, not the 6 of the miscounted version
    assert dice(Y_TRUE, Y_PRED) == pytest.approx(3 / 4)
    assert f1(Y_TRUE, Y_PRED) == pytest.approx(3 / 4)
    assert precision(Y_TRUE, Y_PRED) == pytest.approx(1.0)
    assert recall(Y_TRUE, Y_PRED) == pytest.approx(3 / 5)
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 9)
    # background: tp 4, fp 2, fn 0 -> IoU 4/6
    np.testing.assert_allclose(iou(Y_TRUE, Y_PRED, reduction="per_class"), [4 / 6, 3 / 5])
    assert iou(Y_TRUE, Y_PRED, reduction="macro", include_background=True) == pytest.approx((4 / 6 + 3 / 5) / 2)
    # both classes pooled: tp 7, fp 2, fn 2
    assert iou(Y_TRUE, Y_PRED, include_background=True) == pytest.approx(7 / 11)
    np.testing.assert_allclose(accuracy(Y_TRUE, Y_PRED, reduction="per_class"), [4 / 4, 3 / 5])
    assert accuracy(Y_TRUE, Y_PRED, reduction="macro") == pytest.approx((1 + 3 / 5) / 2)


def test_batch_reductions_on_the_worked_example():
    empty = np.zeros_like(Y_TRUE)
    y_true, y_pred = np.stack([Y_TRUE, empty, Y_TRUE]), np.stack([Y_PRED, empty, Y_TRUE])
    np.testing.assert_allclose(iou(y_true, y_pred, reduction="per_image"), [3 / 5, 1.0, 1.0])
    assert iou(y_true, y_pred, reduction="micro") == pytest.approx(8 / 10)  # tp 3 + 5, union 5 + 5
    assert iou(y_true, y_pred, reduction="macro") == pytest.approx(8 / 10)  # one scored class: macro = micro
    np.testing.assert_allclose(accuracy(y_true, y_pred, reduction="per_image"), [7 / 9, 1.0, 1.0])


@pytest.mark.parametrize("metric", PIXEL_SCORES)
def test_both_empty_scores_empty_score(metric):
    empty = np.zeros((2, 4, 4), int)
    assert metric(empty, empty) == 1.0
    assert metric(empty, empty, empty_score=0.0) == 0.0
    np.testing.assert_array_equal(metric(empty, empty, reduction="per_image", empty_score=0.5), [0.5, 0.5])


@pytest.mark.parametrize("metric", PIXEL_SCORES)
def test_one_side_empty_scores_zero_never_nan(metric):
    empty = np.zeros_like(Y_TRUE)
    assert metric(Y_TRUE, empty) == 0.0  # missed everything (a precision with nothing predicted included)
    assert metric(empty, Y_PRED) == 0.0  # found what was not there (a recall with nothing to find included)


def test_accuracy_of_an_image_with_every_pixel_ignored_is_empty_score():
    ignored = np.full((3, 3), 255)
    assert accuracy(ignored, Y_PRED, ignore_index=255) == 1.0
    assert accuracy(ignored, Y_PRED, ignore_index=255, empty_score=0.25) == 0.25


def test_ignore_index_leaves_pixels_out():
    # The two missed foreground pixels marked "don't care": the rest is perfect.
    y_true = Y_TRUE.copy()
    y_true[0, 2] = y_true[2, 1] = 255
    tp, fp, fn, tn = confusion(y_true, Y_PRED, 2, ignore_index=255)
    assert (tp + fp + fn + tn).tolist() == [[7, 7]]
    for metric in (*PIXEL_SCORES, accuracy):
        assert metric(y_true, Y_PRED, ignore_index=255) == 1.0


def test_an_ignored_class_is_not_scored():
    # 3 classes; class 2 is ignore_index: its target pixels are not counted and it is left out of macro and micro.
    y_true = np.array([[0, 1, 2], [2, 1, 0]])
    y_pred = np.array([[0, 1, 2], [0, 1, 0]])
    tp, fp, fn, tn = confusion(y_true, y_pred, 3, ignore_index=2)
    assert tp.tolist() == [[2, 2, 0]] and fp.tolist() == [[0, 0, 0]] and fn.tolist() == [[0, 0, 0]]
    assert iou(y_true, y_pred, 3, ignore_index=2) == 1.0
    assert iou(y_true, y_pred, 3, reduction="macro", ignore_index=2, include_background=True) == 1.0
    # not ignored, class 2 is scored: 1 of its 2 pixels found, the other taken for class 0
    np.testing.assert_allclose(iou(y_true, y_pred, 3, reduction="per_class"), [2 / 3, 1.0, 1 / 2])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: iou(Y_TRUE, Y_PRED[:2]), "same shape"),
        (lambda: iou(Y_TRUE.astype(float), Y_PRED), "y_true must be an integer array"),
        (lambda: iou(Y_TRUE + 1, Y_PRED), r"y_true labels must lie in \[0, 2\), got values in \[1, 2\]"),
        (lambda: iou(Y_TRUE, Y_PRED - 1), r"y_pred labels must lie in \[0, 2\)"),
        (lambda: iou(Y_TRUE, Y_PRED, reduction="mean"), "reduction must be one of"),
        (lambda: iou(Y_TRUE, Y_PRED, num_classes=0), "num_classes must be a positive integer"),
        (lambda: iou(Y_TRUE, Y_PRED, num_classes=True), "num_classes must be a positive integer, got True"),
        (lambda: iou(Y_TRUE, Y_PRED, num_classes=2.0), "num_classes must be a positive integer, got 2.0"),
        (lambda: iou(Y_TRUE, Y_PRED, num_classes=2**16 + 1), r"num_classes must be at most 65536 \(MAX_CLASSES\)"),
        (lambda: accuracy(Y_TRUE, Y_PRED, num_classes=2**40), "num_classes must be at most 65536"),
        (lambda: iou(Y_TRUE, Y_PRED, ignore_index=1), "no class left to score"),
        (lambda: confusion(Y_TRUE[None, None], Y_PRED[None, None], 2), r"\(H, W\) or \(N, H, W\)"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_num_classes_is_a_numpy_integer_too():
    assert iou(Y_TRUE, Y_PRED, num_classes=np.int64(2)) == pytest.approx(3 / 5)


def test_the_largest_class_count_is_scored_without_a_class_by_class_table(rng):
    # 2**16 classes: an (N, C, C) confusion table would hold 2**32 counts per image (32 GiB). The counts come from
    # bincounts of length N·C instead, and agree with scikit-learn's confusion matrix over the classes present.
    y_true = rng.integers(0, MAX_CLASSES, size=(2, 6, 7))
    y_pred = np.where(rng.random(y_true.shape) < 0.5, y_true, rng.integers(0, MAX_CLASSES, size=y_true.shape))
    tp, fp, fn, tn = confusion(y_true, y_pred, MAX_CLASSES)
    assert tp.shape == (2, MAX_CLASSES)
    for n in range(2):
        labels = np.union1d(y_true[n], y_pred[n])
        matrix = skm.confusion_matrix(y_true[n].ravel(), y_pred[n].ravel(), labels=labels)
        np.testing.assert_array_equal(tp[n, labels], np.diag(matrix))
        np.testing.assert_array_equal(fn[n, labels], matrix.sum(axis=1) - np.diag(matrix))
        np.testing.assert_array_equal(fp[n, labels], matrix.sum(axis=0) - np.diag(matrix))
        np.testing.assert_array_equal(tn[n], y_true[n].size - tp[n] - fp[n] - fn[n])
        absent = np.setdiff1d(np.arange(MAX_CLASSES), labels)
        assert not tp[n, absent].any() and not fp[n, absent].any() and not fn[n, absent].any()
    expected = skm.jaccard_score(y_true.ravel(), y_pred.ravel(), labels=np.arange(1, MAX_CLASSES), average="micro")
    assert iou(y_true, y_pred, MAX_CLASSES) == pytest.approx(expected)


@settings(deadline=None)
@given(st.data(), st.integers(2, 40), st.sampled_from([None, 0, 255]))
def test_both_ways_of_counting_agree(data, classes, ignore_index):
    # The (N, C, C) table for few classes, the bincounts of length N·C for many: the same integers.
    shape = data.draw(SMALL_BATCH)
    y_true = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, classes - 1)))
    y_pred = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, classes - 1)))
    if ignore_index == 255:
        y_true = np.where(data.draw(hnp.arrays(bool, shape)), 255, y_true)
    first_row = (np.arange(shape[0]) * classes).reshape(-1, 1, 1)
    by_class = _confusion_by_class(first_row + y_true, first_row + y_pred, y_true, shape[0], classes, ignore_index)
    for ours, theirs in zip(confusion(y_true, y_pred, classes, ignore_index), by_class):
        np.testing.assert_array_equal(ours, theirs)


def test_macro_accuracy_is_scikit_learns_balanced_accuracy_with_a_class_absent():
    # The example: 4 classes, class 3 in neither map. Balanced accuracy averages the recall of the classes
    # present in the target, (2/3 + 1 + 1/2) / 3 = 0.7222; averaging in class 3 as a perfect score gave 0.7917.
    y_true = np.array([[0, 0, 1, 1], [2, 2, 0, 1]])
    y_pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    expected = skm.balanced_accuracy_score(y_true.ravel(), y_pred.ravel())
    assert expected == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert accuracy(y_true, y_pred, 4, reduction="macro") == pytest.approx(expected)
    # A class predicted but absent from the target has no recall either (scikit-learn warns and leaves it out).
    assert accuracy(y_true, np.where(y_pred == 1, 3, y_pred), 4, reduction="macro") == pytest.approx((2 / 3 + 0 + 1 / 2) / 3)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(deadline=None)
@given(st.data(), st.integers(2, 6), st.sampled_from([None, 0, 255]))
def test_macro_accuracy_matches_balanced_accuracy_with_classes_missing(data, classes, ignore_index):
    # Labels drawn from a random subset of the classes, so that some are absent from the target, the prediction
    # or both: the cases the every-class maps of label_maps never produce.
    shape = data.draw(SMALL_BATCH)
    used = data.draw(st.lists(st.integers(0, classes - 1), min_size=1, max_size=classes, unique=True))
    y_true = data.draw(hnp.arrays(np.int64, shape, elements=st.sampled_from(used)))
    y_pred = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, classes - 1)))
    if ignore_index == 255:
        y_true = np.where(data.draw(hnp.arrays(bool, shape)), 255, y_true)
    t, p = _sklearn_inputs(y_true, y_pred, ignore_index)
    ours = accuracy(y_true, y_pred, classes, reduction="macro", ignore_index=ignore_index)
    if t.size == 0:
        assert ours == 1.0  # nothing counted: empty_score
        return
    # scikit-learn has no ignore_index: its pixels are removed above (_sklearn_inputs), which also removes the
    # ignored class from the target, so it is not averaged over either.
    np.testing.assert_allclose(ours, skm.balanced_accuracy_score(t, p))


# random label maps against scikit-learn and torchmetrics --------------------------------------------------------


@st.composite
def label_maps(draw):
    """(y_true, y_pred, C, ignore_index): N 1-3, C 2-5, H and W 3-8. Every image holds every class in both maps
    (its first C pixels are 0..C-1), so no ratio has a zero denominator and the libraries' zero_division
    conventions, which differ from ours, never come into play (the empty cases are tested by hand above)."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    h, w = draw(st.integers(3, 8)), draw(st.integers(3, 8))
    y_true = draw(hnp.arrays(np.int64, (n, h, w), elements=st.integers(0, c - 1)))
    y_pred = draw(hnp.arrays(np.int64, (n, h, w), elements=st.integers(0, c - 1)))
    ignore_index = draw(st.none() | st.just(255) | st.integers(0, c - 1))
    if ignore_index == 255:
        y_true = np.where(draw(hnp.arrays(bool, (n, h, w))), 255, y_true)
    for maps in (y_true, y_pred):
        maps.reshape(n, -1)[:, :c] = np.arange(c)
    return y_true, y_pred, c, ignore_index


def _sklearn_inputs(y_true, y_pred, ignore_index):
    """Flat label vectors with the ignored pixels removed (scikit-learn has no ignore_index)."""
    counted = np.ones(y_true.shape, bool) if ignore_index is None else y_true != ignore_index
    return y_true[counted], y_pred[counted]


def _scored(c, ignore_index, include_background):
    return [k for k in range(0 if include_background else 1, c) if k != ignore_index]


def sklearn_scores(t, p, labels, average):
    """{our metric: scikit-learn's score} for one averaging: two calls instead of five. zero_division=1.0 is our
    empty_score (it only comes into play in the binary test: label_maps leaves no zero denominator)."""
    options = dict(labels=labels, average=average, zero_division=1.0)
    p_score, r_score, f_score, _ = skm.precision_recall_fscore_support(t, p, **options)
    j_score = skm.jaccard_score(t, p, **options)
    return {iou: j_score, dice: f_score, f1: f_score, precision: p_score, recall: r_score}


@settings(deadline=None)
@given(label_maps(), st.booleans())
def test_pixel_scores_match_sklearn(maps, include_background):
    y_true, y_pred, c, ignore_index = maps
    t, p = _sklearn_inputs(y_true, y_pred, ignore_index)
    scored = _scored(c, ignore_index, include_background)
    unignored = [k for k in range(c) if k != ignore_index]
    options = dict(num_classes=c, ignore_index=ignore_index, include_background=include_background)
    if not scored:  # C = 2, the foreground ignored and the background not asked for
        with pytest.raises(ValueError, match="no class left to score"):
            iou(y_true, y_pred, **options)
        return
    poolings = (("micro", scored, "micro"), ("macro", scored, "macro"), ("per_class", unignored, None))
    for reduction, labels, average in poolings:
        for metric, expected in sklearn_scores(t, p, labels, average).items():
            ours = metric(y_true, y_pred, reduction=reduction, **options)
            ours = ours[unignored] if reduction == "per_class" else ours
            np.testing.assert_allclose(ours, expected, err_msg=f"{metric.__name__} {reduction}")
    per_image = {metric: metric(y_true, y_pred, reduction="per_image", **options) for metric in PIXEL_SCORES}
    for n in range(y_true.shape[0]):
        t_n, p_n = _sklearn_inputs(y_true[n], y_pred[n], ignore_index)
        for metric, expected in sklearn_scores(t_n, p_n, scored, "micro").items():
            np.testing.assert_allclose(per_image[metric][n], expected, err_msg=f"{metric.__name__} image {n}")


# The ignored class is predicted but absent from the target, or one label is left (C = 2, one ignored).
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(deadline=None)
@given(label_maps())
def test_accuracy_matches_sklearn(maps):
    y_true, y_pred, c, ignore_index = maps
    t, p = _sklearn_inputs(y_true, y_pred, ignore_index)
    unignored = [k for k in range(c) if k != ignore_index]
    options = dict(num_classes=c, ignore_index=ignore_index)
    np.testing.assert_allclose(accuracy(y_true, y_pred, **options), skm.accuracy_score(t, p))
    balanced = skm.balanced_accuracy_score(t, p)
    np.testing.assert_allclose(accuracy(y_true, y_pred, reduction="macro", **options), balanced)
    per_class = accuracy(y_true, y_pred, reduction="per_class", **options)
    np.testing.assert_allclose(per_class[unignored], skm.recall_score(t, p, labels=unignored, average=None))
    per_image = accuracy(y_true, y_pred, reduction="per_image", **options)
    expected = [skm.accuracy_score(*_sklearn_inputs(y_true[n], y_pred[n], ignore_index)) for n in range(len(y_true))]
    np.testing.assert_allclose(per_image, expected)


TORCHMETRICS = ((precision, tmc.multiclass_precision), (recall, tmc.multiclass_recall), (f1, tmc.multiclass_f1_score))
AVERAGES = (("micro", "micro"), ("macro", "macro"), ("none", "per_class"))  # torchmetrics average -> our reduction


@settings(deadline=None)
@given(label_maps())
def test_scores_match_torchmetrics(maps):
    """torchmetrics scores every class (include_background=True). Its precision/recall/F1 keep a class equal to
    ignore_index in their averages, unlike its own Jaccard index and unlike us: those are compared without one."""
    y_true, y_pred, c, ignore_index = maps
    target, preds = torch.from_numpy(y_true), torch.from_numpy(y_pred)
    options = dict(num_classes=c, ignore_index=ignore_index, include_background=True)
    unignored = [k for k in range(c) if k != ignore_index]
    for average, reduction in AVERAGES:
        ours = np.atleast_1d(iou(y_true, y_pred, reduction=reduction, **options))
        theirs = tmc.multiclass_jaccard_index(preds, target, c, average=average, ignore_index=ignore_index)
        theirs = np.atleast_1d(theirs.numpy())
        if reduction == "per_class":
            ours, theirs = ours[unignored], theirs[unignored]
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=f"iou {average}")
    theirs = tmc.multiclass_accuracy(preds, target, c, average="micro", ignore_index=ignore_index)
    np.testing.assert_allclose(accuracy(y_true, y_pred, c, ignore_index=ignore_index), theirs.numpy(), rtol=1e-6)
    if ignore_index is not None and ignore_index < c:
        return
    for metric, tm_metric in TORCHMETRICS:
        for average, reduction in AVERAGES:
            theirs = tm_metric(preds, target, c, average=average, ignore_index=ignore_index)
            ours = metric(y_true, y_pred, reduction=reduction, **options)
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, err_msg=f"{metric.__name__} {average}")
        theirs = tm_metric(preds, target, c, average="micro", multidim_average="samplewise", ignore_index=ignore_index)
        ours = metric(y_true, y_pred, reduction="per_image", **options)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, err_msg=f"{metric.__name__} per image")


@settings(deadline=None)
@given(hnp.arrays(np.int64, SMALL_BATCH, elements=BITS), st.data())
def test_binary_maps_score_the_foreground_like_sklearn(y_true, data):
    y_pred = data.draw(hnp.arrays(np.int64, y_true.shape, elements=BITS))
    t, p = y_true.ravel(), y_pred.ravel()
    for metric, expected in sklearn_scores(t, p, None, "binary").items():
        # Where only one side is empty, a precision or recall of 0/0 is 0 by our convention, zero_division for them.
        if metric in (precision, recall) and t.any() != p.any():
            expected = 0.0
        np.testing.assert_allclose(metric(y_true, y_pred), expected, err_msg=metric.__name__)
    tp, fp, fn, tn = confusion(y_true, y_pred, 2)
    sk_counts = [skm.confusion_matrix(a.ravel(), b.ravel(), labels=[0, 1]).ravel() for a, b in zip(y_true, y_pred)]
    np.testing.assert_array_equal(np.stack([tn[:, 1], fp[:, 1], fn[:, 1], tp[:, 1]], axis=1), sk_counts)


# instance F1 -----------------------------------------------------------------------------------------------------


def two_touching_cells(left_width=4, right_width=4):
    """A 6x(left+right+2) image: two rectangular cells side by side, sharing an edge (ids 1 and 2)."""
    cells = np.zeros((6, left_width + right_width + 2), int)
    cells[1:5, 1 : 1 + left_width] = 1
    cells[1:5, 1 + left_width : 1 + left_width + right_width] = 2
    return cells


def test_touching_cells_predicted_merged_find_at_most_one():
    cells = two_touching_cells(left_width=6, right_width=2)  # the merged blob is 3/4 the left cell
    scores = instance_f1(cells, cells > 0)
    assert (scores.matched, scores.n_true, scores.n_pred) == (1, 2, 1)
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    # equal cells: the blob's IoU with each is exactly 1/2, not above the threshold: nothing found
    cells = two_touching_cells()
    assert instance_f1(cells, cells > 0)[:4] == (0.0, 0.0, 0.0, 0)


def test_touching_cells_predicted_apart_are_all_found():
    cells = two_touching_cells()
    separated = cells > 0
    separated[:, 5] = False  # a one-pixel gap where the cells touch: IoU 12/16 each
    assert instance_f1(cells, separated) == (1.0, 1.0, 1.0, 2, 2, 2)
    # a false positive blob far away: one prediction in three is wrong
    separated = np.pad(separated, ((0, 3), (0, 0)))
    separated[-2, 0] = True
    scores = instance_f1(np.pad(cells, ((0, 3), (0, 0))), separated)
    assert (scores.precision, scores.recall, scores.matched, scores.n_pred) == (pytest.approx(2 / 3), 1.0, 2, 3)


def test_corner_contact_keeps_components_apart():
    # 4-connectivity: two predicted squares touching at one corner are two components
    cells = np.zeros((4, 4), int)
    cells[:2, :2], cells[2:, 2:] = 1, 2
    assert instance_f1(cells, cells > 0) == (1.0, 1.0, 1.0, 2, 2, 2)


def test_instance_ids_need_not_be_contiguous_and_a_batch_is_pooled():
    cells = two_touching_cells(left_width=6, right_width=2)
    renamed = np.where(cells == 1, 17, np.where(cells == 2, 3, 0))
    assert instance_f1(renamed, cells > 0) == instance_f1(cells, cells > 0)
    separated = cells > 0
    separated[:, 6] = False  # the left cell loses a column (IoU 20/24), the right one is whole
    batch = instance_f1(np.stack([cells, renamed]), np.stack([cells > 0, separated]))
    assert (batch.matched, batch.n_true, batch.n_pred) == (3, 4, 3)
    assert batch.recall == pytest.approx(3 / 4) and batch.precision == 1.0


def test_a_bool_truth_mask_is_split_into_its_objects():
    # Two separate cells given as a bool mask: two objects, as unet_weight_map reads the same array. A perfect
    # prediction scores 1 (read as a single object it scored F1 = 0: one object, two components).
    cells = two_touching_cells()
    cells[:, 5] = 0  # a gap between the cells
    mask = cells > 0
    assert instance_f1(mask, mask) == (1.0, 1.0, 1.0, 2, 2, 2)
    assert instance_f1(mask, mask) == instance_f1(cells, mask)
    merged = two_touching_cells() > 0  # one connected blob is one object
    assert instance_f1(merged, merged) == (1.0, 1.0, 1.0, 1, 1, 1)


@settings(deadline=None)
@given(hnp.arrays(bool, SMALL_BATCH))
def test_any_bool_mask_scored_against_itself_is_perfect(mask):
    components = sum(ndimage.label(image)[1] for image in mask)
    assert instance_f1(mask, mask) == (1.0, 1.0, 1.0, components, components, components)


def test_below_one_half_matching_stays_one_to_one():
    cells = two_touching_cells()  # the blob passes IoU 0.3 with both cells, yet matches only one
    scores = instance_f1(cells, cells > 0, iou_threshold=0.3)
    assert (scores.matched, scores.recall, scores.precision) == (1, 0.5, 1.0)


def test_instance_f1_empty_cases():
    empty = np.zeros((5, 5), int)
    assert instance_f1(empty, empty) == (1.0, 1.0, 1.0, 0, 0, 0)
    assert instance_f1(empty, empty, empty_score=0.0)[:3] == (0.0, 0.0, 0.0)
    cells = two_touching_cells()
    assert instance_f1(cells, np.zeros_like(cells)) == (0.0, 0.0, 0.0, 0, 2, 0)
    assert instance_f1(np.zeros_like(cells), cells > 0) == (0.0, 0.0, 0.0, 0, 0, 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: instance_f1(np.zeros((3, 3), int), np.zeros((3, 4), bool)), "same shape"),
        (lambda: instance_f1(-np.ones((3, 3), int), np.zeros((3, 3), bool)), "non-negative"),
        (lambda: instance_f1(np.zeros((3, 3)), np.zeros((3, 3), bool)), "true_instances must be an integer array"),
        (lambda: instance_f1(np.zeros((3, 3), int), np.zeros((3, 3), bool), iou_threshold=1.0), "< 1.0, got 1.0"),
        (lambda: instance_f1(np.zeros((3, 3), int), np.zeros((3, 3), bool), iou_threshold=np.nan), "finite"),
    ],
)
def test_instance_f1_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@st.composite
def instance_images(draw):
    """(instances, prediction): up to 6 random rectangles painted in turn on a 12x12 image (later ones cover
    earlier ones, so cells touch, overlap into odd shapes or vanish), and the foreground with random pixels flipped,
    so that predicted cells merge, split, shrink and appear."""
    instances = np.zeros((12, 12), np.int64)
    for cell_id in range(1, draw(st.integers(0, 6)) + 1):
        top, left = draw(st.integers(0, 10)), draw(st.integers(0, 10))
        height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        instances[top : top + height, left : left + width] = cell_id
    flips = draw(hnp.arrays(bool, instances.shape)) & draw(hnp.arrays(bool, instances.shape))
    return instances, (instances > 0) ^ flips


@settings(deadline=None)
@given(instance_images(), st.sampled_from([0.5, 0.7, 0.9]))
def test_instance_f1_matches_pairwise_iou_count(case, threshold):
    """With a threshold ≥ 0.5 the matches are the pairs whose IoU passes it: counted here mask by mask."""
    instances, prediction = case
    components, n_pred = ndimage.label(prediction)
    true_ids = [i for i in np.unique(instances) if i != 0]
    matched = 0
    for i in true_ids:
        for j in range(1, n_pred + 1):
            a, b = instances == i, components == j
            matched += (a & b).sum() / (a | b).sum() > threshold
    scores = instance_f1(instances, prediction, iou_threshold=threshold)
    assert (scores.matched, scores.n_true, scores.n_pred) == (matched, len(true_ids), n_pred)
    objects = len(true_ids) + n_pred
    assert scores.f1 == pytest.approx(2 * matched / objects if objects else 1.0)
