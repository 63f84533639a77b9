"""``--backend numpy``: the trainer with the NumPy engine, against the torch engine and the rest of the package.

- The NumPy engine's steps are the torch engine's: same initial weights, the same batches, and after five SGD
  steps the same losses and weights within float32 rounding (each layer's parity is in tests/reference).
- A run writes what a torch run writes; its checkpoint is a torch checkpoint: ``load_model`` gives the torch
  ``UNet`` whose logits equal the NumPy model's, and ``evaluate`` and ``predict`` take it as it is. Weights move
  back too: a torch run's checkpoint starts a NumPy run (``--init-from``).
- A NumPy run stopped after an epoch and resumed equals the run never stopped, dropout included.
- What the engine does not do is refused in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import assert_close
from tests.training.test_trainer import QUIET, _assert_same_weights, _without_timing, tiny
from unet_from_scratch import evaluate, predict
from unet_from_scratch.reference.unet import NumpyUNet
from unet_from_scratch.train import main
from unet_from_scratch.training import ConfigError, Trainer, load_checkpoint, load_model
from unet_from_scratch.training.progress import read_history


def _pair(tmp_path, **overrides):
    """A torch trainer and a NumPy trainer of one config, with their first batch."""
    torch_trainer = Trainer(tiny(tmp_path / "torch", **overrides), progress=QUIET)
    numpy_trainer = Trainer(tiny(tmp_path / "numpy", **{**overrides, "run.backend": "numpy"}), progress=QUIET)
    return torch_trainer, numpy_trainer


def test_the_numpy_engine_starts_from_the_torch_engines_weights_and_batches(tmp_path):
    torch_trainer, numpy_trainer = _pair(tmp_path)
    torch_weights, numpy_weights = torch_trainer.engine.weights(), numpy_trainer.engine.weights()
    assert torch_weights.keys() == numpy_weights.keys()  # the same names
    for name, value in torch_weights.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, numpy_weights[name]), name  # normalisation statistics included
    for a, b in zip(torch_trainer.loader, numpy_trainer.loader):  # a DataLoader and data.batches: one epoch
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.numpy(), y)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_five_numpy_steps_equal_five_torch_steps(tmp_path, batch_norm):
    # SGD with momentum: its update is linear in the gradient, so float32 differences stay float32-sized (Adam's
    # first steps are lr·sign(g) and would amplify the rounding of gradients near zero).
    overrides = {"optimizer.name": "momentum", "optimizer.momentum": 0.9, "optimizer.lr": 0.05,
                 "model.batch_norm": batch_norm, "run.clip": 0.5}  # fmt: skip
    torch_trainer, numpy_trainer = _pair(tmp_path, **overrides)
    batches = zip(torch_trainer.loader, numpy_trainer.loader)
    for step, (torch_batch, numpy_batch) in zip(range(5), batches):
        rate = torch_trainer._rate(step)
        torch_loss, torch_counts = torch_trainer.engine.train_step(torch_batch, rate)
        numpy_loss, numpy_counts = numpy_trainer.engine.train_step(numpy_batch, rate)
        assert_close(np.array(numpy_loss), np.array(torch_loss), rtol=1e-4, atol=1e-6, name=f"loss of step {step}")
        assert np.abs(numpy_counts - torch_counts).sum() <= 4  # a tie of two logits may round either way
    theirs = torch_trainer.engine.weights()
    for name, value in numpy_trainer.engine.weights().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert_close(value.numpy(), theirs[name].numpy(), rtol=1e-3, atol=1e-5, name=f"{name} after 5 steps")


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    """A finished 3-epoch NumPy run (dropout on), its metrics."""
    out = tmp_path_factory.mktemp("numpy") / "run"
    metrics = Trainer(tiny(out, **{"run.backend": "numpy", "model.dropout": 0.2}), progress=QUIET).fit()
    return out, metrics


def test_a_numpy_run_writes_what_a_torch_run_writes(numpy_run):
    out, metrics = numpy_run
    for name in ("config.toml", "history.csv", "metrics.json", "last.pt", "best.pt", "curves.png", "predictions.png",
                 "weight_map.png", "predictions.npz"):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1, 2, 3]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["backend"] == "numpy" and saved["parameters"] == metrics["parameters"]
    config = load_checkpoint(out / "best.pt")["config"]
    assert config["run"]["backend"] == "numpy"


def test_the_numpy_checkpoint_is_the_torch_models_and_evaluate_and_predict_take_it(numpy_run, tmp_path):
    out, _ = numpy_run
    checkpoint = load_checkpoint(out / "best.pt")
    model = load_model(out / "best.pt")  # torch's UNet, rebuilt from the checkpoint alone
    numpy_model = NumpyUNet(checkpoint["model_config"])
    numpy_model.load_state_dict({k: v.numpy() if isinstance(v, torch.Tensor) else v
                                 for k, v in checkpoint["model"].items()})  # fmt: skip
    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert_close(numpy_model.forward(x), expected, rtol=1e-4, atol=1e-5, name="logits of the two models")
    assert model.class_names == numpy_model.class_names == ["background", "cell"]  # the synthetic source's
    assert evaluate.main(["--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "eval"), "--tile", "16"]) == 0
    # evaluate (torch) predicts the validation split as the NumPy engine's own validation did at the end of the run
    ours, theirs = np.load(out / "predictions.npz"), np.load(tmp_path / "eval" / "evaluation_predictions.npz")
    for j in range(2):
        agree = np.mean(ours[f"prediction_{j}"] == theirs[f"prediction_{j}"])
        assert agree >= 0.999, f"validation image {j}: {agree:.4%} of pixels agree"  # ties may round either way
    image = (np.random.default_rng(1).uniform(0, 255, (40, 40))).astype(np.uint8)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "cell.png")
    assert predict.main(["--checkpoint", str(out / "best.pt"), str(tmp_path / "cell.png"),
                         "--out", str(tmp_path / "pred")]) == 0  # fmt: skip
    assert any((tmp_path / "pred").iterdir())


def test_a_numpy_run_resumed_after_an_epoch_equals_the_run_never_stopped(numpy_run, tmp_path):
    out, _ = numpy_run
    config = tiny(tmp_path / "resumed", **{"run.backend": "numpy", "model.dropout": 0.2})
    Trainer(config, progress=QUIET).fit(stop_after=1)
    Trainer(resume=tmp_path / "resumed", progress=QUIET).fit()
    assert _without_timing(read_history(tmp_path / "resumed" / "history.csv")) == _without_timing(
        read_history(out / "history.csv")
    )
    _assert_same_weights(load_checkpoint(tmp_path / "resumed" / "last.pt")["model"],
                         load_checkpoint(out / "last.pt")["model"])  # fmt: skip


def test_a_torch_checkpoint_starts_a_numpy_run(tmp_path):
    Trainer(tiny(tmp_path / "torch"), progress=QUIET).fit()
    torch_best = load_checkpoint(tmp_path / "torch" / "best.pt")["model"]
    numpy_trainer = Trainer(tiny(tmp_path / "numpy", **{"run.backend": "numpy", "data.size": 48,
                                                        "run.init_from": str(tmp_path / "torch" / "best.pt")}),
                            progress=QUIET)  # fmt: skip
    for name, value in numpy_trainer.model.params.items():
        np.testing.assert_array_equal(value, torch_best[name].numpy(), err_msg=name)
    mean = numpy_trainer.model.buffers["input_mean"]  # the normalisation stays this run's data's
    assert_close(mean.astype(np.float64), np.array(numpy_trainer.train_set.statistics.mean), rtol=1e-6)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--amp"], "--amp is not available there"),
        (["--model", "attention-unet"], "--model attention-unet is not available there"),
        (["--workers", "2"], "--workers 2 is not available there"),
        (["--device", "cuda"], "--device cuda is not available there"),
    ],
)
def test_what_the_numpy_engine_does_not_do_is_one_line(tmp_path, capsys, flags, message):
    assert main(["--backend", "numpy", "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "--backend numpy" in err
    assert not (tmp_path / "run").exists()


def test_a_run_resumes_only_with_its_own_engine(tmp_path):
    Trainer(tiny(tmp_path / "run"), progress=QUIET).fit(stop_after=1)
    with pytest.raises(ConfigError, match="resumes with the engine it was started with"):
        Trainer(resume=tmp_path / "run", overrides={"run.backend": "numpy"}, progress=QUIET)


def test_the_command_line_trains_on_the_numpy_engine(tmp_path, capsys):
    flags = ["--images", "10", "--size", "32", "--samples-per-epoch", "8", "--depth", "2", "--base-channels", "4",
             "--epochs", "2", "--progress", "lines", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(["--backend", "numpy", *flags]) == 0
    out = capsys.readouterr().out
    assert "Model: NumpyUNet(depth=2" in out and "Device: cpu (NumPy engine)" in out
    assert "on the NumPy engine (cpu)" in out and f"--checkpoint {tmp_path / 'run' / 'best.pt'}" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    history = read_history(tmp_path / "run" / "history.csv")
    best = max(history, key=lambda row: row["val_iou"])
    assert metrics["best"]["val_iou"] == pytest.approx(best["val_iou"], rel=1e-12)  # the best checkpoint, rescored


def test_a_numpy_engine_step_runs_where_torch_cannot_be_imported(tmp_path):
    """Batches, forward, loss, backward and the optimizer step of the NumPy engine need no torch (only writing a
    checkpoint does): three steps on one batch, in a process where ``import torch`` fails, lower its loss."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from unet_from_scratch.data import EpochSampler, SegmentationDataset, SyntheticCells, batches\n"
        "from unet_from_scratch.loss_options import LossOptions\n"
        "from unet_from_scratch.training.config import OptimizerConfig\n"
        "from unet_from_scratch.training.numpy_engine import NumpyEngine\n"
        "ds = SegmentationDataset(SyntheticCells(4, size=32, seed=0))\n"
        "config = dict(name='unet', in_channels=1, num_classes=2, depth=2, base_channels=4, padding='same',"
        " batch_norm=True, dropout=0.0, seed=0)\n"
        "terms = ((0.7, 0.0, 0.3), True, None, LossOptions())\n"
        "engine = NumpyEngine(config, 0, terms, OptimizerConfig(), 3e-3, 1.0)\n"
        "engine.set_normalization(ds.statistics.mean, ds.statistics.std, ds.class_names)\n"
        "batch = next(batches(ds, EpochSampler(len(ds), shuffle=False), 4))\n"
        "losses = [engine.train_step(batch, 3e-3)[0] for _ in range(3)]\n"
        "print(' '.join(map(repr, losses)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    losses = [float(v) for v in result.stdout.split()]
    assert len(losses) == 3 and losses[2] < losses[0]
