"""Learning-rate policies against torch.optim.lr_scheduler, step for step (OneCycleLR, LinearLR then
CosineAnnealingLR, StepLR, ReduceLROnPlateau); bad arguments."""

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from unet_from_scratch.reference.schedules import Plateau, learning_rate, one_cycle, step_decay, warmup_cosine


def _torch_rates(make_scheduler, peak: float, total: int) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=peak)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@settings(deadline=None, max_examples=25)
@given(total=st.integers(4, 300), pct=st.floats(0.05, 0.9), peak=st.floats(1e-4, 1.0), ratio=st.floats(1e-5, 0.5))
def test_one_cycle_is_torchs_one_cycle(total, pct, peak, ratio):
    expected = _torch_rates(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=peak, total_steps=total, pct_start=pct, div_factor=25.0, final_div_factor=1 / (25 * ratio),
            cycle_momentum=False,
        ),  # fmt: skip
        peak,
        total,
    )
    ours = [one_cycle(t, total, peak, pct, ratio) for t in range(total)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)


@settings(deadline=None, max_examples=25)
@given(total=st.integers(2, 300), warmup=st.integers(0, 40), peak=st.floats(1e-4, 1.0), ratio=st.floats(0, 0.5))
def test_warmup_cosine_is_a_linear_warmup_then_torchs_cosine_annealing(total, warmup, peak, ratio):
    warmup = min(warmup, total - 1)
    ours = [warmup_cosine(t, total, peak, warmup, ratio) for t in range(total)]
    # The warmup: peak/W, 2 peak/W, ..., peak (torch's LinearLR from 1/W to 1 over W - 1 steps).
    if warmup:
        linear = _torch_rates(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1 / warmup, 1.0, warmup - 1 or 1), peak,
                              warmup)  # fmt: skip
        assert ours[:warmup] == pytest.approx(linear, rel=1e-9)
    cosine = _torch_rates(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warmup, eta_min=peak * ratio), peak,
        total - warmup,
    )  # fmt: skip
    assert ours[warmup:] == pytest.approx(cosine, rel=1e-7, abs=1e-12)


def test_the_constant_and_plateau_policies_hold_the_peak_per_step():
    assert learning_rate("constant", 17, 100, 0.3) == 0.3
    assert learning_rate("plateau", 17, 100, 0.3) == 0.3
    with pytest.raises(ValueError, match="unknown schedule 'cosine'; expected one of constant, warmup-cosine"):
        learning_rate("cosine", 0, 10, 0.1)


@settings(deadline=None, max_examples=25)
@given(
    total=st.integers(1, 200), step_size=st.integers(1, 50), peak=st.floats(1e-4, 1.0), gamma=st.floats(0.01, 1.0)
)
def test_step_decay_is_torchs_step_lr(total, step_size, peak, gamma):
    expected = _torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), peak, total)
    ours = [step_decay(t, peak, step_size, gamma) for t in range(total)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)
    by_name = [learning_rate("step", t, total, peak, step_size=step_size, gamma=gamma) for t in range(total)]
    assert by_name == ours


def test_step_decay_divides_by_ten_every_step_size_steps():
    assert [step_decay(t, 1.0, 3) for t in range(7)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: warmup_cosine(-1, 10, 0.1, 2), "step must be an integer >= 0"),
        (lambda: warmup_cosine(0, 0, 0.1, 2), "total must be a positive integer"),
        (lambda: warmup_cosine(0, 10, -0.1, 2), "peak must be finite and ≥ 0"),
        (lambda: warmup_cosine(0, 10, 0.1, 2.5), "warmup must be an integer >= 0"),
        (lambda: warmup_cosine(0, 10, 0.1, 2, 1.5), "final_ratio must be finite and ≥ 0.0 and ≤ 1.0"),
        (lambda: one_cycle(0, 10, 0.1, 1.0), "pct_start must be finite and > 0.0 and < 1.0"),
        (lambda: one_cycle(0, 10, float("nan")), "peak must be finite"),
        (lambda: step_decay(0, 0.1, 0), "step_size must be a positive integer"),
        (lambda: step_decay(0, 0.1, 5, 0.0), "gamma must be finite and > 0.0"),
        (lambda: learning_rate("constant", 0.5, 10, 0.1), "step must be an integer >= 0"),
        (lambda: Plateau(1.0, 3), "factor must be finite"),
        (lambda: Plateau(0.5, -1), "patience must be an integer >= 0"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


@settings(deadline=None, max_examples=30)
@given(
    scores=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
    factor=st.floats(0.1, 0.9),
    patience=st.integers(0, 4),
    lr=st.floats(1e-6, 1.0),
)
@example(scores=[0.0] * 10, factor=0.1, patience=0, lr=1.0)  # nine drops reach torch's eps: the tenth is skipped
def test_plateau_is_torchs_reduce_on_plateau(scores, factor, patience, lr):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor, patience=patience)
    plateau = Plateau(factor, patience, peak=lr)
    for score in scores:
        optimizer.step()
        reference.step(score)
        assert lr * plateau.step(score) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)


def test_plateau_state_round_trips():
    a = Plateau(0.5, 1)
    for score in (0.5, 0.4, 0.4, 0.3):
        a.step(score)
    b = Plateau(0.5, 1)
    b.load_state_dict(a.state_dict())
    assert [a.step(s) for s in (0.2, 0.2, 0.9)] == [b.step(s) for s in (0.2, 0.2, 0.9)]
    # 0.5 best; 0.4, 0.4: two bad epochs > patience 1, halve; 0.3, 0.2: halve again; 0.2 bad; 0.9 the new best.
    assert a.scale == 0.25 and math.isclose(a.best, 0.9)
