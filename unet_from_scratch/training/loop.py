"""The training loop: one straight line from a batch to a checkpoint, resumable at any step.

One optimizer step (docs/architecture.md, "the data path of a training step")::

    batch (image, target, weight map)  ->  model(x) logits  ->  loss  ->  backward  ->  clip  ->  optimizer step
                                                                            (rate of this step from schedules.py)

is the engine's (``engine.py``): ``run.backend`` "torch" (``torch_engine.py``) or "numpy", the reference's NumPy
U-Net, losses and optimizers (``numpy_engine.py``). Everything else here is the same for both.

and after every epoch: validation on the held-out split (whole images, ``inference.predict_logits``), the
epoch's line and ``history.csv``, ``last.pt`` (and ``best.pt`` when ``val_iou`` improved), plateau and early
stopping. At the end the best weights are evaluated once more, their predictions saved (``predictions.npz``)
beside ``metrics.json`` and the plots.

Reproducibility. Everything random is a function of ``run.seed``: the split, the initialisation, each epoch's
order and each item's augmentation (``EpochSampler``), and dropout (torch's generator, or the NumPy model's,
whose state a checkpoint saves). On the CPU two runs with one seed give the same ``history.csv`` and the same weights, and a run stopped
after any step and resumed from ``last.pt`` gives the same as the run that was never stopped: the sampler
regenerates the interrupted epoch and skips what was done, and every running sum of the epoch is in the checkpoint.

Scores. Validation counts tp, fp, fn per class (``reference.metrics.confusion``) and matched/true/predicted
objects (``reference.metrics.instance_f1`` against the true instances, for instance masks; against the connected
components of the true foreground, for class masks); the scores are ratios of the summed counts over the
foreground classes (micro: every pixel counts once), so they can be summed over DDP processes before the ratio.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import time
from contextlib import contextmanager
from itertools import cycle
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from unet_from_scratch.data.epochs import EpochSampler, minority_fractions
from unet_from_scratch.reference.metrics import confusion, instance_f1
from unet_from_scratch.training import plots
from unet_from_scratch.training.build import (
    MIN_SAMPLES_PER_EPOCH,
    Geometry,
    build_datasets,
    build_loss,
    build_model,
    build_optimizer,
    build_source,
    image_sizes,
    loss_terms,
    model_arguments,
    resolve_device,
)
from unet_from_scratch.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from unet_from_scratch.training.config import ConfigError, TrainConfig, apply_overrides, to_toml, validate
from unet_from_scratch.training.distributed import World, all_reduce_sum, close_world, init_world
from unet_from_scratch.training.engine import NonFiniteLoss
from unet_from_scratch.training.lr_finder import range_test
from unet_from_scratch.training.progress import Progress, write_history
from unet_from_scratch.training.schedules import Plateau, learning_rate

SCORES = ("val_loss", "val_iou", "val_dice", "val_precision", "val_recall", "val_f1", "val_instance_precision",
          "val_instance_recall", "val_instance_f1")  # fmt: skip


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; ``last.pt`` holds the state at the last finished step."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def _ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    """A score's ratio; 0/0 is 1.0 when prediction and truth are both empty, else 0.0 (as ``reference.metrics``)."""
    if both_empty:
        return 1.0
    return float(numerator / denominator) if denominator > 0 else 0.0


def scores_from_counts(loss_sum: float, items: float, tp, fp, fn, matched, n_true, n_pred) -> dict:
    """The validation scores from summed counts (foreground classes, micro) and the instance counts."""
    tp, fp, fn = float(np.sum(tp)), float(np.sum(fp)), float(np.sum(fn))
    empty, objects_empty = tp + fp + fn == 0, n_true + n_pred == 0
    return {
        "val_loss": float(loss_sum / max(items, 1)),
        "val_iou": _ratio(tp, tp + fp + fn, empty),
        "val_dice": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "val_precision": _ratio(tp, tp + fp, empty),
        "val_recall": _ratio(tp, tp + fn, empty),
        "val_f1": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "val_instance_precision": _ratio(matched, n_pred, objects_empty),
        "val_instance_recall": _ratio(matched, n_true, objects_empty),
        "val_instance_f1": _ratio(2 * matched, n_true + n_pred, objects_empty),
    }


class Trainer:
    """Builds everything a ``TrainConfig`` describes, then ``fit()`` trains, validates, logs and checkpoints.

    ``resume``: a run directory whose ``last.pt`` to continue, with the config stored in it; ``overrides``
    (``{"run.epochs": 30}``) change fields of that config (more epochs extend a finished run).
    ``fit(stop_after=k)`` ends after k finished epochs, as if the run had been interrupted there.
    """

    def __init__(self, config: TrainConfig | None = None, resume: str | Path | None = None,
                 overrides: dict | None = None, progress: Progress | None = None):  # fmt: skip
        self.created = time.perf_counter()  # the run's wall time counts data, weight maps and setup too
        self.checkpoint = None
        if resume is not None:
            self.checkpoint = load_checkpoint(Path(resume) / "last.pt")
            config = TrainConfig.from_dict(self.checkpoint["config"], f"{resume}/last.pt")
            config.run.out = str(resume)
        config = validate(apply_overrides(config, overrides or {}))
        self.config = config
        self.device = resolve_device("cpu" if config.run.backend == "numpy" else config.run.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
            self.device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")
            torch.cuda.set_device(self.device)
        self.world: World = init_world(self.device)
        if self.world.distributed and config.run.backend == "numpy":
            raise ConfigError("--backend numpy trains in one process; run it without torchrun")
        self.progress = progress or Progress(config.run.progress, enabled=self.world.is_main)
        self.out = Path(config.run.out or time.strftime("runs/%Y%m%d-%H%M%S"))
        if resume is None and (self.out / "last.pt").exists():
            raise ConfigError(f"--out {self.out} already holds a run: continue it with --resume {self.out}, "
                              "or choose another --out")  # fmt: skip
        self._seed(config.run.seed)
        self._build()

    # -- setup --------------------------------------------------------------------------------------------------

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _build(self) -> None:
        c, world = self.config, self.world
        self.source = build_source(c)
        in_channels, num_classes = self.source.in_channels, len(self.source.class_names)
        if c.run.backend == "numpy":
            model_config = model_arguments(c, in_channels, num_classes)
            geometry = Geometry(c.model.depth, c.model.padding)
        else:
            model = build_model(c, in_channels, num_classes)
            model_config, geometry = model.config, model
        self.train_set, self.val_set = build_datasets(c, self.source, geometry)
        statistics = self.train_set.statistics
        self.train_set.precompute()  # the weight maps once, before any worker forks
        self.val_set.precompute()
        self.peak_lr = c.optimizer.lr if c.optimizer.lr != "auto" else 1e-3
        if c.run.backend == "numpy":
            from unet_from_scratch.training.numpy_engine import NumpyEngine

            terms = loss_terms(c, self.train_set.class_weights)
            self.engine = NumpyEngine(model_config, c.run.seed, terms, c.optimizer, self.peak_lr, c.run.clip)
        else:
            from unet_from_scratch.training.torch_engine import TorchEngine

            criterion, uses_map = build_loss(c, self.train_set.class_weights)
            optimizer = build_optimizer(c, model.parameters(), self.peak_lr)
            self.engine = TorchEngine(model, criterion, uses_map, optimizer, self.device, world, c.run.amp, c.run.clip)
        self.engine.set_normalization(statistics.mean, statistics.std, statistics.class_names)
        if c.run.init_from and self.checkpoint is None:
            self._init_from(c.run.init_from)

        samples = c.data.samples_per_epoch or max(len(self.train_set), MIN_SAMPLES_PER_EPOCH)
        weights = None
        if c.data.oversample:
            fractions = minority_fractions(statistics.image_class_counts)
            weights = fractions + fractions.mean()  # smoothing 1, as ``oversampling_sampler``
        self.sampler = EpochSampler(len(self.train_set), samples, True, weights, c.run.seed, world.rank, world.size)
        per_rank = len(self.sampler)
        self.batch_size = min(c.run.batch_size, per_rank)
        self.steps_per_epoch = per_rank // self.batch_size  # full batches only: batch norm dislikes a batch of 1
        self.loader = self.engine.loader(self.train_set, self.sampler, self.batch_size, c.data.workers, c.run.seed)
        self.val_indices = list(range(world.rank, len(self.val_set), world.size))
        sizes = image_sizes(self.source)
        self.val_same_size = len({sizes[int(i)] for i in self.val_set.indices}) == 1
        self.total_steps = c.run.epochs * self.steps_per_epoch
        self.plateau = Plateau(c.schedule.plateau_factor, c.schedule.plateau_patience)
        self.state = {"epoch": 0, "epoch_step": 0, "step": 0, "sums": self._empty_sums(), "best": -math.inf,
                      "best_epoch": 0, "bad_epochs": 0, "history": [], "train_seconds": 0.0}  # fmt: skip
        if self.checkpoint is not None:
            self._restore(self.checkpoint)

    @property
    def model(self):
        """The network being trained: an ``nn.Module`` (torch engine) or a ``NumpyUNet`` (NumPy engine)."""
        return self.engine.model

    def _init_from(self, path: str) -> None:
        """Fine-tuning: the weights of another run's checkpoint (of either engine); the normalisation stays this
        data's."""
        checkpoint = load_checkpoint(path)
        try:
            self.engine.load_weights(checkpoint["model"])
        except ValueError as error:
            raise ConfigError(f"--init-from {path}: its model does not fit this one ({error})") from None
        s = self.train_set.statistics
        self.engine.set_normalization(s.mean, s.std, s.class_names)

    def _empty_sums(self) -> dict:
        k = len(self.source.class_names)
        return {"loss": 0.0, "last_loss": 0.0, "steps": 0, "confusion": [[0] * k for _ in range(k)], "seconds": 0.0}

    def _restore(self, checkpoint: dict) -> None:
        if checkpoint["config"]["run"].get("backend", "torch") != self.config.run.backend:
            raise ConfigError("a run resumes with the engine it was started with (its checkpoint's run.backend)")
        self.engine.load_weights(checkpoint["model"])
        self.engine.load_state_dict(checkpoint["engine"])
        self.plateau.load_state_dict(checkpoint["plateau"])
        self.state = checkpoint["trainer"]
        self.peak_lr = self.state.get("peak_lr", self.peak_lr)
        set_rng_state(checkpoint["rng"])

    def _checkpoint(self) -> dict:
        return {
            "model_config": self.engine.model_config, "model": self.engine.weights(), "config": self.config.to_dict(),
            "statistics": self.train_set.statistics.state_dict(), "engine": self.engine.state_dict(),
            "plateau": self.plateau.state_dict(),
            "trainer": {**self.state, "peak_lr": self.peak_lr}, "rng": rng_state(),
        }  # fmt: skip

    # -- one step -----------------------------------------------------------------------------------------------

    def _account(self, sums: dict, loss: float, counts: np.ndarray) -> None:
        """Add one step's loss and (K, K) confusion counts (for the epoch's training ``iou``) to the epoch's sums."""
        sums["confusion"] = (np.asarray(sums["confusion"]) + counts).tolist()
        sums["last_loss"] = loss
        sums["loss"] += loss
        sums["steps"] += 1

    def _rate(self, step: int) -> float:
        s = self.config.schedule
        warmup = round(s.warmup_epochs * self.steps_per_epoch)
        step_size = max(1, round(s.step_epochs * self.steps_per_epoch))
        rate = learning_rate(s.name, step, self.total_steps, self.peak_lr, warmup, s.pct_start, s.final_lr_ratio,
                             step_size, s.step_gamma)  # fmt: skip
        return rate * self.plateau.scale

    # -- validation ---------------------------------------------------------------------------------------------

    def _true_objects(self, i: int, target: np.ndarray) -> np.ndarray:
        """Validation item ``i``'s objects: its instances (separated as in training), or the components of its classes."""
        if self.source.mask_kind == "instances":
            return self.val_set.labels_and_weights(i)[0]
        return ndimage.label(target > 0)[0]

    def validate(self, keep: bool = False) -> tuple[dict, dict | None]:
        """Scores of the validation split (this rank's shard, counts summed over ranks); ``keep`` the predictions."""
        k = len(self.source.class_names)
        loss_sum, tp, fp, fn, objects = 0.0, np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(3)
        kept = {"image": [], "target": [], "prediction": [], "instances": []} if keep else None
        batch = self.batch_size if self.val_same_size else 1  # images of different sizes go one by one
        for start in range(0, len(self.val_indices), batch):
            chunk = self.val_indices[start : start + batch]
            items = [self.val_set[i] for i in chunk]
            image, truth, weights = (np.stack(t) for t in zip(*items))
            loss, prediction = self.engine.evaluate(image, truth, weights)
            loss_sum += loss * len(chunk)
            counts_tp, counts_fp, counts_fn, _ = confusion(truth, prediction, k)
            tp, fp, fn = tp + counts_tp.sum(0), fp + counts_fp.sum(0), fn + counts_fn.sum(0)
            for i, t, p, x in zip(chunk, truth, prediction, image):
                true_objects = self._true_objects(i, t)
                s = instance_f1(true_objects, p > 0)
                objects += (s.matched, s.n_true, s.n_pred)
                if keep:
                    for name, value in (("image", x), ("target", t), ("prediction", p), ("instances", true_objects)):
                        kept[name].append(value)
        totals = all_reduce_sum(np.concatenate([[loss_sum, len(self.val_indices)], tp, fp, fn, objects]), self.world)
        loss_sum, items, rest = totals[0], totals[1], totals[2:]
        tp, fp, fn, objects = rest[:k], rest[k : 2 * k], rest[2 * k : 3 * k], rest[3 * k :]
        foreground = slice(1, None) if k > 1 else slice(None)
        scores = scores_from_counts(loss_sum, items, tp[foreground], fp[foreground], fn[foreground], *objects)
        return scores, kept

    # -- the run ------------------------------------------------------------------------------------------------

    def describe(self) -> None:
        """The lines a run starts with: device, model, data, class balance, loss and schedule."""
        c, s, p = self.config, self.train_set.statistics, self.progress
        counts = s.image_class_counts.sum(axis=0)
        parameters = self.engine.num_parameters
        world = f", {self.world.size} processes" if self.world.distributed else ""
        p.print(f"Device: {self.engine.device_line}{world}")
        p.print(f"Model: {type(self.model).__name__}(depth={c.model.depth}, base_channels={c.model.base_channels}, "
                f"padding={c.model.padding!r}) - {parameters:,} parameters")  # fmt: skip
        p.print(f"Data: {c.data.source} - {len(self.train_set)} training / {len(self.val_set)} validation images; "
                f"{self.steps_per_epoch} steps of {self.batch_size} per epoch")  # fmt: skip
        p.print(f"Class distribution: {dict(enumerate(int(n) for n in counts))}")
        p.print(f"Class weights: {dict(enumerate(round(w, 2) for w in s.class_weights))}")
        lr = f"{self.peak_lr:.2e}"
        p.print(f"Loss: {c.loss.name} - optimizer: {c.optimizer.name}, lr {lr}, {c.schedule.name} - "
                f"{c.run.epochs} epochs - run directory: {self.out}")  # fmt: skip

    def find_lr(self) -> float:
        """The LR range test on copies of the weights and optimizer (restored after); saves ``lr_finder.png``."""
        weights, engine_state = copy.deepcopy(self.engine.weights()), copy.deepcopy(self.engine.state_dict())
        torch_state = torch.get_rng_state()
        self.sampler.set_epoch(-1 % 2**31)  # an order of its own, not epoch 0's

        def step(rate, batch):
            return self.engine.train_step(batch, rate)[0]

        steps = max(20, min(100, 3 * self.steps_per_epoch))
        result = range_test(step, cycle(self.loader), steps=steps)
        self.engine.load_weights(weights)
        self.engine.load_state_dict(engine_state)
        torch.set_rng_state(torch_state)
        if self.world.is_main:
            plots.plot_lr_finder(result.rates, result.losses, result.suggestion, self.out / "lr_finder.png")
        self.progress.print(f"LR finder: suggested lr {result.suggestion:.2e} (steepest descent of the smoothed "
                            f"loss; plot: {self.out / 'lr_finder.png'})")  # fmt: skip
        return result.suggestion

    @contextmanager
    def _signals(self):
        """SIGINT/SIGTERM set a flag that the loop checks after each step (a signal never tears a step in half)."""
        self._signal = None
        handlers = {}

        def handler(signum, frame):
            self._signal = signum

        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                handlers[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: no handlers, no graceful stop
            pass
        try:
            yield
        finally:
            for signum, old in handlers.items():
                signal.signal(signum, old)

    def _save(self, name: str) -> None:
        if self.world.is_main:
            save_checkpoint(self._checkpoint(), self.out / name)

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to ``run.epochs`` (or early stopping); returns the contents of ``metrics.json``."""
        c, st = self.config, self.state
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.describe()
        if c.run.lr_find and self.checkpoint is None:
            suggestion = self.find_lr()
            if c.optimizer.lr == "auto":
                self.peak_lr = suggestion
                c.optimizer.lr = suggestion
        self.plateau.peak = self.peak_lr  # the rate its scale multiplies (torch's eps rule), known from here on
        if self.world.is_main:
            (self.out / "config.toml").write_text(to_toml(c))
            if self.checkpoint is None:
                image, target, weights = self.train_set[(0, 0)]  # a fixed augmentation seed: no global draw
                plots.plot_weight_map(image, weights, self.out / "weight_map.png")
        started = time.perf_counter()
        with self._signals():
            while st["epoch"] < c.run.epochs:
                if stop_after is not None and st["epoch"] >= stop_after:
                    return {}
                self._train_epoch()
                if self._early_stop():
                    break
        self.progress.close()
        return self._finish(time.perf_counter() - started)

    def _train_epoch(self) -> None:
        c, st = self.config, self.state
        epoch, done = st["epoch"], st["epoch_step"]
        self.sampler.set_epoch(epoch, skip=done * self.batch_size)
        self.progress.start_epoch(epoch, c.run.epochs, self.steps_per_epoch, done)
        sums = st["sums"]
        tick = time.perf_counter()
        for batch in self.loader:
            lr = self._rate(st["step"])
            try:
                loss, counts = self.engine.train_step(batch, lr)
            except NonFiniteLoss as error:
                last = self.out / "last.pt"
                kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
                raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}, step {st['epoch_step'] + 1} "
                                    f"({error}, lr {lr:.2e}): training stopped; {kept}") from None  # fmt: skip
            self._account(sums, loss, counts)
            st["step"] += 1
            st["epoch_step"] += 1
            self.progress.step(sums["last_loss"])
            if self._signal is not None:
                sums["seconds"] += time.perf_counter() - tick
                self._save("last.pt")
                name = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(self._signal, str(self._signal))
                raise Interrupted(self._signal, f"{name}: stopped at epoch {epoch + 1}, step {st['epoch_step']}; "
                                  f"state saved to {self.out / 'last.pt'}. Resume with: "
                                  f"python -m unet_from_scratch.train --resume {self.out}")  # fmt: skip
        sums["seconds"] += time.perf_counter() - tick
        validation_started = time.perf_counter()
        scores, _ = self.validate()
        validation_seconds = time.perf_counter() - validation_started
        k = len(self.source.class_names)
        matrix = all_reduce_sum(np.asarray(sums["confusion"]), self.world)  # (K, K): target x prediction
        hits = np.diag(matrix)
        foreground = slice(1, None) if k > 1 else slice(None)
        tp, fp, fn = hits[foreground], (matrix.sum(0) - hits)[foreground], (matrix.sum(1) - hits)[foreground]
        train_seconds = sums["seconds"]
        row = {
            "epoch": epoch + 1, "loss": sums["loss"] / max(sums["steps"], 1),
            "iou": scores_from_counts(0, 1, tp, fp, fn, 0, 0, 0)["val_iou"], **scores,
            "lr": self._rate(st["step"] - 1),  # the rate of the epoch's last step
            "seconds": train_seconds + validation_seconds,
            "ms_per_step": 1000 * train_seconds / max(sums["steps"], 1),
            "images_per_s": sums["steps"] * self.batch_size * self.world.size / max(train_seconds, 1e-9),
        }  # fmt: skip
        st["history"].append(row)
        st["train_seconds"] += train_seconds
        improved = row["val_iou"] > st["best"]
        if improved:
            st["best"], st["best_epoch"], st["bad_epochs"] = row["val_iou"], epoch + 1, 0
        else:
            st["bad_epochs"] += 1
        if c.schedule.name == "plateau":
            self.plateau.step(row["val_iou"])
        st["epoch"], st["epoch_step"], st["sums"] = epoch + 1, 0, self._empty_sums()
        self.progress.end_epoch(row, self.steps_per_epoch)
        if self.world.is_main:
            write_history(st["history"], self.out / "history.csv")
            self._save("last.pt")
            if improved:
                self._save("best.pt")

    def _early_stop(self) -> bool:
        patience = self.config.run.patience
        if patience and self.state["bad_epochs"] >= patience:
            self.progress.print(f"Early stopping: val_iou has not improved for {patience} epochs "
                                f"(best {self.state['best']:.4f} at epoch {self.state['best_epoch']})")  # fmt: skip
            return True
        return False

    def _finish(self, seconds: float) -> dict:
        """Evaluate the best weights once more, save their predictions, metrics.json and the plots."""
        st, out = self.state, self.out
        final = {k: v for k, v in st["history"][-1].items() if k in SCORES}
        best_state = load_checkpoint(out / "best.pt")["model"] if self.world.is_main else None
        if self.world.distributed:
            payload = [best_state]
            torch.distributed.broadcast_object_list(payload, src=0)
            best_state = payload[0]
        self.engine.load_weights(best_state)
        best, kept = self.validate(keep=True)
        history = st["history"]
        steps = sum(1 for _ in history) * self.steps_per_epoch
        metrics = {
            "best_epoch": st["best_epoch"], "best": best, "final": final,
            "seconds": seconds, "wall_seconds": time.perf_counter() - self.created, "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])),
            "ms_per_step": 1000 * st["train_seconds"] / max(steps, 1),
            "images_per_s": steps * self.batch_size * self.world.size / max(st["train_seconds"], 1e-9),
            "device": str(self.device), "processes": self.world.size,
            "parameters": self.engine.num_parameters, "backend": self.engine.name,
            "train_images": len(self.train_set), "val_images": len(self.val_set),
        }  # fmt: skip
        if self.world.is_main:
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            # One key per array ("prediction_0", ...): validation images may differ in size.
            arrays = {f"{name}_{j}": value for name, values in kept.items() for j, value in enumerate(values)}
            np.savez_compressed(out / "predictions.npz", **arrays)
            plots.plot_curves(history, out / "curves.png")
            n = min(4, len(kept["image"]))
            plots.plot_predictions(kept["image"][:n], kept["target"][:n], kept["prediction"][:n], out / "predictions.png")
        close_world(self.world)
        return metrics

