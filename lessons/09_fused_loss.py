# %% [markdown]
# # Lesson 9: fusing the loss in Triton
#
# Teaches `kernels/fused_loss.py` (importable as `unet_from_scratch.kernels.fused_loss`). Lesson 7's combined
# loss, 0.4·Dice + 0.4·focal + 0.2·weighted CE, written as a composition of torch ops, runs one kernel per op:
# log-softmax, exp, gather, one-hot, products, sums, and as many again for the backward. Each reads whole
# (N, C, H, W) tensors from memory and writes new ones. The loss is cheap arithmetic; what costs is moving those
# bytes. The fused kernel computes the same loss in two passes over the logits, keeping the softmax of every
# pixel in registers.
#
# This lesson reads the kernel's core line by line, counts the bytes that each version moves, and runs the kernel
# on the CPU through Triton's interpreter (`TRITON_INTERPRET=1`, set below before the kernels are imported) to
# check it against the NumPy reference. Triton is Linux-only: where it is not installed (macOS, Windows) the
# lesson says so and skips the part that runs the kernel; the rest runs anywhere.
#
# Run: `python lessons/09_fused_loss.py [--out DIR] [--fast]`.

# %%
import ast
import os
from collections import Counter
from pathlib import Path

import torch

if not torch.cuda.is_available():
    # Triton reads this when a kernel is defined, i.e. when the kernel module is imported: it must come first.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import unet_from_scratch.kernels as kernels  # noqa: E402
from unet_from_scratch.nn import combined_loss_torch  # noqa: E402
from unet_from_scratch.reference import combined_loss, unet_weight_map  # noqa: E402
from unet_from_scratch.data import SyntheticCells  # noqa: E402

lesson = start("09_fused_loss", "the fused segmentation loss in Triton")
KERNEL_FILE = Path(kernels.__file__).with_name("fused_loss.py")

# %% [markdown]
# ## The contract: the NumPy reference and the torch composition agree
#
# The semantics are fixed by `reference.losses.combined_loss` (NumPy, forward and analytic backward).
# `nn.losses.combined_loss_torch` states the same loss in torch ops, with autograd for the backward: the
# fallback off the GPU, and the eager baseline the kernel is measured against. An awkward shape on purpose:
# 13x13 is no multiple of any tile, 3 classes are padded to 4 inside the kernel.

# %%
section("reference vs torch composition")
n, c, side = 2, 3, 13
rng = np.random.default_rng(0)
logits_np = rng.standard_normal((n, c, side, side)) * 2  # float64
target_np = rng.integers(0, c, (n, side, side))
cells = [SyntheticCells(1, size=side, seed=s)[0][1] for s in range(n)]  # instance labels of tiny synthetic images
pixel_weights_np = np.stack([unet_weight_map(lab, class_weights=None) for lab in cells])  # the paper's weight map
class_weights_np = np.array([0.5, 1.0, 2.0])
ref_loss, ref_grad = combined_loss(logits_np, target_np, pixel_weights_np, class_weights_np)

z64 = torch.tensor(logits_np, requires_grad=True)
torch_loss = combined_loss_torch(z64, torch.tensor(target_np), torch.tensor(pixel_weights_np),
                                 torch.tensor(class_weights_np))
torch_loss.backward()
print(f"  reference {ref_loss:.10f}   torch {torch_loss.item():.10f}")
check_close("torch composition = NumPy reference (float64)", torch_loss.item(), ref_loss, rtol=1e-12)
check("... and so are the gradients", np.allclose(z64.grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14))

# %% [markdown]
# ## The kernel's core, line by line
#
# A program holds a tile of [BLOCK_C, BLOCK_P]: all the classes of BLOCK_P neighbouring pixels, loaded once.
# `_softmax_tile` is the per-pixel softmax everything else is built from:
#
# - `z_max = tl.max(z, axis=0)`: the largest logit of each pixel (over the class axis), so that every
#   exponent below is <= 0 and nothing overflows. Padded classes entered as -inf: they never win the max.
# - `e = tl.exp(shifted)`, `s = tl.sum(e, axis=0)`, `p = e / s`: the probabilities, in registers.
# - `is_t = (offs_c[:, None] == t[None, :]) & p_mask[None, :]`: the one-hot target, compared, never stored; the
#   label is never used as an address, so a bad label cannot read out of bounds.
# - `logp_t = sum(where(is_t, shifted, 0)) - log(s)`: log p_t from the log-sum-exp, exact even where p_t
#   underflows to 0 (log(p_t) would be -inf).
#
# Pass 1 (`_loss_partials`) adds, per program, Σ p·g, Σ p and Σ g per class (the Dice sums), Σ w·(-log p_t) and
# Σ w (the weighted CE) and Σ -(1 - p_t)^γ·log p_t (focal): a few floats per program. Pass 2 (`_loss_combine`)
# adds those rows into the loss and the per-(image, class) Dice coefficients; the backward (`_loss_backward`)
# recomputes the softmax from the logits instead of reading a stored one, and writes dL/dz.

# %%
section("the kernel's core")
source = KERNEL_FILE.read_text()
tree = ast.parse(source)
core = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "_softmax_tile")
lines = source.splitlines()[core.lineno - 2 : core.end_lineno]  # with its @triton.jit decorator
for number, line in enumerate(lines, start=core.lineno - 1):
    print(f"  {number:4d} | {line}")
kernels_defined = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                   and any("jit" in ast.unparse(d) for d in node.decorator_list)]
print(f"  Triton kernels in {KERNEL_FILE.name}: {', '.join(kernels_defined)}")
check("the three passes and the softmax tile are there",
      {"_softmax_tile", "_loss_partials", "_loss_combine", "_loss_backward"} <= set(kernels_defined))

# %% [markdown]
# ## Bytes moved: eager composition vs fused
#
# We count, for the torch composition, every operation torch dispatches in the forward and the backward, and the
# bytes of its tensor inputs and outputs (each op reads its inputs and writes its outputs once; views move
# nothing). The shapes are a realistic batch, N = 16 images of 512x512 with C = 8 classes, float32 logits, int64
# labels and a float32 weight map; the count runs on torch's "meta" device, which knows shapes but holds no
# data, so it costs nothing.
#
# The fused version reads the logits, the labels and the weights once in the forward, once more in the backward,
# and writes the gradient: 2·(logits + labels + weights) + gradient bytes, a few floats per program aside.

# %%
section("bytes moved per training step of the loss")


class CountBytes(TorchDispatchMode):
    """Every aten op dispatched inside the block, with the bytes of its tensor inputs and outputs."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
            self.ops.append((func.overloadpacket.__name__, sum(t.numel() * t.element_size() for t in tensors)))
        return out


N, C, H, W = 16, 8, 512, 512
logits_meta = torch.empty(N, C, H, W, device="meta", requires_grad=True)
target_meta = torch.empty(N, H, W, dtype=torch.int64, device="meta")
weights_meta = torch.empty(N, H, W, device="meta")
with CountBytes() as counter:
    loss_meta = combined_loss_torch(logits_meta, target_meta, weights_meta, validate=False)
    loss_meta.backward()
eager_bytes = sum(b for _, b in counter.ops)
size = lambda t: t.numel() * t.element_size()  # noqa: E731
fused_bytes = 2 * (size(logits_meta) + size(target_meta) + size(weights_meta)) + size(logits_meta)
print(f"  one logits tensor: {size(logits_meta) / 1e6:.0f} MB")
print(f"  eager torch: {len(counter.ops)} ops, {eager_bytes / 1e9:.2f} GB moved")
print(f"  fused:       3 kernels, {fused_bytes / 1e6:.0f} MB moved ({eager_bytes / fused_bytes:.1f}x less)")
check_close("the fused kernel moves 2·(134 + 34 + 17) + 134 = 503 MB", fused_bytes / 1e6, 503.3, atol=0.5)
check("the eager composition moves more than 5x as much", eager_bytes > 5 * fused_bytes)
check("... in dozens of separate ops (each one a kernel launch on a GPU)", len(counter.ops) > 30)
by_op = Counter()
for name, b in counter.ops:
    by_op[name] += b

# %% [markdown]
# ## The kernel, run through the interpreter, against the reference
#
# Under `TRITON_INTERPRET=1` Triton runs each program of the grid in NumPy, one after another: slow, but the same
# code as on a GPU, so it can be checked on any Linux machine. The kernel works in float32 (logits may be float16
# or bfloat16 too; every sum is float32), so it matches the float64 reference to float32 precision.

# %%
section("the fused kernel vs the NumPy reference")
kernel_grad = None
if not kernels.HAS_TRITON:
    print("  Triton is not installed here (it is Linux-only): skipping the run of the kernel.")
    print("  Everything above ran without it; on Linux, `pip install triton` and run this lesson again.")
else:
    from unet_from_scratch.kernels import fused_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    z32 = torch.tensor(logits_np, dtype=torch.float32, device=device, requires_grad=True)
    kernel_loss = fused_loss.combined_loss(
        z32, torch.tensor(target_np, device=device), torch.tensor(pixel_weights_np, dtype=torch.float32,
                                                                  device=device),
        torch.tensor(class_weights_np, dtype=torch.float32, device=device))
    kernel_loss.backward()
    kernel_grad = z32.grad.cpu().numpy()
    mode = "compiled on the GPU" if device == "cuda" else "through the interpreter on the CPU"
    print(f"  kernel ({mode}) {kernel_loss.item():.7f}   reference {ref_loss:.7f}")
    check_close("the fused loss equals the reference (float32)", kernel_loss.item(), ref_loss, rtol=1e-5, atol=1e-6)
    error = np.abs(kernel_grad - ref_grad).max()
    print(f"  gradient: max |kernel - reference| = {error:.1e} (largest entry {np.abs(ref_grad).max():.1e})")
    check("the gradient equals the reference to float32 precision", error < 1e-5 * np.abs(ref_grad).max() + 1e-8)

# %% [markdown]
# ## The main figure

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw=dict(width_ratios=[1.4, 1]))
top = by_op.most_common(10)
axes[0].barh([name for name, _ in top][::-1], [b / 1e9 for _, b in top][::-1], color="C3")
axes[0].set_xlabel("GB read + written, forward and backward")
axes[0].set_title(f"eager torch: {len(counter.ops)} ops, {eager_bytes / 1e9:.2f} GB (the 10 heaviest)", fontsize=10)
axes[1].bar(["eager torch", "fused Triton"], [eager_bytes / 1e9, fused_bytes / 1e9], color=["C3", "C0"])
axes[1].text(1, fused_bytes / 1e9, f"{fused_bytes / 1e6:.0f} MB", ha="center", va="bottom")
axes[1].text(0, eager_bytes / 1e9, f"{eager_bytes / 1e9:.2f} GB", ha="center", va="bottom")
axes[1].set_ylabel("GB moved per loss step")
axes[1].set_title(f"N={N}, C={C}, {H}x{W}: {eager_bytes / fused_bytes:.1f}x fewer bytes", fontsize=10)
lesson.save(fig)

if kernel_grad is not None:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    limit = np.abs(ref_grad[0, 1]).max()
    for ax, (title, img) in zip(axes, [("reference dL/dz (image 0, class 1)", ref_grad[0, 1]),
                                       ("fused kernel", kernel_grad[0, 1]),
                                       ("difference x 1e5", 1e5 * (kernel_grad[0, 1] - ref_grad[0, 1]))]):
        ax.imshow(img, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    lesson.save(fig, "gradient")
print("\nlesson 09 done: every check passed" + ("" if kernels.HAS_TRITON else " (the Triton run was skipped)"))
