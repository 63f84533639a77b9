"""End-to-end runs of the trainer on tiny configurations (seconds each): artefacts, exact resume, the guards."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unet_from_scratch.reference import metrics as ref
from unet_from_scratch.train import main
from unet_from_scratch.training import NonFiniteLoss, Trainer, load_checkpoint, load_config
from unet_from_scratch.training.build import build_loss
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.progress import TIMING_FIELDS, Progress, read_history

TINY = {
    "data.images": 10, "data.size": 32, "data.samples_per_epoch": 8, "model.depth": 2, "model.base_channels": 4,
    "run.epochs": 3, "run.batch_size": 4, "run.progress": "lines",
}  # fmt: skip
QUIET = Progress(enabled=False)


def tiny(out: Path, **overrides) -> TrainConfig:
    return validate(apply_overrides(TrainConfig(), {**TINY, "run.out": str(out), **overrides}))


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert torch.equal(a[name], b[name]), name


def test_a_tiny_run_writes_every_artefact(tmp_path):
    metrics = Trainer(tiny(tmp_path / "run"), progress=QUIET).fit()
    run = tmp_path / "run"
    for name in ("config.toml", "history.csv", "metrics.json", "last.pt", "best.pt", "curves.png", "predictions.png",
                 "weight_map.png", "predictions.npz"):  # fmt: skip
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [1, 2, 3]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best"] == pytest.approx(metrics["best"]) and saved["best_epoch"] == metrics["best_epoch"]
    last_row = read_history(run / "history.csv")[-1]
    assert {k: v for k, v in saved["final"].items() if k in last_row} == pytest.approx(
        {k: last_row[k] for k in saved["final"] if k in last_row}
    )
    assert load_config(str(run / "config.toml")) == tiny(run)
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["trainer"]["epoch"] == 3 and checkpoint["statistics"]["class_names"] == ["background", "cell"]


def test_metrics_json_equals_the_numpy_metrics_recomputed_on_the_saved_predictions(tmp_path):
    Trainer(tiny(tmp_path / "run", **{"run.epochs": 4}), progress=QUIET).fit()
    saved = np.load(tmp_path / "run" / "predictions.npz")
    n = len([k for k in saved if k.startswith("target_")])
    target, prediction, instances = (np.stack([saved[f"{name}_{i}"] for i in range(n)])
                                     for name in ("target", "prediction", "instances"))  # fmt: skip
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best"]
    for name, score in (("val_iou", ref.iou), ("val_dice", ref.dice), ("val_precision", ref.precision),
                        ("val_recall", ref.recall), ("val_f1", ref.f1)):  # fmt: skip
        assert best[name] == pytest.approx(score(target, prediction, num_classes=2), rel=1e-12), name
    objects = ref.instance_f1(instances, prediction > 0)
    assert best["val_instance_f1"] == pytest.approx(objects.f1, rel=1e-12)
    assert best["val_instance_precision"] == pytest.approx(objects.precision, rel=1e-12)
    # The saved truth is the training target: the instances with the paper's gap carved between touching ones.
    np.testing.assert_array_equal(instances > 0, target == 1)


def test_a_run_stopped_after_an_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path):
    # Dropout and elastic deformation in the run: every generator in play must be restored exactly.
    options = {"model.dropout": 0.3, "data.augment": "flip,rot90,elastic"}
    whole = Trainer(tiny(tmp_path / "whole", **options), progress=QUIET)
    whole.fit()
    Trainer(tiny(tmp_path / "parts", **options), progress=QUIET).fit(stop_after=1)
    assert len(read_history(tmp_path / "parts" / "history.csv")) == 1
    Trainer(resume=tmp_path / "parts", progress=QUIET).fit()
    assert _without_timing(read_history(tmp_path / "parts" / "history.csv")) == _without_timing(
        read_history(tmp_path / "whole" / "history.csv")
    )
    _assert_same_weights(load_checkpoint(tmp_path / "parts" / "last.pt")["model"],
                         load_checkpoint(tmp_path / "whole" / "last.pt")["model"])  # fmt: skip


def test_the_same_seed_twice_gives_the_same_run_and_another_seed_another(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        Trainer(tiny(tmp_path / name, **{"run.epochs": 2, "run.seed": seed}), progress=QUIET).fit()
        runs[name] = _without_timing(read_history(tmp_path / name / "history.csv"))
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_non_finite_loss_stops_the_run_naming_epoch_and_step(tmp_path, backend):
    trainer = Trainer(tiny(tmp_path / "run", **{"run.backend": backend}), progress=QUIET)
    model, training_calls = trainer.engine.model, []
    forward = model.forward

    def poisoned(x, *args, **kwargs):  # NaN logits at the 6th training forward pass: epoch 3, step 2
        logits = forward(x, *args, **kwargs)
        training = model.training if backend == "torch" else kwargs.get("training", args[0] if args else False)
        training_calls.append(training)
        return logits * float("nan") if training and sum(training_calls) == 6 else logits

    model.forward = poisoned
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch 3, step 2 \(loss is nan") as error:
        trainer.fit()
    assert str(tmp_path / "run" / "last.pt") in str(error.value)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["trainer"]["epoch"] == 2  # the last good state


def test_init_from_starts_from_another_runs_weights(tmp_path):
    Trainer(tiny(tmp_path / "first"), progress=QUIET).fit()
    first = load_checkpoint(tmp_path / "first" / "best.pt")["model"]
    second = Trainer(tiny(tmp_path / "second", **{"run.init_from": str(tmp_path / "first" / "best.pt"),
                                                  "data.size": 48}), progress=QUIET)  # fmt: skip
    state = second.model.state_dict()
    for name, value in first.items():
        if isinstance(value, torch.Tensor) and not name.startswith("input_"):
            assert torch.equal(state[name], value), name
    # The new data's normalisation, not the old run's.
    assert torch.equal(second.model.input_mean, torch.tensor(second.train_set.statistics.mean).float())


def test_the_lr_finder_suggests_a_rate_and_auto_trains_with_it(tmp_path):
    trainer = Trainer(tiny(tmp_path / "run", **{"optimizer.lr": "auto", "run.epochs": 1}), progress=QUIET)
    trainer.fit()
    rate = load_config(str(tmp_path / "run" / "config.toml")).optimizer.lr
    assert isinstance(rate, float) and 1e-6 <= rate <= 1.0 and trainer.peak_lr == rate
    assert (tmp_path / "run" / "lr_finder.png").stat().st_size > 0


@pytest.mark.parametrize("preset, overrides", [
    ("quick", {}),
    ("paper", {"data.size": 64, "data.crop": 20, "model.base_channels": 2}),
    ("advanced", {"data.size": 32, "model.base_channels": 4, "model.num_heads": 2, "run.batch_size": 2}),
])  # fmt: skip
def test_each_preset_trains_one_step(tmp_path, preset, overrides):
    base = {"data.images": 6, "run.epochs": 1, "run.progress": "lines", "run.out": str(tmp_path / "run")}
    if preset == "quick":
        base |= {"data.size": 32, "model.base_channels": 4}
    config = validate(apply_overrides(load_config(preset), {**base, **overrides}))
    config.data.samples_per_epoch = config.run.batch_size  # one step
    trainer = Trainer(config, progress=QUIET)
    assert trainer.steps_per_epoch == 1
    metrics = trainer.fit()
    assert metrics["best_epoch"] == 1 and np.isfinite(metrics["best"]["val_loss"])
    assert type(trainer.model).__name__ == {"advanced": "AttentionUNet"}.get(preset, "UNet")


def test_class_weights_count_once(tmp_path):
    trainer = Trainer(tiny(tmp_path / "run", **{"data.class_weights": "balanced", "data.size": 48,
                                                "loss.name": "weighted-ce"}), progress=QUIET)  # fmt: skip
    weights = trainer.train_set.class_weights
    assert not np.allclose(weights, 1.0)
    mapped, uses_map = build_loss(trainer.config, weights)
    assert uses_map and mapped.class_weights is None  # the map holds them: w = w_c(t) + border term
    config = tiny(tmp_path / "ce", **{"loss.name": "ce"})
    plain, uses_map = build_loss(config, weights)
    assert not uses_map and torch.allclose(plain.class_weights, torch.tensor(weights, dtype=torch.float32))
    # The weighted CE is -sum w log p_t / sum w with the map itself as w: the class weight enters exactly once.
    image, target, pixel_weights = (torch.from_numpy(np.stack(t)) for t in zip(trainer.train_set[0], trainer.train_set[1]))
    logits = torch.randn(2, 2, *target.shape[1:], dtype=torch.float64)
    log_p_t = torch.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    expected = -(pixel_weights * log_p_t).sum() / pixel_weights.sum()
    torch.testing.assert_close(mapped(logits, target, pixel_weights.double()), expected)


def test_an_existing_run_is_never_overwritten(tmp_path):
    Trainer(tiny(tmp_path / "run", **{"run.epochs": 1}), progress=QUIET).fit()
    with pytest.raises(ValueError, match="already holds a run: continue it with --resume"):
        Trainer(tiny(tmp_path / "run", **{"run.epochs": 1}), progress=QUIET)


# ------------------------------------------------------------------------------------------------------------------
# The command line: one-line errors with exit status 2, signals, the Keras lines


def _tiny_argv(out: Path, **extra) -> list[str]:
    flags = {"images": 10, "size": 32, "samples-per-epoch": 8, "depth": 2, "base-channels": 4, "batch-size": 4,
             "epochs": 2, "out": out, **extra}  # fmt: skip
    return [item for flag, value in flags.items() for item in (f"--{flag}", str(value))]


def test_the_cli_prints_keras_lines_and_the_start_summary(tmp_path, capsys):
    assert main(_tiny_argv(tmp_path / "run")) == 0
    out = capsys.readouterr().out
    assert "Class distribution: {0: " in out and "Class weights: {0: " in out and "7,482 parameters" in out
    lines = [line for line in out.splitlines() if line.startswith("2/2 - ")]
    assert len(lines) == 2
    for field in ("loss: ", "iou: ", "val_loss: ", "val_iou: ", "val_f1: ", "lr: ", "ms/step"):
        assert field in lines[0]
    assert "Best epoch" in out and "On a CUDA GPU" in out


def _corrupt_folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "masks" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def _status(argv: list[str]) -> int:
    """main's exit status, whether it returns it or argparse raises SystemExit with it."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize("argv, message", [
    (["--depth", "x"], "--depth: model.depth must be an integer, got 'x'"),
    (["--model", "segformer"], "--model: model.name must be one of unet, attention-unet"),
    (["--lr", "-1"], "optimizer.lr must be > 0 or 'auto'"),
    (["--config", "nowhere.toml"], "is neither a preset"),
    (["--data", "/no/such/folder"], "neither 'synthetic', 'synthetic-sparse' nor an existing folder"),
    (["--resume", "/no/such/run"], "last.pt does not exist"),
    (["--resume", "/no/such/run", "--depth", "3"], "--depth cannot change"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    (["--crop", "999"], "--crop 999 is larger than the smallest training image"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])  # fmt: skip
def test_a_bad_argument_is_one_line_and_exit_status_2(tmp_path, capsys, argv, message):
    tiny_run = [] if "--resume" in argv else ["--out", str(tmp_path / "run"), "--images", "4", "--size", "32"]
    assert _status(argv + tiny_run) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_a_corrupt_image_in_a_folder_is_named(tmp_path, capsys):
    folder = _corrupt_folder(tmp_path / "data")
    assert main(["--data", str(folder), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "a.png" in err and "\n" not in err


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_last_pt_and_the_resumed_run_equals_the_uninterrupted_one(tmp_path, signum, status):
    run = tmp_path / "run"
    argv = _tiny_argv(run, epochs=400, schedule="constant")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "unet_from_scratch.train", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run / "history.csv").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside a later epoch
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    assert "Resume with: python -m unet_from_scratch.train --resume" in err
    state = load_checkpoint(run / "last.pt")["trainer"]
    stopped = state["epoch"] + (1 if state["epoch_step"] else 0)  # finish the interrupted epoch
    assert main(["--resume", str(run), "--epochs", str(stopped)]) == 0
    whole = tmp_path / "whole"
    assert main(_tiny_argv(whole, epochs=stopped, schedule="constant")) == 0
    assert _without_timing(read_history(run / "history.csv")) == _without_timing(read_history(whole / "history.csv"))
    _assert_same_weights(load_checkpoint(run / "last.pt")["model"], load_checkpoint(whole / "last.pt")["model"])


def test_a_folder_of_a_few_large_images_of_different_sizes_trains_on_random_crops(tmp_path):
    import tifffile
    from PIL import Image

    from unet_from_scratch.data import SyntheticCells

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, size in enumerate([(96, 80), (64, 64), (72, 88), (80, 80)]):
        image, instances = SyntheticCells(1, size=size, seed=i)[0]
        if i % 2:  # 16-bit TIFF images, 8-bit PNG masks of instance ids
            tifffile.imwrite(root / "images" / f"cell{i}.tif", (image[0] * 65535).astype("uint16"))
        else:
            Image.fromarray((image[0] * 255).astype("uint8")).save(root / "images" / f"cell{i}.png")
        Image.fromarray(instances.astype("uint8")).save(root / "masks" / f"cell{i}.png")
    config = tiny(tmp_path / "run", **{"data.source": str(root), "data.mask_kind": "instances", "data.crop": 32,
                                       "data.val_fraction": 0.25, "run.epochs": 2})  # fmt: skip
    trainer = Trainer(config, progress=QUIET)
    assert trainer.steps_per_epoch == 2 and len(trainer.train_set) == 3  # 8 crops a epoch from 3 images
    image, target, weights = trainer.train_set[0]
    assert image.shape == (1, 32, 32) and target.shape == weights.shape == (32, 32)
    metrics = trainer.fit()
    saved = np.load(tmp_path / "run" / "predictions.npz")
    val_size = trainer.source[int(trainer.val_set.indices[0])][1].shape
    assert saved["prediction_0"].shape == val_size  # validation predicts the whole image, whatever its size
    assert 0.0 <= metrics["best"]["val_iou"] <= 1.0
