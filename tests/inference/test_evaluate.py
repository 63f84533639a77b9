"""``python -m unet_from_scratch.evaluate``: its numbers equal the metrics recomputed on the predictions it writes
(with scikit-learn and with the NumPy reference), the predictions are the model's, the split is the checkpoint's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from sklearn import metrics as sk

from unet_from_scratch import evaluate as cli
from unet_from_scratch.data import SyntheticCells, train_val_split
from unet_from_scratch.data.targets import prepare_labels
from unet_from_scratch.inference import predict_logits
from unet_from_scratch.predict import main as predict_main
from unet_from_scratch.reference.metrics import instance_f1
from unet_from_scratch.training import load_checkpoint, load_model

from tests.inference.conftest import TINY, train_tiny


def _saved(out):
    saved = np.load(out / "evaluation_predictions.npz")
    n = sum(1 for key in saved.files if key.startswith("prediction_"))
    return [{name: saved[f"{name}_{i}"] for name in ("prediction", "target", "objects", "probability")
             if f"{name}_{i}" in saved.files} for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--tile", "16"]) == 0
    return out, json.loads((out / cli.EVALUATION_FILE).read_text()), _saved(out)


def test_the_pixel_scores_equal_scikit_learn_on_the_written_predictions(evaluated):
    _, result, items = evaluated
    y = np.concatenate([i["target"].ravel() for i in items])
    p = np.concatenate([i["prediction"].ravel() for i in items]).astype(np.int64)
    names = result["class_names"]
    labels = list(range(len(names)))
    # Every class is in the truth, so a 0/0 precision (a class never predicted) is 0 in both: zero_division=0.
    assert set(np.unique(y)) == set(labels)
    expected = {
        "iou": sk.jaccard_score(y, p, labels=labels, average=None, zero_division=0),
        "precision": sk.precision_score(y, p, labels=labels, average=None, zero_division=0),
        "recall": sk.recall_score(y, p, labels=labels, average=None, zero_division=0),
        "f1": sk.f1_score(y, p, labels=labels, average=None, zero_division=0),
    }
    expected["dice"] = expected["f1"]
    expected["accuracy"] = expected["recall"]  # the pixel accuracy on a class's own pixels
    for c, name in enumerate(names):
        for score, values in expected.items():
            assert result["per_class"][name][score] == pytest.approx(values[c], abs=1e-12), (name, score)
    assert result["mean"]["iou"] == pytest.approx(expected["iou"].mean(), abs=1e-12)
    assert result["mean"]["accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
    assert result["foreground"]["iou"] == pytest.approx(expected["iou"][1], abs=1e-12)  # two classes
    np.testing.assert_array_equal(result["confusion_matrix"], sk.confusion_matrix(y, p, labels=labels))


def test_the_instance_scores_equal_the_reference_on_the_written_predictions(evaluated):
    _, result, items = evaluated
    counts = np.zeros(3)
    f1s = []
    for t in np.arange(0.5, 0.96, 0.05):
        c = np.zeros(3)
        for i in items:
            s = instance_f1(i["objects"], i["prediction"] > 0, float(t))
            c += (s.matched, s.n_true, s.n_pred)
        f1s.append(2 * c[0] / (c[1] + c[2]) if c[1] + c[2] else 1.0)
        if abs(t - 0.5) < 1e-9:
            counts = c
    r = result["instances"]
    assert (r["matched"], r["n_true"], r["n_pred"]) == tuple(counts)
    assert r["f1"] == pytest.approx(f1s[0]) and r["mean_f1_50_95"] == pytest.approx(np.mean(f1s))
    assert r["n_true"] > 0


def test_the_threshold_sweep_equals_scikit_learn_on_the_written_probabilities(evaluated):
    out, result, items = evaluated
    y = np.concatenate([i["target"].ravel() for i in items])
    probability = np.concatenate([i["probability"].ravel() for i in items])
    sweep = result["threshold_sweep"]
    for row in sweep["thresholds"]:
        p = (probability > row["threshold"]).astype(np.int64)
        assert row["precision"] == pytest.approx(sk.precision_score(y, p, zero_division=0), abs=1e-12)
        assert row["recall"] == pytest.approx(sk.recall_score(y, p, zero_division=0), abs=1e-12)
        assert row["f1"] == pytest.approx(sk.f1_score(y, p, zero_division=0), abs=1e-12)
    assert sweep["best_f1"] == max(r["f1"] for r in sweep["thresholds"])
    assert (out / "threshold_sweep.png").stat().st_size > 0
    # At 0.5 the sweep's mask is the argmax the table was computed from.
    half = next(r for r in sweep["thresholds"] if r["threshold"] == 0.5)
    assert half["f1"] == pytest.approx(result["per_class"][result["class_names"][1]]["f1"], abs=1e-12)


def test_the_predictions_are_the_models_on_the_checkpoints_validation_split(checkpoint, evaluated):
    _, result, items = evaluated
    config = load_checkpoint(checkpoint)["config"]
    source = SyntheticCells(TINY["data.images"], size=TINY["data.size"], seed=config["run"]["seed"])
    _, val = train_val_split(len(source), config["data"]["val_fraction"], config["run"]["seed"])
    assert len(items) == len(val) and "validation split" in result["data"]
    model = load_model(checkpoint)
    for item, index in zip(items, val):
        image, mask = source[int(index)]
        labels = prepare_labels(mask, "instances")  # touching cells separated, as the trainer's validation
        np.testing.assert_array_equal(item["objects"], labels)
        np.testing.assert_array_equal(item["target"], labels > 0)
        logits = predict_logits(model, torch.from_numpy(image)[None])
        np.testing.assert_array_equal(item["prediction"], logits.argmax(1)[0].numpy())
    speed = result["speed"]
    assert speed["device"] == "cpu" and speed["tiled"]["tile"] == 16
    assert speed["whole_image"]["ms_per_image"] > 0 and speed["tiled"]["images_per_s"] > 0


def test_the_stored_threshold_reaches_predict(checkpoint, tmp_path, rng):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(checkpoint.read_bytes())
    assert cli.main(["--checkpoint", str(run / "best.pt")]) == 0  # --out defaults to the checkpoint's folder
    best = json.loads((run / cli.EVALUATION_FILE).read_text())["threshold_sweep"]["best_threshold"]
    assert cli.stored_threshold(run / "best.pt") == best
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "x.png")
    argv = ["--checkpoint", str(run / "best.pt"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]
    assert predict_main(argv) == 0
    probability = tifffile.imread(tmp_path / "o" / "x_probabilities.tif")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "x_mask.png")), np.where(probability > best, 255, 0))


def test_more_classes_give_a_confusion_matrix_on_a_folder(tmp_path, rng, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(6):
        image = rng.random((40, 40), dtype=np.float32)
        mask = np.zeros((40, 40), np.uint8)
        mask[image > 0.6], mask[image > 0.85] = 1, 2
        tifffile.imwrite(root / "images" / f"{i}.tif", image)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    names = "background,low,high"
    ckpt = train_tiny(tmp_path / "run", **{"data.source": str(root), "data.mask_kind": "classes",
                                           "data.class_names": names, "run.epochs": 1})  # fmt: skip
    assert cli.main(["--checkpoint", str(ckpt), "--data", str(root), "--out", str(tmp_path / "e")]) == 0
    result = json.loads((tmp_path / "e" / cli.EVALUATION_FILE).read_text())
    assert list(result["per_class"]) == names.split(",") and "threshold_sweep" not in result
    val = train_val_split(6, 0.2, 0)[1]  # the run's own folder: its validation split
    assert np.asarray(result["confusion_matrix"]).sum() == len(val) * 40 * 40
    assert "validation split" in result["data"]
    assert (tmp_path / "e" / "confusion_matrix.png").stat().st_size > 0
    assert "confusion_matrix.png" in capsys.readouterr().out


def test_fresh_synthetic_images_with_a_seed(checkpoint, tmp_path):
    assert cli.main(["--checkpoint", str(checkpoint), "--data", "synthetic", "--seed", "7", "--images", "3",
                     "--out", str(tmp_path)]) == 0  # fmt: skip
    result = json.loads((tmp_path / cli.EVALUATION_FILE).read_text())
    assert "3 fresh images (seed 7)" in result["data"] and len(_saved(tmp_path)) == 3


@pytest.mark.parametrize("argv, message", [(["--data", "nowhere"], "neither 'synthetic'"),
                                           (["--seed", "1", "--data", "."], "--seed draws fresh synthetic"),
                                           (["--tile", "0"], "--tile must be a positive integer")])  # fmt: skip
def test_bad_flags_are_one_line(checkpoint, capsys, argv, message):
    assert cli.main(["--checkpoint", str(checkpoint), *argv]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
