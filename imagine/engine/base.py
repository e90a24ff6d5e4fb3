"""The small interface the HTTP layer depends on, so route tests can use a fake engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from imagine.models.spec import FamilySpec
from imagine.request import GenerationRequest, GenerationResult


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What validation and `GET /models/{id}/info` need to know about a model, without loading
    it."""

    model_id: str
    spec: FamilySpec  # the family spec with this model's overrides applied (e.g. LCM-LoRA defaults)
    revision: str
    state: str  # "unloaded" | "loading" | "ready" | "failed"


class Engine(Protocol):
    async def start(self) -> None:
        """Preload the configured models (in the background)."""

    async def close(self) -> None:
        """Stop workers and release models."""

    def describe(self, model_id: str) -> ModelInfo:
        """Resolve a model id without loading it. Raises ModelNotFound."""

    async def generate(
        self, request: GenerationRequest, *, client_id: str, wait_for_model: bool
    ) -> GenerationResult:
        """Generate one image. Raises ModelLoading (when not waiting), Overloaded, ModelLoadFailed,
        GenerationFailed. Cancelling the awaiting task cancels the work."""

    def health(self) -> dict[str, Any]:
        """Per-model state, for /health."""
