"""FolderDataset: files written here come back as written; each bad folder fails with a one-line error naming a file."""

import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from unet_from_scratch.data.folder import FolderDataset


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    return tmp_path


def save_png(path, array):
    Image.fromarray(array).save(path)


def raises(error, folder, match, **kwargs):
    """Construct the dataset, expect ``error`` whose one-line message contains ``match``."""
    with pytest.raises(error, match=re.escape(match)) as info:
        FolderDataset(folder, **kwargs)
    assert "\n" not in str(info.value)


def test_png_pairs_round_trip(folder, rng):
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    binary = np.where(rng.random((20, 30)) > 0.7, 255, 0).astype(np.uint8)
    save_png(folder / "images" / "a.png", grey)
    save_png(folder / "masks" / "a.png", binary)
    deep = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    ids = rng.integers(0, 40, (20, 30), dtype=np.uint16)
    save_png(folder / "images" / "b.png", deep)
    save_png(folder / "masks" / "b.png", (ids == 0).astype(np.uint8))  # 0/1 binary mask

    ds = FolderDataset(folder)
    assert len(ds) == 2 and ds.in_channels == 1 and ds.mask_kind == "classes"
    image, mask = ds[0]
    assert image.dtype == np.float32 and image.shape == (1, 20, 30)
    np.testing.assert_allclose(image[0], grey / 255.0, rtol=1e-6)
    assert mask.dtype == np.int32
    np.testing.assert_array_equal(mask, binary // 255)  # 0/255 read as 0/1
    image, mask = ds[1]
    np.testing.assert_allclose(image[0], deep / 65535.0, rtol=1e-6)  # 16-bit scaled by 65535
    np.testing.assert_array_equal(mask, ids == 0)
    assert [s[0].name for s in ds.samples] == ["a.png", "b.png"]


def test_instance_masks_are_read_as_ids(folder, rng):
    ids = rng.integers(0, 300, (16, 16)).astype(np.uint16)
    save_png(folder / "images" / "x.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    save_png(folder / "masks" / "x.png", ids)
    _, mask = FolderDataset(folder, mask_kind="instances")[0]
    np.testing.assert_array_equal(mask, ids)
    # Read as classes, the same file is an error that says what to do.
    raises(ValueError, folder, "mask_kind='instances'")


def test_tiff_stack_gives_one_sample_per_page(folder, rng):
    stack = rng.uniform(0, 1, (3, 12, 14)).astype(np.float32)
    ids = rng.integers(0, 9, (3, 12, 14)).astype(np.uint16)
    tifffile.imwrite(folder / "images" / "movie.tif", stack, photometric="minisblack")
    tifffile.imwrite(folder / "masks" / "movie.tiff", ids, photometric="minisblack")
    ds = FolderDataset(folder, mask_kind="instances")
    assert len(ds) == 3
    for page in range(3):
        image, mask = ds[page]
        np.testing.assert_array_equal(image[0], stack[page])  # float images kept as they are
        np.testing.assert_array_equal(mask, ids[page])
        assert ds.samples[page][2] == page


def test_jpeg_colour_image_and_palette_mask(folder, rng):
    # A smooth colour image, so JPEG's loss stays small.
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack([4 * y + 20, 3 * x + 40, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "images" / "c.jpg", quality=95)
    classes = (x // 16).astype(np.uint8)  # 0, 1, 2 in bands
    palette = Image.fromarray(classes)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)  # an "L" image becomes "P": indices kept
    palette.save(folder / "masks" / "c.png")
    with Image.open(folder / "masks" / "c.png") as saved:
        assert saved.mode == "P"
    ds = FolderDataset(folder, class_names=("background", "red", "green"))
    image, mask = ds[0]
    assert ds.in_channels == 3 and image.shape == (3, 32, 48)
    # JPEG is lossy: within a few grey levels of what was written.
    assert np.abs(image - np.moveaxis(rgb, -1, 0) / 255.0).max() < 0.05
    np.testing.assert_array_equal(mask, classes)  # palette indices, not colours


def test_hidden_files_are_ignored(folder, rng):
    save_png(folder / "images" / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    save_png(folder / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    (folder / "images" / ".DS_Store").write_bytes(b"\x00\x01")
    assert len(FolderDataset(folder)) == 1


# --- every bad folder ------------------------------------------------------------------------------------------


def test_missing_mask(folder, rng):
    save_png(folder / "images" / "lonely.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    raises(FileNotFoundError, folder, "no mask for")
    raises(FileNotFoundError, folder, "lonely.png")


def test_missing_image(folder):
    save_png(folder / "masks" / "orphan.png", np.zeros((8, 8), np.uint8))
    save_png(folder / "images" / "other.png", np.zeros((8, 8), np.uint8))
    save_png(folder / "masks" / "other.png", np.zeros((8, 8), np.uint8))
    raises(FileNotFoundError, folder, "orphan.png")


def test_size_mismatch(folder, rng):
    save_png(folder / "images" / "a.png", rng.integers(0, 256, (8, 9), dtype=np.uint8))
    save_png(folder / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    raises(ValueError, folder, "size mismatch")
    raises(ValueError, folder, str(folder / "masks" / "a.png"))


def test_page_count_mismatch(folder, rng):
    tifffile.imwrite(folder / "images" / "s.tif", np.zeros((4, 8, 8), np.uint8), photometric="minisblack")
    tifffile.imwrite(folder / "masks" / "s.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    raises(ValueError, folder, "has 4 page(s)")


def test_corrupt_file(folder, rng):
    save_png(folder / "images" / "good.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    save_png(folder / "masks" / "good.png", np.zeros((8, 8), np.uint8))
    (folder / "images" / "junk.png").write_bytes(b"not a png at all")
    save_png(folder / "masks" / "junk.png", np.zeros((8, 8), np.uint8))
    raises(ValueError, folder, f"cannot read {folder / 'images' / 'junk.png'}")


def test_truncated_file(folder, rng):
    save_png(folder / "images" / "cut.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = (folder / "images" / "cut.png").read_bytes()
    (folder / "images" / "cut.png").write_bytes(data[: len(data) // 2])
    save_png(folder / "masks" / "cut.png", np.zeros((64, 64), np.uint8))
    raises(ValueError, folder, "cannot read")
    raises(ValueError, folder, "cut.png")


def test_corrupt_tiff(folder):
    (folder / "images" / "t.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(folder / "masks" / "t.tif", np.zeros((8, 8), np.uint8))
    raises(ValueError, folder, f"cannot read {folder / 'images' / 't.tif'}")


def test_mask_value_outside_the_classes(folder, rng):
    save_png(folder / "images" / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[3, 3] = 3
    save_png(folder / "masks" / "a.png", mask)
    raises(ValueError, folder, "has value 3, outside the classes 0..2", class_names=("bg", "a", "b"))
    raises(ValueError, folder, str(folder / "masks" / "a.png"), class_names=("bg", "a", "b"))


def test_negative_instance_id(folder):
    save_png(folder / "images" / "a.png", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(folder / "masks" / "a.tif", np.full((8, 8), -1, np.int16))
    raises(ValueError, folder, "negative value -1", mask_kind="instances")


def test_empty_folder(folder):
    raises(ValueError, folder, "no images in")


def test_missing_folders(tmp_path):
    raises(FileNotFoundError, tmp_path / "nowhere", "does not exist")
    (tmp_path / "masks").mkdir()
    raises(FileNotFoundError, tmp_path, str(tmp_path / "images"))


@pytest.mark.parametrize(
    "images, masks, match",
    [
        (["a.png", "a.tif"], ["a.png"], "share the stem 'a'"),
        (["a.png", "notes.txt"], ["a.png"], "unsupported image file"),
        (["a.png"], ["a.jpg"], "unsupported mask file"),  # lossy masks are refused
    ],
)
def test_unusable_files(folder, images, masks, match):
    for name in images:
        if name.endswith(".txt"):
            (folder / "images" / name).write_text("x")
        else:
            save_png(folder / "images" / name, np.zeros((8, 8), np.uint8))  # Pillow picks the format by suffix
    for name in masks:
        save_png(folder / "masks" / name, np.zeros((8, 8), np.uint8))
    raises(ValueError, folder, match)


def test_rgb_mask_is_refused(folder):
    save_png(folder / "images" / "a.png", np.zeros((8, 8), np.uint8))
    save_png(folder / "masks" / "a.png", np.zeros((8, 8, 3), np.uint8))
    raises(ValueError, folder, "single-channel")


def test_channel_count_must_agree(folder):
    save_png(folder / "images" / "a.png", np.zeros((8, 8), np.uint8))
    save_png(folder / "images" / "b.png", np.zeros((8, 8, 3), np.uint8))
    for stem in "ab":
        save_png(folder / "masks" / f"{stem}.png", np.zeros((8, 8), np.uint8))
    raises(ValueError, folder, "b.png has 3 channel(s)")


# --- values and files that decode but must not be used -------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_non_finite_values(folder, rng, bad):
    stack = rng.uniform(0, 1, (3, 8, 8)).astype(np.float32)
    stack[2, 4, 5] = bad
    tifffile.imwrite(folder / "images" / "f.tif", stack, photometric="minisblack")
    tifffile.imwrite(folder / "masks" / "f.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    raises(ValueError, folder, f"image {folder / 'images' / 'f.tif'} page 2 holds 1 NaN or infinite value(s)")


def _truncate_to_its_first_page(path):
    """Cut a tifffile-written stack right after its first page's data: the later pages' directories are lost."""
    with tifffile.TiffFile(path) as tif:
        first = tif.pages[0]
        end = first.dataoffsets[-1] + first.databytecounts[-1]
    path.write_bytes(path.read_bytes()[:end])


def test_truncated_tiff_stacks_are_refused_not_cut_short(folder, rng):
    # Image and mask truncated alike, so the page counts still agree: tifffile reads the first page and only logs
    # the rest as lost. Three of four samples would have vanished without an error.
    tifffile.imwrite(folder / "images" / "s.tif", rng.integers(0, 256, (4, 16, 16), dtype=np.uint8), photometric="minisblack")
    tifffile.imwrite(folder / "masks" / "s.tif", np.zeros((4, 16, 16), np.uint8), photometric="minisblack")
    assert len(FolderDataset(folder)) == 4
    for name in ("images", "masks"):
        _truncate_to_its_first_page(folder / name / "s.tif")
    with tifffile.TiffFile(folder / "images" / "s.tif") as tif:
        assert len(tif.pages) == 1  # what tifffile itself makes of it
    raises(ValueError, folder, f"cannot read {folder / 'images' / 's.tif'} whole")
    raises(ValueError, folder, "only 1 page(s) readable")


def test_jpeg_data_under_a_png_name_is_refused_as_a_mask(folder, rng):
    save_png(folder / "images" / "a.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(folder / "masks" / "a.png", format="JPEG")
    raises(ValueError, folder, f"mask {folder / 'masks' / 'a.png'} holds JPEG data")


def test_a_lossy_0_255_mask_names_the_in_between_values(folder, rng):
    # A 0/255 mask that went through JPEG and was then saved as PNG: 255 is a legal value of a binary mask, the
    # values between 1 and 254 are the problem, and the message says so.
    save_png(folder / "images" / "a.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    mask[4, 4:12], mask[11, 6] = 200, 37  # what a JPEG round trip leaves along the square's edge
    save_png(folder / "masks" / "a.png", mask)
    raises(ValueError, folder, "is not a clean 0/255 or class-index mask: 9 pixel(s) hold values between 1 and 254 (37, 200)")
    raises(ValueError, folder, "lossy (JPEG) compression")
