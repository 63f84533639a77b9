"""DistributedDataParallel on the CPU: two gloo processes train as one process with the doubled batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from unet_from_scratch.training import Trainer, load_checkpoint
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.progress import Progress

# No batch norm (its statistics are per process) and a loss that is a mean over pixels (focal): then the mean of
# two half-batch gradients is the gradient of the whole batch, and DDP must reproduce the single process exactly
# but for the order of float additions.
CONFIG = {
    "data.images": 12, "data.size": 32, "data.samples_per_epoch": 16, "model.depth": 2, "model.base_channels": 4,
    "model.batch_norm": False, "loss.name": "focal", "run.epochs": 2, "run.progress": "lines",
}  # fmt: skip


def _config(out, batch_size: int) -> TrainConfig:
    return validate(apply_overrides(TrainConfig(), {**CONFIG, "run.batch_size": batch_size, "run.out": str(out)}))


def _rank(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))  # fmt: skip
    torch.set_num_threads(1)
    trainer = Trainer(_config(os.path.join(folder, "ddp"), batch_size=2), progress=Progress(enabled=False))
    metrics = trainer.fit()
    torch.save({"model": trainer.model.state_dict(), "metrics": metrics}, os.path.join(folder, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path):
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, value in ranks[0]["model"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, ranks[1]["model"][name]), name  # the all-reduce gives every rank the same
    assert ranks[0]["metrics"]["best"] == ranks[1]["metrics"]["best"]  # scores reduced over the ranks
    assert (tmp_path / "ddp" / "last.pt").exists() and not (tmp_path / "ddp" / "rank1").exists()

    single = Trainer(_config(tmp_path / "single", batch_size=4), progress=Progress(enabled=False))
    metrics = single.fit()
    for name, value in single.model.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(ranks[0]["model"][name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert ranks[0]["metrics"]["best"] == pytest.approx(metrics["best"], rel=1e-3, abs=1e-3)
    saved = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert saved["trainer"]["epoch"] == 2 and saved["config"]["run"]["batch_size"] == 2
