"""A fake ModelManager with controllable load and batch latency and failures.

Nothing here sleeps to synchronise: tests hold loads and batches behind events and observe them
through asyncio queues fed from the worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from imagine.errors import ModelLoadFailed, ModelNotFound
from imagine.models.spec import FamilySpec, ModelInfo
from imagine.request import (
    GenerationRequest,
    GenerationResult,
    StepInfo,
    StepObserver,
    no_preview,
)

SPEC = FamilySpec(
    name="fake",
    pipeline_classes=("FakePipeline",),
    default_steps=4,
    default_guidance=5.0,
    default_width=32,
    default_height=32,
    size_multiple=8,
    guidance_range=(0.0, 20.0),
    schedulers=("EulerDiscreteScheduler",),
    default_scheduler="EulerDiscreteScheduler",
)


def make_request(
    seed: int = 0, *, model_id: str = "m", width: int = 32, height: int = 32, steps: int = 4
) -> GenerationRequest:
    return GenerationRequest(
        model_id=model_id,
        prompt=f"prompt {seed}",
        negative_prompt=None,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=5.0,
        scheduler="EulerDiscreteScheduler",
        seed=seed,
    )


@dataclass
class FakeLoaded:
    model_id: str
    memory_bytes: int
    in_flight: int = 0


@dataclass
class Call:
    """One run_batch call as seen by the fake."""

    model_id: str
    requests: list[GenerationRequest]
    thread: int
    interrupted: bool = False


@dataclass
class FakeManager:
    models: tuple[str, ...] = ("m",)
    memory_bytes: int = 1000
    load_failures: dict[str, int] = field(default_factory=dict)  # failing loads left per model
    hold_loads: bool = False  # loads wait for release_load()
    hold_batches: bool = False  # batches wait for release_batch() (polling interrupt per step)
    batch_error: Exception | None = None  # raised by calls holding a seed in fail_seeds
    fail_seeds: set[int] = field(default_factory=set)
    drop_output: bool = False  # return one result fewer than asked

    def __post_init__(self) -> None:
        self.calls: list[Call] = []
        self.started: asyncio.Queue[Call] = asyncio.Queue()
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.violations: list[str] = []
        self._loop = asyncio.get_running_loop()
        self._load_gate = asyncio.Event()
        self._batch_gate = threading.Event()
        self._lock = threading.Lock()

    # --- test controls
    def release_load(self) -> None:
        self._load_gate.set()

    def release_batch(self) -> None:
        self._batch_gate.set()

    def hold_next_batches(self) -> None:
        self._batch_gate.clear()

    # --- ManagerPort
    def describe(self, model_id: str) -> ModelInfo:
        if model_id not in self.models:
            raise ModelNotFound(f"model {model_id} not found")
        return ModelInfo(model_id=model_id, spec=SPEC, revision="r1", state="unloaded")

    def state(self, model_id: str) -> str:
        return "unloaded"

    def estimated_load_time(self, model_id: str) -> float:
        return 12.5

    async def load(self, model_id: str) -> FakeLoaded:
        self.loads.append(model_id)
        if self.hold_loads:
            await self._load_gate.wait()
        if self.load_failures.get(model_id, 0) > 0:
            self.load_failures[model_id] -= 1
            raise ModelLoadFailed(f"model {model_id} failed to load: weights are corrupt")
        return FakeLoaded(model_id=model_id, memory_bytes=self.memory_bytes)

    def run_batch(
        self,
        model: FakeLoaded,
        requests: Sequence[GenerationRequest],
        *,
        observers: Sequence[StepObserver] | None = None,
    ) -> list[GenerationResult]:
        call = Call(model.model_id, list(requests), threading.get_ident())
        with self._lock:
            model.in_flight += 1
            if model.in_flight > 1:
                self.violations.append("two calls on one instance")
        try:
            self.calls.append(call)
            self._loop.call_soon_threadsafe(self.started.put_nowait, call)
            total = requests[0].num_inference_steps

            def step(n: int) -> bool:  # every observer hears the step, as in the real manager
                stops = [observe(StepInfo(n, total, no_preview)) for observe in observers or ()]
                return bool(stops) and all(stops)

            if self.hold_batches:
                # each wait is one "denoising step": tell the observers like the real manager
                n = 0
                while not self._batch_gate.wait(0.002):
                    n += 1
                    if step(min(n, total)):
                        call.interrupted = True
                        break
            else:
                for n in range(1, total + 1):
                    if step(n):
                        call.interrupted = True
                        break
            if self.batch_error is not None and any(r.seed in self.fail_seeds for r in requests):
                raise self.batch_error
            results = [
                GenerationResult(
                    request=r,
                    image=Image.new("RGB", (r.width, r.height), (r.seed % 256, 0, 0)),
                    timings={"text_encoding": 0.001, "denoising": 0.01, "decoding": 0.002},
                )
                for r in requests
            ]
            return results[:-1] if self.drop_output else results
        finally:
            with self._lock:
                model.in_flight -= 1

    def unload(self, model_id: str) -> None:
        self.unloads.append(model_id)

    def health(self) -> dict[str, Any]:
        return {"fake": True}
