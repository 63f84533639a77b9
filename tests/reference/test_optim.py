"""SGD, Adam and RMSProp against torch.optim, step for step: random parameters, random gradient sequences, a
learning rate changed between steps as a schedule does, momentum, Nesterov and weight decay; the state_dict round
trip; bad arguments.

Tolerance: float64 rtol 1e-10 (atol 1e-12 of the largest parameter). The updates are a few elementwise operations
per step in both; torch writes some of them another way (Adam's m by ``lerp``), which moves the last bits only.
float32: the forward tolerance of ``tests/helpers.py``.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_close, float_arrays, to_torch
from unet_from_scratch.reference.optim import SGD, Adam, RMSProp, clip_grad_norm

F64_TOL = dict(rtol=1e-10, atol=1e-12)


@st.composite
def problems(draw, dtype=np.float64):
    """(params, grads, rates): 1-3 named parameters of small shapes, 1-6 steps of gradients and their rates."""
    count = draw(st.integers(1, 3))
    shapes = [draw(st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)) for _ in range(count)]
    params = {f"layer{i}.weight": draw(float_arrays(shape, dtype)) for i, shape in enumerate(shapes)}
    steps = draw(st.integers(1, 6))
    grads = [{n: draw(float_arrays(p.shape, dtype)) for n, p in params.items()} for _ in range(steps)]
    rates = draw(st.lists(st.floats(1e-4, 1.0), min_size=steps, max_size=steps))
    return params, grads, rates


def sgd_settings():
    return st.one_of(
        st.fixed_dictionaries({"momentum": st.floats(0.0, 0.99), "weight_decay": st.floats(0.0, 0.5)}),
        st.fixed_dictionaries(
            {"momentum": st.floats(0.01, 0.99), "nesterov": st.just(True), "weight_decay": st.floats(0.0, 0.5)}
        ),
    )


def adam_settings():
    return st.fixed_dictionaries(
        {
            "b1": st.floats(0.0, 0.99),
            "b2": st.floats(0.5, 0.9999),
            "eps": st.floats(1e-10, 1e-2),
            "weight_decay": st.floats(0.0, 0.5),
        }
    )


def rmsprop_settings():
    return st.fixed_dictionaries(
        {"alpha": st.floats(0.0, 0.999), "eps": st.floats(1e-10, 1e-2), "momentum": st.floats(0.0, 0.99),
         "weight_decay": st.floats(0.0, 0.5)}
    )  # fmt: skip


def torch_optimizer(kind, params, lr, settings_):
    """The torch optimizer of the same name over torch copies of ``params``, our argument names translated."""
    if kind is SGD:
        return torch.optim.SGD(params, lr=lr, **settings_)
    if kind is Adam:
        s = dict(settings_)
        return torch.optim.Adam(params, lr=lr, betas=(s.pop("b1"), s.pop("b2")), **s)
    return torch.optim.RMSprop(params, lr=lr, **settings_)


def run_both(kind, settings_, params, grads, rates, tol):
    """k steps of ours and of torch's from the same parameters; every parameter compared after every step."""
    ours = {n: p.copy() for n, p in params.items()}
    theirs = {n: to_torch(p, requires_grad=True) for n, p in params.items()}
    optimizer = kind(ours, rates[0], **settings_)
    reference = torch_optimizer(kind, list(theirs.values()), rates[0], settings_)
    for t, (g, lr) in enumerate(zip(grads, rates)):
        optimizer.lr = lr
        for group in reference.param_groups:
            group["lr"] = lr
        for n, tensor in theirs.items():
            tensor.grad = to_torch(g[n])
        optimizer.step(g)
        reference.step()
        for n, tensor in theirs.items():
            assert ours[n].dtype == params[n].dtype
            assert_close(ours[n], tensor.detach().numpy(), name=f"{kind.__name__} {n} after step {t + 1}", **tol)
    return ours


@settings(deadline=None)
@given(problem=problems(), settings_=sgd_settings())
def test_sgd_is_torchs_sgd(problem, settings_):
    run_both(SGD, settings_, *problem, F64_TOL)


@settings(deadline=None)
@given(problem=problems(), settings_=adam_settings())
def test_adam_is_torchs_adam(problem, settings_):
    run_both(Adam, settings_, *problem, F64_TOL)


@settings(deadline=None)
@given(problem=problems(), settings_=rmsprop_settings())
def test_rmsprop_is_torchs_rmsprop(problem, settings_):
    run_both(RMSProp, settings_, *problem, F64_TOL)


@settings(deadline=None)
@given(problem=problems(), max_norm=st.floats(1e-3, 10.0))
def test_clip_grad_norm_is_torchs(problem, max_norm):
    params, grads, _ = problem
    ours = {n: g.copy() for n, g in grads[0].items()}
    tensors = [to_torch(p, requires_grad=True) for p in params.values()]
    for tensor, g in zip(tensors, grads[0].values()):
        tensor.grad = to_torch(g)
    expected_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    norm = clip_grad_norm(ours, max_norm)
    assert_close(np.array(norm), expected_norm.numpy(), name="global norm", **F64_TOL)
    for (n, g), tensor in zip(ours.items(), tensors):
        assert_close(g, tensor.grad.numpy(), name=f"clipped {n}", **F64_TOL)
    by_hand = np.sqrt(sum((g**2).sum() for g in grads[0].values()))  # the norm, from its definition
    assert_close(np.array(norm), np.array(by_hand), name="norm by hand", **F64_TOL)


@settings(deadline=None, max_examples=15)
@given(
    problem=problems(np.float32),
    case=st.one_of(
        sgd_settings().map(lambda s: (SGD, s)),
        adam_settings().map(lambda s: (Adam, s)),
        rmsprop_settings().map(lambda s: (RMSProp, s)),
    ),
)
def test_float32_parameters_stay_float32_and_match_torch(problem, case):
    kind, settings_ = case
    run_both(kind, settings_, *problem, {})


def test_the_parameters_are_updated_in_place_and_plain_sgd_is_theta_minus_lr_g():
    w = np.array([1.0, -2.0, 3.0])
    params = {"w": w}
    SGD(params, lr=0.5).step({"w": np.array([2.0, 2.0, -4.0])})
    assert params["w"] is w
    np.testing.assert_array_equal(w, [0.0, -3.0, 5.0])


def test_the_first_adam_step_moves_each_parameter_by_lr_against_the_gradients_sign():
    # With bias correction m̂ = g and v̂ = g² after one step, so the step is lr · g / (|g| + eps) ≈ lr · sign(g).
    w = np.zeros(4)
    Adam({"w": w}, lr=0.1, eps=1e-12).step({"w": np.array([3.0, -0.5, 1e-3, -100.0])})
    np.testing.assert_allclose(w, [-0.1, 0.1, -0.1, 0.1], rtol=1e-8)


@settings(deadline=None, max_examples=20)
@given(
    problem=problems(),
    case=st.one_of(
        sgd_settings().map(lambda s: (SGD, s)),
        adam_settings().map(lambda s: (Adam, s)),
        rmsprop_settings().map(lambda s: (RMSProp, s)),
    ),
    split=st.integers(0, 6),
)
def test_a_run_resumed_from_state_dict_continues_identically(problem, case, split):
    kind, settings_ = case
    params, grads, rates = problem
    split = min(split, len(grads))
    a = {n: p.copy() for n, p in params.items()}
    first = kind(a, rates[0], **settings_)
    for g, lr in zip(grads[:split], rates[:split]):
        first.lr = lr
        first.step(g)
    state = first.state_dict()
    b = {n: p.copy() for n, p in a.items()}
    second = kind(b, 0.123)  # other hyperparameters: load_state_dict brings the saved ones back
    second.load_state_dict(state)
    assert second.hyperparameters() == first.hyperparameters() and second.steps == first.steps == split
    for g, lr in zip(grads[split:], rates[split:]):
        first.lr = second.lr = lr
        first.step(g)
        second.step(g)
    for n in params:
        np.testing.assert_array_equal(b[n], a[n])


def test_state_dict_is_a_copy():
    w = np.ones(3)
    optimizer = SGD({"w": w}, lr=0.1, momentum=0.9)
    optimizer.step({"w": np.ones(3)})
    state = optimizer.state_dict()
    optimizer.step({"w": np.ones(3)})
    np.testing.assert_array_equal(state["state"]["momentum_buffer"]["w"], np.ones(3))
    assert state["steps"] == 1


P = {"w": np.zeros(3)}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SGD({}, 0.1), "params must be a non-empty dict"),
        (lambda: SGD([np.zeros(3)], 0.1), "params must be a non-empty dict"),
        (lambda: SGD({"w": np.zeros(3, np.int64)}, 0.1), "must be float32 or float64"),
        (lambda: SGD({"w": np.array([np.nan])}, 0.1), "must be finite"),
        (lambda: SGD(P, -0.1), "lr must be finite and ≥ 0"),
        (lambda: SGD(P, float("nan")), "lr must be finite"),
        (lambda: SGD(P, 0.1, momentum=1.0), "momentum must be finite"),
        (lambda: SGD(P, 0.1, nesterov=True), "nesterov needs a momentum > 0"),
        (lambda: SGD(P, 0.1, momentum=0.9, nesterov="yes"), "nesterov must be a bool"),
        (lambda: SGD(P, 0.1, weight_decay=-1e-4), "weight_decay must be finite"),
        (lambda: Adam(P, 0.1, b1=1.0), "b1 must be finite"),
        (lambda: Adam(P, 0.1, b2=-0.1), "b2 must be finite"),
        (lambda: Adam(P, 0.1, eps=0.0), "eps must be finite and > 0"),
        (lambda: RMSProp(P, 0.1, alpha=1.0), "alpha must be finite"),
        (lambda: RMSProp(P, 0.1, momentum=-0.5), "momentum must be finite"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "grads, match",
    [
        ({"v": np.zeros(3)}, "grads must be a dict with the names of params"),
        ({"w": np.zeros(3), "v": np.zeros(3)}, "grads must be a dict with the names of params"),
        ({"w": np.zeros(4)}, r"grads\['w'\] must be float64 \(3,\)"),
        ({"w": np.zeros(3, np.float32)}, r"grads\['w'\] must be float64"),
        ({"w": np.array([0.0, np.inf, 0.0])}, r"grads\['w'\] must be finite"),
        ([np.zeros(3)], "grads must be a dict"),
    ],
)
def test_bad_gradients_raise_one_line_value_errors_and_change_nothing(grads, match):
    w = np.ones(3)
    optimizer = Adam({"w": w}, 0.1)
    with pytest.raises(ValueError, match=match) as error:
        optimizer.step(grads)
    assert "\n" not in str(error.value)
    assert optimizer.steps == 0
    np.testing.assert_array_equal(w, np.ones(3))


def test_a_state_dict_of_another_kind_or_other_parameters_is_refused():
    sgd = SGD({"w": np.zeros(3)}, 0.1, momentum=0.5)
    with pytest.raises(ValueError, match="state must be a state_dict of Adam, got 'SGD'"):
        Adam({"w": np.zeros(3)}, 0.1).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="must have the names of params"):
        SGD({"v": np.zeros(3)}, 0.1).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match=r"must have shape \(4,\)"):
        SGD({"w": np.zeros(4)}, 0.1).load_state_dict(sgd.state_dict())
