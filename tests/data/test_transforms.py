"""Transforms move image, labels and weight map together; the elastic deformation is the paper's."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from unet_from_scratch.data.synthetic import SyntheticCells
from unet_from_scratch.data.transforms import (
    Compose,
    ElasticDeform,
    MirrorPad,
    RandomAffine,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomRotate90,
    Sample,
    elastic_displacement,
    warp,
)

SIZE = 72
# A clean scene (no noise, blur, texture or illumination) whose cells are brighter than THRESHOLD everywhere and
# the background darker: the mask drawn from the image by thresholding is exactly the cells.
_IMAGE, _INSTANCES = SyntheticCells(1, size=SIZE, seed=7, noise=0.0, blur=0.0, texture=0.0, illumination=0.0)[0]
THRESHOLD = 0.18


def scene() -> Sample:
    mask = (_IMAGE[0] > THRESHOLD).astype(np.int32)
    return Sample(_IMAGE.copy(), mask, mask.astype(np.float32) * 5 + 1)


def test_the_threshold_mask_is_the_cells():
    np.testing.assert_array_equal(_IMAGE[0] > THRESHOLD, _INSTANCES > 0)


# (transform, smallest agreement allowed between the re-thresholded image and the moved mask). Flips and rotations
# move whole pixels: exact. A warp interpolates the image linearly but the labels by nearest neighbour, so the two
# may disagree on the one-pixel rim along each edge; two warps in a row (Compose) compound that.
TRANSFORMS = [
    (RandomFlip(p=1.0), 1.0),
    (RandomRotate90(), 1.0),
    (RandomAffine(degrees=10, zoom=(0.9, 1.1)), 0.97),
    (ElasticDeform(sigma=10.0), 0.97),
    (Compose([RandomFlip(), RandomRotate90(), RandomAffine(), ElasticDeform()]), 0.95),
]


@pytest.mark.parametrize("transform, agreement", TRANSFORMS, ids=[type(t).__name__ for t, _ in TRANSFORMS])
@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_image_and_mask_stay_aligned(transform, agreement, seed):
    before = scene()
    after = transform(before, np.random.default_rng(seed))
    rethresholded = (after.image[0] > THRESHOLD).astype(np.int32)
    disagree = rethresholded != after.labels
    assert 1 - np.mean(disagree) >= agreement
    # Disagreement is rounding at the edges, not a shift: off the one-pixel rim around every edge almost nothing
    # differs (a labels-vs-image offset of two pixels would put a whole band of every edge there).
    rim = ndimage.morphological_gradient(after.labels, size=3) > 0
    assert np.mean(disagree & ~rim) < 0.005
    # The weight map followed the same move (it is an affine function of the mask here).
    assert np.mean(np.abs(after.weights - (after.labels * 5 + 1)) < 2.5) >= agreement
    # Nearest-neighbour resampling never invents a label.
    assert set(np.unique(after.labels)) <= {0, 1}
    assert after.labels.dtype == before.labels.dtype


@pytest.mark.parametrize("transform", [RandomAffine(), ElasticDeform()], ids=lambda t: type(t).__name__)
def test_warps_really_move_the_scene(transform):
    """Without this, the alignment test above could pass with a transform that does nothing."""
    before = scene()
    after = transform(before, np.random.default_rng(0))
    assert np.mean(after.labels != before.labels) > 0.03


@settings(deadline=None)
@given(seed=st.integers(0, 2**31 - 1), height=st.integers(5, 40), width=st.integers(5, 40))
def test_elastic_deformation_with_zero_std_is_identity(seed, height, width):
    rng = np.random.default_rng(seed)
    sample = Sample(
        rng.uniform(0, 1, (2, height, width)).astype(np.float32),
        rng.integers(0, 9, (height, width)).astype(np.int32),
        rng.uniform(1, 10, (height, width)).astype(np.float32),
    )
    out = ElasticDeform(sigma=0.0)(sample, np.random.default_rng(seed))
    # Reading at exactly the integer pixel positions returns every value unchanged (linear interpolation's
    # weights are 1 and 0 there); a float32 round-off bound is enough.
    np.testing.assert_allclose(out.image, sample.image, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.weights, sample.weights, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.labels, sample.labels)


@pytest.mark.parametrize("height, width", [(5, 5), (33, 21), (65, 65)])
def test_displacement_field_passes_through_the_coarse_grid(height, width, rng):
    coarse = rng.normal(0, 10, (2, 3, 3))
    field = elastic_displacement(coarse, (height, width))
    assert field.shape == (2, height, width)
    # The 3x3 grid sits at the first, middle and last row/column (odd sizes put the middle on a pixel).
    rows, cols = [0, (height - 1) // 2, height - 1], [0, (width - 1) // 2, width - 1]
    np.testing.assert_allclose(field[:, rows][:, :, cols], coarse, atol=1e-9)
    # A uniform displacement is a shift: the spline reproduces constants.
    np.testing.assert_allclose(elastic_displacement(np.full((2, 3, 3), 4.0), (height, width)), 4.0, atol=1e-9)


def test_elastic_displacements_have_the_papers_spread():
    # Warp an image whose two channels are the row and column coordinates: linear interpolation of a ramp is
    # exact, so the warped image at a pixel is where that pixel was read from. At the centre (a control point of
    # the 3x3 grid) the displacement is the coarse N(0, 10^2) draw; 81 px leave 4 std of room to the border.
    size, centre = 81, 40
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    sample = Sample(np.stack([rows, cols]), np.zeros((size, size), np.int32))
    transform = ElasticDeform()
    moves = np.array([transform(sample, np.random.default_rng(s)).image[:, centre, centre] for s in range(100)])
    moves -= centre
    # 200 draws: the sample std of N(0, 10^2) is within 10 +- 1.5 (3 standard errors), the mean within +- 2.2.
    assert abs(moves.std() - 10.0) < 1.5
    assert abs(moves.mean()) < 2.2


def test_warp_reads_at_the_displaced_position(rng):
    image = rng.uniform(0, 1, (1, 20, 30)).astype(np.float32)
    labels = rng.integers(0, 5, (20, 30)).astype(np.int32)
    dy, dx = 3, -2
    out = warp(Sample(image, labels, None), np.stack([np.full((20, 30), dy), np.full((20, 30), dx)]).astype(float))
    # out[y, x] = in[y + 3, x - 2] wherever that is inside the image (checked by slicing, away from the border).
    np.testing.assert_allclose(out.image[:, : 20 - dy, -dx:], image[:, dy:, : 30 + dx], atol=1e-6)
    np.testing.assert_array_equal(out.labels[: 20 - dy, -dx:], labels[dy:, : 30 + dx])
    assert out.weights is None


def test_flip_and_rotate_are_exact_permutations(rng):
    image = rng.uniform(0, 1, (3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, (8, 8)).astype(np.int32)
    out = RandomFlip(p=1.0)(Sample(image, labels, labels.astype(np.float32)), rng)
    np.testing.assert_array_equal(out.image, image[:, ::-1, ::-1])
    np.testing.assert_array_equal(out.labels, labels[::-1, ::-1])
    np.testing.assert_array_equal(out.weights, labels[::-1, ::-1])
    seen = set()
    for seed in range(40):
        out = RandomRotate90()(Sample(image, labels, None), np.random.default_rng(seed))
        k = next(k for k in range(4) if np.array_equal(out.labels, np.rot90(labels, k)))
        np.testing.assert_array_equal(out.image, np.rot90(image, k, axes=(1, 2)))
        seen.add(k)
    assert seen == {0, 1, 2, 3}


def test_contrast_changes_only_the_image(rng):
    sample = scene()
    out = RandomContrast()(sample, rng)
    np.testing.assert_array_equal(out.labels, sample.labels)
    np.testing.assert_array_equal(out.weights, sample.weights)
    # An affine map of the grey values: perfectly correlated, but not the same values.
    assert np.corrcoef(out.image.ravel(), sample.image.ravel())[0, 1] > 0.99999
    assert not np.allclose(out.image, sample.image)


def test_crop_takes_context_around_the_target(rng):
    labels = rng.integers(0, 50, (30, 40)).astype(np.int32)
    sample = Sample(labels[None].astype(np.float32), labels, labels.astype(np.float32))
    margin = 4
    for seed in range(10):
        out = RandomCrop((12, 16), margin=margin)(sample, np.random.default_rng(seed))
        assert out.image.shape == (1, 12 + 2 * margin, 16 + 2 * margin) and out.labels.shape == (12, 16)
        # The image window is centred on the target window: its centre holds the same pixels.
        np.testing.assert_array_equal(out.image[0, margin:-margin, margin:-margin], out.labels)
        np.testing.assert_array_equal(out.weights, out.labels)
    # A full-height crop must mirror above the first row: row margin - 1 repeats row 0, row margin - 2 row 1.
    out = RandomCrop((30, 40), margin=margin)(sample, rng)
    np.testing.assert_array_equal(out.image[0, margin - 1, margin:-margin], labels[0])
    np.testing.assert_array_equal(out.image[0, margin - 2, margin:-margin], labels[1])


def test_mirror_pad_grows_the_image_only(rng):
    image = rng.uniform(0, 1, (2, 8, 6)).astype(np.float32)
    labels = rng.integers(0, 3, (8, 6)).astype(np.int32)
    out = MirrorPad((12, 10))(Sample(image, labels, None))
    assert out.image.shape == (2, 12, 10)
    np.testing.assert_array_equal(out.image[:, 2:-2, 2:-2], image)
    np.testing.assert_array_equal(out.labels, labels)
    # Mirrored edges: the two rows above the image are rows 1 and 0 (edge repeated), the same on the right.
    np.testing.assert_array_equal(out.image[:, 0, 2:-2], image[:, 1])
    np.testing.assert_array_equal(out.image[:, 1, 2:-2], image[:, 0])
    np.testing.assert_array_equal(out.image[:, 2:-2, -1], image[:, :, -2])
    with pytest.raises(ValueError, match="even"):
        MirrorPad(11)(Sample(image[:, :, :8], labels[:, :8], None))


def test_mismatched_sample_raises():
    with pytest.raises(ValueError, match="must share H, W"):
        RandomFlip()(Sample(np.zeros((1, 8, 8), np.float32), np.zeros((8, 7), np.int32)), np.random.default_rng(0))
