"""SyntheticCells: the built-in dataset, microscopy-like images of touching cells with their instance labels.

The hard part of the U-Net paper's task (ISBI cell tracking, Ronneberger et al. 2015, section 3) is separating
cells that touch: their shared border is a thin, dim line that a pixel classifier easily bridges. This generator
draws exactly that, so every command runs with no download:

1. Instances. Cells are perturbed ellipses: a pixel at offset (u, v) from the centre, in the cell's own rotated
   frame with semi-axes (a, b), has the normalised distance

       d = sqrt((u/a)^2 + (v/b)^2) / (1 + sum_k A_k cos(k*alpha + phase_k)),   alpha = atan2(v/b, u/a), k = 2..4

   and lies inside the cell when d < 1 (the harmonics make blobs out of ellipses). Most cells are placed next to an
   earlier one, at (r1 + r2) * (1 + g) from its centre with the gap g slightly negative (they overlap and so touch)
   or slightly positive (they nearly touch); the others are placed at random, clear of every cell. Where two cells
   overlap, a pixel belongs to the one in which its d is smaller, so touching cells share a border line instead of
   one swallowing the other. A cell that would cut an earlier one in two, or be cut itself, is not placed: every
   instance id is one 4-connected object.
2. Image. Each cell has its own brightness, dimmed towards its edge (a factor 1 - edge_darkening * d^4, the dark
   line between touching cells) and a fine texture; the background is dim and flat. Optional DIC-like relief mixes
   in the directional derivative of the smoothed intensity (differential interference contrast shows cells as
   embossed relief rather than bright objects). Then uneven illumination (a random smooth polynomial gain), Gaussian
   blur (the point-spread function) and Gaussian noise; values are clipped to [0, 1].

Item i is drawn from ``numpy.random.default_rng([seed, i])``: the same whatever order items are read in, in any
worker process. Cost grows with the area: about 10 ms of CPU for 128x128 and 35 ms for 256x256 (measured on a
shared 2-core machine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import ndimage

from unet_from_scratch.reference._checks import check_int, check_range, check_real, is_int


@dataclass(frozen=True)
class CellParams:
    """What a synthetic image looks like. Lengths are in pixels, intensities on a [0, 1] scale.

    Instances: ``radius`` (low, high) mean cell radius; ``elongation`` (low, high) ratio of the ellipse's axes;
    ``irregularity`` amplitude of the shape harmonics; ``coverage`` fraction of the image the cells aim to cover;
    ``max_foreground`` hard ceiling on that fraction; ``touching`` probability that a cell is placed against an
    earlier one; ``gap`` (low, high) relative gap between such neighbours (< 0: they overlap and touch).
    Image: ``background`` level; ``brightness`` (low, high) cell level; ``edge_darkening`` dimming at the cell
    edge; ``texture`` std of the texture inside cells; ``dic`` mix of DIC-like relief (0: fluorescence-like,
    1: relief only); ``illumination`` strength of the uneven gain; ``blur`` Gaussian sigma; ``noise`` Gaussian std.
    """

    radius: tuple[float, float] = (9.0, 18.0)
    elongation: tuple[float, float] = (1.0, 1.6)
    irregularity: float = 0.08
    coverage: float = 0.45
    max_foreground: float = 1.0
    touching: float = 0.8
    gap: tuple[float, float] = (-0.15, 0.06)
    background: float = 0.12
    brightness: tuple[float, float] = (0.45, 0.85)
    edge_darkening: float = 0.45
    texture: float = 0.06
    dic: float = 0.0
    illumination: float = 0.3
    blur: float = 1.0
    noise: float = 0.03


PRESETS = {
    # Crowded cells, most of them touching or nearly touching: the paper's hard case.
    "touching": CellParams(),
    # Few small isolated objects, at most 2% foreground: a heavily imbalanced two-class problem.
    "sparse": CellParams(
        radius=(2.0, 4.5), elongation=(1.0, 1.3), irregularity=0.05, coverage=0.01, max_foreground=0.02, touching=0.0
    ),
}

# A cell may share at most this fraction of its pixels with earlier cells (more would hide it).
_MAX_OVERLAP = 0.3

_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)


def _check_params(p: CellParams) -> None:
    """Every field of ``p`` finite and in its range; ValueError naming the field otherwise."""
    check_range(p.radius, "radius", 1.0)  # a cell under a pixel across is no cell
    check_range(p.elongation, "elongation", 1.0)
    check_real(p.irregularity, "irregularity", 0.0, below=1 / 3)  # 3 harmonics: the outline stays > 0
    check_real(p.coverage, "coverage", maximum=1.0, above=0.0)
    check_real(p.max_foreground, "max_foreground", maximum=1.0, above=0.0)
    check_real(p.touching, "touching", 0.0, 1.0)
    check_range(p.gap, "gap")
    if p.gap[0] <= -1:
        raise ValueError(f"gap must be a pair (low, high) of relative gaps > -1, got {p.gap!r}")
    check_real(p.background, "background", 0.0, 1.0)
    check_range(p.brightness, "brightness", 0.0, 1.0)
    for name in ("edge_darkening", "dic"):
        check_real(getattr(p, name), name, 0.0, 1.0)
    for name in ("texture", "illumination", "blur", "noise"):
        check_real(getattr(p, name), name, 0.0)


class SyntheticCells:
    """``n_images`` deterministic synthetic microscopy images with instance labels.

    ``size`` is an int (square) or (H, W); ``preset`` is ``"touching"`` or ``"sparse"``; any field of
    ``CellParams`` given as a keyword overrides the preset's value (e.g. ``dic=1.0``, ``noise=0.1``).
    ``ds[i]`` -> (image float32 (1, H, W) in [0, 1], instances int32 (H, W): 0 background, 1..K the cells).
    """

    mask_kind = "instances"
    class_names = ("background", "cell")
    in_channels = 1

    def __init__(self, n_images: int, size=256, seed: int = 0, preset: str = "touching", **params):
        check_int(n_images, "n_images")
        height, width = (size, size) if is_int(size) else tuple(size) if isinstance(size, (tuple, list)) else (0, 0)
        if not (is_int(height) and is_int(width) and height >= 8 and width >= 8):
            raise ValueError(f"size must be an int or a pair (H, W) of ints, at least 8x8, got {size!r}")
        check_int(seed, "seed", minimum=0)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
        known = {f.name for f in fields(CellParams)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown SyntheticCells parameter(s) {unknown}; expected some of {sorted(known)}")
        self.n_images = int(n_images)
        self.size = (int(height), int(width))
        self.seed = int(seed)
        self.preset = preset
        self.params = replace(PRESETS[preset], **params)
        _check_params(self.params)

    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -self.n_images <= index < self.n_images:
            raise IndexError(f"index {index} out of range for {self.n_images} images")
        rng = np.random.default_rng([self.seed, index % self.n_images])
        instances, distance = _draw_instances(rng, self.size, self.params)
        image = _render_image(rng, instances, distance, self.params)
        return image[None], instances


def _cell_distance(dy, dx, a, b, angle, amplitudes, phases) -> np.ndarray:
    """The normalised distance d of the module docstring on a grid of offsets (dy, dx) from the centre."""
    un = (dx * math.cos(angle) + dy * math.sin(angle)) / a
    vn = (dy * math.cos(angle) - dx * math.sin(angle)) / b
    rho = np.hypot(un, vn)
    # cos(k*alpha + phase) from cos(alpha) = un/rho and sin(alpha) = vn/rho by the angle-addition recurrence:
    # no arctan2 and no cosine per pixel.
    inverse = 1 / np.maximum(rho, 1e-6)  # at the centre un = vn = 0: any finite value will do
    cos1, sin1 = un * inverse, vn * inverse
    cos_k, sin_k = cos1, sin1
    outline = 1.0
    for amp, ph in zip(amplitudes, phases):
        cos_k, sin_k = cos_k * cos1 - sin_k * sin1, sin_k * cos1 + cos_k * sin1  # k = 2, 3, 4
        outline = outline + amp * (cos_k * math.cos(ph) - sin_k * math.sin(ph))
    return rho / outline


def _draw_instances(rng: np.random.Generator, size, p: CellParams) -> tuple[np.ndarray, np.ndarray]:
    """Place cells until they cover ``p.coverage`` of the image -> (instances int32, owner's distance d float64)."""
    height, width = size
    labels = np.zeros(size, dtype=np.int32)
    distance = np.full(size, np.inf)
    centres: list[tuple[float, float, float]] = []  # (y, x, mean radius) of each committed cell
    boxes: list[tuple[int, int, int, int]] = []  # (y0, y1, x0, x1) around each committed cell's pixels
    budget = p.max_foreground * height * width
    target = min(p.coverage * height * width, budget)  # placing stops at whichever comes first
    area = 0
    mean_area = math.pi * (sum(p.radius) / 2) ** 2
    for _ in range(int(40 * max(1.0, target / mean_area))):
        if area >= target:
            break
        radius, elongation = rng.uniform(*p.radius), rng.uniform(*p.elongation)
        a, b = radius * math.sqrt(elongation), radius / math.sqrt(elongation)
        angle = rng.uniform(0, math.pi)
        amplitudes, phases = p.irregularity * rng.uniform(0, 1, 3), rng.uniform(0, 2 * math.pi, 3)
        anchored = bool(centres) and rng.random() < p.touching
        if anchored:
            ay, ax, ar = centres[rng.integers(len(centres))]
            theta = rng.uniform(0, 2 * math.pi)
            reach = (ar + radius) * (1 + rng.uniform(*p.gap))
            cy, cx = ay + reach * math.sin(theta), ax + reach * math.cos(theta)
        else:
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        if not (0 <= cy < height and 0 <= cx < width) or distance[int(cy), int(cx)] < 1:
            continue  # outside the image, or the centre would sit inside another cell
        # The rotated ellipse's bounding box, grown by the largest outline bump and by 3 px for the clearance check.
        bump = 1 + amplitudes.sum()
        extent_y = int(bump * math.hypot(a * math.sin(angle), b * math.cos(angle))) + 3
        extent_x = int(bump * math.hypot(a * math.cos(angle), b * math.sin(angle))) + 3
        y0, y1 = max(0, int(cy) - extent_y), min(height, int(cy) + extent_y + 1)
        x0, x1 = max(0, int(cx) - extent_x), min(width, int(cx) + extent_x + 1)
        dy, dx = np.arange(y0, y1, dtype=np.float32)[:, None], np.arange(x0, x1, dtype=np.float32)
        d = _cell_distance(dy - cy, dx - cx, a, b, angle, amplitudes, phases)
        inside = d < 1
        box_labels, box_distance = labels[y0:y1, x0:x1], distance[y0:y1, x0:x1]
        taken = np.count_nonzero(inside & (box_labels > 0))
        new = np.count_nonzero(inside) - taken
        if new == 0 or taken > _MAX_OVERLAP * (new + taken) or area + new > budget:
            continue
        if not anchored and np.any((d < 1 + 2 / min(a, b)) & (box_labels > 0)):
            continue  # a freely placed cell keeps a gap of about 2 px: only anchored cells touch on purpose
        owned = inside & (d < box_distance)
        cell_id = len(centres) + 1
        if not _stays_connected(labels, boxes, (y0, y1, x0, x1), owned, cell_id):
            continue
        box_labels[owned] = cell_id
        box_distance[owned] = d[owned]
        centres.append((cy, cx, radius))
        boxes.append((y0, y1, x0, x1))
        area += new
    # A cell wholly overpainted by later ones leaves its id unused: renumber the survivors 1..K.
    present = np.unique(labels[labels > 0])
    lookup = np.zeros(len(centres) + 1, dtype=np.int32)
    lookup[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lookup[labels], distance


def _stays_connected(labels: np.ndarray, boxes, box, owned: np.ndarray, cell_id: int) -> bool:
    """Whether painting ``owned`` (a mask over ``box`` = (y0, y1, x0, x1)) as ``cell_id`` leaves the new cell and
    every earlier cell it takes pixels from one 4-connected object each."""
    y0, y1, x0, x1 = box
    if ndimage.label(owned, structure=_FOUR_NEIGHBOURS)[1] != 1:
        return False
    for k in np.unique(labels[y0:y1, x0:x1][owned]):
        if k == 0:
            continue
        ky0, ky1, kx0, kx1 = boxes[k - 1]
        region = labels[ky0:ky1, kx0:kx1] == k
        taken = np.zeros_like(region)
        # The part of the new cell's box that overlaps cell k's box, in cell k's box coordinates.
        oy0, oy1, ox0, ox1 = max(y0, ky0), min(y1, ky1), max(x0, kx0), min(x1, kx1)
        if oy0 < oy1 and ox0 < ox1:
            taken[oy0 - ky0 : oy1 - ky0, ox0 - kx0 : ox1 - kx0] = owned[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
        if ndimage.label(region & ~taken, structure=_FOUR_NEIGHBOURS)[1] != 1:
            return False
    return True


def _render_image(rng: np.random.Generator, instances, distance, p: CellParams) -> np.ndarray:
    """Intensity of each cell, relief, illumination, blur and noise -> float32 (H, W) in [0, 1]."""
    height, width = instances.shape
    cells = instances > 0
    levels = np.concatenate([[p.background], rng.uniform(*p.brightness, instances.max())])
    edge = np.where(cells, distance, 0.0) ** 4
    texture = ndimage.gaussian_filter(rng.standard_normal(instances.shape), 1.0)
    texture *= p.texture / max(float(texture.std()), 1e-12)
    intensity = levels[instances] * (1 - p.edge_darkening * edge) + np.where(cells, texture, 0.0)
    if p.dic > 0:
        # DIC shows the optical path gradient along the shear direction: bright on one flank, dark on the other.
        # A gain of 4 turns a cell's edge (a step of 0.1-0.4 spread over ~2 px) into a swing of about +-0.2 to
        # +-0.5 around mid-grey.
        gy, gx = np.gradient(ndimage.gaussian_filter(intensity, 1.0))
        shear = rng.uniform(0, 2 * math.pi)
        relief = 0.5 + 4.0 * (math.cos(shear) * gx + math.sin(shear) * gy)
        intensity = (1 - p.dic) * intensity + p.dic * relief
    y, x = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    c = rng.uniform(-1, 1, 5) / 2
    gain = 1 + p.illumination * (c[0] * x + c[1] * y + c[2] * x * y + c[3] * (x * x - 1 / 3) + c[4] * (y * y - 1 / 3))
    image = intensity * np.maximum(gain, 0.2)  # a gain never reaches zero: a dark corner still shows its cells
    if p.blur > 0:
        image = ndimage.gaussian_filter(image, p.blur)
    image = image + p.noise * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)
