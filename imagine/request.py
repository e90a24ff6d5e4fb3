"""The canonical request and result that every layer below the HTTP edge speaks.

Three shapes, by role (see README "Architecture"):
  wire request (imagine.protocols.hf)  →  GenerationRequest (here)  →  pipeline kwargs (family spec)

A GenerationRequest is frozen, fully defaulted and validated: every field holds the value the
pipeline will actually use (the model's defaults filled in, the seed chosen). Its `cache_key()`
is therefore a canonical description of the work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from PIL import Image

OutputFormat = Literal["png", "jpeg", "webp"]


class JobState(StrEnum):
    """A request's lifecycle: queued → running → succeeded | failed | canceled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One image to generate, as the pipeline will see it."""

    model_id: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str  # diffusers class name actually used (the model default when none asked)
    seed: int
    output_format: OutputFormat = "png"
    # JPEG/WebP quality 1-100 (OpenAI's output_compression); None: the encoder's default.
    output_quality: int | None = None
    # Family-specific extras the spec allows (e.g. ("true_cfg_scale", 4.0) for FLUX), sorted.
    extras: tuple[tuple[str, Any], ...] = ()
    model_revision: str = ""  # identifies the weights (folder hash / hub commit) for the cache key

    def parameters(self) -> dict[str, Any]:
        """The generation parameters, as embedded in the image and reported to the client."""
        d = asdict(self)
        d.pop("output_format")
        d.pop("output_quality")
        d.pop("model_revision")
        d["extras"] = dict(self.extras)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationRequest:
        """The inverse of `dataclasses.asdict` (how the job store keeps a request)."""
        d = dict(d)
        d["extras"] = tuple(tuple(pair) for pair in d.get("extras", ()))
        return cls(**d)

    def cache_key(self) -> str:
        """A stable hash of everything that determines the output bytes."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(slots=True)
class GenerationResult:
    """What the engine hands back for one request."""

    request: GenerationRequest
    image: Image.Image
    # Seconds per stage, e.g.
    # {"queue": .., "text_encoding": .., "denoising": .., "decoding": .., "total": ..}
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a request's step observer hears after each denoising step of its pipeline call."""

    step: int  # steps done, 1-based
    total: int
    # Renders this request's current x0 estimate as a small RGB image (longer side <= the
    # argument), or None when the family has no preview. Call it only on the model's thread,
    # inside the observer: it reads the pipeline's live tensors.
    preview: Callable[[int], Image.Image | None]


# Called on the model's thread after every denoising step, once per request of the call; returns
# True when that request wants the call stopped. The call stops once every request says so.
StepObserver = Callable[[StepInfo], bool]


def no_preview(max_side: int) -> None:
    return None
