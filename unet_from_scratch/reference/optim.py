"""Optimizers from scratch: SGD (with momentum and Nesterov), Adam and RMSProp, on a dict of NumPy arrays.

``params`` is a dict name -> ndarray (float32/float64), updated in place by ``step(grads)``, ``grads`` a dict of
the same names and shapes. There is no ``zero_grad``: every ``step`` takes the whole gradient of this step, so
nothing accumulates between steps. ``lr`` is a plain attribute a schedule sets before each step.
``state_dict()`` copies the step count and every buffer; ``load_state_dict`` puts them back, so a run resumed
from it continues exactly as one never stopped. Each update below is the one of the torch optimizer of the same
name with the same settings (``torch.optim.SGD``, ``Adam``, ``RMSprop``; their docs state the algorithms), which
the tests check step for step. Step t counts from 1; g_t is the gradient, θ the parameter, λ the weight decay.

SGD (Robbins & Monro 1951; momentum: Polyak 1964; the U-Net paper trains with momentum 0.99, Sec. 3)::

    g ← g + λ θ                          (L2 weight decay, added to the gradient)
    b ← μ b + g        (b = g at t = 1)  (torch's form: lr multiplies b, not g, so changing lr rescales the
                                          whole step at once; Sutskever et al. 2013 write b ← μ b - lr g)
    d = g + μ b   if Nesterov, else b    (Nesterov's look-ahead, as torch writes it)
    θ ← θ - lr d                         (μ = 0: plain SGD, θ ← θ - lr g)

Adam (Kingma & Ba 2015, Algorithm 1)::

    g ← g + λ θ                          (L2 weight decay in the gradient, as torch's Adam; not AdamW)
    m ← β1 m + (1 - β1) g,   v ← β2 v + (1 - β2) g²
    θ ← θ - (lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + ε)
                                         (bias correction of both moments; ε added outside the square root of
                                          the bias-corrected v, as in torch and the paper's Algorithm 1)

RMSProp (Hinton, Coursera lecture 6e, 2012; torch's ``RMSprop`` without centring)::

    g ← g + λ θ                          (L2 weight decay, as SGD)
    s ← α s + (1 - α) g²                 (s = 0 before the first step: no bias correction)
    b ← μ b + g / (sqrt(s) + ε),  θ ← θ - lr b      if μ > 0
    θ ← θ - lr g / (sqrt(s) + ε)                     if μ = 0
                                         (ε outside the square root, as torch)

Gradient clipping by the global norm (``clip_grad_norm``, torch's ``clip_grad_norm_``; Pascanu, Mikolov & Bengio
2013): with n = sqrt(Σ over all parameters of Σ g²), every gradient is scaled by min(1, max_norm / (n + 1e-6)),
so one exploding step keeps its direction but not its length.

Gradients must be finite (a NaN would be stored in the buffers for good, the policy of ``_checks.py``); the
parameters must be finite when the optimizer is made.
"""

from __future__ import annotations

import math

import numpy as np

from unet_from_scratch.reference._checks import check_finite, check_float_array, check_real


def _check_params(params) -> dict[str, np.ndarray]:
    if not isinstance(params, dict) or not params:
        raise ValueError(f"params must be a non-empty dict name -> ndarray, got {type(params).__name__}")
    for name, p in params.items():
        if not isinstance(name, str):
            raise ValueError(f"params keys must be str, got {name!r}")
        check_float_array(p, f"params[{name!r}]")
        check_finite(p, f"params[{name!r}]")
        if not p.flags.writeable:
            raise ValueError(f"params[{name!r}] must be writeable (it is updated in place)")
    return params


class Optimizer:
    """What SGD, Adam and RMSProp share: the parameters, ``lr``, the step count, named buffers and their state.

    A subclass lists its buffers in ``buffers`` (each an array per parameter, zero at first) and writes ``_update``.
    """

    buffers: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.params = _check_params(params)
        self.lr = lr
        self.steps = 0
        self.state = {b: {n: np.zeros_like(p) for n, p in self.params.items()} for b in self.buffers}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_real(value, "lr", 0.0)

    def _check_grads(self, grads) -> None:
        if not isinstance(grads, dict) or grads.keys() != self.params.keys():
            got = sorted(grads) if isinstance(grads, dict) else type(grads).__name__
            raise ValueError(f"grads must be a dict with the names of params {sorted(self.params)}, got {got}")
        for name, g in grads.items():
            p = self.params[name]
            check_float_array(g, f"grads[{name!r}]")
            if g.shape != p.shape or g.dtype != p.dtype:
                expected, got = f"{p.dtype} {p.shape}", f"{g.dtype} {g.shape}"
                raise ValueError(f"grads[{name!r}] must be {expected} like its parameter, got {got}")
            check_finite(g, f"grads[{name!r}]")

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """One update of every parameter, in place, from this step's gradients ``grads`` (same names and shapes)."""
        self._check_grads(grads)
        self.steps += 1
        for name, p in self.params.items():
            self._update(name, p, grads[name])

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """A copy of everything ``step`` reads: the hyperparameters, the step count and each buffer by name."""
        return {
            "kind": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "steps": self.steps,
            "state": {b: {n: a.copy() for n, a in arrays.items()} for b, arrays in self.state.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` of an optimizer of this kind over parameters of the same names and shapes."""
        if not isinstance(state, dict) or state.get("kind") != type(self).__name__:
            got = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state must be a state_dict of {type(self).__name__}, got {got!r}")
        buffers = state["state"]
        if set(buffers) != set(self.buffers):
            raise ValueError(f"state must hold the buffers {sorted(self.buffers)}, got {sorted(buffers)}")
        for b in self.buffers:
            if buffers[b].keys() != self.params.keys():
                names = sorted(self.params)
                raise ValueError(f"state[{b!r}] must have the names of params {names}, got {sorted(buffers[b])}")
            for n, a in buffers[b].items():
                if not isinstance(a, np.ndarray) or a.shape != self.params[n].shape:
                    got = getattr(a, "shape", a)
                    raise ValueError(f"state[{b!r}][{n!r}] must have shape {self.params[n].shape}, got {got!r}")
        type(self).__init__(self, self.params, **state["hyperparameters"])
        self.steps = int(state["steps"])
        self.state = {
            b: {n: a.astype(self.params[n].dtype, copy=True) for n, a in buffers[b].items()} for b in self.buffers
        }


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum ``momentum`` in [0, 1) and L2 ``weight_decay`` >= 0 (module docstring)."""

    buffers = ("momentum_buffer",)

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        self.momentum = check_real(momentum, "momentum", 0.0, below=1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be a bool, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum > 0, got momentum 0")
        self.nesterov = bool(nesterov)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0)
        super().__init__(params, lr)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            b = self.state["momentum_buffer"][name]
            if self.steps == 1:
                b[...] = g
            else:
                b *= self.momentum
                b += g
            g = g + self.momentum * b if self.nesterov else b
        p -= self.lr * g


class Adam(Optimizer):
    """Adam with bias correction, ``b1``, ``b2`` in [0, 1), ``eps`` > 0, L2 ``weight_decay`` >= 0 (module docstring)."""

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):  # fmt: skip
        self.b1 = check_real(b1, "b1", 0.0, below=1.0)
        self.b2 = check_real(b2, "b2", 0.0, below=1.0)
        self.eps = check_real(eps, "eps", above=0.0)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0)
        super().__init__(params, lr)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "b1": self.b1, "b2": self.b2, "eps": self.eps, "weight_decay": self.weight_decay}

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        m, v = self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        t = self.steps
        step_size = self.lr / (1 - self.b1**t)
        denom = np.sqrt(v) / math.sqrt(1 - self.b2**t) + self.eps  # math.sqrt: a float32 v stays float32
        p -= step_size * m / denom


class RMSProp(Optimizer):
    """RMSProp, smoothing ``alpha`` in [0, 1), ``eps`` > 0, optional ``momentum`` in [0, 1), L2 ``weight_decay``
    >= 0 (module docstring)."""

    buffers = ("square_avg", "momentum_buffer")

    def __init__(self, params, lr: float, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0):  # fmt: skip
        self.alpha = check_real(alpha, "alpha", 0.0, below=1.0)
        self.eps = check_real(eps, "eps", above=0.0)
        self.momentum = check_real(momentum, "momentum", 0.0, below=1.0)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0)
        super().__init__(params, lr)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay}  # fmt: skip

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = self.state["square_avg"][name]
        s *= self.alpha
        s += (1 - self.alpha) * g * g
        scaled = g / (np.sqrt(s) + self.eps)
        if self.momentum:
            b = self.state["momentum_buffer"][name]
            b *= self.momentum
            b += scaled
            scaled = b
        p -= self.lr * scaled


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient in ``grads`` in place by min(1, max_norm / (n + 1e-6)), n their global L2 norm (module
    docstring; ``torch.nn.utils.clip_grad_norm_``). Returns n, the norm before clipping, as a float."""
    max_norm = check_real(max_norm, "max_norm", above=0.0)
    if not isinstance(grads, dict) or not grads:
        raise ValueError(f"grads must be a non-empty dict name -> ndarray, got {type(grads).__name__}")
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm

