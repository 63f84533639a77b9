"""The trainer's learning-rate policies: the NumPy reference's (``unet_from_scratch.reference.schedules``), one implementation for both backends."""

from unet_from_scratch.reference.schedules import *  # noqa: F403
from unet_from_scratch.reference.schedules import __all__  # noqa: F401
