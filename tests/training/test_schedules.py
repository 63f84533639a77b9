"""The trainer sets its learning rate with the reference's schedules (tested in tests/reference/test_schedules.py)."""

from unet_from_scratch.reference import schedules as reference
from unet_from_scratch.training import loop, schedules


def test_the_trainer_uses_the_reference_schedules():
    assert loop.learning_rate is reference.learning_rate and loop.Plateau is reference.Plateau
    for name in reference.__all__:
        assert getattr(schedules, name) is getattr(reference, name)


def test_the_step_schedule_is_torchs_step_lr_over_optimizer_steps(tmp_path):
    import torch

    from tests.training.test_trainer import QUIET, tiny
    from unet_from_scratch.training import Trainer

    trainer = Trainer(tiny(tmp_path / "run", **{"schedule.name": "step", "schedule.step_epochs": 1.5,
                                                "schedule.step_gamma": 0.5}), progress=QUIET)  # fmt: skip
    step_size = round(1.5 * trainer.steps_per_epoch)  # the drops fall every 1.5 epochs, counted in steps
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=trainer.peak_lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=0.5)
    for step in range(trainer.total_steps):
        assert abs(trainer._rate(step) - optimizer.param_groups[0]["lr"]) <= 1e-12 * trainer.peak_lr, step
        optimizer.step()
        scheduler.step()
