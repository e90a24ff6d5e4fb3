"""Validation in one place: a flat parameters mapping → a frozen, fully defaulted GenerationRequest.

Wire-agnostic: the HTTP adapter has already flattened legacy shapes (target_size → width/height,
list negative_prompt joined). Order of defaults: request → the model's spec (family defaults with
the model's overrides) → settings limits.

Choices, documented here once:
- A null value means "not given" (the default applies).
- Integral floats (512.0) are accepted for integer fields; 512.5, strings and booleans are not.
- A negative prompt the model would ignore (its scale — guidance_scale, or FLUX's true_cfg_scale —
  is <= 1) is *dropped* with a logged warning rather than rejected: clients send one by habit,
  and the canonical request (and its cache key) should say what actually runs. An empty negative
  prompt counts as none.
- Unknown keys are ignored with a logged warning and never reach the pipeline.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping
from typing import Any

from imagine.errors import InvalidRequest
from imagine.models.spec import (
    FamilySpec,
    ModelInfo,
    scheduler_allowed,
    sigma_options_table,
    split_scheduler,
    supported_sigma_options,
)
from imagine.protocols._json import shown_keys
from imagine.request import GenerationRequest, OutputFormat
from imagine.settings import Settings

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1
KNOWN_KEYS = frozenset(
    {
        "guidance_scale",
        "negative_prompt",
        "num_inference_steps",
        "width",
        "height",
        "scheduler",
        "seed",
    }
)


_SHOWN_CHARS = 60  # a value echoed in an error is cut to this (clients can send megabytes)


def _fail(field: str, value: Any, allowed: str) -> InvalidRequest:
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = f"{shown[:_SHOWN_CHARS]}... ({len(shown)} characters)"
    return InvalidRequest(f"{field} = {shown} is invalid: {allowed}", field=field)


def _integer(field: str, value: Any, lo: int, hi: int, allowed: str) -> int:
    """An int (or integral float) in [lo, hi]; `allowed` describes the range in the error."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field, value, allowed)
    if isinstance(value, float):
        if not value.is_integer():
            raise _fail(field, value, allowed)
        value = int(value)
    if not lo <= value <= hi:
        raise _fail(field, value, allowed)
    return value


def _number(field: str, value: Any, lo: float, hi: float) -> float:
    """A finite number in [lo, hi]."""
    allowed = f"must be a number between {lo:g} and {hi:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field, value, allowed)
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _fail(field, value, allowed)
    return value


def _text(field: str, value: Any, max_chars: int, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRequest(f"{field} must be a non-empty string", field=field)
        return None
    if not isinstance(value, str):
        raise _fail(field, value, "must be a string")
    if "\x00" in value:
        raise InvalidRequest(f"{field} contains a NUL character (\\u0000)", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800" (JSON allows it)
        raise InvalidRequest(
            f"{field} is not valid Unicode: a lone surrogate at character {exc.start}",
            field=field,
        ) from None
    if len(value) > max_chars:
        raise InvalidRequest(
            f"{field} is {len(value)} characters long; the limit is {max_chars}", field=field
        )
    return value


def _size(field: str, value: Any, multiple: int, max_pixels: int) -> int:
    allowed = f"must be a positive multiple of {multiple}, with width x height at most {max_pixels}"
    size = _integer(field, value, multiple, max_pixels, allowed)
    if size % multiple:
        raise _fail(field, value, allowed)
    return size


def _schedulers_allowed(spec: FamilySpec, value: Any) -> str:
    """What a scheduler may be: for an allowed class with a bad suffix, that class's suffixes;
    else the classes and every suffix the model takes (per class: GET /models/{id}/info)."""
    class_name, option = split_scheduler(value) if isinstance(value, str) else (None, None)
    if class_name in spec.schedulers and option is not None:
        options = supported_sigma_options(spec, class_name)
        if not options:
            return f"{class_name} takes no sigma suffix"
        return f"{class_name} takes the sigma suffixes " + ", ".join(f":{o}" for o in options)
    allowed = "must be one of " + ", ".join(spec.schedulers)
    suffixes = dict.fromkeys(o for opts in sigma_options_table(spec).values() for o in opts)
    if suffixes:
        allowed += ", some with a sigma suffix " + ", ".join(f":{o}" for o in suffixes)
    return allowed


def build_request(
    *,
    model_id: str,
    prompt: Any,
    parameters: Mapping[str, Any],
    info: ModelInfo,
    settings: Settings,
    output_format: OutputFormat = "png",
) -> GenerationRequest:
    """Validate `prompt` and `parameters` against the model's spec and the settings' limits.

    Returns the canonical request (defaults filled in, seed chosen with `secrets` when absent).
    Raises InvalidRequest(field=...) whose message names the field, the value and what is allowed.
    """
    spec = info.spec
    params = {k: v for k, v in parameters.items() if v is not None}
    unknown = sorted(set(params) - KNOWN_KEYS - set(spec.extras))
    if unknown:
        log.warning("ignoring unknown parameters for %s: %s", model_id, shown_keys(unknown))

    text = _text("inputs", prompt, settings.max_prompt_chars, required=True)
    assert text is not None
    negative = _text(
        "negative_prompt", params.get("negative_prompt"), settings.max_prompt_chars, required=False
    )

    max_pixels = settings.max_pixels
    width = _size("width", params.get("width", spec.default_width), spec.size_multiple, max_pixels)
    height = _size(
        "height", params.get("height", spec.default_height), spec.size_multiple, max_pixels
    )
    if width * height > settings.max_pixels:
        raise InvalidRequest(
            f"width x height = {width}x{height} = {width * height} pixels; the limit is "
            f"{settings.max_pixels} pixels"
            + ("" if "width" in params or "height" in params else " (the model's default size)"),
            field="width",
        )

    steps = _integer(
        "num_inference_steps",
        params.get("num_inference_steps", spec.default_steps),
        1,
        settings.max_steps,
        f"must be an integer between 1 and {settings.max_steps}",
    )
    lo, hi = spec.guidance_range
    guidance = _number(
        "guidance_scale", params.get("guidance_scale", spec.default_guidance), lo, hi
    )

    scheduler = params.get("scheduler", spec.default_scheduler)
    if not isinstance(scheduler, str) or not scheduler_allowed(spec, scheduler):
        raise _fail("scheduler", scheduler, _schedulers_allowed(spec, scheduler))

    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    else:
        seed = _integer("seed", seed, 0, MAX_SEED, f"must be an integer between 0 and {MAX_SEED}")

    extras: dict[str, float] = {}
    for name, (xlo, xhi) in spec.extras.items():
        if name in params:
            extras[name] = _number(name, params[name], xlo, xhi)

    if negative is not None:
        scale = guidance if spec.negative_prompt_scale == "guidance_scale" else None
        scale = extras.get(spec.negative_prompt_scale, 1.0) if scale is None else scale
        if scale <= 1.0:
            log.warning(
                "dropping negative_prompt for %s: it has no effect unless %s > 1",
                model_id,
                spec.negative_prompt_scale,
            )
            negative = None

    return GenerationRequest(
        model_id=model_id,
        prompt=text,
        negative_prompt=negative,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        scheduler=scheduler,
        seed=seed,
        output_format=output_format,
        extras=tuple(sorted(extras.items())),
        model_revision=info.revision,
    )
