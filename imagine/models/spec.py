"""Family specs: what differs between model families, as data plus two small functions.

Adding a family = one `FamilySpec` in `imagine/models/families/` + one tiny-pipeline test.
No `if family == ...` anywhere else: callers read the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagine.request import GenerationRequest

if TYPE_CHECKING:  # a contract module: importing it must not import torch (the HTTP edge uses it)
    import torch

    from imagine.models.preview import PreviewSpec

# Builds the keyword arguments of one pipeline call for a batch of compatible requests
# (same batch_key). The generators list has one CPU generator per request, seeded from it.
CallKwargsBuilder = Callable[[Sequence[GenerationRequest], "list[torch.Generator]"], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class OptionalPart:
    """A part a model of the family can be served without (settings.model_options[id].without)."""

    components: tuple[str, ...]  # pipeline components not loaded (passed as None)
    max_prompt_tokens: int | None = None  # the prompt token limit without it, when it changes


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """Defaults, limits and call-building for one model family (or one model's overrides of it)."""

    name: str  # "sd", "sdxl", "sd3", "flux", "kolors", "shapes", ...
    pipeline_classes: tuple[str, ...]  # model_index.json `_class_name`s that identify the family
    default_steps: int
    default_guidance: float
    default_width: int
    default_height: int
    size_multiple: int  # width and height must be multiples of this
    guidance_range: tuple[float, float]
    schedulers: tuple[str, ...]  # diffusers scheduler class names a request may pick
    default_scheduler: str  # the class the model runs when the request names none
    # Extra config applied when swapping to a scheduler, e.g. flow sigmas for DPM++ on FLUX/SD3.
    scheduler_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_prompt_tokens: int = 77
    # Family-specific extra parameters a request may set: name -> (min, max).
    extras: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    build_call_kwargs: CallKwargsBuilder | None = None
    # The parameter that must be > 1 for a negative prompt to have any effect: "guidance_scale"
    # (classic CFG) or an extra such as FLUX's "true_cfg_scale". Validation drops a negative
    # prompt that would be ignored, so the canonical request says what actually runs.
    negative_prompt_scale: str = "guidance_scale"
    # dtype on an accelerator when settings.dtype is "auto" (CPU always runs float32).
    preferred_dtype: str = "float16"
    # Parts a model may be served without, by the name settings use: e.g. SD3's "t5".
    optional_parts: Mapping[str, OptionalPart] = field(default_factory=dict)
    # How to draw a live preview of the x0 estimate mid-generation (imagine/models/preview.py);
    # None: no previews for this family.
    preview: PreviewSpec | None = None

    def batch_key(self, request: GenerationRequest) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call (one generator each)."""
        return (
            request.model_id,
            request.width,
            request.height,
            request.num_inference_steps,
            request.guidance_scale,
            request.scheduler,
            request.negative_prompt is None,
            request.extras,
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What validation and `GET /models/{id}/info` need to know about a model, without loading
    it."""

    model_id: str
    spec: FamilySpec  # the family spec with this model's overrides applied (e.g. LCM-LoRA defaults)
    revision: str
    state: str  # "unloaded" | "loading" | "ready" | "failed"
