"""The trainer's learning-rate policies: the NumPy reference's (``reference.schedules``), one implementation."""

from unet_from_scratch.reference.schedules import *  # noqa: F403
from unet_from_scratch.reference.schedules import __all__  # noqa: F401
