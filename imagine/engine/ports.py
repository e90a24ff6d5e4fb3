"""What the engine needs from the model manager, as a Protocol.

`imagine.models.manager.ModelManager` satisfies it structurally; engine tests pass a fake with
controllable latency and failures. Keeping the seam here means the engine imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from imagine.models.spec import ModelInfo
from imagine.request import GenerationRequest, GenerationResult, StepInfo, StepObserver

__all__ = [
    "ManagerPort",
    "StepInfo",
    "StepObserver",
    "model_bytes",
    "model_revision",
    "model_thread",
]


class ManagerPort(Protocol):
    """The subset of ModelManager (docs/contracts.md) the engine calls."""

    def describe(self, model_id: str) -> ModelInfo:
        """Resolve without loading. Raises ModelNotFound."""

    def estimated_load_time(self, model_id: str) -> float:
        """Seconds, from measured load times."""

    async def load(self, model_id: str) -> Any:
        """Load once and return the LoadedModel (its `memory_bytes` is what the memory budget
        counts). Raises ModelLoadFailed."""

    def run_batch(
        self,
        model: Any,
        requests: Sequence[GenerationRequest],
        *,
        observers: Sequence[StepObserver] | None = None,
    ) -> list[GenerationResult]:
        """BLOCKING: one output per input, in order. `observers[i]` is called after every
        denoising step for request i (the engine counts steps by it); once all of them return
        True the call stops (its outputs are then partial and discarded)."""

    def unload(self, model_id: str) -> None:
        """Release the model's pipeline."""

    def health(self) -> dict[str, Any]:
        """Manager-level health details."""


def model_bytes(loaded: Any) -> int:
    """The memory one LoadedModel holds, in bytes: its `memory_bytes`, which the manager
    measures once at load time (parameters + buffers of the pipeline's torch modules).
    0 for a loaded model that does not say (it then never counts against the budget)."""
    value = getattr(loaded, "memory_bytes", None)
    return value if isinstance(value, int) and value > 0 else 0


def model_revision(loaded: Any) -> str:
    """The weights' revision of one LoadedModel (`resolved.revision`, the folder hash or Hub
    commit it was loaded from); "" for a loaded model that does not say."""
    value = getattr(getattr(loaded, "resolved", None), "revision", "")
    return value if isinstance(value, str) else ""


def model_thread(loaded: Any) -> Executor | None:
    """The single-thread executor the manager loaded this model on (`LoadedModel.thread`),
    where its calls should run too; None when the loaded model has none (fakes)."""
    value = getattr(loaded, "thread", None)
    return value if isinstance(value, Executor) else None
