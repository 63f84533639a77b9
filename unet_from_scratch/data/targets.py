"""From a source's mask to what the loss sees: the labels moved by the transforms, the target classes, the weight map.

A source (``SyntheticCells``, ``FolderDataset``) gives each image a mask of one of two kinds:

- ``"instances"``: 0 background, every positive id one object. With ``separate_touching`` the paper's background
  gap is first carved between touching objects (``separation_border``: a pixel with an 8-neighbour of another
  object becomes background), so touching cells stay apart in the target. The target class is object (1) vs
  background (0), and the weight map's objects are the instances themselves.
- ``"classes"``: each value a class index. The target is the mask itself, and the weight map's objects are the
  8-connected components of the non-background pixels (touching objects of one class merge: a class mask cannot
  say where one ends).

The weight map is the U-Net paper's (equation 2, ``reference.weight_map``), with w_c taken from class weights
computed on the training split:

    w(x) = class_weights[target(x)] + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))   (border term on background only)

For an instance mask this is exactly ``unet_weight_map(labels, w0, sigma, class_weights=(w_bg, w_obj))``; for a
class mask it extends the paper's two-class w_c to any number of classes.

``check_item`` checks what a source hands out, once for the statistics and the dataset alike, by the policy of
``reference/_checks.py`` (a dataset is where a user's data comes in, so its values are checked too): the image
(C, H, W), or (H, W) read as one channel, of real values, finite; the mask (H, W) of the image's size, of integer
labels (a float mask is refused: 0.7 is no class, and casting it would make it class 0), within the classes.
Each message is one line that names the item.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference.weight_map import separation_border, unet_weight_map

MASK_KINDS = ("instances", "classes")
_MAX_LABEL = np.iinfo(np.int32).max  # labels are int32 from here on


def check_item(image, mask, index: int, mask_kind: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Source item ``index``'s (image, mask) checked -> (image (C, H, W) of the source's dtype, mask (H, W)).

    image: (C, H, W), or (H, W), which gets the channel axis (one channel); integer, bool or float, finite.
    mask: (H, W) of the image's size, integer or bool; labels in [0, num_classes) for class masks, ids >= 0 for
    instance masks. Raises ValueError (one line, naming the item) otherwise.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_) or np.iscomplexobj(image):
        raise ValueError(f"item {index}: image must be an array of real numbers, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"item {index}: image must be (C, H, W) or (H, W), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"item {index}: image must hold at least one channel and pixel, got shape {image.shape}")
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        raise ValueError(f"item {index}: image must be finite, got {bad} NaN or infinite value(s)")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(
            f"item {index}: mask must hold integer labels, got dtype {mask.dtype} (a float mask is not cast: "
            f"0.7 would become class 0)"
        )
    if mask.shape != image.shape[1:]:
        size = image.shape[1:]
        raise ValueError(f"item {index}: mask must be (H, W) = {size}, the image's size, got shape {mask.shape}")
    low, high = int(mask.min()), int(mask.max())
    if mask_kind == "classes" and (low < 0 or high >= num_classes):
        raise ValueError(f"item {index}: mask labels must lie in [0, {num_classes}) (the classes), got {low}..{high}")
    if mask_kind == "instances" and (low < 0 or high > _MAX_LABEL):
        raise ValueError(f"item {index}: instance ids must lie in [0, {_MAX_LABEL}], got {low}..{high}")
    return image, mask


def prepare_labels(mask: np.ndarray, mask_kind: str, separate_touching: bool = True) -> np.ndarray:
    """The labels the transforms move -> int32 (H, W): separated instances, or the class mask as it is."""
    if mask_kind not in MASK_KINDS:
        raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {mask_kind!r}")
    mask = np.asarray(mask).astype(np.int32, copy=False)
    if mask_kind == "instances" and separate_touching:
        return separation_border(mask)
    return mask


def target_classes(labels: np.ndarray, mask_kind: str) -> np.ndarray:
    """Class index of every pixel -> int64 (H, W): object/background for instances, the labels for classes."""
    if mask_kind == "instances":
        return (labels > 0).astype(np.int64)
    return labels.astype(np.int64)


def weight_map(labels: np.ndarray, mask_kind: str, class_weights, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The weight map of the module docstring for prepared ``labels`` (H, W) -> float32 (H, W).

    ``class_weights`` (K,) holds one weight per class, in class order.
    """
    class_weights = np.asarray(class_weights, dtype=np.float64)
    objects = labels if mask_kind == "instances" else labels > 0  # a bool mask is split into 8-connected components
    border = unet_weight_map(objects, w0=w0, sigma=sigma, class_weights=(0.0, 0.0))
    return (class_weights[target_classes(labels, mask_kind)] + border).astype(np.float32)
