# %% [markdown]
# # Lesson 10: flash attention and the online softmax
#
# Teaches `unet_from_scratch/reference/attention.py` and `kernels/attention.py`. The notes' "advanced" U-Net
# adds "self-attention blocks at bottleneck and decoder". Attention is O = softmax(scale·Q Kᵀ) V: for n
# positions the scores S = scale·Q Kᵀ form an n x n matrix. At a 64x64 bottleneck n = 4096, so S has 16.8 M
# entries per head, and plain attention writes it to memory and reads it back, twice (S, then P = softmax(S)).
#
# Flash attention (Dao et al. 2022) never forms S. It streams the keys past each tile of queries and keeps, per
# query, three running quantities: the largest score so far, the softmax denominator so far, and the output so far.
# The trick that makes this exact is the *online softmax* (Milakov & Gimelshein 2018). This lesson derives it,
# checks it against the plain softmax, builds tiled attention from it in NumPy and checks that against the
# reference, measures the memory of both (O(n²) against O(n)), and runs the Triton kernel (through the
# interpreter on a CPU) against the reference.
#
# Run: `python lessons/10_attention.py [--out DIR] [--fast]`.

# %%
import os
import tracemalloc

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are imported: Triton reads it then

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, section, start  # noqa: E402

import unet_from_scratch.kernels as kernels  # noqa: E402
from unet_from_scratch.reference import scaled_dot_product_attention, softmax  # noqa: E402

lesson = start("10_attention", "flash attention: the online softmax, O(n) memory")
rng = np.random.default_rng(0)

# %% [markdown]
# ## The online softmax
#
# softmax(x)_i = exp(x_i - m) / Σ_j exp(x_j - m) for any m; the stable choice m = max_j x_j keeps every exponent
# <= 0. But the maximum needs all of x first. The online form reads x in chunks and keeps m (the maximum so far)
# and l (Σ exp(x_j - m) so far). When a chunk arrives with maximum m_c:
#
#     m_new = max(m, m_c)
#     l_new = l · exp(m - m_new) + Σ_{j in chunk} exp(x_j - m_new)
#
# The factor exp(m - m_new) re-expresses the old sum relative to the new maximum: each old term was
# exp(x_j - m), and exp(x_j - m)·exp(m - m_new) = exp(x_j - m_new). After the last chunk m is the true maximum
# and l the true denominator, exactly, in one pass.

# %%
section("the online softmax vs the plain one")


def online_softmax(x: np.ndarray, chunk: int):
    """softmax of a 1-D ``x``, reading it ``chunk`` values at a time; also the running (m, l) after each chunk."""
    m, l, trace = -np.inf, 0.0, []
    for start_ in range(0, x.size, chunk):
        block = x[start_ : start_ + chunk]
        m_new = max(m, block.max())
        l = l * np.exp(m - m_new) + np.exp(block - m_new).sum()  # first chunk: exp(-inf) = 0
        m = m_new
        trace.append((m, l))
    return np.exp(x - m) / l, trace


x = rng.standard_normal(1000) * 3
x[700] = 12.0  # a late maximum: the running sum must be rescaled when it arrives
plain = softmax(x[None], axis=1)[0]
for chunk in (1, 7, 64, 1000):
    online, trace = online_softmax(x, chunk)
    check(f"chunks of {chunk}: equals softmax to 1e-15", np.abs(online - plain).max() < 1e-15)
online, trace = online_softmax(x, 64)
huge = np.array([1e4, -1e4, 3e3, 1e4 - 1.0])
check("no overflow at logits of 1e4", np.allclose(online_softmax(huge, 2)[0], softmax(huge[None], axis=1)[0]))

# %% [markdown]
# ## Attention, tile by tile
#
# For one query row the output is Σ_j p_j·v_j = Σ_j exp(s_j - m)·v_j / l, so the unnormalised output
# acc = Σ_j exp(s_j - m)·v_j can be carried along like l: rescaled by exp(m - m_new) when the maximum moves,
# then increased by the new tile's exp(s_j - m_new)·v_j. At the end O = acc / l. Below, a tile of queries (rows)
# meets one tile of keys at a time: the only score matrix ever held is tile x tile. This is, in NumPy, the loop
# of `_attn_fwd` in `kernels/attention.py` (which works in base 2, exp2 being the GPU's native instruction).


# %%
def tiled_attention(q, k, v, tile: int = 64):
    """softmax(q kᵀ / sqrt(d)) v for (n, d) arrays without an (n, n) matrix: (tile, tile) scores at a time."""
    n, d = q.shape
    scale = 1 / np.sqrt(d)
    out = np.empty((n, v.shape[1]))
    for i in range(0, n, tile):
        qi = q[i : i + tile]  # (tile, d)
        m = np.full(len(qi), -np.inf)  # running max per query
        l = np.zeros(len(qi))  # running denominator
        acc = np.zeros((len(qi), v.shape[1]))  # running unnormalised output
        for j in range(0, n, tile):
            s = scale * qi @ k[j : j + tile].T  # (tile, tile): the only scores held at once
            m_new = np.maximum(m, s.max(axis=1))
            alpha = np.exp(m - m_new)  # rescales what was summed under the old maximum
            p = np.exp(s - m_new[:, None])
            l = alpha * l + p.sum(axis=1)
            acc = alpha[:, None] * acc + p @ v[j : j + tile]
            m = m_new
        out[i : i + tile] = acc / l[:, None]
    return out


section("tiled attention vs the reference")
for n, d, tile in [(100, 16, 32), (257, 32, 64), (64, 8, 64)]:  # 257: the last tile is ragged
    q, k, v = (rng.standard_normal((n, d)) for _ in range(3))
    reference, _ = scaled_dot_product_attention(q[None, None], k[None, None], v[None, None])
    error = np.abs(tiled_attention(q, k, v, tile) - reference[0, 0]).max()
    check(f"n = {n}, d = {d}, tiles of {tile}: equals the reference", error < 1e-12, f"max error {error:.1e}")

# %% [markdown]
# ## Memory: O(n²) against O(n)
#
# We measure the peak memory each version allocates (`tracemalloc` sees NumPy's allocations), beyond q, k and v
# themselves. The reference holds S and P, n x n each; the tiled version holds the output (n x d) and a few
# tile-sized arrays. Doubling n should quadruple the first and double (at most) the second: on a log-log plot,
# slopes 2 and 1.

# %%
section("peak memory vs sequence length")
sizes = [128, 256, 512, 1024] if lesson.fast else [256, 512, 1024, 2048, 4096]
d = 32
peaks = {"reference (materialises S and P)": [], "tiled / flash (tiles of 64)": []}
for n in sizes:
    q, k, v = (rng.standard_normal((n, d)) for _ in range(3))
    for name, run in [("reference (materialises S and P)",
                       lambda: scaled_dot_product_attention(q[None, None], k[None, None], v[None, None])),
                      ("tiled / flash (tiles of 64)", lambda: tiled_attention(q, k, v, 64))]:
        tracemalloc.start()
        result = run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del result
        peaks[name].append(peak)
    print(f"  n = {n:5d}: reference {peaks['reference (materialises S and P)'][-1] / 1e6:8.2f} MB, "
          f"tiled {peaks['tiled / flash (tiles of 64)'][-1] / 1e6:6.2f} MB   (one n x n float64 matrix: "
          f"{n * n * 8 / 1e6:.2f} MB)")
slopes = {name: np.polyfit(np.log(sizes[-3:]), np.log(p[-3:]), 1)[0] for name, p in peaks.items()}
for name, slope in slopes.items():
    print(f"  {name}: memory grows as n^{slope:.2f}")
check("the reference grows as n² (slope between 1.8 and 2.2)", 1.8 < slopes["reference (materialises S and P)"] < 2.2)
check("the tiled version grows at most as n (slope below 1.2)", slopes["tiled / flash (tiles of 64)"] < 1.2)
ratio = peaks["reference (materialises S and P)"][-1] / peaks["tiled / flash (tiles of 64)"][-1]
check(f"at n = {sizes[-1]} the tiled version needs over 10x less memory", ratio > 10, f"({ratio:.0f}x)")

# %% [markdown]
# ## The Triton kernel
#
# `kernels.attention.flash_attention` is the same loop on a GPU: each program owns a tile of queries, streams
# K and V tiles through on-chip memory and writes the output plus one number per query, the log-sum-exp
# m + log l, which is all its backward needs to rebuild any tile of P. Here it runs through Triton's interpreter
# (on a CPU) or compiled (on a GPU), and is checked against the reference, forward and backward; where Triton is
# not installed this part is skipped.

# %%
section("the Triton kernel vs the reference")
if not kernels.HAS_TRITON:
    print("  Triton is not installed here (it is Linux-only): skipping the run of the kernel.")
else:
    from unet_from_scratch.kernels.attention import flash_attention
    from unet_from_scratch.reference import scaled_dot_product_attention_backward

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = (1, 2, 40, 16)  # 40 positions: three 16-row tiles, the last one ragged
    q, k, v, dout = (rng.standard_normal(shape) for _ in range(4))
    tq, tk, tv = (torch.tensor(a, dtype=torch.float32, device=device, requires_grad=True) for a in (q, k, v))
    out = flash_attention(tq, tk, tv)
    out.backward(torch.tensor(dout, dtype=torch.float32, device=device))
    reference, cache = scaled_dot_product_attention(q, k, v)
    grads = scaled_dot_product_attention_backward(dout, cache)
    error = np.abs(out.detach().cpu().numpy() - reference).max()
    check("flash_attention's output equals the reference (float32)", error < 1e-5, f"max error {error:.1e}")
    for name, t, g in zip(("dq", "dk", "dv"), (tq, tk, tv), grads):
        error = np.abs(t.grad.cpu().numpy() - g).max()
        check(f"... and so does {name}", error < 1e-4, f"max error {error:.1e}")

# %% [markdown]
# ## The main figure

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, p in peaks.items():
    axes[0].loglog(sizes, np.array(p) / 1e6, "o-", label=f"{name}: n^{slopes[name]:.2f}")
axes[0].loglog(sizes, np.array(sizes, float) ** 2 * 8 / 1e6, "k:", lw=0.8, label="one n x n float64 matrix")
axes[0].set_xticks(sizes, [str(n) for n in sizes])
axes[0].minorticks_off()
axes[0].set_xlabel("sequence length n (positions)")
axes[0].set_ylabel("peak memory (MB)")
axes[0].legend(fontsize=8)
axes[0].set_title("attention memory: O(n²) vs O(n)")
ms, ls = zip(*trace)
chunks = np.arange(1, len(trace) + 1)
axes[1].plot(chunks, ms, "o-", label="running max m")
axes[1].set_xlabel("chunks of 64 read")
axes[1].set_ylabel("m")
twin = axes[1].twinx()
twin.plot(chunks, ls, "s-", color="C1", label="running sum l = Σ exp(x - m)")
twin.set_ylabel("l")
axes[1].axvline(700 // 64 + 1, color="gray", ls=":")
axes[1].text(700 // 64 + 1.2, 1.05 * max(ms[0], 0) + 1, "x = 12 arrives:\nl is rescaled", fontsize=8)
axes[1].set_title("online softmax: one pass, exact")
axes[1].legend(loc="upper left", fontsize=8)
twin.legend(loc="center left", fontsize=8)
lesson.save(fig)
print("\nlesson 10 done: every check passed" + ("" if kernels.HAS_TRITON else " (the Triton run was skipped)"))
