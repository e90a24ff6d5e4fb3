"""What a model replica streams back to the ingress for one request, and the errors in it.

    JobSnapshot …  (queued with position and ETA, running with step/total, ETA and preview)
    then exactly one of:  Finished(result)  │  Failed(code, attrs)

Snapshots and results travel as they are (frozen dataclasses, a PIL image: Ray pickles them);
errors travel as their class name and attributes, because imagine's errors take keyword-only
arguments that plain exception pickling cannot restore (an `Overloaded` would arrive as a
TypeError and its Retry-After would be lost). No Ray here, so it is testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagine import errors
from imagine.engine.job import JobSnapshot
from imagine.request import GenerationResult

__all__ = ["Failed", "Finished", "ReplicaEvent", "error_from_wire", "error_to_wire"]


@dataclass(frozen=True, slots=True)
class Finished:
    """The request's image: the last event of a successful stream."""

    result: GenerationResult
    replica: str  # which replica made it (for logs and tests)


@dataclass(frozen=True, slots=True)
class Failed:
    """The request's error: the last event of a failed stream (see `error_from_wire`)."""

    error_class: str
    message: str
    attrs: dict[str, Any]


ReplicaEvent = JobSnapshot | Finished | Failed


def error_to_wire(error: BaseException) -> Failed:
    """An error as a `Failed` event: imagine's own errors keep their class and attributes
    (`retry_after`, `field`, `estimated_time`); anything else becomes a GenerationFailed whose
    message names only the exception's type (its text may hold paths or tensors)."""
    if isinstance(error, errors.ImagineError) and _known(type(error).__name__):
        attrs = {k: v for k, v in vars(error).items() if k != "message"}
        return Failed(error_class=type(error).__name__, message=error.message, attrs=attrs)
    return Failed(
        error_class="GenerationFailed",
        message=f"generation failed on a model replica ({type(error).__name__})",
        attrs={},
    )


def error_from_wire(event: Failed) -> errors.ImagineError:
    """The ImagineError a `Failed` event describes, as the replica raised it."""
    cls = getattr(errors, event.error_class, None) if _known(event.error_class) else None
    if cls is None:
        return errors.GenerationFailed(event.message)
    error = cls.__new__(cls)
    Exception.__init__(error, event.message)
    error.message = event.message
    error.__dict__.update(event.attrs)
    return error


def _known(name: str) -> bool:
    cls = getattr(errors, name, None)
    return isinstance(cls, type) and issubclass(cls, errors.ImagineError)
