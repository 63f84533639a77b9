"""Export: the ONNX graph in onnxruntime and the TorchScript module give torch's logits on two image sizes, with
the normalisation inside and the class names in the metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from unet_from_scratch import export as cli
from unet_from_scratch.nn import AttentionUNet, UNet
from unet_from_scratch.training import load_model


def _model(padding, attention=False):
    if attention:
        model = AttentionUNet(1, 3, depth=2, base_channels=4, num_heads=2, padding=padding, seed=3).eval()
    else:
        model = UNet(1, 3, depth=2, base_channels=4, padding=padding, batch_norm=True, seed=3).eval()
    model.set_normalization(0.4, 0.15)  # far from (0, 1): a graph without the normalisation would be far off
    model.class_names = ["background", "nucleus", "membrane"]
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _two_sizes(model):
    a = model.valid_input_size(50)
    return [(a, model.valid_input_size(a + 30)), (model.valid_input_size(a + 10), a)]


def _assert_matches_torch(model, run):
    for h, w in _two_sizes(model):
        images = torch.rand(2, 1, h, w)
        with torch.no_grad():
            expected = model(images).numpy()
        actual = run(images.numpy())
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("padding, attention", [("valid", False), ("same", False), ("same", True)])
def test_onnx_in_onnxruntime_matches_torch_on_two_sizes(tmp_path, padding, attention):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = _model(padding, attention)
    cli.export_onnx(model, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    _assert_matches_torch(model, lambda x: session.run(None, {"image": x})[0])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == model.class_names
    assert json.loads(meta["input_mean"]) == pytest.approx([0.4]) and meta["padding"] == padding
    assert int(meta["smallest_input"]) == model.valid_input_size(1)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_torchscript_round_trip_matches_torch_on_two_sizes(tmp_path, padding):
    model = _model(padding)
    cli.export_torchscript(model, tmp_path / "m.pt")
    files = {"metadata.json": ""}
    loaded = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=files)
    with torch.no_grad():
        _assert_matches_torch(model, lambda x: loaded(torch.from_numpy(x)).numpy())
    assert json.loads(json.loads(files["metadata.json"])["class_names"]) == model.class_names


def test_the_exported_copy_leaves_the_model_as_it_was():
    model = _model("same")
    cli.traceable(model)
    assert "_extra_state" in model.state_dict() and model.class_names[2] == "membrane"


@pytest.mark.parametrize("fmt, suffix", [("onnx", "onnx"), ("torchscript", "pt")])
def test_the_command_exports_a_checkpoint(checkpoint, tmp_path, capsys, fmt, suffix):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    out = tmp_path / f"model.{suffix}"
    assert cli.main(["--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max |difference|" in text and "['background', 'cell']" in text
    model = load_model(checkpoint)
    images = np.random.default_rng(0).random((1, 1, 48, 32), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(cli.run_exported(out, fmt, images), expected, rtol=1e-4, atol=1e-5)


def test_bad_checkpoint_and_help(tmp_path):
    argv = ["--checkpoint", str(tmp_path / "x.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    done = subprocess.run([sys.executable, "-m", "unet_from_scratch.export", *argv], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "x.pt does not exist" in done.stderr
    done = subprocess.run([sys.executable, "-m", "unet_from_scratch.export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "torchscript" in done.stdout
