"""A controllable fake engine, so route tests need no model (validation is the real one)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from imagine.errors import ModelNotFound
from imagine.metrics import Metrics
from imagine.models.spec import FamilySpec, ModelInfo
from imagine.request import GenerationRequest, GenerationResult

FAKE_SPEC = FamilySpec(
    name="fake",
    pipeline_classes=("FakePipeline",),
    default_steps=4,
    default_guidance=5.0,
    default_width=64,
    default_height=64,
    size_multiple=8,
    guidance_range=(0.0, 20.0),
    schedulers=("EulerDiscreteScheduler", "DDIMScheduler"),
    default_scheduler="EulerDiscreteScheduler",
    sigma_options={"EulerDiscreteScheduler": ("karras", "exponential")},
    extras={"true_cfg_scale": (1.0, 10.0)},
)


@dataclass
class Call:
    request: GenerationRequest
    client_id: str
    wait_for_model: bool


@dataclass
class FakeEngine:
    """Implements imagine.engine.base.Engine. Set `error` to make generate raise it; set `gate`
    to hold generate until the event is set; set `metrics` to serve /metrics (like the real
    engine). Images are a pure function of the request seed."""

    models: tuple[str, ...] = ("org/model", "imagine/shapes")
    state: str = "ready"
    error: BaseException | None = None
    gate: asyncio.Event | None = None
    calls: list[Call] = field(default_factory=list)
    cancelled: int = 0
    started: bool = False
    closed: bool = False
    metrics: Metrics | None = None

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def describe(self, model_id: str) -> ModelInfo:
        if model_id not in self.models:
            raise ModelNotFound(f"model {model_id!r} not found")
        return ModelInfo(model_id=model_id, spec=FAKE_SPEC, revision="rev1", state=self.state)

    async def generate(
        self, request: GenerationRequest, *, client_id: str, wait_for_model: bool
    ) -> GenerationResult:
        self.calls.append(Call(request, client_id, wait_for_model))
        if self.error is not None:
            raise self.error
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        rng = random.Random(request.seed)
        size = (request.width, request.height)
        image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
        return GenerationResult(request=request, image=image, timings={"total": 0.001})

    def health(self) -> dict[str, Any]:
        """The real engine's shape (trimmed): per-model state under `models`."""
        return {"models": {m: {"state": self.state} for m in self.models}}
