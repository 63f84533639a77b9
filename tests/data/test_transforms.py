"""Transforms move image, labels and weight map together; the elastic deformation is the paper's."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import interpolate, ndimage, stats

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
# may disagree where the image is a blend of cell and background; where a warp stretches the scene that blend is
# wider than a pixel, and two warps in a row (Compose) compound it. Worst agreements seen in 3000-4500 seeds:
# 0.973 (affine), 0.965 (elastic), 0.937 (Compose, where the elastic field of this 72-pixel scene folds near a
# corner). These bounds are a sanity check; the exact test of alignment is the blend below.
TRANSFORMS = [
    (RandomFlip(p=1.0), 1.0),
    (RandomRotate90(), 1.0),
    (RandomAffine(degrees=10, zoom=(0.9, 1.1)), 0.96),
    (ElasticDeform(sigma=10.0), 0.95),
    (Compose([RandomFlip(), RandomRotate90(), RandomAffine(), ElasticDeform()]), 0.92),
]


@pytest.mark.parametrize("transform, agreement", TRANSFORMS, ids=[type(t).__name__ for t, _ in TRANSFORMS])
@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_image_and_mask_stay_aligned(transform, agreement, seed):
    before = scene()
    # The mask rides along as a second image channel: interpolated like the image, it is strictly between 0 and 1
    # exactly where some read blended cell and background, through every warp of the chain.
    carried = np.concatenate([before.image, before.labels[None].astype(np.float32)])
    before = Sample(carried, before.labels, before.weights)
    after = transform(before, np.random.default_rng(seed))
    rethresholded = (after.image[0] > THRESHOLD).astype(np.int32)
    disagree = rethresholded != after.labels
    assert 1 - np.mean(disagree) >= agreement
    # Disagreement is blending, not a shift: where every read saw one side only (the carried mask exactly 0 or
    # 1), the image and the labels agree pixel for pixel (no exception in 1500 seeds of each transform). A
    # labels-vs-image offset of one pixel breaks this along the edges (in 50 of 50 seeds of the elastic warp).
    blended = (after.image[1] > 1e-6) & (after.image[1] < 1 - 1e-6)
    assert not np.any(disagree & ~blended), f"{np.count_nonzero(disagree & ~blended)} pixels off the blend"
    # The weight map followed the same move (it is an affine function of the mask here): exactly, off the blend.
    np.testing.assert_allclose(after.weights[~blended], after.labels[~blended] * 5 + 1, rtol=0, atol=1e-5)
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


# The four bugs a plain alignment test cannot see ---------------------------------------------------------------


class Draws:
    """A stand-in generator that returns given values: ``uniform`` the next of ``uniforms``, ``normal`` ``normal``
    times its scale. Lets a test ask a transform for one exact angle, zoom or displacement."""

    def __init__(self, uniforms=(), normal=None):
        self.uniforms, self.normal_values = list(uniforms), normal

    def uniform(self, low, high):
        value = self.uniforms.pop(0)
        assert low <= value <= high, f"{value} outside the transform's range [{low}, {high}]"
        return value

    def normal(self, loc, scale, size):
        assert self.normal_values.shape == size
        return loc + scale * self.normal_values


def _random_sample(rng, height, width, channels=2):
    return Sample(
        rng.uniform(0, 1, (channels, height, width)).astype(np.float32),
        rng.integers(0, 9, (height, width)).astype(np.int32),
        rng.uniform(1, 10, (height, width)).astype(np.float32),
    )


@pytest.mark.parametrize("side", [7, 8])  # the centre on a pixel, and between four
def test_a_quarter_turn_of_random_affine_is_rot90(side, rng):
    # Rotating about (H - 1) / 2, (W - 1) / 2 maps the pixel grid onto itself; a centre half a pixel off shifts the
    # whole turned image by one pixel.
    sample = _random_sample(rng, side, side)
    out = RandomAffine(degrees=90, zoom=(1.0, 1.0))(sample, Draws([90.0, 1.0]))
    turned = np.rot90(sample.image, -1, axes=(1, 2))  # a positive angle turns clockwise as the array is printed
    np.testing.assert_allclose(out.image, turned, atol=1e-5)
    np.testing.assert_array_equal(out.labels, np.rot90(sample.labels, -1))
    np.testing.assert_allclose(out.weights, np.rot90(sample.weights, -1), atol=1e-5)
    out = RandomAffine(degrees=90, zoom=(1.0, 1.0))(sample, Draws([-90.0, 1.0]))
    np.testing.assert_array_equal(out.labels, np.rot90(sample.labels, 1))


@pytest.mark.parametrize("height, width", [(9, 9), (12, 17)])
@pytest.mark.parametrize("angle", [-7.5, 23.0])
def test_random_affine_rotation_is_scipys_rotate_about_the_centre(height, width, angle, rng):
    # An independent statement of a rotation about the image centre: scipy.ndimage.rotate, mirrored outside.
    sample = _random_sample(rng, height, width, channels=1)
    out = RandomAffine(degrees=30, zoom=(1.0, 1.0))(sample, Draws([angle, 1.0]))
    expected = ndimage.rotate(sample.image[0], -angle, reshape=False, order=1, mode="reflect")
    np.testing.assert_allclose(out.image[0], expected, atol=1e-5)


def test_random_affine_zooms_about_the_centre():
    # A ramp image is interpolated exactly: zooming by 2 about the centre c reads c + (x - c) / 2.
    height, width = 9, 12
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    sample = Sample(np.stack([rows, cols]), np.zeros((height, width), np.int32))
    out = RandomAffine(degrees=0, zoom=(0.5, 2.0))(sample, Draws([0.0, 2.0]))
    cy, cx = (height - 1) / 2, (width - 1) / 2
    np.testing.assert_allclose(out.image[0], cy + (rows - cy) / 2, atol=1e-5)
    np.testing.assert_allclose(out.image[1], cx + (cols - cx) / 2, atol=1e-5)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**31 - 1))
def test_contrast_is_one_gain_and_bias_about_each_channels_own_mean(seed):
    # Channels with very different means: about one global mean, each channel's mean would move by
    # (1 - gain) * (global mean - its mean), a different amount per channel.
    rng = np.random.default_rng(seed)
    levels = np.array([0.1, 0.5, 0.9], np.float32)[:, None, None]
    image = (levels + rng.uniform(-0.05, 0.05, (3, 10, 12))).astype(np.float32)
    sample = Sample(image, np.zeros((10, 12), np.int32))
    out = RandomContrast(gain=(0.5, 0.7), bias=(-0.1, 0.1))(sample, rng).image.astype(np.float64)
    mean_in, mean_out = image.mean(axis=(1, 2)).astype(np.float64), out.mean(axis=(1, 2))
    bias = mean_out - mean_in
    np.testing.assert_allclose(bias, bias[0], atol=1e-5)  # the same bias for every channel
    gain = np.array([np.polyfit(image[c].ravel(), out[c].ravel(), 1)[0] for c in range(3)])
    np.testing.assert_allclose(gain, gain[0], atol=1e-4)
    assert 0.5 - 1e-4 <= gain[0] <= 0.7 + 1e-4 and -0.1 - 1e-5 <= bias[0] <= 0.1 + 1e-5


def test_flips_of_the_two_axes_are_drawn_independently():
    # A 2x2 image of four different values tells the four outcomes apart. With p = 0.3 each axis flips 30% of the
    # time and both together 9%; drawing once for both axes would give only "none" and "both".
    grid = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    outcomes = {
        (False, False): grid, (True, False): grid[:, ::-1], (False, True): grid[:, :, ::-1],
        (True, True): grid[:, ::-1, ::-1],
    }
    counts = dict.fromkeys(outcomes, 0)
    rng, n = np.random.default_rng(11), 4000
    for _ in range(n):
        image = RandomFlip(p=0.3)(Sample(grid, np.zeros((2, 2), np.int32)), rng).image
        counts[next(key for key, value in outcomes.items() if np.array_equal(image, value))] += 1
    p = 0.3
    expected = {(a, b): n * (p if a else 1 - p) * (p if b else 1 - p) for a, b in outcomes}
    assert stats.chisquare(list(counts.values()), [expected[key] for key in counts]).pvalue > 1e-4, counts


def _periodic_cubic_spline(coarse_axis_values, n, axis):
    """The interpolating cubic spline through 3 values at 0, 1, 2 of a mirrored sequence (a b c b a b c ...), read
    at n even positions from 0 to 2: the same curve as a B-spline with mirror boundaries, stated with CubicSpline's
    periodic form (period 4: a b c b)."""
    extended = np.concatenate([coarse_axis_values, np.flip(coarse_axis_values, axis=axis).take([1, 2], axis=axis)], axis)
    return interpolate.CubicSpline(np.arange(5), extended, bc_type="periodic", axis=axis)(np.linspace(0, 2, n))


@pytest.mark.parametrize("height, width", [(5, 5), (33, 21), (64, 50)])
def test_displacements_are_the_bicubic_spline_through_the_coarse_grid(height, width, rng):
    # Bicubic, as the paper says: a bilinear field (piecewise planar) is off by several pixels here.
    coarse = rng.normal(0, 10, (2, 3, 3))
    field = elastic_displacement(coarse, (height, width))
    expected = np.stack([_periodic_cubic_spline(_periodic_cubic_spline(c, height, 0), width, 1) for c in coarse])
    np.testing.assert_allclose(field, expected, atol=1e-9)


def test_elastic_deform_reads_at_the_bicubic_displacements():
    # End to end: the warped ramp image holds the positions read, row + dy and col + dx, with (dy, dx) the bicubic
    # field of the coarse draw (kept small so every read stays inside the image, where the ramp is exact).
    size = 41
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    sample = Sample(np.stack([rows, cols]), np.zeros((size, size), np.int32))
    unit = np.array(
        [
            [[0.3, -0.8, 0.5], [1.0, 0.2, -0.6], [-0.4, 0.9, 0.1]],  # dy at the 3x3 grid points
            [[-0.5, 0.4, 0.7], [0.2, -1.0, 0.3], [0.6, 0.1, -0.2]],  # dx
        ]
    )
    out = ElasticDeform(sigma=2.0)(sample, Draws(normal=unit))
    field = np.stack([_periodic_cubic_spline(_periodic_cubic_spline(c, size, 0), size, 1) for c in 2.0 * unit])
    inside = slice(4, size - 4)
    np.testing.assert_allclose(out.image[0][inside, inside], (rows + field[0])[inside, inside], atol=1e-4)
    np.testing.assert_allclose(out.image[1][inside, inside], (cols + field[1])[inside, inside], atol=1e-4)


# Parameters --------------------------------------------------------------------------------------------------------


def test_sizes_may_be_numpy_integers(rng):
    sample = _random_sample(rng, 12, 12)
    out = RandomCrop(np.int64(8), margin=np.int64(2))(sample, np.random.default_rng(0))
    assert out.image.shape == (2, 12, 12) and out.labels.shape == (8, 8)
    assert RandomCrop((np.int32(8), 6))(sample, rng).labels.shape == (8, 6)
    assert MirrorPad(np.int64(20))(sample).image.shape == (2, 20, 20)
    assert ElasticDeform(grid=np.int64(4)).grid == 4


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomCrop(0), r"size must be a positive int or a pair \(h, w\) of them, got \(0, 0\)"),
        (lambda: RandomCrop(8.0), "size must be a positive int"),
        (lambda: RandomCrop(True), "size must be a positive int"),
        (lambda: RandomCrop(8, margin=-1), "margin must be an integer >= 0, got -1"),
        (lambda: MirrorPad((20, 2.5)), "input_size must be a positive int"),
        (lambda: RandomAffine(zoom=(0, 0)), r"zoom must be a pair \(low, high\) of factors > 0"),  # was all zeros
        (lambda: RandomAffine(zoom=(1.2, 0.9)), "low <= high"),
        (lambda: RandomAffine(degrees=float("nan")), "degrees must be finite"),
        (lambda: ElasticDeform(sigma=float("nan")), "sigma must be finite"),  # was an all-zero image
        (lambda: ElasticDeform(sigma=-1.0), "sigma must be finite and ≥ 0.0, got -1.0"),
        (lambda: ElasticDeform(grid=1), "grid must be an integer >= 2, got 1"),
        (lambda: RandomFlip(p=float("nan")), "p must be finite"),  # was accepted
        (lambda: RandomFlip(p=1.5), "p must be finite and ≥ 0.0 and ≤ 1.0, got 1.5"),
        (lambda: RandomContrast(gain=(-1.0, 1.0)), r"gain\[0\] must be finite and ≥ 0.0"),
        (lambda: RandomContrast(bias=(0.1, float("inf"))), r"bias\[1\] must be finite"),
    ],
)
def test_bad_parameters_raise_at_construction(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_crop_larger_than_the_sample_raises(rng):
    with pytest.raises(ValueError, match=r"crop \(13, 8\) must fit in the sample \(12, 12\)"):
        RandomCrop((13, 8))(_random_sample(rng, 12, 12), rng)


def test_a_non_finite_displacement_raises(rng):
    # map_coordinates reads a NaN position as 0: the warped image came back all zero.
    sample = _random_sample(rng, 6, 7)
    displacement = np.zeros((2, 6, 7))
    displacement[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"displacement must be finite, got 1 NaN or infinite value\(s\)"):
        warp(sample, displacement)
