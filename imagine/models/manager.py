"""ModelManager: resolve, load once, run batches, unload. What the engine calls (docs/contracts.md).

Each model gets one thread of its own that loads it and runs every call on it (the engine's
worker submits there: see `LoadedModel.thread`); concurrent `load()` callers share one load.
A failed load leaves the model "failed" with its error and the next `load()` tries again.
`run_batch` is blocking and runs one pipeline call for a batch of compatible requests;
per-request scheduler choice is a swap of `pipe.scheduler` that is undone after the call, so
requests never leak into each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import diffusers
import torch

from imagine.errors import GenerationFailed, ModelLoadFailed
from imagine.models import cpu_runtime, loading
from imagine.models.preview import PreviewTap
from imagine.models.registry import ModelRegistry, ResolvedModel
from imagine.models.render_size import at_request_size, request_preview
from imagine.models.spec import FamilySpec, ModelInfo, scheduler_config
from imagine.models.stepwise.runner import StepRunner
from imagine.models.timing import StageClock
from imagine.request import GenerationRequest, GenerationResult, StepInfo, StepObserver
from imagine.settings import Settings

log = logging.getLogger(__name__)

# Before a model's first load, estimate from its size: disk read plus a fixed start-up cost.
_ASSUMED_BYTES_PER_S = 400e6
_ASSUMED_OVERHEAD_S = 2.0


@dataclass(eq=False)
class LoadedModel:
    """One loaded pipeline. Never run two calls on it at once (run_batch asserts this)."""

    resolved: ResolvedModel
    pipeline: Any  # a diffusers.DiffusionPipeline
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    base_scheduler: Any
    # Parameters + buffers of the pipeline's torch modules, measured after loading (and after
    # fusing a LoRA): what the engine's memory budget counts for this model.
    memory_bytes: int = 0
    schedulers: dict[str, Any] = field(default_factory=dict)  # swapped-in instances, by name
    busy: threading.Lock = field(default_factory=threading.Lock)
    # The thread that loaded the model; run its calls here too. OpenMP (torch's CPU threading)
    # keeps a team of helper threads per calling thread, and once a process holds more helpers
    # than cores libgomp stops spinning between ops: every small op then waits for a futex
    # wake-up. Loading on one thread and generating on another did that on 2 cores (1.4 cores
    # busy instead of 2, the embedded model 15-20 % slower than a direct call).
    thread: ThreadPoolExecutor | None = None
    thread_ident: int | None = None  # that thread's threading.get_ident()

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    @property
    def spec(self) -> FamilySpec:
        return self.resolved.spec

    def scheduler_for(self, name: str) -> Any:
        """The scheduler instance a request naming `name` ("<Class>" or "<Class>:<sigmas>") runs:
        the model's own when `name` is exactly its class and needs no config change, else one
        built from the model's config plus the class's overrides and sigma flags, cached by the
        full name (so ":karras" and the plain class are two instances)."""
        class_name, config = scheduler_config(self.resolved.spec, name)
        if type(self.base_scheduler).__name__ == name and not config:
            return self.base_scheduler
        if name not in self.schedulers:
            self.schedulers[name] = self.new_scheduler(name)
        return self.schedulers[name]

    def new_scheduler(self, name: str) -> Any:
        """A fresh scheduler instance for `name`, configured as `scheduler_for` would: one
        request's own in step-level batching (a shared instance crashes or drifts there)."""
        class_name, config = scheduler_config(self.resolved.spec, name)
        cls = getattr(diffusers, class_name)
        return cls.from_config(self.base_scheduler.config, **config)


@dataclass
class _Entry:
    state: str = "unloaded"  # unloaded | loading | ready | failed
    loaded: LoadedModel | None = None
    task: asyncio.Future[LoadedModel] | None = None
    load_seconds: float | None = None
    loading_since: float | None = None
    last_error: str | None = None


class ModelManager:
    """Loads models once and runs batches on them. See docs/contracts.md."""

    def __init__(self, *, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self._settings = settings
        self._registry = registry or ModelRegistry(settings=settings)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        cpu_runtime.configure()  # denormals and malloc thresholds: see that module

    # --- describing ---------------------------------------------------------------------

    def describe(self, model_id: str) -> ModelInfo:
        """Resolve without loading. Raises ModelNotFound."""
        resolved = self._registry.resolve(model_id)
        return ModelInfo(
            model_id=model_id,
            spec=resolved.spec,
            revision=resolved.revision,
            state=self.state(model_id),
        )

    def state(self, model_id: str) -> str:
        """unloaded | loading | ready | failed."""
        entry = self._entries.get(model_id)
        return entry.state if entry else "unloaded"

    def estimated_load_time(self, model_id: str) -> float:
        """Seconds until the model is ready: the measured load time when known (minus the time
        already spent loading), else an estimate from the size of its weights. 0 when ready."""
        entry = self._entries.get(model_id)
        if entry and entry.state == "ready":
            return 0.0
        if entry and entry.load_seconds is not None:
            total = entry.load_seconds
        else:
            try:
                size = self._registry.resolve(model_id).weight_bytes
            except Exception:
                size = 0
            total = _ASSUMED_OVERHEAD_S + size / _ASSUMED_BYTES_PER_S
        if entry and entry.state == "loading" and entry.loading_since is not None:
            return max(0.5, total - (time.monotonic() - entry.loading_since))
        return total

    def health(self) -> dict[str, Any]:
        """Per-model state, measured load time, device, dtype, memory and last error."""
        out: dict[str, Any] = {}
        for model_id, entry in list(self._entries.items()):
            loaded = entry.loaded
            out[model_id] = {
                "state": entry.state,
                "load_time_s": entry.load_seconds,
                "last_error": entry.last_error,
                "device": str(loaded.device) if loaded else None,
                "dtype": str(loaded.dtype).removeprefix("torch.") if loaded else None,
                "memory_bytes": loaded.memory_bytes if loaded else None,
            }
        return out

    # --- loading ------------------------------------------------------------------------

    async def load(self, model_id: str) -> LoadedModel:
        """Load once; concurrent callers share the load. Raises ModelNotFound for an unknown id
        and ModelLoadFailed (naming the cause) when loading raises; the next call retries."""
        resolved = self._registry.resolve(model_id)
        with self._lock:
            entry = self._entries.setdefault(model_id, _Entry())
            if entry.state == "ready" and entry.loaded is not None:
                return entry.loaded
            if entry.task is None:
                entry.state, entry.loading_since = "loading", time.monotonic()
                thread = _model_thread(model_id)
                entry.task = asyncio.ensure_future(
                    asyncio.get_running_loop().run_in_executor(
                        thread, self._load_sync, resolved, thread
                    )
                )
                entry.task.add_done_callback(lambda t, e=entry, th=thread: self._settle(e, t, th))
            task = entry.task
        # shield: one caller giving up must not cancel the load the others are waiting on.
        return await asyncio.shield(task)

    def _settle(
        self, entry: _Entry, task: asyncio.Future[LoadedModel], thread: ThreadPoolExecutor
    ) -> None:
        with self._lock:
            entry.task = None
            if task.cancelled():
                entry.state, entry.last_error = "failed", "load cancelled"
                thread.shutdown(wait=False)
                return
            exc = task.exception()
            if exc is None:
                entry.loaded = task.result()
                entry.state, entry.last_error = "ready", None
                entry.load_seconds = entry.loaded.load_seconds
            else:
                entry.state, entry.last_error = "failed", str(exc)
                thread.shutdown(wait=False)

    def _load_sync(self, resolved: ResolvedModel, thread: ThreadPoolExecutor) -> LoadedModel:
        started = time.monotonic()
        model_id = resolved.model_id
        try:
            if resolved.needs_fetch or resolved.lora_needs_fetch:
                resolved = self._registry.fetch(resolved)
            device, dtype = loading.placement(self._settings, resolved)
            pipe = loading.build_pipeline(resolved, device, dtype)
        except Exception as exc:
            log.exception("loading %s failed", model_id)
            raise ModelLoadFailed(
                f"Model {model_id} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        seconds = time.monotonic() - started
        size = loading.memory_bytes(pipe)
        log.info("loaded %s on %s/%s in %.2fs (%d bytes)", model_id, device, dtype, seconds, size)
        return LoadedModel(
            resolved=resolved,
            pipeline=pipe,
            device=device,
            dtype=dtype,
            load_seconds=seconds,
            base_scheduler=pipe.scheduler,
            memory_bytes=size,
            thread=thread,
            thread_ident=threading.get_ident(),
        )

    def unload(self, model_id: str) -> None:
        """Drop the pipeline and free its memory. A no-op for a model that is not loaded."""
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is None or entry.loaded is None:
                return
            loaded, entry.loaded, entry.state = entry.loaded, None, "unloaded"
        with loaded.busy:  # wait for a running call to finish before dropping its weights
            loaded.pipeline = None
            loaded.schedulers.clear()
        if loaded.thread is not None:
            loaded.thread.shutdown(wait=False)  # the thread exits, and its OpenMP team with it
        del loaded
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- generating ---------------------------------------------------------------------

    def stepper(self, model: LoadedModel) -> StepRunner | None:
        """Step-level batching on `model` (imagine/models/stepwise), or None when its family
        has no step functions (its requests are then batched whole by run_batch). The runner's
        calls, like run_batch's, belong on the model's thread."""
        family = model.spec.stepwise
        return StepRunner(model, family) if family is not None else None

    def run_batch(
        self,
        model: LoadedModel,
        requests: Sequence[GenerationRequest],
        *,
        observers: Sequence[StepObserver] | None = None,
    ) -> list[GenerationResult]:
        """Run one pipeline call for `requests` (all with the same spec.batch_key). BLOCKING.

        One CPU generator per request, seeded with request.seed, so each image is what it would
        be alone. `observers[i]` hears request i's every denoising step (with a preview of its
        x0 estimate on demand); once all of them return True the pipeline stops denoising (it
        still decodes) and the caller discards the results.
        Raises GenerationFailed when the pipeline raises; ValueError for a mixed batch (a bug).
        Runs on the model's own thread (LoadedModel.thread), hopping there when called elsewhere.
        """
        if model.thread is not None and threading.get_ident() != model.thread_ident:
            # Called from elsewhere (the CLI, the evaluator, a test): hop onto the model's thread.
            try:
                call = model.thread.submit(self.run_batch, model, requests, observers=observers)
            except RuntimeError:  # the thread is shut down: the model was unloaded
                raise GenerationFailed(f"Model {model.model_id} was unloaded") from None
            return call.result()
        spec = model.resolved.spec
        if not requests:
            return []
        if len({spec.batch_key(r) for r in requests}) != 1:
            raise ValueError("run_batch needs requests that share one batch_key")
        if spec.build_call_kwargs is None:
            raise GenerationFailed(f"family {spec.name} has no call builder")
        if not model.busy.acquire(blocking=False):
            raise RuntimeError(f"{model.model_id}: a call is already running on this pipeline")
        try:
            pipe = model.pipeline
            if pipe is None:
                raise GenerationFailed(f"Model {model.model_id} was unloaded")
            return self._call(model, pipe, requests, observers)
        finally:
            model.busy.release()

    def _call(
        self,
        model: LoadedModel,
        pipe: Any,
        requests: Sequence[GenerationRequest],
        observers: Sequence[StepObserver] | None,
    ) -> list[GenerationResult]:
        spec = model.resolved.spec
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
        assert spec.build_call_kwargs is not None
        kwargs = spec.build_call_kwargs(requests, generators)
        if spec.render_size is not None:  # drawn at its own size, scaled after
            kwargs["width"], kwargs["height"] = spec.render_size
        clock = StageClock(pipe)
        first = requests[0]
        total = first.num_inference_steps
        tap: Any = None

        def on_step_end(p: Any, step: int, timestep: Any, cb_kwargs: dict[str, Any]) -> dict:
            clock.step_done()
            if observers:
                stops = [
                    observe(StepInfo(step + 1, total, request_preview(tap, row, requests[row])))
                    for row, observe in enumerate(observers)
                ]
                if all(stops):
                    p._interrupt = True  # diffusers skips the remaining steps, then decodes
            return cb_kwargs

        try:
            pipe.scheduler = model.scheduler_for(first.scheduler)
            preview = spec.preview if observers else None
            # The size the pipeline really runs at (a family with a render_size draws at its own).
            tap = (
                PreviewTap(pipe, preview, height=kwargs["height"], width=kwargs["width"])
                if preview
                else None
            )
            with clock, tap or contextlib.nullcontext():
                output = pipe(**kwargs, callback_on_step_end=on_step_end)
        except Exception as exc:
            # After validation, anything the pipeline raises (ValueError included) is our bug
            # or the model's, never the client's: a 500, and a fix to the validator.
            log.exception("generation failed on %s", model.model_id)
            raise GenerationFailed(
                f"Generation failed on {model.model_id}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            pipe.scheduler = model.base_scheduler
        images = list(output.images)
        if len(images) != len(requests):
            raise GenerationFailed(
                f"{model.model_id} returned {len(images)} images for {len(requests)} requests"
            )
        timings = clock.timings()
        return [
            GenerationResult(request=r, image=at_request_size(img, r), timings=dict(timings))
            for r, img in zip(requests, images, strict=True)
        ]


def _model_thread(model_id: str) -> ThreadPoolExecutor:
    # Threads inherit the floating-point mode of their creator; set it explicitly anyway, since
    # the OpenMP helpers this thread starts inherit it from here.
    return ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix=f"imagine-model-{model_id}",
        initializer=torch.set_flush_denormal,
        initargs=(True,),
    )
