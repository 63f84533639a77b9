"""Segmentation metrics: the pixel scores (IoU, Dice, precision, recall, F1, accuracy) and the instance F1.

Everything starts from four counts per image and class, taken one class against the rest:

    tp  pixels of the class predicted as the class        fp  other pixels predicted as the class
    fn  pixels of the class predicted as something else   tn  other pixels predicted as something else

and every score is a ratio of them:

    IoU (Jaccard)  tp / (tp + fp + fn)            precision  tp / (tp + fp)
    Dice           2·tp / (2·tp + fp + fn)        recall     tp / (tp + fn)
    F1             the harmonic mean of precision and recall, which is the Dice of the same counts.

A worked example, the foreground (class 1) of one 3x3 image::

    y_true = [[0, 1, 1],      y_pred = [[0, 1, 0],
              [0, 0, 1],                [0, 0, 1],
              [1, 1, 0]]                [1, 0, 0]]

tp = 3 (positions (0,1), (1,2), (2,0)), fp = 0, fn = 2 ((0,2) and (2,1)), so the union is tp + fp + fn = 5 pixels
(the 5 ones of y_true; the prediction adds none) and IoU = 3/5 = 0.6, Dice = 6/8 = 3/4. A version of this example
often quoted gives 3/6 by counting a union of 6; there is no sixth pixel.

Pooling (``reduction``), as in segmentation_models_pytorch's ``get_stats`` / ``iou_score``:

- ``"micro"``      add the counts over the whole batch and over the scored classes, then take the ratio: one number.
- ``"per_image"``  add the counts over the scored classes of each image, then the ratio: shape (N,).
- ``"per_class"``  add the counts over the batch, one ratio per class: shape (C,), every class.
- ``"macro"``      the mean of ``"per_class"`` over the scored classes.

The scored classes are 1..C-1 by default (the background is not what a segmentation is asked to find, and this is
the default of ``losses.dice_loss`` too); ``include_background=True`` scores class 0 as well, and a lone class
(C == 1) is always scored. A class equal to ``ignore_index`` is never scored, and pixels whose target is
``ignore_index`` are left out of every count (as torchmetrics does).

Empty cases, never NaN: a ratio whose denominator is 0 is ``empty_score`` (1.0 by default) when the prediction and
the target are both empty for the pooled counts (tp = fp = fn = 0: nothing to find and nothing found, a perfect
result), and 0.0 otherwise (a precision with no prediction but a target to find, a recall with nothing to find but a
prediction: a miss, not a perfect score). torchmetrics and scikit-learn use one ``zero_division`` value instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from unet_from_scratch.reference._checks import MAX_CLASSES, check_int_array, check_num_classes, check_real

REDUCTIONS = ("micro", "per_image", "per_class", "macro")


def _check_label_maps(y_true, y_pred, num_classes: int, ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as (N, H, W) integer arrays with labels in [0, num_classes) (the target may hold ``ignore_index``)."""
    check_num_classes(num_classes)
    check_int_array(y_true, "y_true")
    check_int_array(y_pred, "y_pred")
    if y_true.shape != y_pred.shape or y_true.ndim not in (2, 3):
        raise ValueError(
            f"y_true and y_pred must be label maps of the same shape (H, W) or (N, H, W), "
            f"got {y_true.shape} and {y_pred.shape}"
        )
    kept = y_true if ignore_index is None else y_true[y_true != ignore_index]
    for name, labels in (("y_true", kept), ("y_pred", y_pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]"
            )
    if y_true.ndim == 2:
        return y_true[None], y_pred[None]
    return y_true, y_pred


def confusion(y_true, y_pred, num_classes: int, ignore_index: int | None = None):
    """The one-class-against-the-rest counts of every image and class.

    Args:
        y_true: (N, H, W) or (H, W) integer (or bool) target labels in [0, num_classes), or ``ignore_index``.
        y_pred: predicted labels, same shape, in [0, num_classes).
        num_classes: C.
        ignore_index: target value whose pixels are left out of every count (it may be a class id or not).

    Returns:
        tp, fp, fn, tn: int64 arrays of shape (N, C) (N = 1 for a single (H, W) map), with
        tp + fp + fn + tn = the number of counted pixels of the image for every class.

    The confusion matrix ``m[n, t, p]`` (pixels of image n with target t predicted as p) is one ``np.bincount``
    of the flat index ``(n·C + t)·C + p``; tp is its diagonal, fn the rest of a row, fp the rest of a column.
    With many classes that matrix (N·C² counts) would outgrow the label maps themselves, and the same counts are
    taken from three bincounts of length N·C instead: the pixels where t == p (tp), every target (tp + fn) and
    every prediction (tp + fp). At most ``MAX_CLASSES`` classes.
    """
    y_true, y_pred = _check_label_maps(y_true, y_pred, num_classes, ignore_index)
    n, c = y_true.shape[0], int(num_classes)
    first_row = (np.arange(n, dtype=np.int64) * c).reshape(n, 1, 1)  # image n owns rows n·C .. n·C + C-1
    if n * c * c > 4 * y_true.size + 2**16:
        return _confusion_by_class(first_row + y_true, first_row + y_pred, y_true, n, c, ignore_index)
    flat = (first_row + y_true) * c + y_pred
    if ignore_index is not None:
        flat = flat[y_true != ignore_index]
    matrix = np.bincount(flat.ravel(), minlength=n * c * c).reshape(n, c, c)
    tp = np.diagonal(matrix, axis1=1, axis2=2).copy()
    fn = matrix.sum(axis=2) - tp
    fp = matrix.sum(axis=1) - tp
    tn = matrix.sum(axis=(1, 2))[:, None] - tp - fp - fn  # the image's counted pixels, less the other three
    return tp, fp, fn, tn


def _confusion_by_class(true_index, pred_index, y_true, n: int, c: int, ignore_index):
    """``confusion`` without the (N, C, C) matrix: bincounts of length N·C of the flat (image, class) indices."""
    if ignore_index is not None:
        counted = y_true != ignore_index
        true_index, pred_index = true_index[counted], pred_index[counted]
    true_index, pred_index = true_index.ravel(), pred_index.ravel()
    tp = np.bincount(true_index[true_index == pred_index], minlength=n * c).reshape(n, c)
    support = np.bincount(true_index, minlength=n * c).reshape(n, c)  # tp + fn
    predicted = np.bincount(pred_index, minlength=n * c).reshape(n, c)  # tp + fp
    fn, fp = support - tp, predicted - tp
    tn = support.sum(axis=1)[:, None] - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(numerator, denominator, both_empty, empty_score: float) -> np.ndarray:
    """numerator / denominator, with 0/0 read as ``empty_score`` where ``both_empty`` and as 0 elsewhere."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, np.where(both_empty, float(empty_score), 0.0))


def _scored_classes(num_classes: int, include_background: bool, ignore_index: int | None) -> np.ndarray:
    """The boolean mask (C,) of the classes a micro/per_image/macro score is taken over."""
    scored = np.ones(num_classes, bool)
    if not include_background and num_classes > 1:
        scored[0] = False
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        scored[ignore_index] = False
    if not scored.any():
        raise ValueError(
            f"no class left to score: num_classes={num_classes}, include_background={include_background}, "
            f"ignore_index={ignore_index}"
        )
    return scored


def _score(score_of, y_true, y_pred, num_classes, reduction, ignore_index, empty_score, include_background):
    """Apply ``score_of(tp, fp, fn, tn, empty_score)`` to the counts pooled as ``reduction`` asks."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    tp, fp, fn, tn = confusion(y_true, y_pred, num_classes, ignore_index)
    scored = _scored_classes(int(num_classes), include_background, ignore_index)
    if reduction == "micro":
        counts = (k[:, scored].sum() for k in (tp, fp, fn, tn))
        return float(score_of(*counts, empty_score))
    if reduction == "per_image":
        return score_of(*(k[:, scored].sum(axis=1) for k in (tp, fp, fn, tn)), empty_score)
    per_class = score_of(*(k.sum(axis=0) for k in (tp, fp, fn, tn)), empty_score)
    if reduction == "per_class":
        return per_class
    return float(per_class[scored].mean())


def _iou(tp, fp, fn, tn, empty_score):
    return _ratio(tp, tp + fp + fn, tp + fp + fn == 0, empty_score)


def _dice(tp, fp, fn, tn, empty_score):
    return _ratio(2 * tp, 2 * tp + fp + fn, tp + fp + fn == 0, empty_score)


def _precision(tp, fp, fn, tn, empty_score):
    return _ratio(tp, tp + fp, tp + fp + fn == 0, empty_score)


def _recall(tp, fp, fn, tn, empty_score):
    return _ratio(tp, tp + fn, tp + fp + fn == 0, empty_score)


_SIGNATURE_DOC = """
    Args:
        y_true: (N, H, W) or (H, W) integer (or bool) target labels in [0, num_classes), or ``ignore_index``.
        y_pred: predicted labels of the same shape (e.g. ``logits.argmax(1)``).
        num_classes: C (2 for a binary map: background 0, foreground 1).
        reduction: ``"micro"`` (float), ``"per_image"`` ((N,) float64), ``"per_class"`` ((C,) float64, every class)
            or ``"macro"`` (float); see the module docstring.
        ignore_index: target value whose pixels are not counted; as a class id it is not scored either.
        empty_score: the score when prediction and target are both empty (denominator 0); never NaN.
        include_background: score class 0 too (by default only classes 1..C-1; a binary map scores its foreground).
"""


def iou(
    y_true, y_pred, num_classes=2, reduction="micro", ignore_index=None, empty_score=1.0, include_background=False
):
    """Intersection over union (Jaccard index): tp / (tp + fp + fn), the overlap of prediction and target over
    their union.

    On the worked example of the module docstring, ``iou(y_true, y_pred)`` (foreground of a binary map) is 3/5 = 0.6.
    """
    return _score(_iou, y_true, y_pred, num_classes, reduction, ignore_index, empty_score, include_background)


def dice(
    y_true, y_pred, num_classes=2, reduction="micro", ignore_index=None, empty_score=1.0, include_background=False
):
    """Dice coefficient: 2·tp / (2·tp + fp + fn) = 2·|A ∩ B| / (|A| + |B|), A the target's pixels, B the
    prediction's.

    Dice = 2·IoU / (1 + IoU) for the same counts; on the worked example of the module docstring it is 3/4.
    """
    return _score(_dice, y_true, y_pred, num_classes, reduction, ignore_index, empty_score, include_background)


def precision(
    y_true, y_pred, num_classes=2, reduction="micro", ignore_index=None, empty_score=1.0, include_background=False
):
    """Precision: tp / (tp + fp), the fraction of the predicted pixels that are right (0 if nothing is predicted
    where there was something to find)."""
    return _score(_precision, y_true, y_pred, num_classes, reduction, ignore_index, empty_score, include_background)


def recall(
    y_true, y_pred, num_classes=2, reduction="micro", ignore_index=None, empty_score=1.0, include_background=False
):
    """Recall (sensitivity): tp / (tp + fn), the fraction of the target's pixels that were found (0 if there was
    nothing to find but something was predicted)."""
    return _score(_recall, y_true, y_pred, num_classes, reduction, ignore_index, empty_score, include_background)


def f1(
    y_true, y_pred, num_classes=2, reduction="micro", ignore_index=None, empty_score=1.0, include_background=False
):
    """F1 score: 2·P·R / (P + R) with P = tp/(tp+fp), R = tp/(tp+fn).

    Multiplying out, 2·P·R / (P + R) = 2·tp / (2·tp + fp + fn): on pixel counts the F1 score *is* the Dice
    coefficient, so this returns ``dice`` of the same arguments (3/4 on the worked example).
    """
    return dice(y_true, y_pred, num_classes, reduction, ignore_index, empty_score, include_background)


for _metric in (iou, dice, precision, recall, f1):
    if _metric.__doc__ is not None:  # None under python -OO
        _metric.__doc__ += _SIGNATURE_DOC


def _accuracy(tp, fp, fn, tn, empty_score):
    # Summed over all classes, tp counts the correct pixels and tp + fn every counted pixel.
    return _ratio(tp, tp + fn, tp + fp + fn == 0, empty_score)


def accuracy(y_true, y_pred, num_classes=2, reduction="micro", ignore_index=None, empty_score=1.0):
    """Pixel accuracy: the fraction of counted pixels whose predicted label equals the target.

    Every pixel is right or wrong whatever its class, so ``"micro"`` and ``"per_image"`` count all classes
    (there is no ``include_background``): correct pixels / counted pixels. ``"per_class"`` gives the accuracy on
    the pixels of each class, tp / (tp + fn) (its recall, as torchmetrics' class-wise accuracy), and ``"macro"``
    their mean over the classes present in the target (but an ignored one): the balanced accuracy, as
    scikit-learn's ``balanced_accuracy_score`` (a class absent from the target has no recall to average; counted
    as ``empty_score`` it would lift the mean). On the worked example of the module docstring 7 of the 9 pixels
    are right: 7/9.

    Args: as ``iou``; an image (or, for ``"macro"``, a batch) with no counted pixel scores ``empty_score``.
    """
    if reduction != "macro":
        return _score(_accuracy, y_true, y_pred, num_classes, reduction, ignore_index, empty_score, True)
    tp, _, fn, _ = confusion(y_true, y_pred, num_classes, ignore_index)
    scored = _scored_classes(int(num_classes), True, ignore_index)
    tp, support = tp.sum(axis=0), (tp + fn).sum(axis=0)
    present = scored & (support > 0)
    if not present.any():
        return float(empty_score)
    return float(np.mean(tp[present] / support[present]))


class InstanceScores(NamedTuple):
    """The instance-level detection scores of ``instance_f1``."""

    precision: float  # matched / predicted objects
    recall: float  # matched / true objects
    f1: float  # 2·matched / (predicted + true objects)
    matched: int  # true objects matched one-to-one by a predicted object
    n_true: int
    n_pred: int


def _match_instances(true_instances: np.ndarray, pred_mask: np.ndarray, iou_threshold: float) -> tuple[int, int, int]:
    """(matched, number of true objects, number of predicted components) of one (H, W) image."""
    ids = np.unique(true_instances[true_instances > 0])
    n_true = ids.size
    # Objects renumbered 1..n_true (0 stays the background), so that they can index the overlap table.
    true_flat = np.where(true_instances > 0, np.searchsorted(ids, true_instances) + 1, 0).reshape(-1)
    pred_components, n_pred = ndimage.label(pred_mask)
    pred_flat = pred_components.reshape(-1)
    if n_true == 0 or n_pred == 0:
        return 0, n_true, n_pred
    # overlap[i, j]: pixels of true object i that lie in predicted component j (row and column 0: background).
    overlap = np.bincount(true_flat * (n_pred + 1) + pred_flat, minlength=(n_true + 1) * (n_pred + 1))
    overlap = overlap.reshape(n_true + 1, n_pred + 1)
    area_true = overlap.sum(axis=1)[1:, None]
    area_pred = overlap.sum(axis=0)[None, 1:]
    intersection = overlap[1:, 1:]
    pair_iou = intersection / (area_true + area_pred - intersection)
    # Greedy one-to-one matching, best pairs first. Above 0.5 no object can pass the threshold with two others
    # (they would share more than half of its union), so the pairs are a matching already and the order is moot.
    candidates = np.argwhere(pair_iou > iou_threshold)
    order = np.argsort(-pair_iou[candidates[:, 0], candidates[:, 1]], kind="stable")
    used_true, used_pred, matched = set(), set(), 0
    for i, j in candidates[order]:
        if i not in used_true and j not in used_pred:
            used_true.add(i)
            used_pred.add(j)
            matched += 1
    return matched, n_true, n_pred


def instance_f1(true_instances, pred_mask, iou_threshold: float = 0.5, empty_score: float = 1.0) -> InstanceScores:
    """Object-level precision, recall and F1: were the touching cells found, and found apart?

    The prediction is split into connected components (``scipy.ndimage.label``, 4-connectivity: pixels that
    touch only at a corner are apart); each component is matched to at most one true instance and each instance to
    at most one component, a pair counting when their IoU exceeds ``iou_threshold``. Two touching cells predicted
    as one blob give one component whose IoU with each cell is that cell's share of the blob: only the larger cell
    can pass 0.5, so at most one of the two is found (recall ≤ 1/2).

    Matching is greedy, highest IoU first. With ``iou_threshold >= 0.5`` the pairs over the threshold already form a
    one-to-one matching (IoU > 0.5 means the pair shares more than half of each object, which no third object can
    also do), so the result is unique; below 0.5 the greedy choice is one maximal matching among possibly several.

    Args:
        true_instances: (H, W) or (N, H, W) integer instance ids, 0 the background, any other id one object (ids
            need not be contiguous); or a bool mask, split into objects by connected components as the prediction
            is (4-connectivity), so that a mask scored against itself is perfect (``unet_weight_map`` splits a bool
            mask into components too). A batch is pooled: matches and objects are counted over all its images.
        pred_mask: the predicted foreground, same shape, bool or integer (non-zero = foreground).
        iou_threshold: in [0, 1).
        empty_score: precision, recall and F1 when there are neither true nor predicted objects.

    Returns:
        InstanceScores(precision, recall, f1, matched, n_true, n_pred): precision = matched / n_pred,
        recall = matched / n_true, f1 = 2·matched / (n_pred + n_true); a score with a zero denominator is
        ``empty_score`` if both counts are 0 and 0.0 otherwise.

    Source: the object-level F1 of cell-segmentation benchmarks (e.g. Caicedo et al. 2019, "Evaluation of deep
    learning strategies for nucleus segmentation in fluorescence images").
    """
    check_int_array(true_instances, "true_instances")
    check_int_array(pred_mask, "pred_mask")
    if true_instances.shape != pred_mask.shape or true_instances.ndim not in (2, 3):
        raise ValueError(
            f"true_instances and pred_mask must have the same shape (H, W) or (N, H, W), "
            f"got {true_instances.shape} and {pred_mask.shape}"
        )
    if true_instances.size and true_instances.min() < 0:
        raise ValueError(f"true_instances must be non-negative ids, got a minimum of {true_instances.min()}")
    iou_threshold = check_real(iou_threshold, "iou_threshold", 0.0, below=1.0)
    if true_instances.ndim == 2:
        true_instances, pred_mask = true_instances[None], pred_mask[None]
    matched = n_true = n_pred = 0
    for truth, prediction in zip(true_instances, pred_mask):
        if truth.dtype == np.bool_:  # a binary mask: its connected components are the objects
            truth = ndimage.label(truth)[0]
        m, t, p = _match_instances(truth, prediction != 0, iou_threshold)
        matched, n_true, n_pred = matched + m, n_true + t, n_pred + p
    both_empty = n_true + n_pred == 0
    return InstanceScores(
        precision=float(_ratio(matched, n_pred, both_empty, empty_score)),
        recall=float(_ratio(matched, n_true, both_empty, empty_score)),
        f1=float(_ratio(2 * matched, n_true + n_pred, both_empty, empty_score)),
        matched=matched,
        n_true=n_true,
        n_pred=n_pred,
    )
