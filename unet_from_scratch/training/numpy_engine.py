"""The NumPy engine of a training step (``engine.py``): ``--backend numpy`` trains the reference's U-Net.

One step, every number computed by ``unet_from_scratch.reference`` on NumPy arrays::

    batch (data.batches) -> NumpyUNet.forward(x, training=True) logits -> combined_loss -> (loss, dlogits)
          -> NumpyUNet.backward(dlogits) gradients -> clip_grad_norm -> SGD / Adam / RMSProp step at this rate

It is the torch engine's step term for term: the same architecture and initial weights (``NumpyUNet(config,
default_rng(seed))`` draws what ``UNet(**config, seed=seed)`` draws), the same loss terms and class weights
(``build.loss_terms``), the same optimizer settings, the same clipping; the tests hold its forward pass,
gradients and optimizer steps to torch's. What differs is the arithmetic's order, so two runs drift apart by
float32 rounding, step after step. Validation predicts whole images as ``inference.predict_logits`` does:
mirrored to the covering input size (numpy's "symmetric" is the mirror of ``inference.mirror_pad``), cut back.

Dropout draws its masks from the model's own generator, whose state a checkpoint keeps (``state_dict``), so a
resumed run continues exactly. Batches come in the main process (``--workers 0``): the batch of a step is the
torch engine's batch, the same ``EpochSampler`` items and seeds.

torch is imported only to write and read checkpoints: ``weights()`` converts the arrays to the tensors of the
torch model's ``state_dict()``, so the run's ``best.pt`` is a torch checkpoint like any other.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch import sizes
from unet_from_scratch.data.epochs import batches
from unet_from_scratch.reference.losses import combined_loss
from unet_from_scratch.reference.optim import SGD, Adam, RMSProp, clip_grad_norm
from unet_from_scratch.reference.unet import NumpyUNet
from unet_from_scratch.training.engine import NonFiniteLoss, confusion_counts


class EpochBatches:
    """Re-iterable: each pass is ``data.batches(dataset, sampler, batch_size)`` for the sampler's current epoch."""

    def __init__(self, dataset, sampler, batch_size: int):
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size

    def __iter__(self):
        return batches(self.dataset, self.sampler, self.batch_size)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


def build_optimizer(optimizer_config, params: dict, lr: float):
    """The reference optimizer of an ``[optimizer]`` table, as ``build.build_optimizer`` builds torch's."""
    o = optimizer_config
    if o.name == "sgd":
        return SGD(params, lr, weight_decay=o.weight_decay)
    if o.name == "momentum":
        return SGD(params, lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return Adam(params, lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
    return RMSProp(params, lr, alpha=0.99, weight_decay=o.weight_decay)


def _tensors(tree):
    """Arrays as CPU tensors, recursively (``torch.load(weights_only=True)`` refuses NumPy arrays)."""
    import torch  # the checkpoint's format only

    if isinstance(tree, dict):
        return {k: _tensors(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree, order="C"))  # a copy (never ascontiguousarray: it makes 0-d 1-d)
    return tree


def _arrays(tree):
    """Tensors as NumPy arrays, recursively (what ``_tensors`` wrote)."""
    if isinstance(tree, dict):
        return {k: _arrays(v) for k, v in tree.items()}
    return tree.numpy() if hasattr(tree, "numpy") else tree


class NumpyEngine:
    """``NumpyUNet(model_config)`` from ``seed``, trained with ``combined_loss`` (``terms``) and ``optimizer``.

    ``terms`` is ``build.loss_terms``'s: (coefficients, uses_map, class_weights or None, LossOptions);
    ``optimizer_config`` the ``[optimizer]`` table; ``clip`` the max gradient norm (0: none).
    """

    name = "numpy"
    device_line = "cpu (NumPy engine)"

    def __init__(self, model_config: dict, seed: int, terms, optimizer_config, lr: float, clip: float):
        self.model_config = dict(model_config)
        self.model = NumpyUNet(self.model_config, np.random.default_rng(seed))
        self.coefficients, self.uses_map, class_weights, options = terms
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self.loss_options = dict(alpha=options.alpha, gamma=options.gamma, smooth=options.smooth,
                                 include_background=options.include_background)  # fmt: skip
        self.optimizer = build_optimizer(optimizer_config, self.model.params, lr)
        self.clip = clip
        self.num_classes = self.model_config["num_classes"]
        self.num_parameters = sum(p.size for p in self.model.params.values())

    def set_normalization(self, mean, std, class_names) -> None:
        self.model.buffers["input_mean"][...] = np.asarray(mean, np.float64)
        self.model.buffers["input_std"][...] = np.asarray(std, np.float64)
        self.model.class_names = list(class_names)

    def loader(self, dataset, sampler, batch_size: int, workers: int, seed: int) -> EpochBatches:
        return EpochBatches(dataset, sampler, batch_size)

    def _loss(self, logits, target, weights):
        return combined_loss(logits, target, weights if self.uses_map else None, self.class_weights,
                             coefficients=self.coefficients, **self.loss_options)  # fmt: skip

    def train_step(self, batch, lr: float) -> tuple[float, np.ndarray]:
        image, target, weights = batch  # (N, C, H, W) float32, (N, H, W) int64, (N, H, W) float32
        self.optimizer.lr = lr
        logits = self.model.forward(image, training=True)  # (N, K, H, W)
        if not np.isfinite(logits).all():  # the reference loss would refuse them (ValueError): say it as torch does
            raise NonFiniteLoss("loss is nan (the logits are not finite)")
        loss, dlogits = self._loss(logits, target, weights)
        if not np.isfinite(loss):
            raise NonFiniteLoss(f"loss is {float(loss)}")
        grads = self.model.backward(dlogits.astype(self.model.dtype, copy=False))
        if self.clip > 0:
            clip_grad_norm(grads, self.clip)
        self.optimizer.step(grads)
        return float(loss), confusion_counts(target, logits.argmax(1), self.num_classes)

    def evaluate(self, image: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
        c = self.model_config
        height, width = image.shape[-2:]
        (in_h, out_h), (in_w, out_w) = (sizes.covering_input(n, c["depth"], c["padding"]) for n in (height, width))
        margin_h, margin_w = (in_h - out_h) // 2, (in_w - out_w) // 2
        pads = ((0, 0), (0, 0), (margin_h, margin_h + out_h - height), (margin_w, margin_w + out_w - width))
        padded = np.pad(image, pads, mode="symmetric").astype(self.model.dtype, copy=False)
        logits = self.model.forward(padded, training=False)[..., :height, :width]
        loss, _ = self._loss(np.ascontiguousarray(logits), target, weights)
        return float(loss), logits.argmax(1)

    def weights(self) -> dict:
        return _tensors(self.model.to_torch_state_dict())

    def load_weights(self, state: dict) -> None:
        self.model.load_state_dict(_arrays(state))

    def state_dict(self) -> dict:
        return {"optimizer": _tensors(self.optimizer.state_dict()),
                "dropout_rng": self.model.rng.bit_generator.state}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(_arrays(state["optimizer"]))
        self.model.rng.bit_generator.state = state["dropout_rng"]
