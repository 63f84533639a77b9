"""``python -m unet_from_scratch.predict``: every output of a folder of PNG, TIFF and JPEG files, checked against
an independent read of the files and the model's own logits; bad inputs stop it before anything is written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import ndimage

from unet_from_scratch import predict as cli
from unet_from_scratch.data import folder
from unet_from_scratch.evaluate import EVALUATION_FILE, sha256
from unet_from_scratch.inference import predict
from unet_from_scratch.training import load_model


def _images(root, rng):
    """A folder of five files of other sizes and formats -> {stem: [float32 (H, W) pages as the model sees them]}."""
    root.mkdir()
    grey8 = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    Image.fromarray(grey8).save(root / "a_png.png")
    grey16 = rng.integers(0, 65536, (41, 29), dtype=np.uint16)
    tifffile.imwrite(root / "b_tif16.tif", grey16)
    real = rng.random((33, 47), dtype=np.float32)
    tifffile.imwrite(root / "c_float.tiff", real)
    Image.fromarray(grey8[:30, :40]).save(root / "d_jpeg.jpg", quality=95)
    with Image.open(root / "d_jpeg.jpg") as jpeg:
        decoded = np.asarray(jpeg)  # what the lossy file holds
    stack = rng.integers(0, 256, (2, 25, 31), dtype=np.uint8)
    tifffile.imwrite(root / "e_stack.tif", stack, photometric="minisblack")  # two pages: two images
    return {
        "a_png": [grey8 / 255], "b_tif16": [grey16 / 65535], "c_float": [real], "d_jpeg": [decoded / 255],
        "e_stack": [stack[0] / 255, stack[1] / 255],
    }  # fmt: skip


def test_a_folder_of_png_tiff_and_jpeg_files_gives_every_output(checkpoint, tmp_path, rng, capsys):
    expected = _images(tmp_path / "in", rng)
    assert cli.main(["--checkpoint", str(checkpoint), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    assert "ms/image" in capsys.readouterr().out
    model = load_model(checkpoint)
    for stem, pages in expected.items():
        for k, page in enumerate(pages):
            name = stem if len(pages) == 1 else f"{stem}_page{k}"
            probability = tifffile.imread(tmp_path / "out" / f"{name}_probabilities.tif")
            assert probability.dtype == np.float32 and probability.shape == page.shape
            logits = predict(model, torch.from_numpy(page.astype(np.float32))[None, None])
            np.testing.assert_allclose(probability, torch.softmax(logits, 1)[0, 1].numpy(), rtol=1e-5, atol=1e-6)
            mask = np.asarray(Image.open(tmp_path / "out" / f"{name}_mask.png"))
            np.testing.assert_array_equal(mask, np.where(probability > 0.5, 255, 0))  # no evaluation yet: 0.5
            overlay = np.asarray(Image.open(tmp_path / "out" / f"{name}_overlay.png"))
            assert overlay.shape == page.shape + (3,) and overlay.dtype == np.uint8
            instances = tifffile.imread(tmp_path / "out" / f"{name}_instances.tif")
            components, n = ndimage.label(mask > 0)
            assert instances.max() == n and np.array_equal(instances > 0, mask > 0)
            for i in range(1, n + 1):  # every id is one whole component
                assert len(np.unique(components[instances == i])) == 1


def test_min_size_drops_the_small_components(checkpoint, tmp_path, rng):
    image = np.zeros((40, 40), np.uint8)
    image[5:20, 5:20] = 255
    image[30:33, 30:33] = 255  # a 3x3 speck, if the model segments it
    Image.fromarray(image).save(tmp_path / "x.png")
    argv = ["--checkpoint", str(checkpoint), str(tmp_path / "x.png"), "--threshold", "0.5"]
    assert cli.main(argv + ["--out", str(tmp_path / "all")]) == 0
    assert cli.main(argv + ["--out", str(tmp_path / "big"), "--min-size", "12"]) == 0
    every = tifffile.imread(tmp_path / "all" / "x_instances.tif")
    big = tifffile.imread(tmp_path / "big" / "x_instances.tif")
    areas = np.bincount(every.ravel())[1:]
    assert big.max() == np.count_nonzero(areas >= 12)
    assert np.all(np.bincount(big.ravel())[1:] >= 12)
    assert np.array_equal(big > 0, np.isin(every, 1 + np.flatnonzero(areas >= 12)))


def test_tiles_and_tta_reach_the_inference(checkpoint, tmp_path, rng):
    image = rng.integers(0, 256, (45, 61), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "t.png")
    argv = ["--checkpoint", str(checkpoint), str(tmp_path / "t.png"), "--out", str(tmp_path / "out")]
    assert cli.main(argv + ["--tile", "16", "--batch-size", "3", "--tta"]) == 0
    logits = predict(load_model(checkpoint), torch.from_numpy(image / np.float32(255))[None, None], tile=16, tta=True)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "t_probabilities.tif"),
                               torch.softmax(logits, 1)[0, 1].numpy(), rtol=1e-5, atol=1e-6)  # fmt: skip


def test_the_threshold_evaluate_stored_is_the_default(checkpoint, tmp_path, rng):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "best.pt")
    image = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "s.png")
    (run / EVALUATION_FILE).write_text(json.dumps({"checkpoint": {"sha256": sha256(run / "best.pt")},
                                                   "threshold_sweep": {"best_threshold": 0.3}}))  # fmt: skip
    assert cli.main(["--checkpoint", str(run / "best.pt"), str(tmp_path / "s.png"), "--out", str(tmp_path / "o")]) == 0
    probability = tifffile.imread(tmp_path / "o" / "s_probabilities.tif")
    mask = np.asarray(Image.open(tmp_path / "o" / "s_mask.png"))
    assert np.array_equal(mask, np.where(probability > 0.3, 255, 0))
    assert (probability > 0.3).sum() != (probability > 0.5).sum()  # the two thresholds differ on this image
    # A stored threshold for another file (a retrained checkpoint at the same path) is not used.
    (run / EVALUATION_FILE).write_text(json.dumps({"checkpoint": {"sha256": "0" * 64},
                                                   "threshold_sweep": {"best_threshold": 0.3}}))  # fmt: skip
    assert cli.main(["--checkpoint", str(run / "best.pt"), str(tmp_path / "s.png"), "--out", str(tmp_path / "p")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p" / "s_mask.png")), np.where(probability > 0.5, 255, 0))


@pytest.mark.parametrize("problem", ["unreadable", "colour", "missing", "same stem", "not an image", "bad tile"])
def test_a_bad_input_is_named_in_one_line_and_nothing_is_written(checkpoint, tmp_path, rng, capsys, problem):
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(good)
    bad, options = tmp_path / "bad.png", []
    if problem == "unreadable":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
    elif problem == "colour":  # 3 channels for a 1-channel model
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(bad)
    elif problem == "same stem":
        (tmp_path / "sub").mkdir()
        bad = tmp_path / "sub" / "good.tif"
        tifffile.imwrite(bad, np.zeros((40, 40), np.uint8))
    elif problem == "not an image":
        bad = tmp_path / "notes.txt"
        bad.write_text("hello")
    elif problem == "bad tile":
        bad, options = good, ["--tile", "0"]
    out = tmp_path / "out"
    status = cli.main(["--checkpoint", str(checkpoint), str(good), str(bad), "--out", str(out), *options])
    error = capsys.readouterr().err
    assert status == 2 and error.startswith("error: ") and error.count("\n") == 1
    assert (bad.name in error) or problem == "bad tile"
    assert not out.exists()


def test_help_answers_without_torch_and_without_a_traceback():
    code = "import sys; from unet_from_scratch import predict as p; p.build_parser(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    done = subprocess.run([sys.executable, "-m", "unet_from_scratch.predict", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--checkpoint" in done.stdout and "--min-size" in done.stdout
    done = subprocess.run([sys.executable, "-m", "unet_from_scratch.predict", "x.png"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    assert cli.main(["--checkpoint", str(tmp_path / "none.pt"), str(tmp_path / "x.png"), "--out", str(tmp_path)]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err


def test_the_suffixes_are_those_of_the_data_folder():
    assert cli.IMAGE_SUFFIXES == folder.IMAGE_SUFFIXES
