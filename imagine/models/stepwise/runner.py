"""StepRunner: step-level batching on one loaded model, for the engine's step worker.

    start(requests) → rows      encode the prompts together, then each row's timesteps, latents
    step(rows)                   one denoiser call over every row, each at its own timestep
    finish(rows) → results       decode the finished rows together

Everything runs on the model's own thread (see LoadedModel.thread), one call at a time. Errors
are kept to the request that caused them where possible: a failed `start` or `step` is tried
again one row at a time, so only the guilty row fails (`StepFailed` names them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from imagine.engine.ports import StepFailed
from imagine.errors import GenerationFailed
from imagine.models.preview import PreviewTap
from imagine.models.render_size import at_request_size, request_preview
from imagine.models.stepwise.row import Row, StepFamily, advance
from imagine.request import GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from imagine.models.manager import LoadedModel

log = logging.getLogger(__name__)


class StepRunner:
    """Step-level batching over one LoadedModel with its family's step functions."""

    def __init__(self, model: LoadedModel, family: StepFamily) -> None:
        self._model = model
        self._family = family
        self._taps: dict[Row, PreviewTap] = {}

    @property
    def _pipe(self) -> Any:
        pipe = self._model.pipeline
        if pipe is None:
            raise GenerationFailed(f"Model {self._model.model_id} was unloaded")
        return pipe

    def group_key(self, request: GenerationRequest) -> Hashable:
        """Requests with equal keys can be stepped together: the size the pipeline runs at.
        (Text lengths line up: every family pads its prompts to a fixed length.)"""
        return self._size(request)

    def _size(self, request: GenerationRequest) -> tuple[int, int]:
        return self._model.spec.render_size or (request.width, request.height)

    # --- joining

    @torch.inference_mode()
    def start(
        self,
        requests: Sequence[GenerationRequest],
        *,
        previews: bool,
        owners: Sequence[Any] | None = None,
    ) -> list[Row]:
        """New rows for `requests` (each row's `owner` the matching one of `owners`: the
        engine's job), ready for their first step. Raises StepFailed naming the rows that could
        not start (the others are in `StepFailed.started`)."""
        started = time.perf_counter()
        owners = owners if owners is not None else [None] * len(requests)
        rows = [self._new_row(r, owner) for r, owner in zip(requests, owners, strict=True)]
        errors: dict[Any, Exception] = {}
        for row in rows:
            try:  # an unknown scheduler name is this request's fault alone
                row.scheduler = self._model.new_scheduler(row.request.scheduler)
            except Exception as exc:
                errors[row] = self._failure("start", exc)
        rows = [row for row in rows if row not in errors]
        try:
            if rows:
                self._start(rows)
        except Exception as exc:
            if len(rows) != 1:
                return self._start_each(rows, errors, previews=previews, started=started)
            errors[rows[0]] = self._failure("start", exc)
            rows = []
        ready = self._ready(rows, previews=previews, started=started)
        if errors:
            raise StepFailed(errors, ready)
        return ready

    def _start(self, rows: list[Row]) -> None:
        pipe = self._pipe
        self._family.encode(pipe, rows)
        for row in rows:
            self._family.prepare(pipe, row)

    def _start_each(
        self, rows: list[Row], errors: dict[Any, Exception], *, previews: bool, started: float
    ) -> list[Row]:
        good = []
        for row in rows:
            try:
                self._start([row])
                good.append(row)
            except Exception as exc:
                errors[row] = self._failure("start", exc)
        ready = self._ready(good, previews=previews, started=started)
        if errors:
            raise StepFailed(errors, ready)
        return ready

    def _new_row(self, request: GenerationRequest, owner: Any) -> Row:
        width, height = self._size(request)
        return Row(
            request=request,
            owner=owner,
            scheduler=None,  # set by start()
            generator=torch.Generator("cpu").manual_seed(request.seed),
            width=width,
            height=height,
        )

    def _ready(self, rows: list[Row], *, previews: bool, started: float) -> list[Row]:
        spec = self._model.spec.preview
        encoded = time.perf_counter() - started
        for row in rows:
            row.timings = {"text_encoding": encoded, "denoising": 0.0, "started": started}
            if previews and spec is not None:
                tap = PreviewTap(
                    self._pipe, spec, height=row.height, width=row.width, scheduler=row.scheduler
                )
                self._taps[row] = tap.__enter__()  # its own scheduler: never needs undoing
        return rows

    # --- stepping

    @torch.inference_mode()
    def step(self, rows: Sequence[Row]) -> None:
        """One step for every row. Raises StepFailed naming the rows that failed; the others
        have stepped. A failed shared denoiser call is run again one row at a time, so only
        the row that breaks it fails."""
        started = time.perf_counter()
        blocks: Sequence[Any] | None
        try:
            output = self._family.forward(self._pipe, rows)
            blocks = output.split([row.copies for row in rows])
        except Exception as exc:
            if len(rows) == 1:
                raise StepFailed({rows[0]: self._failure("step", exc)}) from None
            blocks = None
        errors: dict[Any, Exception] = {}
        for i, row in enumerate(rows):
            try:
                block = blocks[i] if blocks is not None else self._family.forward(self._pipe, [row])
                advance(row, block)
            except Exception as exc:
                errors[row] = self._failure("step", exc)
        self._took(rows, started)
        if errors:
            raise StepFailed(errors)

    def _took(self, rows: Sequence[Row], started: float) -> None:
        seconds = time.perf_counter() - started
        for row in rows:
            row.timings["denoising"] += seconds

    def preview(self, row: Row) -> Callable[[int], Any]:
        """The row's preview renderer for StepInfo (only valid on the model's thread)."""
        return request_preview(self._taps.get(row), 0, row.request)

    # --- leaving

    @torch.inference_mode()
    def finish(self, rows: Sequence[Row]) -> list[GenerationResult]:
        """Decode finished rows (one size) into results, in order; they leave the runner."""
        started = time.perf_counter()
        try:
            images = self._family.decode(self._pipe, rows)
        except Exception as exc:
            raise self._failure("decoding", exc) from exc
        finally:
            self.drop(rows)
        ended = time.perf_counter()
        results = []
        for row, image in zip(rows, images, strict=True):
            timings = {
                "text_encoding": row.timings["text_encoding"],
                "denoising": row.timings["denoising"],
                "decoding": ended - started,
                "total": ended - row.timings["started"],
            }
            results.append(
                GenerationResult(row.request, at_request_size(image, row.request), timings)
            )
        return results

    def drop(self, rows: Sequence[Row]) -> None:
        """Forget rows that leave (finished, canceled or failed)."""
        for row in rows:
            self._taps.pop(row, None)

    def _failure(self, stage: str, exc: Exception) -> GenerationFailed:
        # As run_batch words it: after validation, whatever the pipeline raises is a 500.
        model_id = self._model.model_id
        log.exception("%s failed on %s for one request", stage, model_id)
        return GenerationFailed(
            f"Generation failed on {model_id}: {type(exc).__name__}: {exc}"[:500]
        )
