"""SyntheticCells: deterministic per seed and index, labels that match the image, touching and sparse presets."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from unet_from_scratch.data.synthetic import SyntheticCells


def touching_cells(instances: np.ndarray) -> set[int]:
    """Ids of the cells with a 4-neighbour pixel of another cell (counted here, independently of the generator)."""
    ids = set()
    for a, b in ((instances[1:], instances[:-1]), (instances[:, 1:], instances[:, :-1])):
        contact = (a > 0) & (b > 0) & (a != b)
        ids |= set(a[contact].tolist()) | set(b[contact].tolist())
    return ids


def test_items_are_deterministic_per_seed_and_index():
    first = SyntheticCells(5, size=64, seed=3)
    forwards = [first[i] for i in range(5)]
    backwards = [SyntheticCells(5, size=64, seed=3)[i] for i in reversed(range(5))][::-1]
    for (im_a, lab_a), (im_b, lab_b) in zip(forwards, backwards):
        np.testing.assert_array_equal(im_a, im_b)
        np.testing.assert_array_equal(lab_a, lab_b)
    other_seed = SyntheticCells(5, size=64, seed=4)[0]
    assert not np.array_equal(other_seed[1], forwards[0][1])
    assert not np.array_equal(forwards[1][1], forwards[0][1])  # items differ from one another


@settings(deadline=None)
@given(seed=st.integers(0, 2**31 - 1), height=st.integers(24, 80), width=st.integers(24, 80))
def test_item_types_shapes_and_ids(seed, height, width):
    image, instances = SyntheticCells(1, size=(height, width), seed=seed)[0]
    assert image.dtype == np.float32 and image.shape == (1, height, width)
    assert image.min() >= 0 and image.max() <= 1
    assert instances.dtype == np.int32 and instances.shape == (height, width)
    # Ids run 1..K with none missing (cells wholly covered by later ones are renumbered away).
    ids = np.unique(instances)
    np.testing.assert_array_equal(ids[ids > 0], np.arange(1, instances.max() + 1))


@pytest.mark.parametrize("size", [64, 128])
def test_cells_are_brighter_where_labelled(size):
    for image, instances in SyntheticCells(4, size=size, seed=1):
        cells = instances > 0
        inside, outside = image[0][cells].mean(), image[0][~cells].mean()
        assert inside - outside > 0.25
        # Pixel by pixel: a threshold halfway between the two means recovers the labels almost everywhere
        # (a label image shifted or from another item would fail this).
        agreement = np.mean((image[0] > (inside + outside) / 2) == cells)
        assert agreement > 0.9
        wrong_item = SyntheticCells(4, size=size, seed=2)[0][1] > 0
        assert np.mean((image[0] > (inside + outside) / 2) == wrong_item) < 0.75


def test_dic_relief_is_texture_not_brightness():
    for image, instances in SyntheticCells(4, size=96, seed=5, dic=1.0):
        cells = instances > 0
        # Relief shows cells as gradients (embossed edges, inner texture), not as a brighter level.
        assert abs(image[0][cells].mean() - image[0][~cells].mean()) < 0.08
        gy, gx = np.gradient(ndimage.gaussian_filter(image[0].astype(np.float64), 1.0))
        gradient = np.hypot(gy, gx)
        assert gradient[cells].mean() > 1.15 * gradient[~cells].mean()


def test_touching_preset_has_many_touching_cells():
    for _, instances in SyntheticCells(4, size=128, seed=0):
        count = instances.max()
        assert count >= 10
        assert len(touching_cells(instances)) >= 0.5 * count


@settings(deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([32, 64, 160]))
def test_sparse_preset_is_at_most_two_percent_foreground(seed, size):
    _, instances = SyntheticCells(1, size=size, seed=seed, preset="sparse")[0]
    assert 0 < np.mean(instances > 0) <= 0.02
    assert not touching_cells(instances)


def test_parameters_override_the_preset():
    plain = dict(noise=0.0, illumination=0.0, texture=0.0)
    sharp, cells = SyntheticCells(1, size=64, seed=2, blur=0.0, **plain)[0]
    blurred, same_cells = SyntheticCells(1, size=64, seed=2, blur=2.0, **plain)[0]
    # The same scene (blur draws nothing from the generator), seen through a Gaussian point-spread function.
    np.testing.assert_array_equal(cells, same_cells)
    np.testing.assert_allclose(blurred[0], ndimage.gaussian_filter(sharp[0].astype(np.float64), 2.0), atol=1e-6)
    assert SyntheticCells(1, preset="sparse", coverage=0.005).params.coverage == 0.005


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_images=0), "n_images"),
        (dict(n_images=1, preset="dense"), "preset"),
        (dict(n_images=1, size=4), "size"),
        (dict(n_images=1, seed=-1), "seed"),
        (dict(n_images=1, radius_max=3), "unknown SyntheticCells parameter"),
        (dict(n_images=True), "n_images must be a positive integer, got True"),
        (dict(n_images=1, size=(16, 8.5)), "size must be an int or a pair"),
        (dict(n_images=1, coverage=1e9), "coverage must be finite and > 0.0 and ≤ 1.0, got 1000000000.0"),  # was a hang
        (dict(n_images=1, coverage=0.0), "coverage must be finite and > 0.0 and ≤ 1.0, got 0.0"),
        (dict(n_images=1, radius=(0, 0)), r"radius\[0\] must be finite and ≥ 1.0, got 0"),  # ZeroDivisionError
        (dict(n_images=1, radius=(-5, -1)), r"radius\[0\] must be finite and ≥ 1.0, got -5"),
        (dict(n_images=1, radius=(9.0, 4.0)), "low <= high"),
        (dict(n_images=1, radius=5.0), r"radius must be a pair \(low, high\)"),
        (dict(n_images=1, noise=float("nan")), "noise must be finite"),  # was a NaN image
        (dict(n_images=1, blur=-1), "blur must be finite and ≥ 0.0, got -1"),
        (dict(n_images=1, irregularity=0.5), "irregularity must be finite and ≥ 0.0 and < 0.333"),
        (dict(n_images=1, gap=(-1.0, 0.0)), "gap must be a pair"),
        (dict(n_images=1, touching=1.5), "touching must be finite and ≥ 0.0 and ≤ 1.0"),
        (dict(n_images=1, brightness=(0.5, 1.5)), r"brightness\[1\] must be finite"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        SyntheticCells(**kwargs)
    assert "\n" not in str(info.value)


def test_numpy_integers_are_integers():
    ds = SyntheticCells(np.int64(2), size=(np.int64(32), 40), seed=np.uint8(3))
    assert len(ds) == 2 and ds.size == (32, 40)
    np.testing.assert_array_equal(ds[1][1], SyntheticCells(2, size=(32, 40), seed=3)[1][1])


FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([64, 128, 256]), preset=st.sampled_from(["touching", "sparse"]))
@example(seed=34, size=256, preset="touching")  # a later cell cut an earlier one in two here
def test_every_instance_id_is_one_connected_object(seed, size, preset):
    _, instances = SyntheticCells(1, size=size, seed=seed, preset=preset)[0]
    for k in range(1, instances.max() + 1):
        assert ndimage.label(instances == k, structure=FOUR_NEIGHBOURS)[1] == 1, f"cell {k} is not one piece"


def test_full_coverage_ends_quickly_and_stays_in_range():
    _, instances = SyntheticCells(1, size=64, seed=0, coverage=1.0)[0]
    assert 0.45 < np.mean(instances > 0) <= 1.0


def test_index_out_of_range_raises():
    with pytest.raises(IndexError):
        SyntheticCells(2, size=32)[2]
