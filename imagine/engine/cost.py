"""The cost model: what a request costs to run, and how fast this server runs it.

A pipeline call costs a fixed part (text encoding, decoding, set-up) plus, per denoising step,
a part that grows with the pixels as pixels^k: k is 1 where convolutions dominate and up to 2
where attention does (measured on CPU for imagine/shapes: 23 µs per pixel-step at 128², 65 at
512²). A model's call cost, k and rate are measured when it loads (`calibration`: two sizes, two
step counts), and the rate is refined by every batch that runs to the end. Admission uses it
for ETAs, Retry-After, the per-request limit (`max_request_s`) and the deadline check; all are
estimates, never promises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

from imagine.models.spec import FamilySpec
from imagine.request import GenerationRequest

__all__ = ["WorkRate", "calibration"]

CALIBRATION_STEPS = 4
# Calibration runs at the model's aspect ratio within these many pixels (the small size; the
# large one has four times as many): at a large model's native 1024² a CPU would spend minutes.
CALIBRATION_PIXELS = 128 * 128
# With nothing measured yet, a batch is guessed at this long.
_UNMEASURED_BATCH_S = 1.0


class WorkRate:
    """A model's speed: `call_s` per pipeline call plus `s_per_work` per work unit, where one
    request's units are steps × pixels^exponent. The rate is a moving average over the batches
    that ran to the end.

    Estimates scale with each request's own cost, so one 1024² request no longer inflates the
    estimates of the 512² ones after it (it did when this averaged whole batches: a Retry-After
    of 123 s while each burst cleared in about 1 s)."""

    def __init__(self, *, alpha: float = 0.3) -> None:
        self.s_per_work: float | None = None
        self.call_s = 0.0
        self.exponent = 1.0
        self._alpha = alpha

    def units(self, request: GenerationRequest) -> float:
        return request.num_inference_steps * (request.width * request.height) ** self.exponent

    def units_of(self, requests: Iterable[GenerationRequest]) -> float:
        return sum(self.units(request) for request in requests)

    def calibrate(self, timed: Sequence[tuple[float, GenerationRequest]]) -> None:
        """Fit from the timed calls of `calibration` (warm-up excluded): one step and
        CALIBRATION_STEPS steps at the small size, CALIBRATION_STEPS at four times the pixels."""
        (t1, one), (t_small, small), (t_large, large) = timed
        extra_steps = small.num_inference_steps - one.num_inference_steps
        step_small = max((t_small - t1) / extra_steps, t_small / small.num_inference_steps / 10)
        self.call_s = max(0.0, t1 - step_small)
        step_large = max(t_large - self.call_s, 0.0) / large.num_inference_steps
        ratio = (large.width * large.height) / (small.width * small.height)
        if step_large > 0 and ratio > 1:
            self.exponent = min(2.0, max(1.0, math.log(step_large / step_small) / math.log(ratio)))
        self.s_per_work = step_small / (small.width * small.height) ** self.exponent

    def record(self, seconds: float, units: float) -> None:
        """One more batch of `units` work that took `seconds`, run to the end."""
        if units <= 0 or seconds <= 0:
            return
        rate = max(seconds - self.call_s, seconds / 2) / units
        if self.s_per_work is None:
            self.s_per_work = rate
        else:
            self.s_per_work += self._alpha * (rate - self.s_per_work)

    def seconds(self, units: float, calls: int = 1) -> float:
        """The predicted time of `units` of work in `calls` pipeline calls."""
        if self.s_per_work is None:
            return _UNMEASURED_BATCH_S * calls if units else 0.0
        return calls * self.call_s + units * self.s_per_work

    def describe(self) -> dict[str, float] | None:
        """The fit, for /health."""
        if self.s_per_work is None:
            return None
        return {
            "call_s": round(self.call_s, 4),
            "exponent": round(self.exponent, 3),
            "s_per_megapixel_step": round(self.s_per_work * 1e6**self.exponent, 4),
        }


def calibration(model_id: str, spec: FamilySpec, revision: str = "") -> list[GenerationRequest]:
    """The calls that measure a freshly loaded model: a 1-step warm-up (first calls pay one-off
    costs), then 1 and CALIBRATION_STEPS steps at the model's size within CALIBRATION_PIXELS,
    and CALIBRATION_STEPS at twice each side. All but the first are timed
    (`WorkRate.calibrate`)."""
    width, height = _within(spec.default_width, spec.default_height, spec.size_multiple)
    small = GenerationRequest(
        model_id=model_id,
        prompt="calibration",
        negative_prompt=None,
        width=width,
        height=height,
        num_inference_steps=CALIBRATION_STEPS,
        guidance_scale=spec.default_guidance,
        scheduler=spec.default_scheduler,
        seed=0,
        model_revision=revision,
    )
    one = replace(small, num_inference_steps=1)
    return [one, one, small, replace(small, width=2 * width, height=2 * height)]


def _within(width: int, height: int, multiple: int) -> tuple[int, int]:
    """(width, height) scaled down to at most CALIBRATION_PIXELS, in the family's multiple."""
    if width * height <= CALIBRATION_PIXELS:
        return width, height
    scale = (CALIBRATION_PIXELS / (width * height)) ** 0.5
    return (
        max(multiple, int(width * scale) // multiple * multiple),
        max(multiple, int(height * scale) // multiple * multiple),
    )
