"""The cost model: what a request costs to run, and how fast this server runs it.

A pipeline call costs a part paid once per image (text encoding, decoding) plus a part per
denoising step, and both grow with the pixels: linearly where convolutions dominate, towards
quadratically where attention does, and faster still once attention's matrices leave the
caches. Measured on this CPU for imagine/shapes, one step took 0.03 s at 64², 0.08 at 128², 0.43
at 256², 1.9 at 384² and 5.9 at 512²: a power law fitted at the small sizes predicted 512² 3.6×
low. So no curve is assumed: `Calibration` times 1- and 3-step calls at doubling sizes when a
model loads, up to where a call takes CALIBRATION_CALL_S, and `WorkRate` interpolates between
those sizes (log-log) and extrapolates past the largest quadratically — an upper bound for
attention, so predictions past the measured sizes err long. A factor learnt from every batch
that runs to the end corrects for the machine's mood. Admission uses the predictions for ETAs,
Retry-After, the per-request limit (`max_request_s`) and the deadline check; all are estimates,
never promises.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from imagine.models.spec import FamilySpec
from imagine.request import GenerationRequest

__all__ = ["Calibration", "SizeCost", "WorkRate"]

# Calibration starts at the model's aspect ratio within this many pixels and doubles each side
# until a 3-step call takes CALIBRATION_CALL_S (or the next size passes max_pixels): a large
# model's native 1024² would cost a CPU minutes, a GPU a fraction of a second.
CALIBRATION_PIXELS = 64 * 64
CALIBRATION_CALL_S = 0.5
_STEPS = (1, 3)
# With nothing measured yet, a batch is guessed at this long.
_UNMEASURED_BATCH_S = 1.0
# What calibration measured, by (model id, revision, max_pixels): a model evicted and loaded
# again in this process runs on the same hardware, so it skips the seconds of calibration.
_measured: dict[tuple[str, str, int], list[SizeCost]] = {}


@dataclass(frozen=True)
class SizeCost:
    """What one image of `pixels` cost at calibration: `call_s` once, `step_s` per step."""

    pixels: int
    call_s: float
    step_s: float


class WorkRate:
    """A model's speed. A request's `units` are its predicted seconds at calibration (its size's
    call cost plus steps × its size's step cost); `scale` turns units into seconds now, a
    moving average of measured / predicted over the batches that ran to the end.

    Uncalibrated (max_request_s = 0), a unit is a megapixel-step and `scale` learns its
    seconds from the batches alone."""

    def __init__(self, *, alpha: float = 0.3) -> None:
        self.scale: float | None = None
        self.sizes: list[SizeCost] = []
        self._alpha = alpha

    @property
    def measured(self) -> bool:
        return self.scale is not None

    def units(self, request: GenerationRequest) -> float:
        pixels = request.width * request.height
        if not self.sizes:
            return request.num_inference_steps * pixels / 1e6
        call_s, step_s = self._at(pixels)
        return call_s + request.num_inference_steps * step_s

    def units_of(self, requests: Iterable[GenerationRequest]) -> float:
        return sum(self.units(request) for request in requests)

    def calibrate(self, sizes: list[SizeCost]) -> None:
        """Take the sizes measured by `Calibration` as the model's curve."""
        if sizes:
            self.sizes = sorted(sizes, key=lambda s: s.pixels)
            self.scale = 1.0

    def record(self, seconds: float, units: float) -> None:
        """One more batch of `units` work that took `seconds`, run to the end."""
        if units <= 0 or seconds <= 0:
            return
        rate = seconds / units
        if self.scale is None:
            self.scale = rate
        else:
            self.scale += self._alpha * (rate - self.scale)

    def seconds(self, units: float, calls: int = 1) -> float:
        """The predicted time of `units` of work (`calls` pipeline calls: used only while
        nothing is measured)."""
        if self.scale is None:
            return _UNMEASURED_BATCH_S * calls if units else 0.0
        return units * self.scale

    def describe(self) -> dict[str, object] | None:
        """The curve and the correction, for /health."""
        if self.scale is None:
            return None
        return {
            "scale": round(self.scale, 4),
            "sizes": [
                {"pixels": s.pixels, "call_s": round(s.call_s, 4), "step_s": round(s.step_s, 4)}
                for s in self.sizes
            ],
        }

    def _at(self, pixels: int) -> tuple[float, float]:
        """(call_s, step_s) at `pixels`: log-log between measured sizes, linear below the
        smallest, quadratic past the largest."""
        sizes = self.sizes
        if pixels <= sizes[0].pixels:
            ratio = pixels / sizes[0].pixels
            return sizes[0].call_s * ratio, sizes[0].step_s * ratio
        if pixels >= sizes[-1].pixels:
            ratio = (pixels / sizes[-1].pixels) ** 2
            return sizes[-1].call_s * ratio, sizes[-1].step_s * ratio
        i = bisect.bisect_left([s.pixels for s in sizes], pixels)
        low, high = sizes[i - 1], sizes[i]
        t = math.log(pixels / low.pixels) / math.log(high.pixels / low.pixels)
        return _between(low.call_s, high.call_s, t), _between(low.step_s, high.step_s, t)


def _between(low: float, high: float, t: float) -> float:
    if low <= 0 or high <= 0:
        return low + (high - low) * t
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * t)


class Calibration:
    """The calls that measure a freshly loaded model. Iterate for the next request, tell each
    one's time with `took`: a 1-step warm-up (first calls pay one-off costs), then 1 and 3
    steps at the model's aspect ratio within CALIBRATION_PIXELS, twice each side, and so on
    while a call stays under CALIBRATION_CALL_S and the size within `max_pixels`. Nothing to
    run when this process measured the same model before: `sizes` are known at once."""

    def __init__(
        self, model_id: str, spec: FamilySpec, *, max_pixels: int, revision: str = ""
    ) -> None:
        width, height = _within(spec.default_width, spec.default_height, spec.size_multiple)
        self._base = GenerationRequest(
            model_id=model_id,
            prompt="calibration",
            negative_prompt=None,
            width=width,
            height=height,
            num_inference_steps=1,
            guidance_scale=spec.default_guidance,
            scheduler=spec.default_scheduler,
            seed=0,
            model_revision=revision,
        )
        self._max_pixels = max_pixels
        self._key = (model_id, revision, max_pixels)
        self._times: list[float] = []
        self.sizes: list[SizeCost] = list(_measured.get(self._key, []))

    def __iter__(self) -> Iterator[GenerationRequest]:
        if self.sizes:  # measured at an earlier load in this process
            return
        yield self._base  # the warm-up
        scale = 1
        while True:
            at = replace(
                self._base, width=self._base.width * scale, height=self._base.height * scale
            )
            times = []
            for steps in _STEPS:
                yield replace(at, num_inference_steps=steps)
                times.append(self._times[-1])
            (t1, t3), (s1, s3) = times, _STEPS
            step_s = max((t3 - t1) / (s3 - s1), t3 / s3 / 10)  # timing noise: never ~0
            self.sizes.append(SizeCost(at.width * at.height, max(0.0, t1 - s1 * step_s), step_s))
            scale *= 2
            if t3 >= CALIBRATION_CALL_S or at.width * at.height * 4 > self._max_pixels:
                _measured[self._key] = list(self.sizes)
                return

    def took(self, seconds: float) -> None:
        """The last request yielded took `seconds`."""
        self._times.append(seconds)


def _within(width: int, height: int, multiple: int) -> tuple[int, int]:
    """(width, height) scaled down to at most CALIBRATION_PIXELS, in the family's multiple."""
    if width * height <= CALIBRATION_PIXELS:
        return width, height
    scale = (CALIBRATION_PIXELS / (width * height)) ** 0.5
    return (
        max(multiple, int(width * scale) // multiple * multiple),
        max(multiple, int(height * scale) // multiple * multiple),
    )
