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
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference.weight_map import separation_border, unet_weight_map

MASK_KINDS = ("instances", "classes")


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
