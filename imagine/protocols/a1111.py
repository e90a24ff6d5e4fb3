"""The AUTOMATIC1111 web UI API (`/sdapi/v1/...`) wire format: shape and types only.

Facts from A1111 (modules/api/api.py, sd_samplers, sd_schedulers), the `webuiapi` client and
Open WebUI's automatic1111 engine: `info` is a JSON *string*; `images` are bare base64 PNGs;
errors are `{"error": <type>, "detail", "body", "errors"}` (here plus `code` and `field`);
`webuiapi` sends ~40 keys (`scheduler: "automatic"` among them) and Open WebUI only
`{prompt, batch_size, width, height, steps, negative_prompt?}`.

Samplers and schedule types: imagine.protocols.a1111_samplers (re-exported here). Absent
fields take the *model's* defaults (size, steps, cfg_scale, sampler), not A1111's.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from imagine.errors import ImagineError, InvalidRequest
from imagine.protocols._json import load_json, shown_keys
from imagine.protocols.a1111_samplers import sampler_names, samplers, scheduler_for, schedulers
from imagine.request import GenerationRequest

__all__ = [
    "MAX_IMAGES",
    "Txt2Img",
    "client_field",
    "error_body",
    "infotext",
    "parse_options",
    "parse_txt2img",
    "progress_body",
    "render_info",
    "sampler_names",
    "samplers",
    "scheduler_for",
    "schedulers",
]

log = logging.getLogger(__name__)

MAX_IMAGES = 8  # batch_size x n_iter: images one request may ask for


# Keys taken from a txt2img body; the rest is ignored with one warning.
_KNOWN = (
    "prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "seed", "sampler_name",
    "sampler_index", "scheduler", "batch_size", "n_iter", "override_settings", "send_images",
    "save_images",
)  # fmt: skip
# The service's parameter names → A1111's (seed and scheduler are translated on their own).
_PARAMS = {
    "negative_prompt": "negative_prompt",
    "width": "width",
    "height": "height",
    "num_inference_steps": "steps",
    "guidance_scale": "cfg_scale",
}
_FIELDS = {"inputs": "prompt", "num_inference_steps": "steps", "guidance_scale": "cfg_scale"}


@dataclass(frozen=True, slots=True)
class Txt2Img:
    """A parsed `POST /sdapi/v1/txt2img` body."""

    prompt: Any
    params: dict[str, Any]  # the service's parameters but the scheduler (None: the default)
    sampler: str | None
    scheduler: str | None
    batch_size: int
    n_iter: int
    checkpoint: str | None  # override_settings.sd_model_checkpoint: this call only
    send_images: bool
    parameters: dict[str, Any]  # the known keys as received, echoed back

    @property
    def n(self) -> int:
        return self.batch_size * self.n_iter

    def canonical(self, scheduler: str | None) -> dict[str, Any]:
        """The service layer's parameters (validation checks the values)."""
        return {**self.params, "scheduler": scheduler}


def parse_txt2img(body: bytes) -> Txt2Img:
    """Raises InvalidRequest naming the field as A1111 names it."""
    payload = _object(body)
    ignored = [k for k in payload if k not in _KNOWN]
    overrides = payload.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise InvalidRequest("override_settings: expected an object", field="override_settings")
    ignored += [f"override_settings.{k}" for k in overrides if k != "sd_model_checkpoint"]
    if ignored:  # cut short: a client can send thousands of keys
        log.warning("txt2img: ignoring unsupported keys: %s", shown_keys(ignored))
    seed = payload.get("seed")
    if isinstance(seed, int | float) and not isinstance(seed, bool) and seed == -1:
        seed = None  # A1111's "random"
    batch_size, n_iter = _count(payload, "batch_size"), _count(payload, "n_iter")
    if batch_size * n_iter > MAX_IMAGES:
        raise InvalidRequest(
            f"batch_size x n_iter = {batch_size}x{n_iter} images; at most {MAX_IMAGES} a request",
            field="batch_size",
        )
    params = {ours: payload.get(theirs) for ours, theirs in _PARAMS.items()}
    return Txt2Img(
        prompt=payload.get("prompt"),
        params={**params, "seed": seed},
        sampler=_name(payload, "sampler_name") or _name(payload, "sampler_index"),
        scheduler=_name(payload, "scheduler"),
        batch_size=batch_size,
        n_iter=n_iter,
        checkpoint=_name(overrides, "sd_model_checkpoint", "override_settings."),
        send_images=_flag(payload, "send_images"),
        parameters={k: payload[k] for k in _KNOWN if k in payload},
    )


def parse_options(body: bytes) -> str | None:
    """The `sd_model_checkpoint` of a `POST /sdapi/v1/options` body (None: not switching).
    The other options are accepted and ignored (Open WebUI posts back all it read)."""
    return _name(_object(body), "sd_model_checkpoint")


def infotext(request: GenerationRequest, model: str, model_hash: str | None) -> str:
    """A1111's per-image infotext (what its UI pastes back): prompt, negative, parameters."""
    sampler, schedule = sampler_names(request.scheduler)
    fields: list[tuple[str, Any]] = [
        ("Steps", request.num_inference_steps),
        ("Sampler", sampler),
        ("Schedule type", None if schedule == "Automatic" else schedule),
        ("CFG scale", f"{request.guidance_scale:g}"),
        ("Seed", request.seed),
        ("Size", f"{request.width}x{request.height}"),
        ("Model hash", model_hash),
        ("Model", model),
    ]
    params = ", ".join(f"{k}: {_quote(str(v))}" for k, v in fields if v is not None)
    negative = f"\nNegative prompt: {request.negative_prompt}" if request.negative_prompt else ""
    return f"{request.prompt}{negative}\n{params}"


def render_info(
    parsed: Txt2Img,
    first: GenerationRequest,
    made: list[GenerationRequest],
    model: str,
    model_hash: str | None,
    when: str,
) -> str:
    """`info`: a JSON string with A1111's `Processed.js()` keys. `first` is the canonical
    request; `made` the requests of the images returned (fewer after an interrupt)."""
    sampler, schedule = sampler_names(first.scheduler)
    info = {
        "prompt": first.prompt,
        "all_prompts": [r.prompt for r in made],
        "negative_prompt": first.negative_prompt or "",
        "all_negative_prompts": [r.negative_prompt or "" for r in made],
        "seed": made[0].seed if made else first.seed,
        "all_seeds": [r.seed for r in made],
        "subseed": -1,
        "all_subseeds": [],
        "subseed_strength": 0,
        "width": first.width,
        "height": first.height,
        "sampler_name": sampler,
        "scheduler": schedule,
        "cfg_scale": first.guidance_scale,
        "steps": first.num_inference_steps,
        "batch_size": parsed.batch_size,
        "n_iter": parsed.n_iter,
        "restore_faces": False,
        "sd_model_name": model,
        "sd_model_hash": model_hash,
        "extra_generation_params": {} if schedule == "Automatic" else {"Schedule type": schedule},
        "index_of_first_image": 0,
        "infotexts": [infotext(r, model, model_hash) for r in made],
        "styles": [],
        "job_timestamp": when,
        "clip_skip": 1,
    }
    return json.dumps(info, ensure_ascii=False)


def client_field(exc: ImagineError, parsed: Txt2Img | None = None) -> ImagineError:
    """Name validation's fields as A1111 clients sent them (`inputs` → `prompt`, ...); a
    scheduler validation refuses is the sampler's (with its schedule type) on this model."""
    if not isinstance(exc, InvalidRequest):
        return exc
    if exc.field == "scheduler" and parsed is not None:
        asked = f"{parsed.sampler or 'the default sampler'!r} with scheduler {parsed.scheduler!r}"
        return InvalidRequest(
            f"sampler_name: {asked[:120]} cannot run on this model ({exc.message})",
            field="sampler_name",
        )
    if exc.field not in _FIELDS:
        return exc
    name = _FIELDS[exc.field]
    message = exc.message
    if message.startswith(exc.field):
        message = name + message[len(exc.field) :]
    return InvalidRequest(message, field=name)


def progress_body(
    *,
    fraction: float = 0.0,
    eta_s: float = 0.0,
    job_count: int = 0,
    job_no: int = 0,
    step: int = 0,
    steps: int = 0,
    started: float | None = None,
    interrupted: bool = False,
    image: bytes | None = None,
) -> dict[str, Any]:
    """`GET /sdapi/v1/progress`; the defaults are A1111's idle answer."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(started)) if started else "0"
    return {
        "progress": min(max(fraction, 0.0), 1.0),
        "eta_relative": eta_s,
        "state": {
            "skipped": False,
            "interrupted": interrupted,
            "job": "txt2img" if job_count else "",
            "job_count": job_count,
            "job_timestamp": stamp,
            "job_no": job_no,
            "sampling_step": step,
            "sampling_steps": steps,
        },
        "current_image": base64.b64encode(image).decode() if image else None,
        "textinfo": None,
    }


def error_body(exc: ImagineError, field: str | None = None) -> dict[str, Any]:
    """A1111's error shape, plus imagine's stable `code` and the `field` at fault."""
    return {
        "error": type(exc).__name__,
        "detail": exc.message,
        "body": "",
        "errors": exc.message,
        "code": exc.code,
        "field": field or getattr(exc, "field", None),
    }


# --- helpers


def _object(body: bytes) -> dict[str, Any]:
    payload = load_json(body or b"{}")
    if not isinstance(payload, dict):
        raise InvalidRequest("body: expected a JSON object", field="body")
    return payload


def _name(payload: dict[str, Any], key: str, prefix: str = "") -> str | None:
    value = payload.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{prefix}{key}: expected a string", field=prefix + key)
    if "\x00" in value or not value.isascii() and not _encodable(value):
        raise InvalidRequest(
            f"{prefix}{key}: a NUL character or a lone surrogate", field=prefix + key
        )
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800" (JSON allows it)
        return False
    return True


def _count(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key, 1)
    if value is None:
        return 1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGES:
        raise InvalidRequest(
            f"{key} = {str(value)[:20]} is invalid: must be an integer from 1 to {MAX_IMAGES}",
            field=key,
        )
    return value


def _flag(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key)
    if value is None:
        return True
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key}: expected true or false", field=key)
    return value


def _quote(text: str) -> str:
    """A1111 quotes infotext values holding a separator."""
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text
