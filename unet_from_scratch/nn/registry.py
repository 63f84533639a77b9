"""The models by name, and a model rebuilt from its own ``config``.

Every ``SegmentationModel`` records the arguments it was built with (``model.config``, plain values with the
model's ``name``). A checkpoint stores that dict beside the ``state_dict()``, so the weights alone say which network
they belong to: ``from_config(model.config)`` builds the same architecture, and ``load_state_dict`` fills it
(normalisation statistics and class names included, as they live in the state dict too).
"""

from __future__ import annotations

from unet_from_scratch.nn.attention_unet import AttentionUNet
from unet_from_scratch.nn.unet import SegmentationModel, UNet

MODELS: dict[str, type[SegmentationModel]] = {cls.name: cls for cls in (UNet, AttentionUNet)}


def from_config(config: dict) -> SegmentationModel:
    """A freshly initialised model of the architecture ``config`` describes (``{"name": "unet", "depth": 3, ...}``)."""
    if not isinstance(config, dict) or config.get("name") not in MODELS:
        name = config.get("name") if isinstance(config, dict) else config
        raise ValueError(f"model config must name one of {', '.join(MODELS)}, got {name!r}")
    arguments = {k: v for k, v in config.items() if k != "name"}
    try:
        return MODELS[config["name"]](**arguments)
    except TypeError as error:  # an argument this model does not take
        raise ValueError(f"model config {config!r} does not fit {config['name']}: {error}") from None
