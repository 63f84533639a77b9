"""FolderDataset: images and masks from a folder, every file checked once, nothing silently skipped.

Layout: ``root/images/<stem>.<ext>`` and ``root/masks/<stem>.<ext>``, paired by file stem (``cell01.tif`` with
``cell01.png`` is a pair). Names starting with "." (``.DS_Store``) are ignored; any other file or folder that is not
a supported image, an image without a mask, a mask without an image, two files with one stem, a size mismatch, an
unreadable or corrupt file, or a mask value that is not a valid label raises a one-line error naming the file.
The folder is read once, fully, at construction (this is where those errors surface, not in a worker mid-epoch);
the decoded pages are kept in memory in their file's own dtype.

Images: PNG, TIFF or JPEG, read with Pillow (PNG, JPEG) or tifffile (TIFF).
- Grey images give one channel, colour images three (alpha dropped, palettes expanded); every image of the folder
  must have the same number of channels.
- Integer pixel values are divided by the largest value of their type (uint8 by 255, uint16 by 65535), so they lie
  in [0, 1]; float images are kept as they are, and must be finite (NaN or infinity is refused, naming the file
  and page). ``ds[i]`` returns float32 (C, H, W).
- A multi-page TIFF is a stack: each page is one sample, in page order, and its mask must be a TIFF with the same
  number of pages. (tifffile writes a 3- or 4-plane array as one RGB(A) page unless told
  ``photometric="minisblack"``; a TIFF page is one image whatever its channels.) A stack that tifffile can only
  read in part (a truncated file: it logs the problem and returns the pages before it) is refused, image and mask
  alike, instead of silently losing its last pages.

Masks: PNG or TIFF (JPEG is refused, by suffix and by content, a JPEG stream under a ``.png`` name included: its
lossy compression invents label values at every edge), one channel, integer
values (a palette PNG is read as its palette indices, the usual way of storing class masks). ``mask_kind`` says what
the values mean:
- ``"classes"`` (the default): each value is a class index into ``class_names`` (default background/foreground),
  so it must lie in [0, len(class_names)). With two classes a 0/255 mask (the usual binary PNG) is read as 0/1.
- ``"instances"``: 0 is background and every positive value one object (an instance label image, as the cell
  tracking challenges ship them); the training target is object vs background, so ``class_names`` must hold two
  names. Negative values are refused.
``ds[i]`` returns the mask as int32 (H, W).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from unet_from_scratch.data.targets import MASK_KINDS

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


class FolderDataset:
    """Image/mask pairs from ``root/images`` and ``root/masks`` (conventions in the module docstring).

    ``ds[i]`` -> (image float32 (C, H, W), mask int32 (H, W)). ``ds.samples[i]`` is (image path, mask path, page).
    """

    def __init__(self, root, mask_kind: str = "classes", class_names=("background", "foreground")):
        if mask_kind not in MASK_KINDS:
            raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {mask_kind!r}")
        class_names = tuple(class_names)
        if len(class_names) < 2 or (mask_kind == "instances" and len(class_names) != 2):
            raise ValueError(
                f"class_names must name at least 2 classes (exactly 2 for instance masks), got {class_names!r}"
            )
        self.root = Path(root)
        self.mask_kind = mask_kind
        self.class_names = class_names
        self.samples: list[tuple[Path, Path, int]] = []
        self._images: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        for image_path, mask_path in _pairs(self.root):
            images = read_image_pages(image_path)
            masks = [self._check_mask(_mask_page(m, mask_path), mask_path) for m in _read_pages(mask_path, mask=True)]
            if len(images) != len(masks):
                raise ValueError(f"{image_path} has {len(images)} page(s) but its mask {mask_path} has {len(masks)}")
            for page, (image, mask) in enumerate(zip(images, masks)):
                if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
                    bad = image.size - np.count_nonzero(np.isfinite(image))
                    raise ValueError(
                        f"image {image_path} page {page} holds {bad} NaN or infinite value(s); expected finite values"
                    )
                if image.shape[1:] != mask.shape:
                    raise ValueError(
                        f"size mismatch: {image_path} page {page} is {image.shape[1:]} but {mask_path} is {mask.shape}"
                    )
                if self._images and image.shape[0] != self._images[0].shape[0]:
                    raise ValueError(
                        f"{image_path} has {image.shape[0]} channel(s), {self.samples[0][0]} has "
                        f"{self._images[0].shape[0]}: every image must have the same number"
                    )
                self.samples.append((image_path, mask_path, page))
                self._images.append(image)
                self._masks.append(mask)
        self.in_channels = self._images[0].shape[0]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self._images[index], self._masks[index]
        if np.issubdtype(image.dtype, np.integer):
            image = image / np.iinfo(image.dtype).max
        return image.astype(np.float32), mask.copy()

    def _check_mask(self, mask: np.ndarray, path: Path) -> np.ndarray:
        """The mask's values read as documented (0/255 -> 0/1 for two classes) -> int32 (H, W)."""
        low, high = int(mask.min()), int(mask.max())
        if self.mask_kind == "instances":
            if low < 0:
                raise ValueError(f"instance mask {path} has negative value {low}; expected 0 and object ids >= 1")
            if high > np.iinfo(np.int32).max:
                raise ValueError(f"instance mask {path} has id {high}, above the int32 range")
            return mask.astype(np.int32)
        num_classes = len(self.class_names)
        if num_classes == 2 and np.all((mask == 0) | (mask == 255)):
            return (mask == 255).astype(np.int32)
        between = (mask > 0) & (mask < 255) & (mask >= num_classes)
        if high == 255 and np.any(between):
            values = np.unique(mask[between])
            raise ValueError(
                f"mask {path} is not a clean 0/255 or class-index mask: {np.count_nonzero(between)} pixel(s) hold "
                f"values between 1 and 254 ({', '.join(str(v) for v in values[:3])}{', ...' if values.size > 3 else ''})"
                f", as lossy (JPEG) compression leaves at edges; expected the classes 0..{num_classes - 1} "
                f"{self.class_names}" + (" or 0/255" if num_classes == 2 else "")
            )
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            hint = "; pass mask_kind='instances' if it holds object ids" if high > 1 and low >= 0 else ""
            raise ValueError(
                f"mask {path} has value {bad}, outside the classes 0..{num_classes - 1} {self.class_names}{hint}"
            )
        return mask.astype(np.int32)


def list_files(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """stem -> path of every file in ``folder`` (hidden files skipped), sorted; a missing folder, a subfolder, another
    suffix than ``suffixes`` or two files of one stem raise (one line, naming ``what``: "image", "mask")."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file():
            raise ValueError(f"unexpected entry {path} in the {what} folder (expected only {what} files)")
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"unsupported {what} file {path}: expected one of {', '.join(suffixes)}")
        if path.stem in by_stem:
            raise ValueError(f"{path} and {by_stem[path.stem]} share the stem {path.stem!r}: which one is meant?")
        by_stem[path.stem] = path
    return by_stem


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths matched by stem, in sorted order; missing partners raise FileNotFoundError."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    images = list_files(root / "images", IMAGE_SUFFIXES, "image")
    masks = list_files(root / "masks", MASK_SUFFIXES, "mask")
    if not images:
        raise ValueError(f"no images in {root / 'images'} (expected {', '.join(IMAGE_SUFFIXES)} files)")
    for stem, path in images.items():
        if stem not in masks:
            raise FileNotFoundError(f"no mask for {path}: expected {root / 'masks' / stem}.png or .tif")
    for stem, path in masks.items():
        if stem not in images:
            raise FileNotFoundError(f"no image for mask {path}: expected {root / 'images' / stem}.<png|tif|jpg>")
    return [(images[stem], masks[stem]) for stem in images]


def read_image_pages(path: Path) -> list[np.ndarray]:
    """Every page of the image file ``path`` as (C, H, W) in the file's dtype, as training reads its images (PNG,
    JPEG and TIFF; multi-page stacks; grey, grey + alpha, RGB, RGBA -> 1 or 3 channels). ValueError (one line, naming
    the file) for a corrupt or truncated file or an array that is not an image."""
    return [_channels_first(page, path) for page in _read_pages(path, mask=False)]


def _read_pages(path: Path, mask: bool) -> list[np.ndarray]:
    """Every page of an image or ``mask`` file as an array (H, W) or (H, W, C), in the file's dtype."""
    file_format, problems = None, []
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with _tifffile_problems() as problems, tifffile.TiffFile(path) as tif:
                pages = [_tiff_page(page) for page in tif.pages]
        else:
            with Image.open(path) as image:
                file_format = image.format
                image.load()  # decode now: a truncated file must fail here, naming itself
                pages = [_pillow_array(image, mask)]
    # Decoders fail in many ways on a corrupt file (OSError, SyntaxError, struct.error, TiffFileError, ...): any
    # of them means this file cannot be read, and the message must say which file.
    except Exception as error:
        raise ValueError(f"cannot read {path}: {error}") from error
    if problems:  # tifffile read what it could and logged the rest: pages were lost
        raise ValueError(f"cannot read {path} whole: {problems[0]} (only {len(pages)} page(s) readable; truncated?)")
    if mask and file_format == "JPEG":
        raise ValueError(
            f"mask {path} holds JPEG data: its lossy compression invents label values at every edge; "
            f"save the mask as PNG or TIFF"
        )
    if not pages:
        raise ValueError(f"cannot read {path}: the file holds no image")
    return pages


@contextlib.contextmanager
def _tifffile_problems():
    """Collect the messages tifffile logs at WARNING or above while reading (it logs a truncated stack's lost pages
    and carries on) -> a list, filled when the block ends."""
    problems: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: problems.append(record.getMessage().replace("\n", " "))
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield problems
    finally:
        logger.removeHandler(handler)


def _tiff_page(page) -> np.ndarray:
    """A TIFF page with its samples (channel) axis, if any, moved last -> (H, W) or (H, W, C)."""
    array = page.asarray()
    if "S" in page.axes:
        array = np.moveaxis(array, page.axes.index("S"), -1)
    return array


def _pillow_array(image: Image.Image, mask: bool) -> np.ndarray:
    """Pillow image -> (H, W) or (H, W, C) in its own dtype.

    A mask keeps its palette indices (they are the labels); an image in a palette or other colour space (CMYK,
    YCbCr, ...) is converted to RGB, its colours being what the network should see.
    """
    if image.mode == "1":  # one bit per pixel: 0/1 labels for a mask, black/white (0/255) for an image
        return np.asarray(image, dtype=np.uint8) if mask else np.asarray(image.convert("L"))
    if not mask and image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not image.mode.startswith("I;16"):
        image = image.convert("RGB")
    return np.asarray(image)


def _channels_first(image: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W), alpha dropped; anything else raises naming ``path``."""
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3 and image.shape[-1] in (1, 2, 3, 4):
        channels = {1: 1, 2: 1, 3: 3, 4: 3}[image.shape[-1]]  # grey + alpha -> grey, RGBA -> RGB
        return np.ascontiguousarray(np.moveaxis(image[..., :channels], -1, 0))
    raise ValueError(f"{path}: expected a grey (H, W) or colour (H, W, C) image, got an array of shape {image.shape}")


def _mask_page(mask: np.ndarray, path: Path) -> np.ndarray:
    """A mask page must be one integer channel (H, W)."""
    if mask.ndim != 2:
        raise ValueError(f"mask {path} must be a single-channel (H, W) image, got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"mask {path} must hold integer labels, got {mask.dtype}")
    return mask
