"""The weight-map ablation command in a tiny configuration: both losses per seed, the table, the figure."""

from __future__ import annotations

import json

import numpy as np

from unet_from_scratch.experiments import weight_map_ablation as ablation
from unet_from_scratch.training import load_checkpoint


def test_a_tiny_ablation_trains_both_losses_per_seed_and_summarises_them(tmp_path, capsys):
    argv = ["--seeds", "0,1", "--epochs", "1", "--images", "6", "--size", "32", "--samples-per-epoch", "8",
            "--depth", "2", "--base-channels", "4", "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    assert ablation.main(argv) == 0
    saved = json.loads((tmp_path / "ablation.json").read_text())
    runs = saved["runs"]
    assert sorted((r["loss"], r["seed"]) for r in runs) == [("ce", 0), ("ce", 1), ("weighted-ce", 0),
                                                             ("weighted-ce", 1)]  # fmt: skip
    for r in runs:  # each run is what it says: its loss, its seed, the same budget and model
        config = load_checkpoint(tmp_path / f"{r['loss']}-seed{r['seed']}" / "best.pt")["config"]
        assert config["loss"]["name"] == r["loss"] and config["run"]["seed"] == r["seed"]
        assert config["run"]["epochs"] == 1 and config["model"]["depth"] == 2 and config["data"]["images"] == 6
        metrics = json.loads((tmp_path / f"{r['loss']}-seed{r['seed']}" / "metrics.json").read_text())
        assert r["val_iou"] == metrics["best"]["val_iou"]
    for loss in ablation.LOSSES:
        values = [r["val_instance_f1"] for r in runs if r["loss"] == loss]
        s = saved["summary"][loss]["val_instance_f1"]
        assert s["mean"] == np.mean(values) and s["std"] == np.std(values, ddof=1)
    text = (tmp_path / "ablation.md").read_text()
    assert "weighted-ce" in text and "±" in text and text in capsys.readouterr().out + "\n"
    assert (tmp_path / "ablation.png").stat().st_size > 0


def test_bad_seeds_and_an_existing_run_are_one_line(tmp_path, capsys):
    assert ablation.main(["--seeds", "a,1", "--out", str(tmp_path)]) == 2
    (tmp_path / "ce-seed0").mkdir()
    (tmp_path / "ce-seed0" / "last.pt").write_bytes(b"")
    assert ablation.main(["--seeds", "0", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 2 and "already holds a run" in error
