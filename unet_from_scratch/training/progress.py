"""What a run says while it runs: a bar within each epoch, one Keras-style line per epoch, and ``history.csv``.

The epoch line is the one Keras users read at a glance::

    Epoch 3/15
    20/20 - 7s - loss: 0.2082 - iou: 0.9150 - val_loss: 0.1089 - val_iou: 0.9535 - val_f1: 0.9412 - lr: 1.0000e-04 - 354ms/step

(steps, wall time of the epoch, the training means, the validation scores, the learning rate at the end of the
epoch and the time per optimizer step). On a terminal a tqdm bar counts the steps of the epoch with the running
loss; where stdout is a file or a pipe (CI, ``nohup``, a notebook log) only the plain lines are printed. The same
fields, and a few more, are the columns of ``history.csv``, one row per epoch.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from tqdm.auto import tqdm

# Columns of history.csv in order; the timing columns are the only ones that differ between identical runs.
HISTORY_FIELDS = (
    "epoch", "loss", "iou", "val_loss", "val_iou", "val_dice", "val_precision", "val_recall", "val_f1",
    "val_instance_f1", "lr", "seconds", "ms_per_step", "images_per_s",
)  # fmt: skip
TIMING_FIELDS = ("seconds", "ms_per_step", "images_per_s")
LINE_FIELDS = ("loss", "iou", "val_loss", "val_iou", "val_f1", "val_instance_f1")


def epoch_line(row: dict, steps: int) -> str:
    """The Keras-style line of one history row."""
    parts = [f"{steps}/{steps}", f"{row['seconds']:.0f}s"]
    parts += [f"{name}: {row[name]:.4f}" for name in LINE_FIELDS]
    parts += [f"lr: {row['lr']:.4e}", f"{row['ms_per_step']:.0f}ms/step"]
    return " - ".join(parts)


def write_history(rows: list[dict], path) -> None:
    """All rows so far to ``path`` (rewritten whole each epoch: a resumed run never duplicates a row)."""
    with open(Path(path), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows([{k: row[k] for k in HISTORY_FIELDS} for row in rows])


def read_history(path) -> list[dict]:
    """The rows of a ``history.csv`` with numbers as numbers."""
    with open(Path(path), newline="") as file:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(file)]


class Progress:
    """Prints the run's lines; ``bar`` (True on a terminal for ``mode="auto"``) adds a tqdm bar within each epoch."""

    def __init__(self, mode: str = "auto", enabled: bool = True, stream=None):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.bar_enabled = enabled and (mode == "bar" or (mode == "auto" and self.stream.isatty()))
        self._bar = None

    def print(self, text: str = "") -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        self.print(f"Epoch {epoch + 1}/{epochs}")
        if self.bar_enabled:
            self._bar = tqdm(total=steps, initial=done, file=self.stream, leave=False, dynamic_ncols=True, unit="step")

    def step(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"loss: {loss:.4f}", refresh=False)

    def end_epoch(self, row: dict, steps: int) -> None:
        self.close()
        self.print(epoch_line(row, steps))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
