"""Checkpoints: atomic writes, loading that runs no code, models rebuilt from their own config."""

import os

import numpy as np
import pytest
import torch

from unet_from_scratch.nn import AttentionUNet, UNet, from_config
from unet_from_scratch.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _model_checkpoint(model) -> dict:
    return {"model_config": model.config, "model": model.state_dict()}


@pytest.mark.parametrize("model", [UNet(depth=2, base_channels=4, padding="valid", seed=3),
                                   AttentionUNet(depth=2, base_channels=8, num_heads=2, seed=5)])  # fmt: skip
def test_load_model_rebuilds_the_architecture_and_its_outputs(tmp_path, model):
    model.set_normalization(0.3, 0.2)
    model.class_names = ["sea", "debris"]
    save_checkpoint(_model_checkpoint(model), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    assert loaded.class_names == ["sea", "debris"]
    x = torch.rand(2, 1, 92, 92) if model.padding == "valid" else torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_from_config_refuses_an_unknown_model_in_one_line():
    with pytest.raises(ValueError, match="must name one of unet, attention-unet"):
        from_config({"name": "segformer"})
    with pytest.raises(ValueError, match="does not fit unet"):
        from_config({"name": "unet", "heads": 3})


def test_a_write_killed_half_way_leaves_the_old_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"value": torch.tensor([1.0])}, path)

    def dying_save(obj, file):
        file.write(b"PK\x03\x04 half a zip file")  # some bytes reach the disk, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"value": torch.tensor([2.0])}, path)
    assert load_checkpoint(path)["value"].item() == 1.0
    assert os.listdir(tmp_path) == ["last.pt"]  # the temporary file is gone too


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_loading_executes_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "unet-from-scratch checkpoint", "version": 1, "x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="is not a unet-from-scratch checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", "is not a unet-from-scratch checkpoint"),
    (None, "does not exist"),
])  # fmt: skip
def test_a_file_that_is_not_ours_is_one_line(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_torch_file_without_our_marker_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'unet-from-scratch checkpoint' marker"):
        load_checkpoint(tmp_path / "other.pt")


def test_numpy_scalars_are_stored_as_python_numbers(tmp_path):
    save_checkpoint({"best": np.float64(0.5), "steps": [np.int64(3)]}, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["best"] == 0.5 and type(loaded["best"]) is float and loaded["steps"] == [3]


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    import random

    save_checkpoint({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected
