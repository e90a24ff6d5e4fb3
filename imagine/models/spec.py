"""Family specs: what differs between model families, as data plus two small functions.

Adding a family = one `FamilySpec` in `imagine/models/families/` + one tiny-pipeline test.
No `if family == ...` anywhere else: callers read the spec.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from imagine.request import GenerationRequest

if TYPE_CHECKING:  # a contract module: importing it must not import torch (the HTTP edge uses it)
    import torch

    from imagine.models.preview import PreviewSpec
    from imagine.models.stepwise.row import StepFamily

# Sigma schedules a request may add to a scheduler class as a suffix, "<Class>:<option>" (e.g.
# "DPMSolverMultistepScheduler:karras", AUTOMATIC1111's "DPM++ 2M Karras"), and the diffusers
# config flags each one sets. Which classes honour which option is family data
# (FamilySpec.sigma_options): a class that lacks the flag would silently ignore it.
SIGMA_OPTIONS: dict[str, dict[str, Any]] = {
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
}
# Options that need a package imagine does not depend on: offered only where it is installed
# (diffusers raises ImportError when building a beta-sigmas scheduler without scipy).
SIGMA_OPTION_NEEDS: dict[str, str] = {"beta": "scipy"}

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
    # Scheduler class -> the SIGMA_OPTIONS it really applies on this family (a ":karras"-style
    # suffix a request may add). Classes left out take no suffix.
    sigma_options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
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
    # (width, height) the pipeline always runs at, for a model that only knows one size (the
    # embedded 32x32 pixel-space model tiles small objects over a larger canvas): the manager
    # calls the pipeline at this size and scales each image to the request's size. None (every
    # real family): the pipeline runs at the requested size.
    render_size: tuple[int, int] | None = None
    # (width, height) choices a client may offer for this family (GET /models/{id}/info); empty:
    # size_presets() derives them from the model's default size.
    size_presets: tuple[tuple[int, int], ...] = ()
    # The family's step functions for step-level batching (imagine/models/stepwise), where
    # requests join and leave a running batch at any step; None: its requests are batched
    # whole (request-level), as they are for every family when settings.batching is "request".
    stepwise: StepFamily | None = None

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


# Aspect ratios (width, height) a family's size presets take when it names none of its own: the
# common photo and screen formats, each at the model's native area (as SDXL's training buckets).
PRESET_RATIOS: tuple[tuple[int, int], ...] = (
    (1, 1),
    (4, 3),
    (3, 4),
    (3, 2),
    (2, 3),
    (16, 9),
    (9, 16),
)


def size_presets(spec: FamilySpec, max_pixels: int) -> list[tuple[int, int]]:
    """The (width, height) choices to offer for a model of this spec: the default size first,
    then the spec's own presets, else PRESET_RATIOS at the default size's area with each side
    rounded down to the size multiple (so none is larger than the native area). Sizes over
    `max_pixels` are left out; no size twice."""
    step = spec.size_multiple
    area = spec.default_width * spec.default_height
    derived = [
        (
            max(step, int(math.sqrt(area * w / h)) // step * step),
            max(step, int(math.sqrt(area * h / w)) // step * step),
        )
        for w, h in PRESET_RATIOS
    ]
    sizes = [(spec.default_width, spec.default_height), *(spec.size_presets or derived)]
    return [size for size in dict.fromkeys(sizes) if size[0] * size[1] <= max_pixels]


def split_scheduler(name: str) -> tuple[str, str | None]:
    """ "EulerDiscreteScheduler:karras" -> ("EulerDiscreteScheduler", "karras"); no suffix ->
    (name, None). An empty or unknown suffix comes back as is, for validation to refuse."""
    class_name, colon, option = name.partition(":")
    return class_name, (option if colon else None)


@cache
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def supported_sigma_options(spec: FamilySpec, class_name: str) -> tuple[str, ...]:
    """The sigma options a request may add to `class_name` on a model of this spec."""
    return tuple(
        option
        for option in spec.sigma_options.get(class_name, ())
        if option not in SIGMA_OPTION_NEEDS or _installed(SIGMA_OPTION_NEEDS[option])
    )


def sigma_options_table(spec: FamilySpec) -> dict[str, list[str]]:
    """{class: [options]} for the spec's schedulers that have any (GET /models/{id}/info)."""
    table = {name: list(supported_sigma_options(spec, name)) for name in spec.schedulers}
    return {name: options for name, options in table.items() if options}


def scheduler_allowed(spec: FamilySpec, name: str) -> bool:
    """Whether a request may name `name`: an allowed class, with a suffix that class supports."""
    class_name, option = split_scheduler(name)
    if class_name not in spec.schedulers:
        return False
    return option is None or option in supported_sigma_options(spec, class_name)


def scheduler_config(spec: FamilySpec, name: str) -> tuple[str, dict[str, Any]]:
    """The diffusers class to build for a (validated) name and the config to build it with on
    top of the model's own: the class's overrides plus the sigma option's flags. No suffix keeps
    the model's own sigma schedule. With one, every other sigma flag is switched off: diffusers
    refuses two at once, and the model's config may carry one (a checkpoint shipped with
    use_karras_sigmas asked for ":exponential")."""
    class_name, option = split_scheduler(name)
    config = dict(spec.scheduler_overrides.get(class_name, {}))
    if option is not None:
        config.update({flag: False for flags in SIGMA_OPTIONS.values() for flag in flags})
        config.update(SIGMA_OPTIONS[option])
    return class_name, config
