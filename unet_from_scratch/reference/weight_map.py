"""The U-Net pixel weight map: heavy weights in the narrow gaps between cells, so the network learns to separate them.

Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation"
(arXiv 1505.04597), equation 2:

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 * sigma^2))

- w_c(x): the weight of x's class, background or cell, from ``class_weights`` over those two classes
  (``"balanced"``, ``"median_frequency"``, None for 1, or an explicit pair (background, cell)).
- d1(x), d2(x): the Euclidean distances from pixel x to the nearest pixel of the nearest cell and of the second
  nearest cell (between pixel centres, as ``scipy.ndimage.distance_transform_edt`` measures them).
- The paper uses w0 = 10 and sigma ≈ 5 pixels. The border term is added on background pixels only: it exists to
  weight the gaps between cells (a cell pixel has d1 = 0 and would otherwise get a term from its neighbour).

Conventions:
- Input. An integer array is an instance label image: 0 is background, every positive id one cell (ids need not be
  contiguous; pixels sharing an id are one cell even if they are not connected). A bool array is a binary mask and
  is split into cells by 8-connected components. A 0/1 integer mask is an integer array, i.e. one cell with id 1:
  pass ``mask.astype(bool)`` to have it split. Float or negative label images raise ValueError, and so does an
  empty image (H or W = 0): it has no class weights to balance.
- Parameters: ``w0`` any finite number >= 0; ``sigma`` finite and >= ``MIN_SIGMA`` (0.01 pixel). Below it the
  border term is exactly 0 in float64 whatever w0: on a background pixel d1 + d2 >= 2, so the exponent is at most
  -2 / sigma^2 = -2e4; pass ``w0=0`` to switch the term off instead.
- Fewer than two cells: there is no second nearest cell, so the border term is 0 and w = w_c.
- Touching cells: the map does not separate them. The paper's masks have a background gap between touching cells;
  ``separation_border`` carves one, and is meant to be applied first.

Exact and fast. ``unet_weight_map_naive`` is the textbook way: one full-image distance transform per cell, stacked
(K, H, W) and sorted along the cell axis, so K full-image passes and K * H * W memory. ``unet_weight_map`` returns
the same map to within ``TOLERANCE`` while computing each cell's distance transform only in a window around it:

1. The border term is below tol exactly where d1 + d2 > R, with R = sigma * sqrt(2 * ln(w0 / tol)).
2. On a background pixel d1 >= 1 (its nearest cell pixel is another pixel), so wherever the term is >= tol both the
   nearest and the second nearest cell are within d2 <= R - d1 <= R - 1.
3. Cell k's window is its bounding box grown by m = floor(R - 1) pixels on each side (clipped to the image). A pixel
   outside the window is at least m + 1 > R - 1 rows or columns away from every pixel of k. Inside it the
   window's own distance transform is exact, since the window holds every pixel of k.
4. Running minima D1 <= D2 over the windows that cover a pixel: where the true term is >= tol, both the nearest and
   the second nearest cell cover the pixel and every cell that does not is at least m + 1 > R - 1 >= d2 away, so
   D1 = d1 and D2 = d2 exactly. Elsewhere D1 >= d1 and D2 >= d2 (minima over fewer cells; infinite where fewer
   than two windows cover the pixel, pixels far from all cells included), so the true and the computed term both
   lie in [0, tol).

Hence |fast - naive| < tol everywhere. With w0 = 10, sigma = 5 and tol = 1e-5, R = 26.3 and m = 25. The cost is
the sum of the windows' areas plus a few full-image passes: linear in the image area at fixed cell density and size
(an id made of far-apart pieces gets the window of their joint bounding box: still exact, only slower).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from unet_from_scratch.reference._checks import check_int_array, check_real
from unet_from_scratch.reference.class_weights import METHODS, class_weights_from_counts

# Largest difference allowed between unet_weight_map and unet_weight_map_naive (ten times below the 1e-4 the
# project promises, so the windows are never the reason a comparison fails).
TOLERANCE = 1e-5

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)

# The smallest sigma accepted, in pixels (module docstring: below it the border term is 0 for any w0).
MIN_SIGMA = 0.01


def _check_instances(instances) -> np.ndarray:
    check_int_array(instances, "instances", ndim=2, layout="(H, W)")
    if instances.dtype != np.bool_ and instances.size and instances.min() < 0:
        raise ValueError(f"instances must be >= 0 (0 = background, 1.. = cells), got minimum {instances.min()}")
    if instances.size == 0:
        raise ValueError(f"instances must be a non-empty (H, W) image, got shape {instances.shape}")
    return instances


def _check_params(w0, sigma, class_weights) -> None:
    check_real(w0, "w0", minimum=0.0)
    check_real(sigma, "sigma", minimum=MIN_SIGMA)
    if class_weights is None or (isinstance(class_weights, str) and class_weights in METHODS):
        return
    if isinstance(class_weights, str):
        raise ValueError(f"class_weights must be one of {METHODS}, None or a pair of weights, got {class_weights!r}")
    weights = np.asarray(class_weights)
    if (
        weights.shape != (2,)
        or not np.issubdtype(weights.dtype, np.number)
        or not np.all(np.isfinite(weights))
        or np.any(weights < 0)
    ):
        raise ValueError(f"class_weights must hold 2 finite weights >= 0 (background, cell), got {class_weights!r}")


def _labelled(instances: np.ndarray) -> tuple[np.ndarray, int]:
    """The cells as integer labels (0 = background) and the largest label; ids are kept unless find_objects'
    list (one entry per id up to the largest) would outgrow the image."""
    if instances.dtype == np.bool_:
        return ndimage.label(instances, structure=_EIGHT_NEIGHBOURS)
    top = int(instances.max()) if instances.size else 0
    if top <= instances.size:
        return instances, top
    ids, inverse = np.unique(instances, return_inverse=True)
    labels = inverse.reshape(instances.shape) + (ids[0] != 0)  # keep 0 for background
    return labels, int(labels.max())


def _two_class_weights(cells: np.ndarray, class_weights) -> tuple[float, float]:
    """w_c of (background, cell) pixels for the mask ``cells`` (H, W) bool."""
    if class_weights is None:
        return 1.0, 1.0
    if isinstance(class_weights, str):
        n_cell = np.count_nonzero(cells)
        counts = (cells.size - n_cell, n_cell)
        # One image: the pixels of the images in which a class appears are all of them.
        background, cell = class_weights_from_counts(counts, (cells.size, cells.size), class_weights)
    else:
        background, cell = np.asarray(class_weights, dtype=np.float64)
    return float(background), float(cell)


def _weight_map(cells: np.ndarray, class_weights, border: np.ndarray | None) -> np.ndarray:
    """w = w_c + border on background pixels, w_c on cell pixels -> (H, W) float64."""
    background, cell = _two_class_weights(cells, class_weights)
    if border is None:
        return np.where(cells, cell, background)
    border += background
    return np.where(cells, cell, border)


def _border_term(d1: np.ndarray, d2: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """w0 * exp(-(d1 + d2)^2 / (2 sigma^2)), a new array; infinite distances give 0."""
    s = d1 + d2
    np.square(s, out=s)
    s *= -1.0 / (2.0 * sigma * sigma)
    np.exp(s, out=s)
    s *= w0
    return s


def window_margin(w0: float, sigma: float, tol: float = TOLERANCE) -> int:
    """m = floor(R - 1), R = sigma * sqrt(2 ln(w0 / tol)): how far beyond a cell its distances can matter.

    Past m pixels from a cell's bounding box, that cell can be neither the nearest nor the second nearest cell of
    a background pixel whose border term is >= tol (derivation in the module docstring). 0 when w0 <= tol.
    """
    if w0 <= tol:
        return 0
    reach = sigma * math.sqrt(2.0 * (math.log(w0) - math.log(tol)))  # w0 / tol would overflow for w0 near 1e308
    return max(0, math.floor(reach - 1.0))


def separation_border(instances: np.ndarray) -> np.ndarray:
    """Carve a background gap between touching cells -> a copy of ``instances`` (H, W), same integer dtype.

    A cell pixel with an 8-neighbour that belongs to a different cell becomes background (0), on both sides of the
    contact. Afterwards no two pixels of different cells are 8-adjacent, so the cells stay apart even as a binary
    mask. Cells that touch nothing are left as they are. ``instances`` must be integer labels (a bool mask has no
    instances to separate).
    """
    _check_instances(instances)
    if instances.dtype == np.bool_:
        raise ValueError("instances must be integer instance labels to separate, got a bool mask")
    labels = instances.astype(np.int64, copy=False)
    # Background reads as ``top`` in the minimum, so it never looks "smaller". Not the dtype's maximum: scipy's
    # filters take ``cval`` as a float64, and int64's maximum comes back from float64 as the int64 minimum, which
    # would carve the edge of every cell. One above the largest id is exact in float64 for ids below 2^53.
    top = int(labels.max(initial=0)) + 1
    largest = ndimage.maximum_filter(labels, footprint=_EIGHT_NEIGHBOURS, mode="constant", cval=0)
    smallest = ndimage.minimum_filter(
        np.where(labels == 0, top, labels), footprint=_EIGHT_NEIGHBOURS, mode="constant", cval=top
    )
    touching = (labels > 0) & ((largest > labels) | (smallest < labels))
    out = instances.copy()
    out[touching] = 0
    return out


def unet_weight_map(
    instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_weights="balanced"
) -> np.ndarray:
    """The U-Net weight map of an instance label image ``instances`` (H, W) -> (H, W) float64, the fast way.

    w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, w_c(x) on cell pixels (module
    docstring: formula, input conventions, and why the windowed distances give the exact map to within
    ``TOLERANCE``). Cost: one distance transform per cell over its bounding box grown by ``window_margin``.
    """
    _check_instances(instances)
    _check_params(w0, sigma, class_weights)
    labels, top = _labelled(instances)
    cells = labels > 0
    boxes = ndimage.find_objects(labels, max_label=top)
    if sum(box is not None for box in boxes) < 2:
        return _weight_map(cells, class_weights, None)

    height, width = labels.shape
    margin = window_margin(w0, sigma)
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for k, box in enumerate(boxes, start=1):
        if box is None:  # an id that does not occur
            continue
        rows, cols = box
        window = (
            slice(max(rows.start - margin, 0), min(rows.stop + margin, height)),
            slice(max(cols.start - margin, 0), min(cols.stop + margin, width)),
        )
        dk = ndimage.distance_transform_edt(labels[window] != k)
        near, second = d1[window], d2[window]  # views: the running minima are updated in place
        np.minimum(second, np.maximum(near, dk), out=second)
        np.minimum(near, dk, out=near)
    return _weight_map(cells, class_weights, _border_term(d1, d2, w0, sigma))


def unet_weight_map_naive(
    instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_weights="balanced"
) -> np.ndarray:
    """The same map as ``unet_weight_map``, the textbook way: K full-image distance transforms, stacked and sorted.

    Memory K * H * W float64 for K cells; kept as the plain statement of the formula that the fast version is
    tested against.
    """
    _check_instances(instances)
    _check_params(w0, sigma, class_weights)
    labels, _ = _labelled(instances)
    cells = labels > 0
    ids = np.unique(labels[cells])
    if len(ids) < 2:
        return _weight_map(cells, class_weights, None)

    distances = np.stack([ndimage.distance_transform_edt(labels != k) for k in ids])  # (K, H, W)
    distances.sort(axis=0)
    return _weight_map(cells, class_weights, _border_term(distances[0], distances[1], w0, sigma))
