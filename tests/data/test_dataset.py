"""SegmentationDataset, its statistics, the split, oversampling and the loader."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight

from tests.helpers import assert_close
from unet_from_scratch.data import dataset as dataset_module
from unet_from_scratch.data.dataset import SegmentationDataset, make_datasets
from unet_from_scratch.data.folder import FolderDataset
from unet_from_scratch.data.sampling import EpochSampler, make_loader, minority_fractions, oversampling_sampler
from unet_from_scratch.data.split import train_val_split
from unet_from_scratch.data.statistics import DataStatistics
from unet_from_scratch.data.synthetic import SyntheticCells
from unet_from_scratch.data.transforms import Compose, MirrorPad, RandomCrop, RandomFlip, RandomRotate90
from unet_from_scratch.reference.class_weights import class_weights as reference_class_weights
from unet_from_scratch.reference.weight_map import separation_border, unet_weight_map, unet_weight_map_naive

CELLS = SyntheticCells(6, size=64, seed=11)


class ListSource:
    """A source made of given arrays (class masks), to control exactly what each split holds."""

    mask_kind = "classes"

    def __init__(self, images, masks, class_names=("background", "foreground")):
        self.images, self.masks, self.class_names = images, masks, class_names

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.masks[i]


def dihedral(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """One of the 8 symmetries of the square on the last two axes."""
    a = np.flip(a, axis=-1) if flip else a
    return np.rot90(a, k, axes=(-2, -1))


def test_item_is_the_raw_image_the_separated_target_and_the_papers_weight_map():
    ds = SegmentationDataset(CELLS)
    for i in range(len(ds)):
        image, target, weights = ds[i]
        assert isinstance(image, np.ndarray)  # arrays: the data floor needs no torch; a DataLoader makes tensors
        assert image.dtype == np.float32 and target.dtype == np.int64 and weights.dtype == np.float32
        raw, instances = CELLS[i]
        separated = separation_border(instances)
        np.testing.assert_array_equal(target, separated > 0)
        expected = unet_weight_map(separated, w0=10.0, sigma=5.0, class_weights=tuple(ds.class_weights))
        assert_close(weights, expected, name="weight map")
        np.testing.assert_array_equal(image, raw)  # normalising is the model's job (its buffers)


def test_weight_map_equals_the_map_of_the_transformed_mask():
    ds = SegmentationDataset(CELLS, transform=Compose([RandomFlip(), RandomRotate90()]))
    seen = set()
    for seed in range(12):
        i = seed % len(ds)
        torch.manual_seed(seed)
        image, target, weights = ds[i]
        raw, instances = CELLS[i]
        # Which of the 8 symmetries was drawn: the one that maps the untransformed target onto this one.
        matches = [
            (k, flip)
            for k in range(4)
            for flip in (False, True)
            if np.array_equal(dihedral(separation_border(instances) > 0, k, flip), target)
        ]
        assert len(matches) == 1
        k, flip = matches[0]
        seen.add((k, flip))
        moved = np.ascontiguousarray(dihedral(instances, k, flip))
        expected = unet_weight_map(separation_border(moved), class_weights=tuple(ds.class_weights))
        assert_close(weights, expected, name=f"weight map after rot90^{k}, flip={flip}")
        assert_close(image, dihedral(raw, k, flip), name="image")  # moved with the target, not normalised
    assert len(seen) >= 4  # the check covered several different symmetries


def test_weight_maps_are_computed_once_per_mask(monkeypatch):
    calls = []
    original = dataset_module.weight_map

    def counting(labels, *args, **kwargs):
        calls.append(labels.shape)
        return original(labels, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "weight_map", counting)
    ds = SegmentationDataset(CELLS, transform=RandomFlip())
    for _ in range(3):
        ds[0]
    ds[1]
    assert len(calls) == 2
    ds.precompute()
    assert len(calls) == len(ds)


def brightness_source():
    """Six images whose brightness and foreground grow with the index, so every subset has other statistics."""
    rng = np.random.default_rng(5)
    images, masks = [], []
    for i in range(6):
        images.append((0.1 * i + rng.uniform(0, 0.2, (1, 16, 16))).astype(np.float32))
        mask = np.zeros((16, 16), np.int32)
        mask[: 2 * (i + 1)] = 1
        masks.append(mask)
    return ListSource(images, masks)


def test_statistics_come_from_the_training_split_only():
    source = brightness_source()
    train, val = make_datasets(source, val_fraction=0.5, seed=1)
    train_indices, val_indices = train_val_split(len(source), 0.5, seed=1)
    np.testing.assert_array_equal(train.indices, train_indices)
    np.testing.assert_array_equal(val.indices, val_indices)

    train_images = np.stack([source.images[i] for i in train_indices])
    train_masks = np.stack([source.masks[i] for i in train_indices])
    assert_close(np.array(train.statistics.mean), [train_images.mean()], dtype=np.float64, rtol=1e-6, atol=1e-7)
    assert_close(np.array(train.statistics.std), [train_images.std()], dtype=np.float64, rtol=1e-6, atol=1e-7)
    expected_weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=train_masks.ravel())
    assert_close(train.class_weights, expected_weights, dtype=np.float64)
    # Validation uses the training statistics, which differ from those of all the data.
    assert val.statistics is train.statistics
    all_images = np.stack(source.images)
    assert abs(train.statistics.mean[0] - all_images.mean()) > 0.01
    everything = SegmentationDataset(source)
    assert not np.allclose(everything.class_weights, train.class_weights)
    # The validation weight maps use the training class weights.
    _, target, weights = val[0]
    assert_close(weights, train.class_weights[target], name="val weight map (no cells apart)")


def test_median_frequency_class_weights():
    source = brightness_source()
    ds = SegmentationDataset(source, indices=[0, 3], class_weight_method="median_frequency")
    # Image 0: 32 foreground of 256 pixels; image 3: 128 of 256. Both classes appear in both images, so
    # freq_c = count_c / 512: background 352/512, foreground 160/512; median = (352 + 160) / 2 / 512.
    freq = np.array([352, 160]) / 512
    assert_close(ds.class_weights, np.median(freq) / freq, dtype=np.float64)


def test_class_mask_weight_map_extends_the_paper_to_more_classes():
    rng = np.random.default_rng(2)
    mask = np.zeros((24, 24), np.int32)
    mask[2:8, 2:8], mask[2:8, 11:17], mask[14:20, 5:20] = 1, 2, 1
    source = ListSource([rng.uniform(0, 1, (1, 24, 24)).astype(np.float32)], [mask], ("bg", "a", "b"))
    ds = SegmentationDataset(source)
    _, target, weights = ds[0]
    np.testing.assert_array_equal(target, mask)
    # w_c per class (sklearn's balanced weights) plus the border term between connected objects (the textbook map).
    class_weights = compute_class_weight("balanced", classes=np.arange(3), y=mask.ravel())
    border = unet_weight_map_naive(mask > 0, class_weights=(0.0, 0.0))
    assert_close(weights, class_weights[mask] + border, name="multi-class weight map")


def test_folder_of_binary_masks_gives_the_papers_map(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(8)
    mask = np.zeros((32, 32), np.uint8)
    mask[3:12, 3:12], mask[3:12, 15:25], mask[18:28, 6:28] = 255, 255, 255
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    ds = SegmentationDataset(FolderDataset(tmp_path))
    _, target, weights = ds[0]
    np.testing.assert_array_equal(target, mask // 255)
    # A binary mask's objects are its connected components: the paper's map of the mask as a bool image.
    expected = unet_weight_map(mask > 0, class_weights=tuple(ds.class_weights))
    assert_close(weights, expected, name="weight map of a binary mask")
    assert weights.max() > ds.class_weights.max() + 1  # the gaps between the squares are weighted


def test_train_val_split():
    train, val = train_val_split(10, 0.3, seed=4)
    assert len(val) == 3 and len(train) == 7
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    again = train_val_split(10, 0.3, seed=4)
    np.testing.assert_array_equal(again[1], val)
    assert any(not np.array_equal(train_val_split(10, 0.3, seed=s)[1], val) for s in range(5, 10))
    assert len(train_val_split(3, 0.01)[1]) == 1  # a positive fraction keeps at least one
    assert len(train_val_split(5, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(10, 1.0)


def test_minority_fractions_and_the_oversampling_weights():
    counts = np.array([[90, 10], [100, 0], [50, 50]])
    # Class 1 has 60 pixels in all, class 0 240: class 1 is the minority. f = (0.1, 0, 0.5), mean 0.2.
    np.testing.assert_allclose(minority_fractions(counts), [0.1, 0.0, 0.5])
    sampler = oversampling_sampler(counts, smoothing=1.0, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(sampler.weights.numpy(), [0.3, 0.2, 0.7])
    sampler.num_samples = 6000
    frequency = np.bincount(list(sampler), minlength=3) / 6000
    # p = (0.25, 1/6, 7/12); 6000 draws put each frequency within 0.02 of p (over 3 standard errors).
    np.testing.assert_allclose(frequency, [0.25, 1 / 6, 7 / 12], atol=0.02)
    # Equally rich images are drawn uniformly; smoothing 0 never draws an image without the minority class.
    uniform = oversampling_sampler(np.array([[3, 1], [6, 2], [9, 3]])).weights.numpy()
    np.testing.assert_allclose(uniform, uniform[0])
    np.testing.assert_allclose(oversampling_sampler(counts, smoothing=0.0).weights.numpy(), [0.1, 0.0, 0.5])
    with pytest.raises(ValueError, match="image_class_counts"):
        minority_fractions(np.array([[0, 0], [1, 1]]))
    for smoothing in (-1.0, float("nan")):  # NaN weights failed inside torch's sampler
        with pytest.raises(ValueError, match="^smoothing must be finite and ≥ 0.0"):
            oversampling_sampler(counts, smoothing=smoothing)


def test_oversampling_favours_images_rich_in_the_minority_class():
    ds = SegmentationDataset(SyntheticCells(8, size=64, seed=3, preset="sparse", coverage=0.005))
    counts = ds.statistics.image_class_counts
    assert counts.shape == (8, 2) and np.all(counts.sum(axis=1) == 64 * 64)
    for i in range(8):  # per-image counts are those of the target
        np.testing.assert_array_equal(counts[i], np.bincount(ds[i][1].ravel(), minlength=2))
    sampler = oversampling_sampler(counts, generator=torch.Generator().manual_seed(1))
    fractions = counts[:, 1] / counts.sum(axis=1)
    assert np.argmax(sampler.weights.numpy()) == np.argmax(fractions)
    assert np.argmin(sampler.weights.numpy()) == np.argmin(fractions)


def test_loader_batches_the_items_in_order_with_and_without_workers():
    ds = SegmentationDataset(CELLS)
    loader = make_loader(ds, batch_size=4, shuffle=False)
    assert not loader.pin_memory or torch.cuda.is_available()
    images, targets, weights = next(iter(loader))
    assert images.shape == (4, 1, 64, 64) and targets.shape == (4, 64, 64) and weights.shape == (4, 64, 64)
    for j in range(4):
        item = ds[j]
        torch.testing.assert_close(images[j], torch.from_numpy(item[0]))  # collated into tensors, same dtypes
        torch.testing.assert_close(targets[j], torch.from_numpy(item[1]))
        torch.testing.assert_close(weights[j], torch.from_numpy(item[2]))
    with_workers = make_loader(ds, batch_size=4, shuffle=False, num_workers=2)
    for a, b in zip(loader, with_workers):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_loader_with_a_sampler_and_a_seed_is_reproducible():
    ds = SegmentationDataset(CELLS)
    first = [b[1] for b in make_loader(ds, batch_size=2, seed=7)]
    second = [b[1] for b in make_loader(ds, batch_size=2, seed=7)]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    other = [b[1] for b in make_loader(ds, batch_size=2, seed=8)]
    assert any(not torch.equal(a, b) for a, b in zip(first, other))
    sampler = oversampling_sampler(ds.statistics.image_class_counts)
    loader = make_loader(ds, batch_size=3, sampler=sampler)
    assert loader.sampler is sampler and sum(len(b[0]) for b in loader) == len(ds)


def _batches(loader):
    return [[t.clone() for t in batch] for batch in loader]


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def _same(first, second) -> bool:
    return len(first) == len(second) and all(torch.equal(x, y) for a, b in zip(first, second) for x, y in zip(a, b))


def test_a_seed_fixes_the_augmented_batches_with_and_without_workers():
    ds = SegmentationDataset(CELLS, transform=Compose([RandomFlip(), RandomRotate90(), RandomCrop(24)]))
    ds.precompute()
    without = _batches(make_loader(ds, batch_size=2, seed=7))
    _assert_same_batches(without, _batches(make_loader(ds, batch_size=2, seed=7)))  # was new draws every call
    with_workers = make_loader(ds, batch_size=2, seed=7, num_workers=2)
    first_epoch = _batches(with_workers)
    _assert_same_batches(first_epoch, _batches(make_loader(ds, batch_size=2, seed=7, num_workers=2)))
    _assert_same_batches(without, first_epoch)  # 0 workers == 2 workers
    # The batches do depend on the seed: another seed, or the next pass (epoch 1), gives other batches, and
    # epoch 1 is the same with and without workers too.
    assert not _same(without, _batches(make_loader(ds, batch_size=2, seed=8)))
    second_epoch = _batches(with_workers)
    assert not _same(first_epoch, second_epoch)
    loader = make_loader(ds, batch_size=2, seed=7)
    loader.sampler.set_epoch(1)
    _assert_same_batches(second_epoch, _batches(loader))
    # In order (shuffle=False) the items come 0, 1, 2, ..., augmented the same way on every call.
    ordered = make_loader(ds, batch_size=3, shuffle=False, seed=1)
    np.testing.assert_array_equal(ordered.sampler.order()[0], np.arange(len(ds)))
    _assert_same_batches(_batches(ordered), _batches(make_loader(ds, batch_size=3, shuffle=False, seed=1)))


def test_a_seed_keeps_the_oversampling_weights():
    ds = SegmentationDataset(CELLS, transform=RandomFlip())
    oversampling = oversampling_sampler(ds.statistics.image_class_counts, num_samples=9)
    loader = make_loader(ds, batch_size=3, sampler=oversampling, seed=2)
    assert isinstance(loader.sampler, EpochSampler) and len(loader.sampler) == 9
    np.testing.assert_allclose(loader.sampler.weights, oversampling.weights.numpy() / oversampling.weights.sum().item())
    again = make_loader(ds, batch_size=3, sampler=oversampling, seed=2)
    _assert_same_batches(_batches(loader), _batches(again))
    with pytest.raises(ValueError, match="^seed fixes the augmentations through an EpochSampler"):
        make_loader(ds, sampler=torch.utils.data.SequentialSampler(ds), seed=2)


def test_augmentation_follows_the_torch_seed():
    ds = SegmentationDataset(CELLS, transform=Compose([RandomFlip(), RandomRotate90()]))
    torch.manual_seed(3)
    first = [ds[0][1] for _ in range(4)]
    torch.manual_seed(3)
    second = [ds[0][1] for _ in range(4)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(first[0], other) for other in first[1:])  # a fresh draw on every read


def test_valid_convolution_inputs_are_mirror_padded():
    crop = Compose([RandomFlip(), RandomCrop(24, margin=8)])
    train, val = make_datasets(CELLS, val_fraction=0.34, transform=crop, val_transform=MirrorPad(80))
    image, target, weights = train[0]
    assert image.shape == (1, 40, 40) and target.shape == (24, 24) and weights.shape == (24, 24)
    image, target, weights = val[0]
    assert image.shape == (1, 80, 80) and target.shape == (64, 64) and weights.shape == (64, 64)


def uneven_source():
    """Two images of different sizes and three classes, small enough to work every statistic out by hand:

    image A (1, 2, 2) = [[1, 3], [5, 7]],       mask [[0, 0], [0, 1]]        counts (3, 1, 0), 4 pixels
    image B (1, 2, 3) = [[0, 0, 0], [10]*3],    mask [[0, 0, 2], [2, 2, 2]]  counts (2, 0, 4), 6 pixels
    """
    images = [np.array([[[1, 3], [5, 7]]], np.float32), np.array([[[0, 0, 0], [10, 10, 10]]], np.float32)]
    masks = [np.array([[0, 0], [0, 1]], np.int32), np.array([[0, 0, 2], [2, 2, 2]], np.uint8)]
    return ListSource(images, masks, ("bg", "a", "b"))


def test_statistics_of_a_hand_built_source():
    stats = SegmentationDataset(uneven_source()).statistics
    # Ten pixels 1, 3, 5, 7, 0, 0, 0, 10, 10, 10: mean 46 / 10 = 4.6; variance = mean of squares - mean^2 =
    # (1 + 9 + 25 + 49 + 300) / 10 - 4.6^2 = 38.4 - 21.16 = 17.24.
    assert_close(np.array(stats.mean), [4.6], dtype=np.float64)
    assert_close(np.array(stats.std), [np.sqrt(17.24)], dtype=np.float64)
    np.testing.assert_array_equal(stats.image_class_counts, [[3, 1, 0], [2, 0, 4]])
    # Balanced, n / (k count_c) with n = 10, k = 3, counts (5, 1, 4): (2/3, 10/3, 5/6), as scikit-learn has it.
    assert_close(np.array(stats.class_weights), [2 / 3, 10 / 3, 5 / 6], dtype=np.float64)
    y = np.concatenate([m.ravel() for m in uneven_source().masks])
    assert_close(np.array(stats.class_weights), compute_class_weight("balanced", classes=np.arange(3), y=y),
                 dtype=np.float64)  # fmt: skip
    # What a checkpoint stores: plain values, and back to equal statistics.
    state = stats.state_dict()
    assert state == {"class_names": ["bg", "a", "b"], "mean": list(stats.mean), "std": list(stats.std),
                     "class_weights": list(stats.class_weights)}  # fmt: skip
    assert all(type(v) is float for key in ("mean", "std", "class_weights") for v in state[key])
    assert DataStatistics.from_state_dict(state) == stats


def test_median_frequency_weights_for_images_of_different_sizes():
    ds = SegmentationDataset(uneven_source(), class_weight_method="median_frequency")
    # freq_c = count_c / (pixels of the images in which c appears): bg 5 / (4 + 6) = 1/2, a 1 / 4 (image A only),
    # b 4 / 6 = 2/3 (image B only); the median is 1/2, so w = (1/2) / freq = (1, 2, 3/4).
    assert_close(ds.class_weights, [1.0, 2.0, 0.75], dtype=np.float64)


def test_median_frequency_weights_from_counts_equal_the_reference_on_images_of_one_size():
    rng = np.random.default_rng(4)
    masks = [rng.integers(0, 2, (8, 8)).astype(np.int32) for _ in range(5)]
    masks[1][2:4, 2:5] = 2  # class 2 in two images only: the per-image pixel total of its frequency matters
    masks[3][0, :] = 2
    images = [rng.uniform(0, 1, (1, 8, 8)).astype(np.float32) for _ in masks]
    for method in ("median_frequency", "balanced"):
        ds = SegmentationDataset(ListSource(images, masks, ("bg", "a", "b")), class_weight_method=method)
        expected = reference_class_weights(np.stack(masks), 3, method)
        assert_close(ds.class_weights, expected, dtype=np.float64, name=method)
        if method == "median_frequency":
            # Not the frequency over all pixels: class 2's denominator holds only the two images it appears in.
            counts = np.bincount(np.stack(masks).ravel(), minlength=3) / (5 * 64)
            assert not np.allclose(ds.class_weights, np.median(counts) / counts)


def one_item_source(image, mask, kind="classes"):
    source = ListSource([image], [mask])
    source.mask_kind = kind
    return source


def test_a_two_dimensional_image_is_one_channel():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (6, 10)).astype(np.float32)  # (H, W): one channel, not 6 channels of 10 pixels
    mask = (image > 0.5).astype(np.int32)
    ds = SegmentationDataset(one_item_source(image, mask))
    assert_close(np.array(ds.statistics.mean), [image.astype(np.float64).mean()], dtype=np.float64)
    assert_close(np.array(ds.statistics.std), [image.astype(np.float64).std()], dtype=np.float64)
    item, target, _ = ds[0]
    np.testing.assert_array_equal(item, image[None])
    np.testing.assert_array_equal(target, mask)


BAD_ITEMS = {
    "float mask": (np.zeros((1, 4, 4), np.float32), np.full((4, 4), 0.7), "item 0: mask must hold integer labels, "
                   "got dtype float64"),
    "mask of another size": (np.zeros((1, 4, 4), np.float32), np.zeros((4, 5), np.int32),
                             r"item 0: mask must be \(H, W\) = \(4, 4\), the image's size, got shape \(4, 5\)"),
    "label outside the classes": (np.zeros((1, 4, 4), np.float32), np.full((4, 4), 2),
                                  r"item 0: mask labels must lie in \[0, 2\) \(the classes\), got 2..2"),
    "negative label": (np.zeros((1, 4, 4), np.float32), np.full((4, 4), -1),
                       r"item 0: mask labels must lie in \[0, 2\)"),
    "NaN image": (np.full((1, 4, 4), np.nan, np.float32), np.zeros((4, 4), np.int32),
                  "item 0: image must be finite, got 16 NaN"),
    "image of rank 4": (np.zeros((1, 1, 4, 4), np.float32), np.zeros((4, 4), np.int32),
                        r"item 0: image must be \(C, H, W\) or \(H, W\)"),
    "complex image": (np.zeros((1, 4, 4), np.complex64), np.zeros((4, 4), np.int32),
                      "item 0: image must be an array of real"),
    "empty image": (np.zeros((1, 0, 4), np.float32), np.zeros((0, 4), np.int32), "item 0: image must hold at least"),
}  # fmt: skip


@pytest.mark.parametrize("image, mask, message", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
def test_bad_items_of_a_custom_source_raise_naming_the_item(image, mask, message):
    with pytest.raises(ValueError, match="^" + message):
        SegmentationDataset(one_item_source(image, mask))


def test_negative_instance_ids_raise():
    with pytest.raises(ValueError, match=r"^item 0: instance ids must lie in \[0, "):
        SegmentationDataset(one_item_source(np.zeros((1, 4, 4), np.float32), np.full((4, 4), -2), "instances"))


def test_a_bad_item_of_the_validation_split_raises_naming_it():
    # The training statistics never read it: the error comes when the item is read (it was an IndexError in
    # the weight map's class-weight lookup), naming the source index.
    source = brightness_source()
    _, (first, second) = train_val_split(len(source), 0.34, seed=0)  # the validation items, 2 and 3
    source.masks[first] = source.masks[first] * 3  # label 3 of two classes
    source.images[second] = source.images[second][:, :, :8]  # an image of another size than its mask
    train, val = make_datasets(source, val_fraction=0.34, seed=0)
    assert list(val.indices) == [first, second]
    labels = rf"^item {first}: mask labels must lie in \[0, 2\) \(the classes\), got 0..3$"
    with pytest.raises(ValueError, match=labels):
        val[0]
    with pytest.raises(ValueError, match=rf"^item {second}: mask must be \(H, W\) = \(16, 8\)"):
        val[1]
    source.images[second] = np.zeros((3, 16, 16), np.float32)  # three channels where the training images have one
    with pytest.raises(ValueError, match=rf"^item {second}: image must have 1 channel\(s\), as the training images"):
        val[1]


def test_training_images_with_different_channels_raise():
    images = [np.zeros((1, 4, 4), np.float32), np.zeros((3, 4, 4), np.float32)]
    with pytest.raises(ValueError, match="^item 1: image has 3 channels, item 0 has 1"):
        SegmentationDataset(ListSource(images, [np.zeros((4, 4), np.int32)] * 2))


def test_bad_sources_and_statistics_raise():
    with pytest.raises(ValueError, match="mask_kind"):
        SegmentationDataset([(np.zeros((1, 4, 4), np.float32), np.zeros((4, 4), np.int32))])
    other = DataStatistics(("background", "tumour"), (0.0,), (1.0,), (1.0, 1.0))
    with pytest.raises(ValueError, match="classes"):
        SegmentationDataset(CELLS, statistics=other)
    with pytest.raises(ValueError, match="indices"):
        SegmentationDataset(CELLS, indices=[0, 6])


def test_an_elastic_warp_never_merges_touching_cells_in_the_target():
    # The gap is carved before the transforms, and a nearest-neighbour warp can skip a one-pixel line: the target
    # must still keep every pair of touching cells apart (no foreground pixel 8-adjacent to another cell's).
    from unet_from_scratch.data import ElasticDeform, SyntheticCells
    from unet_from_scratch.data.transforms import Sample

    source = SyntheticCells(4, size=96, seed=2)
    ds = SegmentationDataset(source, transform=ElasticDeform(sigma=10.0))
    merged_before_carving = 0
    for i in range(4):
        for seed in range(5):
            _, target, _ = ds[(i, seed)]
            labels, weights = ds.labels_and_weights(i)
            image = np.asarray(source[i][0], dtype=np.float32)
            warped = ElasticDeform(sigma=10.0)(Sample(image, labels, weights), np.random.default_rng(seed)).labels
            foreground = target > 0
            padded = np.pad(np.where(foreground, warped, 0), 1)
            height, width = warped.shape
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
                    assert not np.any(foreground & (neighbour > 0) & (neighbour != warped)), (i, seed)
            merged_before_carving += int(np.count_nonzero((warped > 0) != foreground))
    assert merged_before_carving > 0  # the warps did close gaps, which the carving reopened


def test_numpy_batches_are_the_dataloaders_batches_without_torch(tmp_path):
    """``data.batches`` over an ``EpochSampler`` stacks the very items a DataLoader collates, in a process that
    cannot import torch (the NumPy engine's data path)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from unet_from_scratch.data import Compose, EpochSampler, RandomCrop, RandomFlip, SegmentationDataset,"
        " SyntheticCells, batches\n"
        "ds = SegmentationDataset(SyntheticCells(6, size=48, seed=1), transform=Compose([RandomFlip(), RandomCrop(32)]))\n"
        "out = list(batches(ds, EpochSampler(len(ds), 5, seed=4), 2))\n"
        "np.savez(sys.argv[1], *[a for batch in out for a in batch])\n"
    )
    path = tmp_path / "batches.npz"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    saved = np.load(path)
    arrays = [saved[f"arr_{j}"] for j in range(len(saved.files))]
    ds = SegmentationDataset(SyntheticCells(6, size=48, seed=1), transform=Compose([RandomFlip(), RandomCrop(32)]))
    sampler = EpochSampler(len(ds), 5, seed=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, drop_last=True)
    expected = [t.numpy() for batch in loader for t in batch]
    assert len(arrays) == len(expected) == 2 * 3  # 5 items: two full batches of 2, the fifth dropped
    for a, b in zip(arrays, expected):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
