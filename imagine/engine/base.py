"""The small interface the HTTP layer depends on, so route tests can use a fake engine."""

from __future__ import annotations

from typing import Any, Protocol

from imagine.engine.job import Job, PreviewPolicy
from imagine.models.spec import ModelInfo
from imagine.request import GenerationRequest, GenerationResult

__all__ = ["Engine", "ModelInfo"]


class Engine(Protocol):
    async def start(self) -> None:
        """Preload the configured models (in the background)."""

    async def close(self) -> None:
        """Stop workers and release models."""

    def describe(self, model_id: str) -> ModelInfo:
        """Resolve a model id without loading it. Raises ModelNotFound."""

    def submit(
        self,
        request: GenerationRequest,
        *,
        client_id: str,
        wait_for_model: bool,
        previews: PreviewPolicy | None = None,
        job_id: str | None = None,
        force: bool = False,
    ) -> Job:
        """Admit one request and return its Job at once (see imagine.engine.job). Raises
        ModelLoading (when not waiting), Overloaded (unless `force`), ModelLoadFailed."""

    async def wait(self, job: Job) -> GenerationResult:
        """The result of a submitted job within the request timeout. Raises Overloaded (it
        never started), GenerationFailed, or the job's error; cancelling the caller cancels it."""

    async def generate(
        self, request: GenerationRequest, *, client_id: str, wait_for_model: bool
    ) -> GenerationResult:
        """Generate one image. Raises ModelLoading (when not waiting), Overloaded, ModelLoadFailed,
        GenerationFailed. Cancelling the awaiting task cancels the work."""

    def health(self) -> dict[str, Any]:
        """Per-model state, for /health."""
