"""The OpenAI Images API wire format (`POST /v1/images/generations`): parse a body, turn OpenAI's
`model`, `size` and `quality` into what a model runs, render the answer, the stream events and
errors. Shape and types only: ranges are `imagine.validation`'s job.

Facts (openai-python 3.57 and the API reference): `n` 1–10, `size` "WxH" or "auto",
`quality` auto|low|medium|high (dall-e: standard|hd), `response_format` url|b64_json,
`output_format` png|jpeg|webp, `output_compression` 0–100, `partial_images` 0–3. Errors are
`{"error": {"message", "type", "param", "code"}}`; the client raises by status (400
BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429 RateLimitError after retrying
per `retry-after`). A stream is SSE whose `data` carries the event (`type` inside); a `data`
with an `error` key raises in the client.

Decided here (README "OpenAI API"):
- `model`: an alias from `settings.openai_model_aliases` (dall-e-2, dall-e-3, gpt-image-1… →
  the default model), absent → the default model, else an imagine model id.
- `size`: the fixed sizes apps offer from OpenAI's menus (256², 512², 1024², 1792×1024, …) are
  an aspect ratio at the model's native area (Open WebUI's "512x512" on SDXL runs 1024×1024; on
  imagine/shapes 64×64); any other "WxH" is taken literally; "auto" is the model's default.
  imagine's own `width`/`height` win over `size`, `num_inference_steps` over `quality`.
- `quality`: steps relative to the model's default: low = ½, medium/standard/auto = 1×,
  high/hd = 1½× (within max_steps).
- `response_format` defaults to `url` (as OpenAI's for the dall-e models; LangChain reads only
  URLs). `background: transparent` is a 400: no served model makes an alpha channel.
- A stream makes one image (`n` must be 1); its partial images are the job's previews.
"""

from __future__ import annotations

import base64
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from imagine.errors import ImagineError, InvalidRequest
from imagine.models.spec import FamilySpec
from imagine.protocols._json import load_json, shown_keys
from imagine.request import OutputFormat
from imagine.settings import Settings

__all__ = [
    "ImagesRequest",
    "completed_event",
    "error_body",
    "model_for",
    "parameters_for",
    "parse",
    "partial_event",
    "render",
]

log = logging.getLogger(__name__)

MAX_PARTIAL_IMAGES = 3
# imagine's own parameters, accepted at the top level (as `extra_body` sends them).
OWN_PARAMETERS = (
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "scheduler",
    "width",
    "height",
)
_OPENAI_KEYS = {
    "prompt",
    "model",
    "n",
    "size",
    "quality",
    "response_format",
    "output_format",
    "output_compression",
    "background",
    "style",
    "user",
    "moderation",
    "stream",
    "partial_images",
}
# Sizes from OpenAI's menus (dall-e-2, dall-e-3, gpt-image): an aspect ratio, not a size.
MENU_SIZES = frozenset(
    {"256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536"}
)
QUALITY_STEPS = {
    "low": 0.5,
    "medium": 1.0,
    "standard": 1.0,
    "auto": 1.0,
    "high": 1.5,
    "hd": 1.5,
}
_FORMATS: dict[str, OutputFormat] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


@dataclass(frozen=True, slots=True)
class ImagesRequest:
    """A parsed body: OpenAI's fields (checked for type and enum) and imagine's own."""

    prompt: str
    model: str | None = None
    n: int = 1
    size: str = "auto"
    quality: str = "auto"
    response_format: Literal["url", "b64_json"] = "url"
    output_format: OutputFormat = "png"
    output_compression: int | None = None
    background: str = "auto"
    stream: bool = False
    partial_images: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)  # imagine's own, as sent

    def echo(self) -> dict[str, Any]:
        """What the job store keeps as this request's input."""
        return {
            "prompt": self.prompt,
            "model": self.model,
            "n": self.n,
            "size": self.size,
            "quality": self.quality,
            "output_format": self.output_format,
            **self.parameters,
        }


def parse(body: bytes, *, max_n: int) -> ImagesRequest:
    """Raises InvalidRequest naming the field (OpenAI's name for it)."""
    payload = load_json(body or b"null")
    if not isinstance(payload, dict):
        raise InvalidRequest("body: expected a JSON object with a `prompt`", field="body")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt: required, a non-empty string", field="prompt")
    unknown = sorted(set(payload) - _OPENAI_KEYS - set(OWN_PARAMETERS))
    if unknown:
        log.warning("ignoring unknown keys: %s", shown_keys(unknown))
    n = _int(payload, "n", 1, 1, max_n)
    stream = _choice(payload, "stream", False, (True, False))
    if stream and n != 1:
        raise InvalidRequest("n: a streamed request makes one image (n = 1)", field="n")
    compression = payload.get("output_compression")
    return ImagesRequest(
        prompt=prompt,
        model=_string(payload, "model"),
        n=n,
        size=_string(payload, "size") or "auto",
        quality=_choice(payload, "quality", "auto", tuple(QUALITY_STEPS)),
        response_format=_choice(payload, "response_format", "url", ("url", "b64_json")),
        output_format=_FORMATS[_choice(payload, "output_format", "png", tuple(_FORMATS))],
        output_compression=None
        if compression is None
        else _int(payload, "output_compression", 100, 0, 100),
        background=_background(payload),
        stream=stream,
        partial_images=_int(payload, "partial_images", 0, 0, MAX_PARTIAL_IMAGES),
        parameters={k: payload[k] for k in OWN_PARAMETERS if payload.get(k) is not None},
    )


def model_for(request: ImagesRequest, settings: Settings) -> str:
    """The imagine model id `model` names (an alias, the default, or an id as sent)."""
    name = (request.model or "").strip()
    if not name:
        return settings.default_model
    alias = settings.openai_model_aliases.get(name)
    if alias is not None:
        return alias or settings.default_model
    return name


def parameters_for(request: ImagesRequest, spec: FamilySpec, settings: Settings) -> dict[str, Any]:
    """The flat parameters validation sees: imagine's own keys, then `size` and `quality`."""
    params = dict(request.parameters)
    if "width" not in params and "height" not in params:
        size = _size(request.size, spec)
        if size is not None:
            params["width"], params["height"] = size
    if "num_inference_steps" not in params and request.quality in QUALITY_STEPS:
        steps = round(spec.default_steps * QUALITY_STEPS[request.quality])
        params["num_inference_steps"] = max(1, min(settings.max_steps, steps))
    return params


def openai_field(exc: InvalidRequest, request: ImagesRequest | None) -> str | None:
    """The field as OpenAI names it: `size` when the size came from `size`, `quality` for
    steps it chose, `prompt` for validation's `inputs`."""
    name = exc.field
    if name == "inputs":
        return "prompt"
    own = request.parameters if request is not None else {}
    if name in ("width", "height") and name not in own:
        return "size"
    if name == "num_inference_steps" and name not in own:
        return "quality"
    return name


def render(
    *,
    created: int,
    images: list[dict[str, Any]],
    request: ImagesRequest,
    size: str,
) -> dict[str, Any]:
    """The answer: `images` are `{"url": ...}` or `{"b64_json": ...}` items."""
    return {
        "created": created,
        "data": [{**item, "revised_prompt": None} for item in images],
        "size": size,
        "output_format": request.output_format,
        "quality": request.quality,
        "background": "opaque",
    }


def partial_event(
    *, image: bytes, index: int, request: ImagesRequest, size: str, created: int
) -> dict[str, Any]:
    return {
        "type": "image_generation.partial_image",
        "partial_image_index": index,
        **_event_fields(image, request, size, created),
    }


def completed_event(
    *, image: bytes, request: ImagesRequest, size: str, created: int
) -> dict[str, Any]:
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    return {
        "type": "image_generation.completed",
        **_event_fields(image, request, size, created),
        "usage": {**usage, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}},
    }


def error_body(exc: ImagineError, status: int, param: str | None) -> dict[str, Any]:
    kind = {401: "authentication_error", 429: "rate_limit_error"}.get(status)
    if kind is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": exc.message, "type": kind, "param": param, "code": exc.code}}


def _event_fields(image: bytes, request: ImagesRequest, size: str, created: int) -> dict[str, Any]:
    return {
        "b64_json": base64.b64encode(image).decode(),
        "created_at": created,
        "size": size,
        "quality": request.quality,
        "background": "opaque",
        "output_format": request.output_format,
    }


def _size(size: str, spec: FamilySpec) -> tuple[int, int] | None:
    """(width, height) for `size`, or None for the model's default."""
    if size == "auto":
        return None
    match = _SIZE.match(size)
    if match is None:
        raise InvalidRequest(
            f"size = {size[:40]!r} is invalid: use 'WIDTHxHEIGHT' (e.g. '1024x1024') or 'auto'",
            field="size",
        )
    width, height = int(match[1]), int(match[2])
    if width == 0 or height == 0:
        raise InvalidRequest(f"size = {size[:40]!r} is invalid: both sides > 0", field="size")
    if f"{width}x{height}" not in MENU_SIZES:
        return width, height
    # An aspect ratio at the model's native area, each side a multiple of the family's.
    area = spec.default_width * spec.default_height
    ratio = width / height
    step = spec.size_multiple
    return (
        max(step, round(math.sqrt(area * ratio) / step) * step),
        max(step, round(math.sqrt(area / ratio) / step) * step),
    )


def _string(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{key}: expected a string", field=key)
    return value


def _choice(payload: dict[str, Any], key: str, default: Any, allowed: tuple[Any, ...]) -> Any:
    value = payload.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        value = value.strip().lower()
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        shown = ", ".join(str(a).lower() for a in allowed)
        raise InvalidRequest(f"{key} = {str(value)[:40]!r} is invalid: one of {shown}", field=key)
    return value


def _int(payload: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = payload.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequest(
            f"{key} = {str(value)[:40]!r} is invalid: an integer from {lo} to {hi}", field=key
        )
    return value


def _background(payload: dict[str, Any]) -> str:
    value = _choice(payload, "background", "auto", ("auto", "opaque", "transparent"))
    if value == "transparent":
        raise InvalidRequest(
            "background = 'transparent' is not supported: no model served here makes an alpha "
            "channel; use 'opaque' or 'auto'",
            field="background",
        )
    return value
