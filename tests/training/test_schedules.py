"""The trainer sets its learning rate with the reference's schedules (tested in tests/reference/test_schedules.py)."""

from unet_from_scratch.reference import schedules as reference
from unet_from_scratch.training import loop, schedules


def test_the_trainer_uses_the_reference_schedules():
    assert loop.learning_rate is reference.learning_rate and loop.Plateau is reference.Plateau
    for name in reference.__all__:
        assert getattr(schedules, name) is getattr(reference, name)
