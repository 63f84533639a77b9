# %% [markdown]
# # Lesson 11: optimizers, SGD, momentum, Adam and RMSProp
#
# Teaches `unet_from_scratch/reference/optim.py` (`SGD`, `Adam`, `RMSProp`). The notes list four optimizers that
# "adjust model parameters to minimize loss function":
#
# 1. **SGD**: "simple but potentially slow", it "moves parameters in negative gradient direction".
# 2. **Momentum**: "adds momentum term", "speeds up convergence".
# 3. **Adam**: "combines Momentum and RMSProp", "adapts learning rates based on recent gradients", "uses first and
#    second moments of gradients"; "b1 and b2 (Adam specific): decay rates for gradient moments".
# 4. **RMSProp**: "adjusts learning rate based on recent gradient magnitudes".
#
# And on the U-Net paper: "A high momentum term of 0.99 is used in SGD ... It does this by incorporating a fraction
# of the update from the previous step to the current step. A high momentum means that updates are heavily
# influenced by past gradients." The paper (Sec. 3): "a high momentum (0.99) such that a large number of the
# previously seen training samples determine the update in the current optimization step".
#
# This lesson runs the package's optimizers on two 2-D loss surfaces, where a trajectory can be drawn: an
# ill-conditioned quadratic bowl and the Rosenbrock valley. It counts how many past gradients the paper's 0.99
# averages, shows what Adam's bias correction corrects, and checks the NumPy optimizers against `torch.optim`
# step for step. The notes' statements hold; "speeds up convergence" needs a qualifier (a momentum too high for
# the problem slows it down), given where it comes up.
#
# Run: `python lessons/11_optim.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
from _lesson import check, check_close, section, start

from unet_from_scratch.reference.optim import SGD, Adam, RMSProp

lesson = start("11_optim", "SGD, momentum (the paper's 0.99), Adam's bias correction, RMSProp; NumPy = torch.optim")

# %% [markdown]
# ## Two loss surfaces
#
# The quadratic f(x, y) = (x² + 50 y²) / 2 is a bowl 50 times steeper along y than along x (its Hessian has the
# eigenvalues 1 and 50: condition number 50), like the loss of a network whose weights matter very unequally. The
# Rosenbrock function f(x, y) = (1 - x)² + 100 (y - x²)² is a curved, narrow valley with its minimum 0 at (1, 1):
# finding the valley is easy, following it is slow. Both gradients are written out; the optimizers see only them.
# Each optimizer takes a dict of named arrays, here one array `xy` of the two coordinates, and updates it in place.

# %%
CURVATURE = np.array([1.0, 50.0])


def quadratic(p):
    """(x² + 50 y²) / 2 and its gradient (x, 50 y)."""
    return 0.5 * np.sum(CURVATURE * p * p), CURVATURE * p


def rosenbrock(p):
    """(1 - x)² + 100 (y - x²)² and its gradient."""
    x, y = p
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2, np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def descend(make, surface, start_xy, steps):
    """Run the optimizer ``make(params)`` for ``steps`` steps; the path (steps + 1, 2) and the losses (steps + 1)."""
    params = {"xy": np.array(start_xy, dtype=np.float64)}
    optimizer = make(params)
    path, losses = [params["xy"].copy()], [surface(params["xy"])[0]]
    for _ in range(steps):
        optimizer.step({"xy": surface(params["xy"])[1]})
        path.append(params["xy"].copy())
        losses.append(surface(params["xy"])[0])
    return np.array(path), np.array(losses)


def steps_to(losses, level):
    """The first step at which the loss is below ``level`` (None: never)."""
    below = np.flatnonzero(losses < level)
    return int(below[0]) if below.size else None


# %% [markdown]
# ## SGD: the steep direction caps the learning rate, the flat one then crawls
#
# SGD "moves parameters in negative gradient direction": θ ← θ - lr·g. On the quadratic each coordinate shrinks by
# the factor 1 - lr·λ per step (λ = 1 along x, 50 along y). Along y that factor must stay above -1, so lr < 2/50 =
# 0.04, or y oscillates ever wider and the run diverges. At lr = 0.03 y zigzags (factor -0.5) but settles fast,
# while x shrinks by only 0.97 per step: "simple but potentially slow". The flat direction sets the time, the steep
# one the largest rate.

# %%
section("SGD on the ill-conditioned quadratic")
START_Q, LR_Q, STEPS_Q = (-4.0, 1.0), 0.03, 300
LEVEL = 1e-4
sgd_path, sgd_loss = descend(lambda p: SGD(p, LR_Q), quadratic, START_Q, STEPS_Q)
_, too_fast = descend(lambda p: SGD(p, 0.041), quadratic, START_Q, STEPS_Q)
print(f"  lr {LR_Q}: loss {sgd_loss[0]:.1f} -> {sgd_loss[-1]:.2e} in {STEPS_Q} steps; "
      f"below {LEVEL:g} at step {steps_to(sgd_loss, LEVEL)}")
print(f"  lr 0.041 (> 2/50): loss {too_fast[0]:.1f} -> {too_fast[-1]:.2e}")
check("SGD diverges above lr = 2 / (largest curvature) = 0.04", too_fast[-1] > too_fast[0])
check("at lr 0.03 the steep coordinate zigzags: y changes sign on every one of the first 5 steps",
      np.all(np.sign(sgd_path[:6, 1]) == [1, -1, 1, -1, 1, -1]))
check_close("... and the flat coordinate shrinks by 1 - lr = 0.97 per step", sgd_path[1, 0] / sgd_path[0, 0], 0.97)

# %% [markdown]
# ## Momentum, and how many past gradients the paper's 0.99 averages
#
# Momentum keeps a running sum of gradients, b ← μ·b + g, and steps θ ← θ - lr·b (torch's form, the package's).
# So the step is lr·b_t = μ·(lr·b_{t-1}) + lr·g_t: exactly the notes' "a fraction of the update from the previous
# step" carried into the current one, plus the new gradient. Unrolled, b_t = g_t + μ g_{t-1} + μ² g_{t-2} + ...:
# a gradient k steps back still counts with the weight μ^k. For μ = 0.99:
#
# - the weights sum to 1 / (1 - μ) = **100**: the effective window, the number of past gradients the step holds;
#   under a constant gradient the step grows to 100x lr·g (the "terminal velocity");
# - the gradient 100 steps back still has the weight 0.99^100 = 0.366 (about 1/e), a weight halves only after
#   ln 2 / -ln 0.99 = 69 steps, and the last 100 gradients carry 1 - 0.99^100 = 63% of the total weight.
#
# For μ = 0.9 the window is 10 steps. With one image per batch, as the paper trains, a single gradient is noisy;
# averaging about 100 of them is what "a large number of the previously seen training samples determine the
# update" means. We measure the weights with the package's `SGD` itself: one unit gradient, then zeros (an
# impulse); the step k later is lr·μ^k.

# %%
section("momentum: the weight of a gradient k steps back")
MU = 0.99
impulse = {"w": np.zeros(1)}
optimizer = SGD(impulse, lr=1.0, momentum=MU)
positions = [0.0]
for k in range(500):
    optimizer.step({"w": np.ones(1) if k == 0 else np.zeros(1)})
    positions.append(-impulse["w"][0])
weights = np.diff(positions)  # weights[k]: how much the gradient of step 1 moves step k + 1
k = np.arange(weights.size)
print(f"  the weight of a gradient k steps back: k = 0: {weights[0]:.3f}, 10: {weights[10]:.3f}, "
      f"69: {weights[69]:.3f}, 100: {weights[100]:.3f}, 300: {weights[300]:.3f}")
check("the measured weights are mu^k (k = 0 .. 499)", np.allclose(weights, MU**k, rtol=1e-12, atol=0))
check_close("the gradient 100 steps back still has the weight 0.99^100 = 0.366", weights[100], 0.366, atol=5e-4)
check("a weight halves after ln 2 / -ln 0.99 = 69 steps", weights[68] > 0.5 > weights[69])
check_close("the last 100 gradients carry 1 - 0.99^100 = 63.4% of all the weight", 1 - MU**100, 0.634, atol=5e-4)
check_close("effective window: the weights sum to 1 / (1 - mu) = 100 steps", 1 / (1 - MU), 100, rtol=1e-12)

constant = {"w": np.zeros(1)}
optimizer, before, moves = SGD(constant, lr=1.0, momentum=MU), 0.0, []
for t in range(1, 2001):
    optimizer.step({"w": np.ones(1)})
    moves.append(before - constant["w"][0])
    before = constant["w"][0]
moves = np.array(moves)
for t in (1, 10, 100, 2000):
    print(f"  constant gradient 1, lr 1: step {t:4d} moves {moves[t - 1]:7.3f}  (= (1 - 0.99^t) / (1 - 0.99))")
check("under a constant gradient step t moves (1 - mu^t) / (1 - mu) (t = 1 .. 2000)",
      np.allclose(moves, (1 - MU ** np.arange(1, 2001)) / (1 - MU), rtol=1e-9, atol=0))
check("... which approaches the window 1 / (1 - mu) = 100 x lr·g", 99.99 < moves[-1] < 100)

rng = np.random.default_rng(0)
noisy = {"w": np.zeros(3)}
optimizer, previous, ok = SGD(noisy, lr=0.1, momentum=MU), np.zeros(3), True
for t in range(20):
    g, before = rng.standard_normal(3), noisy["w"].copy()
    optimizer.step({"w": g})
    update = before - noisy["w"]
    ok &= np.allclose(update, MU * previous + 0.1 * g, rtol=1e-12, atol=1e-15)
    previous = update
check("the notes' description: each update = 0.99 x the previous update + lr·g (20 random gradients)", ok)

# %% [markdown]
# ### Momentum on the bowl: faster, if μ fits the problem
#
# At the same lr = 0.03, μ = 0.9 lets x gather speed along the flat direction while the zigzags along y largely
# cancel in the sum: it reaches the loss 1e-4 in fewer than half of SGD's steps, "speeds up convergence". The
# paper's μ = 0.99 is another matter on this clean 2-D bowl: with a window of 100 steps the iterate overshoots and
# circles the minimum for hundreds of steps (each cycle shrinks only by sqrt(0.99) per step), and after 300 steps
# it is far behind plain SGD. High momentum pays when gradients are noisy, as with the paper's one-image batches;
# on an exact gradient it is too much.

# %%
section("momentum vs SGD on the quadratic, same lr")
runs_q = {
    "SGD": descend(lambda p: SGD(p, LR_Q), quadratic, START_Q, STEPS_Q),
    "momentum 0.9": descend(lambda p: SGD(p, LR_Q, momentum=0.9), quadratic, START_Q, STEPS_Q),
    "momentum 0.99": descend(lambda p: SGD(p, LR_Q, momentum=0.99), quadratic, START_Q, STEPS_Q),
    "Adam": descend(lambda p: Adam(p, 0.1), quadratic, START_Q, STEPS_Q),
    "RMSProp": descend(lambda p: RMSProp(p, 0.01), quadratic, START_Q, STEPS_Q),
}
for name, (_, losses) in runs_q.items():
    print(f"  {name:14s} loss after {STEPS_Q} steps {losses[-1]:.2e}; "
          f"below {LEVEL:g} at step {steps_to(losses, LEVEL)}")
n_sgd, n_momentum = steps_to(runs_q["SGD"][1], LEVEL), steps_to(runs_q["momentum 0.9"][1], LEVEL)
check(f"momentum 0.9 reaches the loss {LEVEL:g} in fewer than half of SGD's steps at the same lr "
      f"({n_momentum} vs {n_sgd})", n_momentum is not None and n_sgd is not None and 2 * n_momentum < n_sgd)
check("momentum 0.99 on this exact gradient is still far from the minimum after 300 steps, SGD is not "
      f"({runs_q['momentum 0.99'][1][-1]:.2g} vs {runs_q['SGD'][1][-1]:.2g})",
      runs_q["momentum 0.99"][1][-1] > 1e3 * runs_q["SGD"][1][-1])

# %% [markdown]
# ## Adam: the two moments, b1 and b2, and the bias correction
#
# Adam keeps two moving averages of the gradient (the notes' "first and second moments"), with the "decay rates"
# b1 and b2: m ← b1·m + (1 - b1)·g, the momentum of the gradient (window 1 / (1 - b1) = 10 steps for b1 = 0.9),
# and v ← b2·v + (1 - b2)·g², the RMSProp part, the mean square (window 1000 steps for b2 = 0.999). The step is
# lr·m̂ / (sqrt(v̂) + ε) with the bias-corrected m̂ = m / (1 - b1^t) and v̂ = v / (1 - b2^t).
#
# Both averages start at 0, so early on they are biased towards 0: after the first step m = (1 - b1)·g = 0.1·g,
# **10x too small** for b1 = 0.9, and v = 0.001·g², whose square root is 31.6x too small. Dividing by 1 - b1^t and
# 1 - b2^t removes exactly that: m̂_1 = g, v̂_1 = g², and the first step is lr·g / |g| = **lr per coordinate**,
# whatever the size of the gradient ("adapts learning rates"). Correcting v but not m would make the first steps
# 10x too small; leaving out both makes them too *large*, 0.1 / sqrt(0.001) = 3.16x at step 1 and up to 6.6x around
# step 12, the "initial steps that are much larger" of Kingma & Ba's Sec. 3 for b2 close to 1; the factor returns
# within 1% of 1 only after about 3,900 steps.

# %%
section("Adam's first step and its bias correction")
b1, b2, lr = 0.9, 0.999, 0.1
point = {"xy": np.array(START_Q)}
g1 = quadratic(point["xy"])[1]
Adam(point, lr).step({"xy": g1})
first = np.array(START_Q) - point["xy"]
print(f"  gradient at the start {g1}, 12.5x apart; Adam's first step {first} (lr = {lr})")
check("Adam's first step is lr per coordinate, though the gradients differ 12.5x",
      np.allclose(np.abs(first), lr, rtol=1e-8, atol=0))
m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
only_v = lr * m1 / (np.sqrt(v1 / (1 - b2)) + 1e-8)  # v corrected, m not
neither = lr * m1 / (np.sqrt(v1) + 1e-8)  # no correction at all
print(f"  step 1 without correcting m: {np.abs(only_v)}; without any correction: {np.abs(neither)}")
check_close("without its correction m_1 = 0.1 g: the first step is 10x too small", np.abs(only_v / first)[0], 0.1,
            rtol=1e-6)
check_close("without both corrections the first step is 0.1 / sqrt(0.001) = 3.16x too large",
            np.abs(neither / first)[0], 0.1 / np.sqrt(0.001), rtol=1e-6)

t = np.arange(1, 10_001)
factor = (1 - b1**t) / np.sqrt(1 - b2**t)  # the uncorrected step / the corrected one, for a constant gradient
print(f"  uncorrected / corrected step: {factor[0]:.2f} at step 1, {factor.max():.2f} at step {t[factor.argmax()]}, "
      f"{factor[999]:.2f} at step 1000; within 1% of 1 from step {t[np.argmax(factor < 1.01)]}")
check("without correction the steps are up to 6.6x too large, at step 12",
      round(factor.max(), 1) == 6.6 and t[factor.argmax()] == 12)
check("... and within 1% of the corrected ones only after about 3,900 steps", 3800 < t[np.argmax(factor < 1.01)] < 4000)

scaled = {"xy": np.array(START_Q)}
plain = {"xy": np.array(START_Q)}
opt_scaled, opt_plain = Adam(scaled, lr), Adam(plain, lr)
for _ in range(50):
    opt_scaled.step({"xy": 1000 * quadratic(scaled["xy"])[1]})
    opt_plain.step({"xy": quadratic(plain["xy"])[1]})
check("Adam's path on 1000 x the loss is its path on the loss (50 steps, to 1e-6): it sees only g / sqrt(v)",
      np.allclose(scaled["xy"], plain["xy"], atol=1e-6, rtol=0))

# %% [markdown]
# ## RMSProp: the mean square without the correction
#
# RMSProp "adjusts learning rate based on recent gradient magnitudes": s ← α·s + (1 - α)·g² and θ ← θ - lr·g /
# (sqrt(s) + ε), Adam with b1 = 0 and no bias correction. torch's RMSprop (and the package's) starts s at 0 without
# correcting it, so with α = 0.99 the first step is lr·g / sqrt(0.01·g²) = **10x lr** per coordinate, 1 /
# sqrt(1 - α), which then shrinks as s fills up: RMSProp wants a smaller lr than Adam for the same first steps.

# %%
section("RMSProp's first step")
point = {"xy": np.array(START_Q)}
RMSProp(point, 0.01, alpha=0.99).step({"xy": g1})
first_rms = np.array(START_Q) - point["xy"]
print(f"  RMSProp, lr 0.01, alpha 0.99: first step {first_rms}")
check("RMSProp's first step is lr / sqrt(1 - alpha) = 10 x lr per coordinate",
      np.allclose(np.abs(first_rms), 0.1, rtol=1e-6, atol=0))

# %% [markdown]
# ## The Rosenbrock valley
#
# From (-1.5, 2) all four first fall into the valley; then they must follow its bend to (1, 1). The steep walls
# (curvature up to about 1000 at the minimum) cap SGD's rate near 2 / 1000, and at lr = 1e-3 SGD crawls along the
# floor. Momentum at the same rate builds up speed along the floor; Adam's per-coordinate scaling does the same
# for a larger lr. We assert what does not depend on the details: every optimizer lowers the loss over 10x, SGD
# is still more than 0.5 away from (1, 1) after 2000 steps, momentum and Adam are within 0.01.

# %%
section("the Rosenbrock valley")
START_R, STEPS_R = (-1.5, 2.0), 2000
runs_r = {
    "SGD": descend(lambda p: SGD(p, 1e-3), rosenbrock, START_R, STEPS_R),
    "momentum 0.9": descend(lambda p: SGD(p, 1e-3, momentum=0.9), rosenbrock, START_R, STEPS_R),
    "Adam": descend(lambda p: Adam(p, 0.05), rosenbrock, START_R, STEPS_R),
    "RMSProp": descend(lambda p: RMSProp(p, 0.005), rosenbrock, START_R, STEPS_R),
}
distance = {}
for name, (path, losses) in runs_r.items():
    distance[name] = float(np.linalg.norm(path[-1] - 1))
    print(f"  {name:13s} loss {losses[0]:.1f} -> {losses[-1]:.2e}, ends at ({path[-1, 0]:.4f}, {path[-1, 1]:.4f}), "
          f"{distance[name]:.2e} from (1, 1)")
check("every optimizer lowers the loss over 10x", all(l[-1] < l[0] / 10 for _, l in runs_r.values()))
check("SGD at lr 1e-3 is still more than 0.5 from (1, 1) after 2000 steps", distance["SGD"] > 0.5)
check("momentum at the same lr and Adam end within 0.01 of (1, 1)",
      distance["momentum 0.9"] < 0.01 and distance["Adam"] < 0.01)

# %%
grid = 120 if lesson.fast else 300
colors = {"SGD": "C3", "momentum 0.9": "C0", "momentum 0.99": "C9", "Adam": "C2", "RMSProp": "C1"}
fig, axes = plt.subplots(2, 2, figsize=(12, 9))
xs, ys = np.meshgrid(np.linspace(-4.5, 4.5, grid), np.linspace(-1.6, 1.6, grid))
axes[0, 0].contour(xs, ys, 0.5 * (xs**2 + 50 * ys**2), levels=np.geomspace(1e-2, 80, 14), colors="gray",
                   linewidths=0.5)
for name, (path, _) in runs_q.items():
    faint = name == "momentum 0.99"
    axes[0, 0].plot(path[:80, 0], path[:80, 1], ".-", ms=2, lw=0.5 if faint else 1, alpha=0.4 if faint else 1,
                    color=colors[name], label=name, zorder=1 if faint else 2)
axes[0, 0].set(title="(x² + 50y²)/2, first 80 steps (SGD, momentum: lr 0.03)", xlabel="x", ylabel="y")
axes[0, 0].legend(fontsize=7)
xs, ys = np.meshgrid(np.linspace(-2, 2, grid), np.linspace(-1, 3, grid))
axes[0, 1].contour(xs, ys, (1 - xs) ** 2 + 100 * (ys - xs**2) ** 2, levels=np.geomspace(0.1, 2000, 15),
                   colors="gray", linewidths=0.5)
for name, (path, _) in runs_r.items():
    axes[0, 1].plot(path[:, 0], path[:, 1], lw=2.5 if name == "SGD" else 1, ls=":" if name == "RMSProp" else "-",
                    color=colors[name], label=f"{name}: ends {distance[name]:.0e} from (1, 1)",
                    zorder=1 if name == "SGD" else 2)
axes[0, 1].plot(1, 1, "k*", ms=10)
axes[0, 1].set(title="Rosenbrock, 2000 steps", xlabel="x", ylabel="y")
axes[0, 1].legend(fontsize=7)
for name, (_, losses) in runs_q.items():
    axes[1, 0].semilogy(losses, color=colors[name], label=f"quadratic: {name}")
for name, (_, losses) in runs_r.items():
    axes[1, 0].semilogy(losses, color=colors[name], ls="--", lw=0.8)
axes[1, 0].axhline(LEVEL, color="gray", lw=0.6, ls=":")
axes[1, 0].set(title="loss per step (dashed: Rosenbrock)", xlabel="step", ylabel="loss", ylim=(1e-16, 1e3))
axes[1, 0].legend(fontsize=7)
ks = np.arange(300)
axes[1, 1].plot(ks, 0.99**ks, color="C9", label="momentum 0.99: weight 0.99^k (window 100)")
axes[1, 1].plot(ks, 0.9**ks, color="C0", label="momentum 0.9: weight 0.9^k (window 10)")
axes[1, 1].set(title="momentum: the weight of a gradient k steps back", xlabel="k steps back", ylabel="weight")
axes[1, 1].legend(fontsize=7, loc="upper center")
inset = axes[1, 1].inset_axes([0.45, 0.3, 0.52, 0.4])
inset.semilogx(t, factor, color="C2")
inset.axhline(1, color="gray", lw=0.6, ls=":")
inset.set_title("Adam without bias correction: step / corrected step", fontsize=7)
inset.set_xlabel("step t", fontsize=7)
inset.tick_params(labelsize=6)
lesson.save(fig)

# %% [markdown]
# ## The package's optimizers equal torch.optim, step for step
#
# The NumPy `SGD`, `Adam` and `RMSProp` are written to be torch's `SGD`, `Adam` and `RMSprop` with the same
# settings. Here both run 20 steps on the Rosenbrock function from (-1.5, 2), each from its own gradients (NumPy:
# the formula above; torch: autograd), with the parameters as two named arrays `x` and `y` (torch: two
# parameters), in float64. The relative difference per step is the largest |θ_numpy - θ_torch| over the largest
# |θ_torch|; over all 20 steps it stays below 1e-10 for each optimizer.

# %%
section("NumPy optimizers = torch.optim, float64, 20 steps")
import torch  # noqa: E402  (torch is only needed from here on)

SETTINGS = [
    ("SGD", SGD, torch.optim.SGD, {"lr": 1e-3}, {"lr": 1e-3}),
    ("SGD, momentum 0.99", SGD, torch.optim.SGD, {"lr": 1e-3, "momentum": 0.99}, {"lr": 1e-3, "momentum": 0.99}),
    ("SGD, Nesterov 0.9, weight decay", SGD, torch.optim.SGD,
     {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
     {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", Adam, torch.optim.Adam, {"lr": 0.05, "b1": 0.9, "b2": 0.999}, {"lr": 0.05, "betas": (0.9, 0.999)}),
    ("Adam, weight decay", Adam, torch.optim.Adam, {"lr": 0.05, "weight_decay": 0.1},
     {"lr": 0.05, "weight_decay": 0.1}),
    ("RMSProp", RMSProp, torch.optim.RMSprop, {"lr": 0.005, "alpha": 0.99}, {"lr": 0.005, "alpha": 0.99}),
    ("RMSProp, momentum 0.9", RMSProp, torch.optim.RMSprop, {"lr": 0.005, "momentum": 0.9},
     {"lr": 0.005, "momentum": 0.9}),
]  # fmt: skip
for label, ours, theirs, our_kwargs, their_kwargs in SETTINGS:
    params = {"x": np.array([START_R[0]]), "y": np.array([START_R[1]])}
    tensors = {n: torch.tensor(a, dtype=torch.float64, requires_grad=True) for n, a in params.items()}
    mine, reference = ours(params, **our_kwargs), theirs(list(tensors.values()), **their_kwargs)
    worst = 0.0
    for _ in range(20):
        _, g = rosenbrock(np.concatenate([params["x"], params["y"]]))
        mine.step({"x": g[:1], "y": g[1:]})
        reference.zero_grad()
        ((1 - tensors["x"]) ** 2 + 100 * (tensors["y"] - tensors["x"] ** 2) ** 2).sum().backward()
        reference.step()
        got = np.concatenate([params["x"], params["y"]])
        want = torch.cat([tensors["x"], tensors["y"]]).detach().numpy()
        worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    check(f"{label:32s} = torch.optim.{theirs.__name__}: max relative difference over 20 steps < 1e-10",
          worst < 1e-10, f"{worst:.1e}")
print("\nlesson 11 done: every check passed")
