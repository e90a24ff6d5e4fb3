"""What the engine needs from the model manager, as a Protocol.

`imagine.models.manager.ModelManager` satisfies it structurally; engine tests pass a fake with
controllable latency and failures. Keeping the seam here means the engine imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from imagine.engine.base import ModelInfo
from imagine.request import GenerationRequest, GenerationResult


class ManagerPort(Protocol):
    """The subset of ModelManager (docs/contracts.md) the engine calls."""

    def describe(self, model_id: str) -> ModelInfo:
        """Resolve without loading. Raises ModelNotFound."""

    def state(self, model_id: str) -> str:
        """unloaded | loading | ready | failed"""

    def estimated_load_time(self, model_id: str) -> float:
        """Seconds, from measured load times."""

    async def load(self, model_id: str) -> Any:
        """Load once and return the LoadedModel. Raises ModelLoadFailed."""

    def run_batch(
        self,
        model: Any,
        requests: Sequence[GenerationRequest],
        *,
        interrupt: Callable[[], bool] | None = None,
    ) -> list[GenerationResult]:
        """BLOCKING: one output per input, in order."""

    def unload(self, model_id: str) -> None:
        """Release the model's pipeline."""

    def health(self) -> dict[str, Any]:
        """Manager-level health details."""


def model_bytes(loaded: Any) -> int:
    """Best estimate of the memory one LoadedModel holds, in bytes.

    Uses `loaded.memory_bytes` when the manager provides it, else sums the parameters and buffers
    of the torch modules among `loaded.pipeline.components`; 0 when neither is available.
    """
    explicit = getattr(loaded, "memory_bytes", None)
    if isinstance(explicit, int):
        return explicit
    pipeline = getattr(loaded, "pipeline", None)
    components = getattr(pipeline, "components", None)
    if not isinstance(components, dict):
        return 0
    total = 0
    for component in components.values():
        tensors = []
        if hasattr(component, "parameters") and hasattr(component, "buffers"):
            tensors = [*component.parameters(), *component.buffers()]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total
