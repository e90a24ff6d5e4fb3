"""The cost model (imagine/engine/cost.py): calibration measures doubling sizes until a call
gets slow, and predictions follow the measured curve, erring long past it."""

from __future__ import annotations

import itertools

import pytest

from imagine.engine.cost import CALIBRATION_CALL_S, Calibration, SizeCost, WorkRate
from tests.engine.fake_manager import SPEC, make_request

_ids = itertools.count()


def _curve(pixels: int) -> tuple[float, float]:
    """A machine where a step's cost turns from linear (convolutions) to quadratic (attention)
    past 128², as measured for imagine/shapes on CPU: (call_s, step_s)."""
    call = 0.01 + pixels * 1e-7
    step = pixels * 2e-6 + (pixels / 16384) ** 2 * 0.05
    return call, step


def _calibrated(
    max_pixels: int = 1024 * 1024, model_id: str | None = None
) -> tuple[Calibration, list[tuple[int, int]]]:
    # a model id of its own by default: a process remembers what it measured of each model
    plan = Calibration(model_id or f"m{next(_ids)}", SPEC, max_pixels=max_pixels)
    asked = []
    for request in plan:
        call, step = _curve(request.width * request.height)
        asked.append((request.width, request.num_inference_steps))
        plan.took(call + request.num_inference_steps * step)
    return plan, asked


def test_calibration_doubles_the_size_until_a_call_takes_half_a_second() -> None:
    plan, asked = _calibrated()
    widths = [w for w, _ in asked[1:]]  # after the warm-up
    assert widths == [32, 32, 64, 64, 128, 128, 256, 256]
    three_steps = [sum(_curve(w * w)[0:1]) + 3 * _curve(w * w)[1] for w in (128, 256)]
    assert three_steps[0] < CALIBRATION_CALL_S <= three_steps[1]
    for size in plan.sizes:  # 1- and 3-step calls separate the call from the steps
        call, step = _curve(size.pixels)
        assert size.call_s == pytest.approx(call, rel=1e-6)
        assert size.step_s == pytest.approx(step, rel=1e-6)


def test_calibration_stops_at_the_largest_size_allowed() -> None:
    plan, _ = _calibrated(max_pixels=100 * 100)
    assert [s.pixels for s in plan.sizes] == [32 * 32, 64 * 64]


def test_a_model_loaded_again_is_not_measured_again() -> None:
    first, asked = _calibrated(model_id="again")
    again, asked_again = _calibrated(model_id="again")
    assert asked and asked_again == [] and again.sizes == first.sizes
    other_revision = Calibration("again", SPEC, max_pixels=1024 * 1024, revision="r2")
    assert other_revision.sizes == [] and next(iter(other_revision)) is not None


def test_predictions_follow_the_measured_sizes_and_err_long_past_them() -> None:
    plan, _ = _calibrated()
    rate = WorkRate()
    rate.calibrate(plan.sizes)
    for width, steps in [(32, 16), (64, 30), (128, 10), (256, 5)]:  # measured: exact
        call, step = _curve(width * width)
        predicted = rate.seconds(rate.units(make_request(width=width, height=width, steps=steps)))
        assert predicted == pytest.approx(call + steps * step, rel=1e-6)
    for width in (96, 192, 384, 512):  # between (a convex curve) and past: never short
        call, step = _curve(width * width)
        predicted = rate.seconds(rate.units(make_request(width=width, height=width, steps=8)))
        assert call + 8 * step <= predicted < 3 * (call + 8 * step)


def test_finished_batches_correct_every_prediction() -> None:
    rate = WorkRate()
    rate.calibrate([SizeCost(4096, 0.1, 0.05), SizeCost(16384, 0.2, 0.2)])
    small, large = make_request(width=64, height=64), make_request(width=128, height=128)
    before = rate.seconds(rate.units(small))
    for _ in range(20):  # the machine got twice as slow
        rate.record(2 * rate.seconds(rate.units(large)) / rate.scale, rate.units(large))
    assert rate.seconds(rate.units(small)) == pytest.approx(2 * before, rel=1e-3)


def test_uncalibrated_it_learns_from_the_batches_alone() -> None:
    rate = WorkRate()
    request = make_request(width=64, height=64, steps=10)
    assert not rate.measured and rate.seconds(rate.units(request), calls=2) == 2.0
    rate.record(1.5, rate.units(request))
    assert rate.seconds(rate.units(request)) == pytest.approx(1.5)
    assert rate.seconds(rate.units(make_request(width=64, height=64, steps=20))) == pytest.approx(
        3.0
    )
