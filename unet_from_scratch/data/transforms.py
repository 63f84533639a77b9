"""Augmentation: one geometric change applied identically to the image, its labels and its weight map.

A transform is a callable ``t(sample, rng) -> sample`` on a ``Sample`` (image (C, H, W) float, labels (H, W) int,
weights (H, W) float or None) with a ``numpy.random.Generator`` as the only source of randomness, so the same
generator state gives the same result and ``Compose`` chains them. Geometric transforms resample every field at the
same coordinates: the image and the weight map with linear interpolation, the labels with nearest neighbour (order
0), because an interpolated label id is no label at all. Outside the image the fields are mirrored (scipy's
``mode="reflect"``: d c b a | a b c d), the paper's way of extrapolating missing context.

The paper's augmentation (Ronneberger et al. 2015, section 3.1): shifts, rotations, grey-value changes and, above
all, elastic deformations — "random displacement vectors on a coarse 3 by 3 grid ... sampled from a Gaussian
distribution with 10 pixels standard deviation. Per-pixel displacements are then computed using bicubic
interpolation." ``ElasticDeform`` is that, word for word.

Valid-convolution models output less than they take in (572 -> 388 for the paper's U-Net): the target covers the
centre of the input. The overlap-tile strategy feeds the network its true surroundings and mirrors the image where
there are none. ``RandomCrop(size, margin)`` cuts a ``size`` target window and the image window ``margin`` pixels
wider on each side around it (real context inside the image, mirrored beyond); ``MirrorPad(input_size)`` pads a
whole image to the network's input size. Both leave labels and weights at the output size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from unet_from_scratch.reference._checks import check_int, check_range, check_real, is_int


@dataclass(frozen=True)
class Sample:
    """One training example: ``image`` (C, H, W) float32, ``labels`` (H', W') int, ``weights`` (H', W') or None.

    Before ``RandomCrop``/``MirrorPad`` the three share their spatial size; after them the image is larger by the
    network's valid-convolution margin and labels and weights keep the output size.
    """

    image: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None


Transform = Callable[[Sample, np.random.Generator], Sample]


class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _same_size(sample: Sample) -> tuple[int, int]:
    size = sample.image.shape[1:]
    if sample.image.ndim != 3 or sample.labels.shape != size or (
        sample.weights is not None and sample.weights.shape != size
    ):
        weights = None if sample.weights is None else sample.weights.shape
        raise ValueError(
            f"image (C, H, W), labels and weights (H, W) must share H, W; got image {sample.image.shape}, "
            f"labels {sample.labels.shape}, weights {weights}"
        )
    return size


def _apply(sample: Sample, fn: Callable[[np.ndarray], np.ndarray]) -> Sample:
    """The same array operation on the spatial axes of every field (image channels one by one)."""

    def apply(field: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(fn(field))  # flips are views with negative strides, which torch refuses

    image = np.stack([apply(channel) for channel in sample.image])
    weights = None if sample.weights is None else apply(sample.weights)
    return Sample(image, apply(sample.labels), weights)


def _resample(sample: Sample, coords: np.ndarray) -> Sample:
    """Every field read at ``coords`` (2, H, W): image and weights linearly, labels by nearest neighbour."""

    def read(field: np.ndarray, order: int) -> np.ndarray:
        return ndimage.map_coordinates(field, coords, order=order, mode="reflect")

    image = np.stack([read(channel, 1) for channel in sample.image])
    weights = None if sample.weights is None else read(sample.weights, 1)
    return Sample(image, read(sample.labels, 0), weights)


def _size_pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints (NumPy integers too), each >= 1 -> (h, w)."""
    if is_int(value):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) and v >= 1 for v in value)):
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of them, got {value!r}")
    return int(value[0]), int(value[1])


def warp(sample: Sample, displacement: np.ndarray) -> Sample:
    """Every field of ``sample`` read at (row + dy, col + dx) for ``displacement`` (2, H, W) = (dy, dx) in pixels.

    The displacement must be finite (a NaN position reads as 0, silently, in ``map_coordinates``).
    """
    height, width = _same_size(sample)
    if not isinstance(displacement, np.ndarray) or displacement.shape != (2, height, width):
        raise ValueError(f"displacement must be (2, {height}, {width}), got shape {np.shape(displacement)}")
    if not np.all(np.isfinite(displacement)):
        bad = displacement.size - np.count_nonzero(np.isfinite(displacement))
        raise ValueError(f"displacement must be finite, got {bad} NaN or infinite value(s)")
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    return _resample(sample, np.stack([rows + displacement[0], cols + displacement[1]]))


def elastic_displacement(coarse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Coarse displacements (2, g, g) -> per-pixel displacements (2, H, W) by bicubic spline interpolation.

    The g x g values sit on an even grid whose first and last points are the image's first and last pixels
    (``scipy.ndimage.zoom`` with ``grid_mode=False``, order 3): for g = 3 the corners, edge midpoints and centre.
    """
    height, width = size
    if coarse.ndim != 3 or coarse.shape[0] != 2 or coarse.shape[1] < 2 or coarse.shape[2] < 2:
        raise ValueError(f"coarse displacements must be (2, g, g) with g >= 2, got shape {coarse.shape}")
    # zoom's output size is round(g * (H / g)) = H.
    zoom = (height / coarse.shape[1], width / coarse.shape[2])
    return np.stack([ndimage.zoom(c, zoom, order=3, mode="mirror", grid_mode=False) for c in coarse])


@dataclass
class RandomFlip:
    """Flip up-down and left-right, each with probability ``p``."""

    p: float = 0.5

    def __post_init__(self):
        self.p = check_real(self.p, "p", 0.0, 1.0)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        _same_size(sample)
        flip_rows, flip_cols = rng.random(2) < self.p  # one draw per axis: the two flips are independent
        if flip_rows:
            sample = _apply(sample, np.flipud)
        if flip_cols:
            sample = _apply(sample, np.fliplr)
        return sample


@dataclass
class RandomRotate90:
    """Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3} (square images keep their shape; others swap H, W)."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        _same_size(sample)
        k = int(rng.integers(4))
        return _apply(sample, lambda a: np.rot90(a, k)) if k else sample


@dataclass
class RandomAffine:
    """A small rotation (uniform in ±``degrees``) and zoom (factor uniform in ``zoom``) about the image centre."""

    degrees: float = 10.0
    zoom: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self):
        self.degrees = check_real(self.degrees, "degrees", 0.0)
        self.zoom = check_range(self.zoom, "zoom", 0.0)
        if self.zoom[0] <= 0:
            raise ValueError(f"zoom must be a pair (low, high) of factors > 0, got {self.zoom!r}")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = _same_size(sample)
        angle = math.radians(rng.uniform(-self.degrees, self.degrees))
        scale = rng.uniform(*self.zoom)
        # Output pixel p reads input pixel centre + R(angle) (p - centre) / scale.
        cy, cx = (height - 1) / 2, (width - 1) / 2
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        y, x = (y - cy) / scale, (x - cx) / scale
        cos, sin = math.cos(angle), math.sin(angle)
        coords = np.stack([cy + cos * y - sin * x, cx + sin * y + cos * x])
        return _resample(sample, coords)


@dataclass
class RandomContrast:
    """Grey-value change on the image only: ``gain * (image - mean) + mean + bias`` per channel."""

    gain: tuple[float, float] = (0.8, 1.25)
    bias: tuple[float, float] = (-0.1, 0.1)

    def __post_init__(self):
        self.gain = check_range(self.gain, "gain", 0.0)
        self.bias = check_range(self.bias, "bias")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        gain, bias = rng.uniform(*self.gain), rng.uniform(*self.bias)
        mean = sample.image.mean(axis=(1, 2), keepdims=True)
        image = (gain * (sample.image - mean) + mean + bias).astype(sample.image.dtype)
        return replace(sample, image=image)


@dataclass
class ElasticDeform:
    """The paper's elastic deformation: displacements ~ N(0, ``sigma``^2) px on a ``grid`` x ``grid`` grid.

    The coarse displacements (2, grid, grid) are interpolated to every pixel by ``elastic_displacement`` (bicubic)
    and every field is read at the displaced positions by ``warp`` (``scipy.ndimage.map_coordinates``).
    ``sigma=0`` is the identity.
    """

    sigma: float = 10.0
    grid: int = 3

    def __post_init__(self):
        self.sigma = check_real(self.sigma, "sigma", 0.0)
        self.grid = check_int(self.grid, "grid", minimum=2)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        coarse = rng.normal(0.0, self.sigma, size=(2, self.grid, self.grid))
        return warp(sample, elastic_displacement(coarse, _same_size(sample)))


@dataclass
class RandomCrop:
    """A ``size`` window of labels and weights, and the image window ``margin`` px wider on every side around it.

    ``size`` is an int or (h, w) no larger than the sample; ``margin`` is the network's valid-convolution border,
    (input - output) / 2 (92 for the paper's 572 -> 388). The image is mirrored (numpy ``mode="symmetric"``, the
    same extension as scipy's ``"reflect"``) where the wider window leaves it: the overlap-tile strategy.
    """

    size: int | tuple[int, int]
    margin: int = 0

    def __post_init__(self):
        self.size = _size_pair(self.size, "size")
        self.margin = check_int(self.margin, "margin", minimum=0)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = _same_size(sample)
        (h, w), m = self.size, self.margin
        if not (h <= height and w <= width):
            raise ValueError(f"crop {(h, w)} must fit in the sample {(height, width)}")
        top, left = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
        # In the padded image the target window [top, top + h) sits at top + m, so its wider image window starts at top.
        padded = np.pad(sample.image, ((0, 0), (m, m), (m, m)), mode="symmetric")
        image = padded[:, top : top + h + 2 * m, left : left + w + 2 * m]
        window = (slice(top, top + h), slice(left, left + w))
        weights = None if sample.weights is None else sample.weights[window]
        return Sample(np.ascontiguousarray(image), sample.labels[window], weights)


@dataclass
class MirrorPad:
    """Pad the image to the network's input size by mirroring; labels and weights keep the output size.

    ``input_size`` is an int or (h, w); (input - H) and (input - W) must be even and >= 0 so the target sits
    exactly in the centre, where a valid-convolution network's output lands.
    """

    input_size: int | tuple[int, int]

    def __post_init__(self):
        self.input_size = _size_pair(self.input_size, "input_size")

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        height, width = _same_size(sample)
        h, w = self.input_size
        dh, dw = h - height, w - width
        if dh < 0 or dw < 0 or dh % 2 or dw % 2:
            raise ValueError(
                f"input size minus sample size must be even and >= 0 on both axes, got input {(h, w)} for a "
                f"{(height, width)} sample"
            )
        image = np.pad(sample.image, ((0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2)), mode="symmetric")
        return replace(sample, image=image)
