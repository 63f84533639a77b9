"""The NumPy reference: every piece of a U-Net written from scratch, forward and backward.

NumPy (and scipy where a well-kept library already does the job) only, never torch: this floor is the ground
truth that the torch modules and the Triton kernels are tested against. One idea per module:

==================  ===========================================================================
``conv``            conv2d (+ ReLU), forward and backward
``init``            he_normal, glorot_uniform
``dropout``         inverted dropout
``pool``            2x2 max-pooling
``upconv``          the 2x2 stride-2 up-convolution (transposed convolution)
``crop``            centre crop and the valid U-Net's crop-and-concatenate skip connection
``norm``            batch normalisation
``attention``       scaled dot-product attention
``losses``          softmax, cross-entropy (weighted), focal, Dice, the combined loss — each with its gradient
``metrics``         confusion counts, IoU, Dice, precision, recall, F1, accuracy, instance F1
``class_weights``   balanced and median-frequency class weights
``weight_map``      the U-Net paper's pixel weight map, exact and fast, and the separation border
``optim``           SGD (momentum, Nesterov), Adam and RMSProp on a dict of arrays, step for step torch's
``schedules``       learning-rate policies as pure functions of the step, and plateau reduction
``unet``            the U-Net's parameter spec (torch's names, shapes, fans) and NumpyUNet, forward and backward
==================  ===========================================================================

Every layer has one calling convention, so a network is a loop over layers: ``y, cache = layer(x, ...)`` and
``grads = layer_backward(dy, cache)``, the cache a dict that names the layer that made it (a backward refuses
another layer's cache).

Bad input raises a one-line ValueError that names what was expected and what came. Which inputs are checked for
NaN and infinity, and which are not, is one policy for every module, written down in ``_checks.py``.
"""

from unet_from_scratch.reference.attention import scaled_dot_product_attention, scaled_dot_product_attention_backward
from unet_from_scratch.reference.class_weights import class_weights, class_weights_from_counts
from unet_from_scratch.reference.conv import (
    conv2d,
    conv2d_backward,
    conv2d_relu,
    conv2d_relu_backward,
    relu,
    relu_backward,
)
from unet_from_scratch.reference.crop import center_crop, center_crop_backward, crop_and_concat, crop_and_concat_backward
from unet_from_scratch.reference.dropout import dropout, dropout_backward
from unet_from_scratch.reference.init import glorot_uniform, he_normal
from unet_from_scratch.reference.losses import (
    bce_with_logits,
    combined_loss,
    cross_entropy,
    dice_loss,
    focal_loss,
    log_softmax,
    sigmoid_focal_loss,
    softmax,
)
from unet_from_scratch.reference.metrics import (
    InstanceScores,
    accuracy,
    confusion,
    dice,
    f1,
    instance_f1,
    iou,
    precision,
    recall,
)
from unet_from_scratch.reference.norm import batch_norm, batch_norm_backward
from unet_from_scratch.reference.pool import max_pool2d, max_pool2d_backward
from unet_from_scratch.reference.upconv import conv_transpose2d, conv_transpose2d_backward
from unet_from_scratch.reference.weight_map import separation_border, unet_weight_map, unet_weight_map_naive

__all__ = [
    "InstanceScores", "accuracy", "batch_norm", "batch_norm_backward", "bce_with_logits", "center_crop",
    "center_crop_backward", "class_weights", "class_weights_from_counts", "combined_loss", "confusion", "conv2d",
    "conv2d_backward", "conv2d_relu", "conv2d_relu_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "crop_and_concat", "crop_and_concat_backward", "cross_entropy", "dice", "dice_loss", "dropout",
    "dropout_backward", "f1", "focal_loss", "glorot_uniform", "he_normal", "instance_f1", "iou", "log_softmax",
    "max_pool2d", "max_pool2d_backward", "precision", "recall", "relu", "relu_backward",
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward", "separation_border",
    "sigmoid_focal_loss", "softmax", "unet_weight_map", "unet_weight_map_naive",
]
