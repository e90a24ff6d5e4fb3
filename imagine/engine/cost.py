"""The cost model: what a request costs to run, and how fast this server runs it.

A request's work is pixels × denoising steps; a model's rate (seconds per unit of work) is
measured once when it loads (a short call at its default size: `calibration`) and then from
every batch that runs to the end. Admission uses it for ETAs, Retry-After, the per-request cost
limit (`max_request_s`) and the deadline check; all are estimates, never promises.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from imagine.models.spec import FamilySpec
from imagine.request import GenerationRequest

if TYPE_CHECKING:
    from imagine.engine.job import Job

__all__ = ["WorkRate", "calibration", "request_work", "work"]

CALIBRATION_STEPS = 8


def request_work(request: GenerationRequest) -> int:
    """Pixels × denoising steps."""
    return request.width * request.height * request.num_inference_steps


# With nothing measured yet, a batch is guessed at this long.
_UNMEASURED_BATCH_S = 1.0


def work(job: Job) -> int:
    """The cost of one request in work units. A pipeline call's time grows about linearly in
    it (measured on CPU for imagine/shapes from 128² to 512²: 23–65 µs per pixel-step; on a GPU
    a batch costs less per request, which the measured rate absorbs)."""
    return request_work(job.request)


class WorkRate:
    """A model's speed: a fixed cost per pipeline call (text encoding, decoding, set-up) plus
    seconds per work unit, the latter a moving average over the batches that ran to the end.

    Estimates scale with each request's own cost, so one 1024² request no longer inflates the
    estimates of the 512² ones after it (it did when this averaged whole batches: a Retry-After
    of 123 s while each burst cleared in about 1 s). The per-call cost is measured apart
    (`calibrate`): folded into the rate it made a 64² × 4-step call look 4× dearer per step
    than it is, and refused requests that would have run in a few seconds."""

    def __init__(self, *, alpha: float = 0.3) -> None:
        self.s_per_work: float | None = None
        self.call_s = 0.0
        self._alpha = alpha

    def calibrate(self, *, short: tuple[float, int], long: tuple[float, int]) -> None:
        """Set both from two calls of one size, (seconds, units) each, `long` with more steps."""
        (t1, u1), (t2, u2) = short, long
        if u2 <= u1 or t2 <= 0:
            return
        self.s_per_work = max((t2 - t1) / (u2 - u1), t2 / u2 / 10)  # noise: at least 1/10
        self.call_s = max(0.0, t1 - u1 * self.s_per_work)

    def record(self, seconds: float, units: int) -> None:
        """One more batch of `units` work that took `seconds`, run to the end."""
        if units <= 0 or seconds <= 0:
            return
        rate = max(seconds - self.call_s, seconds / 2) / units
        if self.s_per_work is None:
            self.s_per_work = rate
        else:
            self.s_per_work += self._alpha * (rate - self.s_per_work)

    def seconds(self, units: int, calls: int = 1) -> float:
        """The predicted time of `units` of work in `calls` pipeline calls."""
        if self.s_per_work is None:
            return _UNMEASURED_BATCH_S * calls if units else 0.0
        return calls * self.call_s + units * self.s_per_work


def calibration(model_id: str, spec: FamilySpec, revision: str = "") -> list[GenerationRequest]:
    """The calls that measure a freshly loaded model at its default size: a 1-step warm-up
    (first calls pay one-off costs), then 1 step and CALIBRATION_STEPS steps, both timed
    (`WorkRate.calibrate`)."""
    measured = GenerationRequest(
        model_id=model_id,
        prompt="calibration",
        negative_prompt=None,
        width=spec.default_width,
        height=spec.default_height,
        num_inference_steps=CALIBRATION_STEPS,
        guidance_scale=spec.default_guidance,
        scheduler=spec.default_scheduler,
        seed=0,
        model_revision=revision,
    )
    one = replace(measured, num_inference_steps=1)
    return [one, one, measured]
