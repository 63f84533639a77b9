# %% [markdown]
# # Lesson 3: dropout
#
# Teaches `unet_from_scratch/reference/dropout.py`. The notes: "when we have more number of weights and biases ->
# that could cause over fitting"; two ways to fight it are regularisation and dropout, whose "key idea is to
# prevent the network from becoming too reliant on any single neuron ... by 'dropping out' random neurons". And:
# "it does not directly reduce the number of trainable parameters; all the weights remain".
#
# The U-Net paper puts "drop-out layers at the end of the contracting path" (Sec. 3.1). This lesson checks what
# dropout does in training and in evaluation, why the kept values are scaled by 1 / (1 - p), what it does to a
# small network that overfits, and that it adds no parameter.
#
# Run: `python lessons/03_dropout.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.reference import dropout, dropout_backward, he_normal

lesson = start("03_dropout", "dropout: training vs evaluation, inverted scaling, overfitting")
rng = np.random.default_rng(0)

# %% [markdown]
# ## Training vs evaluation
#
# In training, `dropout(x, p, rng)` keeps each value with probability 1 - p and multiplies the kept ones by
# 1 / (1 - p); the rest become 0. Like every layer of the reference it returns `(y, cache)`, and the cache holds
# the mask (`cache["mask"]`): the backward, `dropout_backward(dy, cache)`, needs to know which values were kept. In
# evaluation (`training=False`) it is the identity: the whole network is used, every time, deterministically.

# %%
section("training vs evaluation")
x = np.ones((1000, 1000))
p = 0.5
y, cache = dropout(x, p, rng)
mask = cache["mask"]
print(f"  p = {p}: kept {mask.mean():.4f} of the values, each now {y[mask][0]:.1f}; mean of y = {y.mean():.4f}")
check_close("about 1 - p of the values are kept", mask.mean(), 1 - p, atol=0.005)
check("the kept values are scaled by 1 / (1 - p), the dropped ones are 0",
      np.all(y[mask] == 1 / (1 - p)) and np.all(y[~mask] == 0))
y_eval, cache_eval = dropout(x, p, rng, training=False)
check("in evaluation dropout is the identity", np.array_equal(y_eval, x) and cache_eval["mask"].all())
dy = rng.standard_normal(x.shape)
dx = dropout_backward(dy, cache)
check("the gradient flows only through the kept values, with the same scale",
      np.array_equal(dx, dy * mask / (1 - p)))

# %% [markdown]
# ## Why inverted scaling keeps the expectation
#
# A kept value is x / (1 - p) with probability 1 - p and 0 otherwise, so its expectation is
# (1 - p) * x / (1 - p) = x: on average the next layer sees the same input in training as in evaluation. Without
# the scaling (the original formulation of Srivastava et al. 2014) training would see (1 - p) * x on average and
# the weights would have to be multiplied by 1 - p for evaluation; inverted dropout moves that factor into
# training, so evaluation needs nothing. We check the expectation for several p: the mean of a million dropped
# values lies within 4 standard errors of 1, the standard error being sqrt(p / (1 - p) / n).

# %%
section("inverted scaling keeps the expectation")
ps = [0.1, 0.3, 0.5, 0.8]
means = []
for p in ps:
    y, _ = dropout(np.ones(1_000_000), p, rng)
    se = np.sqrt(p / (1 - p) / y.size)
    means.append(y.mean())
    print(f"  p = {p}: E[y] = {y.mean():.4f} (standard error {se:.4f}); without the scaling it would be {1 - p:.1f}")
    check(f"p = {p}: the mean is 1 within 4 standard errors", abs(y.mean() - 1) < 4 * se)

# %% [markdown]
# ## What dropout does to a small network that overfits
#
# Sixteen noisy samples of sin(3x) and a network with two hidden layers of 128 ReLU units (16,897 parameters:
# far more than 16 points need). Without dropout it learns the noise: the training error drops below the noise
# level while the error on new points (against the true curve) stays high or grows. With dropout p = 0.5 after
# each hidden layer, every step trains a different random sub-network, no unit can rely on a particular partner,
# and the fit is smoother: the training error is higher, and the gap between training and validation error is
# smaller. The layers are written out here (a matrix product and a ReLU each); dropout is the package's.

# %%
section("an overfitting network with and without dropout")
steps = 500 if lesson.fast else 1500


def train(p: float, steps: int, seed: int = 0, hidden: int = 128, n_train: int = 16):
    """Full-batch Adam on 1 -> hidden -> hidden -> 1; returns the error curves, the fit and the parameter count."""
    data = np.random.default_rng(seed)
    x_train = data.uniform(-1, 1, (n_train, 1))
    y_train = np.sin(3 * x_train) + 0.3 * data.standard_normal((n_train, 1))  # noise std 0.3: MSE floor 0.09
    x_val = data.uniform(-1, 1, (200, 1))
    y_val = np.sin(3 * x_val)  # the true curve: how well did the network learn it?
    weights = [he_normal(s, data, dtype=np.float64) for s in [(hidden, 1), (hidden, hidden), (1, hidden)]]
    biases = [np.zeros(hidden), np.zeros(hidden), np.zeros(1)]
    params = weights + biases
    moment1 = [np.zeros_like(q) for q in params]
    moment2 = [np.zeros_like(q) for q in params]
    drop_rng = np.random.default_rng(seed + 1)

    def forward(x, training):
        h1 = np.maximum(x @ weights[0].T + biases[0], 0)  # (n, hidden)
        d1, c1 = dropout(h1, p, drop_rng, training)
        h2 = np.maximum(d1 @ weights[1].T + biases[1], 0)  # (n, hidden)
        d2, c2 = dropout(h2, p, drop_rng, training)
        return d2 @ weights[2].T + biases[2], (x, h1, d1, c1, h2, d2, c2)  # (n, 1)

    curves = []
    for step in range(steps):
        out, (x, h1, d1, c1, h2, d2, c2) = forward(x_train, True)
        dout = 2 * (out - y_train) / n_train  # d MSE / d out
        dh2 = dropout_backward(dout @ weights[2], c2) * (h2 > 0)
        dh1 = dropout_backward(dh2 @ weights[1], c1) * (h1 > 0)
        grads = [dout.T @ d2, dh2.T @ d1, dh1.T @ x]
        grads = [grads[2], grads[1], grads[0], dh1.sum(0), dh2.sum(0), dout.sum(0)]
        for q, g, a, b in zip(params, grads, moment1, moment2):  # Adam, lr 5e-3
            a *= 0.9
            a += 0.1 * g
            b *= 0.999
            b += 0.001 * g * g
            q -= 5e-3 * (a / (1 - 0.9 ** (step + 1))) / (np.sqrt(b / (1 - 0.999 ** (step + 1))) + 1e-8)
        if step % 10 == 0 or step == steps - 1:
            train_mse = np.mean((forward(x_train, False)[0] - y_train) ** 2)
            val_mse = np.mean((forward(x_val, False)[0] - y_val) ** 2)
            curves.append((step, train_mse, val_mse))
    grid = np.linspace(-1, 1, 200)[:, None]
    n_params = sum(q.size for q in params)
    return np.array(curves), (x_train, y_train, grid, forward(grid, False)[0]), n_params


runs = {p: train(p, steps) for p in (0.0, 0.5)}
for p, (curves, _, n_params) in runs.items():
    print(f"  p = {p}: {n_params:,} parameters; after {steps} steps train MSE {curves[-1, 1]:.3f}, "
          f"validation MSE {curves[-1, 2]:.3f}, gap {curves[-1, 2] - curves[-1, 1]:.3f}")
plain, dropped = runs[0.0][0][-1], runs[0.5][0][-1]
check("without dropout the network fits the noise: train MSE below the noise floor 0.09", plain[1] < 0.09)
check("dropout fits the training points less closely", dropped[1] > plain[1])
check("dropout shrinks the gap between validation and training error",
      dropped[2] - dropped[1] < plain[2] - plain[1])
if not lesson.fast:
    check("after 1500 steps dropout also gives the lower validation error", dropped[2] < plain[2])
check("dropout leaves the parameter count unchanged (16,897 both ways)",
      runs[0.0][2] == runs[0.5][2] == 16_897)

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for p, (curves, (x_train, y_train, grid, fit), _) in runs.items():
    label = "no dropout" if p == 0 else f"dropout p = {p}"
    color = "C3" if p == 0 else "C0"
    axes[0].semilogy(curves[:, 0], curves[:, 1], color=color, ls="--", label=f"{label}: train")
    axes[0].semilogy(curves[:, 0], curves[:, 2], color=color, label=f"{label}: validation")
    axes[1].plot(grid, fit, color=color, label=label)
axes[0].axhline(0.09, color="gray", lw=0.8, ls=":")
axes[0].text(0, 0.095, "noise variance 0.09: the train MSE of a perfect fit of the true curve", fontsize=7,
             color="gray")
axes[0].set_xlabel("step")
axes[0].set_ylabel("mean squared error")
axes[0].legend(fontsize=8)
axes[0].set_title("train vs validation error")
axes[1].plot(grid, np.sin(3 * grid), color="gray", lw=3, alpha=0.4, label="true curve sin(3x)")
axes[1].scatter(x_train, y_train, color="k", s=15, zorder=3, label="16 noisy training points")
axes[1].legend(fontsize=8)
axes[1].set_title("what the networks learned")
lesson.save(fig)

# %% [markdown]
# ## The parameter count, in the U-Net itself
#
# Dropout has no weights: `UNet(dropout=0.5)` has exactly the parameters of `UNet()` (the torch model places
# the dropout after the deepest encoder level and the bottleneck). A narrow U-Net keeps this quick; lesson 5
# counts the paper's 31,030,658.

# %%
section("dropout in the U-Net adds no parameter")
from unet_from_scratch.nn import UNet  # noqa: E402  (torch is only needed from here on)

counts = {p: sum(t.numel() for t in UNet(base_channels=8, dropout=p).parameters()) for p in (0.0, 0.5)}
print(f"  UNet(base_channels=8): {counts[0.0]:,} parameters without dropout, {counts[0.5]:,} with p = 0.5")
check("UNet(dropout=0.5) has the parameters of UNet()", counts[0.0] == counts[0.5])
check("... and does contain dropout layers",
      sum(type(m).__name__ == "Dropout" for m in UNet(base_channels=8, dropout=0.5).modules()) == 2)
print("\nlesson 03 done: every check passed")
