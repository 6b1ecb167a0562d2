"""training.schedules: the learning-rate schedules are functions of the global step (no Keras needed)."""

from __future__ import annotations

import pytest

from training.schedules import cosine_lr, warmup_lr


def test_the_warm_up_ramps_from_a_tenth_to_the_target_then_lets_go() -> None:
    assert [warmup_lr(step, 1e-3, 10) for step in (0, 5, 10, 11)] == [
        pytest.approx(1e-4), pytest.approx(5.5e-4), 1e-3, None]


def test_cosine_decay_goes_from_the_base_rate_to_the_floor_and_leaves_the_warm_up_alone() -> None:
    def lr(step: int) -> float | None:
        return cosine_lr(step, 1e-3, 1e-5, start_step=10, end_step=30)

    assert lr(9) is None  # step 9 belongs to the warm-up
    assert lr(10) == pytest.approx(1e-3)
    assert lr(20) == pytest.approx((1e-3 + 1e-5) / 2)  # half way
    assert lr(15) > lr(20) > lr(25)
    assert lr(30) == lr(99) == pytest.approx(1e-5)  # the floor at the end and after
    # A phase no longer than its warm-up has no decay steps; it does not divide by zero.
    assert cosine_lr(3, 1e-3, 1e-5, start_step=3, end_step=3) == pytest.approx(1e-5)


def test_a_resumed_run_gets_the_rate_it_would_have_had() -> None:
    # Only the step counts: no state carried between calls, so a resume at step 17 continues the curve.
    uninterrupted = [cosine_lr(step, 1e-3, 1e-6, 5, 40) for step in range(40)]
    resumed = [cosine_lr(step, 1e-3, 1e-6, 5, 40) for step in range(17, 40)]
    assert uninterrupted[17:] == resumed
