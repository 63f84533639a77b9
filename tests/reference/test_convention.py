"""The one backward convention of the reference layers: ``y, cache = layer(x, ...)``, ``grads = layer_backward(dy,
cache)``; each cache names the layer that made it, and every other layer's backward refuses it in one line.

Each layer's numbers are tested in its own file; this one holds the layers to the shared shape of the calls, which
is what lets the NumPy U-Net be a loop over layers.
"""

import numpy as np
import pytest

from unet_from_scratch.reference import (
    batch_norm,
    batch_norm_backward,
    center_crop,
    center_crop_backward,
    conv2d,
    conv2d_backward,
    conv2d_relu,
    conv2d_relu_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    crop_and_concat,
    crop_and_concat_backward,
    dropout,
    dropout_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    scaled_dot_product_attention,
    scaled_dot_product_attention_backward,
)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 6, 6))

# name -> (forward call, backward, the number of gradients it returns)
LAYERS = {
    "conv2d": (lambda: conv2d(X, RNG.standard_normal((4, 3, 3, 3)), np.zeros(4)), conv2d_backward, 3),
    "conv2d_relu": (lambda: conv2d_relu(X, RNG.standard_normal((4, 3, 3, 3)), np.zeros(4)), conv2d_relu_backward, 3),
    "relu": (lambda: relu(X), relu_backward, 1),
    "max_pool2d": (lambda: max_pool2d(X), max_pool2d_backward, 1),
    "conv_transpose2d": (lambda: conv_transpose2d(X, RNG.standard_normal((3, 2, 2, 2))), conv_transpose2d_backward, 3),
    "center_crop": (lambda: center_crop(X, (4, 4)), center_crop_backward, 1),
    "crop_and_concat": (lambda: crop_and_concat(X, RNG.standard_normal((2, 2, 4, 4))), crop_and_concat_backward, 2),
    "batch_norm": (
        lambda: batch_norm(X, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)),
        batch_norm_backward,
        3,
    ),
    "dropout": (lambda: dropout(X, 0.5, np.random.default_rng(1)), dropout_backward, 1),
    "scaled_dot_product_attention": (
        lambda: scaled_dot_product_attention(X, X, X),
        scaled_dot_product_attention_backward,
        3,
    ),
}


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_returns_y_and_a_cache_its_backward_takes_alone(name):
    forward, backward, count = LAYERS[name]
    y, cache = forward()
    assert isinstance(y, np.ndarray) and isinstance(cache, dict) and cache["layer"] == name
    grads = backward(np.ones_like(y), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert len(grads) == count and all(isinstance(g, np.ndarray) for g in grads)


@pytest.mark.parametrize("name", LAYERS)
def test_every_other_backward_refuses_the_cache_in_one_line(name):
    forward, _, _ = LAYERS[name]
    y, cache = forward()
    for other, (_, backward, _) in LAYERS.items():
        if other == name:
            continue
        with pytest.raises(ValueError, match=f"cache must be the one {other} returned, got the cache of {name}") as e:
            backward(np.ones_like(y), cache)
        assert "\n" not in str(e.value)
