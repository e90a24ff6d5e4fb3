"""A controllable fake engine and a stand-in validator, so route tests need no model."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from imagine.engine.base import ModelInfo
from imagine.errors import InvalidRequest, ModelNotFound
from imagine.metrics import Metrics
from imagine.models.spec import FamilySpec
from imagine.request import GenerationRequest, GenerationResult
from imagine.settings import Settings

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


def fake_build_request(
    *,
    model_id: str,
    prompt: str,
    parameters: dict[str, Any],
    info: ModelInfo,
    settings: Settings,
    output_format: str,
) -> GenerationRequest:
    """A small stand-in for imagine.validation.build_request (same signature)."""
    spec = info.spec

    def integer(name: str, default: int) -> int:
        value = parameters.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise InvalidRequest(f"{name}: expected an integer, got {value!r}", field=name)
        return int(value)

    scheduler = parameters.get("scheduler") or spec.default_scheduler
    if scheduler not in spec.schedulers:
        allowed = ", ".join(spec.schedulers)
        raise InvalidRequest(f"scheduler: {scheduler!r} not one of {allowed}", field="scheduler")
    seed = parameters.get("seed")
    return GenerationRequest(
        model_id=model_id,
        prompt=prompt,
        negative_prompt=parameters.get("negative_prompt"),
        width=integer("width", spec.default_width),
        height=integer("height", spec.default_height),
        num_inference_steps=integer("num_inference_steps", spec.default_steps),
        guidance_scale=float(parameters.get("guidance_scale", spec.default_guidance)),
        scheduler=scheduler,
        seed=int(seed) if seed is not None else random.randrange(2**32),
        output_format=output_format,  # type: ignore[arg-type]
        model_revision=info.revision,
    )
