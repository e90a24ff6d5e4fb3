"""What the engine needs from the model manager, as a Protocol.

`imagine.models.manager.ModelManager` satisfies it structurally; engine tests pass a fake with
controllable latency and failures. Keeping the seam here means the engine imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from imagine.models.spec import ModelInfo
from imagine.request import GenerationRequest, GenerationResult, StepInfo, StepObserver

__all__ = [
    "ManagerPort",
    "StepInfo",
    "StepObserver",
    "StepFailed",
    "Stepper",
    "model_bytes",
    "model_revision",
    "model_thread",
    "stepper_of",
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


class StepFailed(Exception):
    """Some rows of a Stepper call failed: `errors` maps each to its exception; `started` (from
    `start`) holds the rows that did start."""

    def __init__(self, errors: dict[Any, Exception], started: list[Any] | None = None) -> None:
        super().__init__(f"{len(errors)} row(s) failed")
        self.errors = errors
        self.started = started or []


class Stepper(Protocol):
    """Step-level batching on one loaded model (imagine.models.stepwise.runner.StepRunner):
    requests become rows that are stepped together, one denoising step per call, joining and
    leaving between steps. Every call is BLOCKING and belongs on the model's thread. `start`
    and `step` raise StepFailed (its `errors`: row → exception; `started`: the rows that did
    start) when some rows fail; the others carry on."""

    def group_key(self, request: GenerationRequest) -> Hashable:
        """Rows with equal keys can be stepped together."""

    def start(
        self, requests: Sequence[GenerationRequest], *, previews: bool, owners: Sequence[Any]
    ) -> list[Any]:
        """Rows (`row.owner` is the matching owner) ready for their first step."""

    def step(self, rows: Sequence[Any]) -> None:
        """One denoising step for every row (`row.index`, `row.total`, `row.done` tell where
        each stands)."""

    def preview(self, row: Any) -> Callable[[int], Any]:
        """The row's preview renderer for StepInfo."""

    def finish(self, rows: Sequence[Any]) -> list[GenerationResult]:
        """Decode finished rows; they leave."""

    def drop(self, rows: Sequence[Any]) -> None:
        """Forget rows that leave unfinished."""


def stepper_of(manager: Any, loaded: Any) -> Stepper | None:
    """The manager's Stepper for this loaded model; None when the manager or the model's family
    has none (fakes, families without step functions)."""
    make = getattr(manager, "stepper", None)
    return make(loaded) if callable(make) else None


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
