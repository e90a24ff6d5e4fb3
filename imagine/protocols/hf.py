"""The Hugging Face text-to-image wire format, every shape the real clients send.

Shape and types only: this module turns a request body and headers into a prompt, a flat
parameters dict and the two legacy options. Ranges, defaults and unknown keys are the job of
`imagine.validation.build_request`, which sees the dict this module returns.

Accepted (the shapes the real clients send, old and new):
  - JSON `{"inputs": str, "parameters": {...} | {} | absent, "options": {...}?}`
  - `parameters.target_size: {width, height}` (Python 0.25-0.28); explicit width/height win
  - `parameters.negative_prompt` as a string or a list of strings (joined with ", ")
  - integral floats like `512.0` (passed on unchanged; validation decides)
  - unknown keys inside `parameters` (Python's `extra_body`): kept, validation warns and drops
  - legacy top-level `options: {"use_cache": bool, "wait_for_model": bool}`
  - a raw text body (not JSON) is the prompt

Every malformed shape raises `InvalidRequest` naming the field. No torch here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from imagine.errors import InvalidRequest
from imagine.protocols._json import load_json, shown_keys
from imagine.request import OutputFormat

__all__ = [
    "DEFAULT_FORMAT",
    "WireRequest",
    "negotiate_format",
    "parse_body",
    "parse_bool_header",
]

log = logging.getLogger(__name__)

# `*/*`, `image/*`, no Accept at all, or nothing we can encode. AIC defaulted to JPEG; we choose
# PNG: lossless (a seeded request gives the same bytes every time), it carries the metadata in a
# plain text chunk, it is what the Python client asks for anyway, and `curl -o x.png` gets a PNG.
DEFAULT_FORMAT: OutputFormat = "png"

_MEDIA_TYPES: dict[str, OutputFormat] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/pjpeg": "jpeg",
    "image/webp": "webp",
}
_KNOWN_TOP_LEVEL = {"inputs", "parameters", "options"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A parsed body: the prompt, the flat parameters and the legacy `options` (None = unset)."""

    prompt: str
    parameters: dict[str, Any] = field(default_factory=dict)
    use_cache: bool | None = None
    wait_for_model: bool | None = None


def parse_body(body: bytes, content_type: str | None = None) -> WireRequest:
    """Parse a request body. Raises InvalidRequest naming the offending field.

    A body is JSON when the content type says so or when it starts with `{`; then bad JSON is
    an error. Anything else (text/plain, curl's form default) that is not JSON is the prompt.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("body: not valid UTF-8", field="body") from None
    stripped = text.strip()
    if not stripped:
        raise InvalidRequest("inputs: required, a non-empty prompt string", field="inputs")
    declared_json = (content_type or "").split(";")[0].strip().lower().endswith("json")
    if declared_json or stripped.startswith("{"):
        payload = load_json(stripped)
    else:
        return WireRequest(prompt=text)
    if isinstance(payload, str):  # a bare JSON string is a prompt too
        return _from_object({"inputs": payload})
    if not isinstance(payload, dict):
        raise InvalidRequest(
            f"body: expected a JSON object with 'inputs', got {_type_name(payload)}", field="body"
        )
    return _from_object(payload)


def _from_object(payload: dict[str, Any]) -> WireRequest:
    prompt = payload.get("inputs")
    if prompt is None:
        raise InvalidRequest("inputs: required, a non-empty prompt string", field="inputs")
    if not isinstance(prompt, str):
        raise InvalidRequest(f"inputs: expected a string, got {_type_name(prompt)}", field="inputs")
    if not prompt.strip():
        raise InvalidRequest("inputs: must not be empty", field="inputs")
    unknown = sorted(set(payload) - _KNOWN_TOP_LEVEL)
    if unknown:
        log.warning("ignoring unknown top-level keys: %s", shown_keys(unknown))
    use_cache, wait_for_model = _parse_options(payload.get("options"))
    return WireRequest(
        prompt=prompt,
        parameters=_normalise_parameters(payload.get("parameters")),
        use_cache=use_cache,
        wait_for_model=wait_for_model,
    )


def _normalise_parameters(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(
            f"parameters: expected an object, got {_type_name(raw)}", field="parameters"
        )
    params = dict(raw)
    target = params.pop("target_size", None)
    if target is not None:
        if not isinstance(target, dict):
            raise InvalidRequest(
                "parameters.target_size: expected an object {width, height}, "
                f"got {_type_name(target)}",
                field="target_size",
            )
        for key in ("width", "height"):
            if target.get(key) is not None and params.get(key) is None:
                params[key] = target[key]
    negative = params.get("negative_prompt")
    if isinstance(negative, list):
        if not all(isinstance(part, str) for part in negative):
            raise InvalidRequest(
                "parameters.negative_prompt: expected a string or a list of strings",
                field="negative_prompt",
            )
        joined = ", ".join(part.strip() for part in negative if part.strip())
        params["negative_prompt"] = joined or None
    elif negative is not None and not isinstance(negative, str):
        raise InvalidRequest(
            "parameters.negative_prompt: expected a string or a list of strings, "
            f"got {_type_name(negative)}",
            field="negative_prompt",
        )
    return params


def _parse_options(raw: Any) -> tuple[bool | None, bool | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"options: expected an object, got {_type_name(raw)}", field="options")
    values: list[bool | None] = []
    for key in ("use_cache", "wait_for_model"):
        value = raw.get(key)
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest(
                f"options.{key}: expected true or false, got {value!r}", field=f"options.{key}"
            )
        values.append(value)
    return values[0], values[1]


def parse_bool_header(name: str, value: str | None) -> bool | None:
    """`true`/`1` (also yes/on) or `false`/`0` (no/off), case-insensitive; None when absent."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidRequest(f"header {name}: expected true or false, got {value!r}", field=name)


def negotiate_format(accept_values: Iterable[str]) -> OutputFormat:
    """The first of png/jpeg/webp named in the Accept header(s), in the order they arrived.

    The Python client adds `Accept: image/png` after a user's own `accept: image/jpeg`, so the
    user's header arrives first and wins. Quality values are ignored (as AIC did); `*/*`,
    `image/*`, unknown types (image/tiff) and no header give DEFAULT_FORMAT.
    """
    for value in accept_values:
        for item in value.split(","):
            media = item.split(";")[0].strip().lower()
            fmt = _MEDIA_TYPES.get(media)
            if fmt is not None:
                return fmt
    return DEFAULT_FORMAT


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
