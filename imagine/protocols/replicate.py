"""The Replicate predictions wire format: parse a create body, render a prediction and an error.

Shape and types only (ranges are `imagine.validation`'s job). Facts from replicate-python
1.0.7: `status` must be one of starting|processing|succeeded|failed|canceled (a queued job is
`starting`), `model` and `version` must be non-null strings, a plain http:// output URL comes back
to `run()` as a string, and `Prediction.progress` is parsed from a tqdm-style line in `logs`
("  50%|#####     | 8/16"). Errors are RFC 7807 problem details: `{"title", "detail",
"status"}`, here plus imagine's stable `code`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagine.errors import ImagineError, InvalidRequest
from imagine.jobs.record import JobState
from imagine.jobs.service import JobView
from imagine.protocols._json import load_json, shown_keys
from imagine.request import OutputFormat

__all__ = ["CreateRequest", "error_body", "parse_create", "parse_prefer_wait", "render"]

log = logging.getLogger(__name__)

MAX_WAIT_S = 60
MAX_OUTPUTS = 4
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
STATUS = {
    JobState.QUEUED: "starting",
    JobState.RUNNING: "processing",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELED: "canceled",
}
# `input` keys that are the model's parameters (validation checks their values); the rest of
# `input` is the job's own (output_format, num_outputs) or ignored with a warning.
_PARAMETERS = (
    "negative_prompt",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "scheduler",
    "seed",
)
_FORMATS: dict[str, OutputFormat] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
_KNOWN_BODY = {"input", "version", "stream", "webhook", "webhook_events_filter", "previews"}
# Fields named as they are (not inside `input`) in errors.
_TOP_LEVEL_FIELDS = _KNOWN_BODY | {"body", "Prefer", "cursor"}


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A parsed create body."""

    model_id: str
    revision: str | None
    prompt: Any
    parameters: dict[str, Any]
    input: dict[str, Any]
    output_format: OutputFormat = "png"
    num_outputs: int = 1
    webhook: str | None = None
    webhook_events_filter: list[str] = field(default_factory=lambda: list(WEBHOOK_EVENTS))
    previews: bool = True


def parse_create(body: bytes, *, model_id: str | None) -> CreateRequest:
    """Parse `POST /v1/models/{model}/predictions` (`model_id` from the path) or
    `POST /v1/predictions` (`version` = "<model id>" or "<model id>:<revision>").
    Raises InvalidRequest naming the field as the client sent it."""
    payload = load_json(body or b"{}")
    if not isinstance(payload, dict):
        raise InvalidRequest("body: expected a JSON object with 'input'", field="body")
    unknown = sorted(set(payload) - _KNOWN_BODY)
    if unknown:
        log.warning("ignoring unknown prediction keys: %s", shown_keys(unknown))
    revision = None
    if model_id is None:
        version = payload.get("version")
        if not isinstance(version, str) or not version.strip():
            raise InvalidRequest(
                "version: required, a model id such as 'imagine/shapes' (optionally "
                "'<model id>:<revision>')",
                field="version",
            )
        model_id, _, rev = version.strip().partition(":")
        revision = rev or None
    raw = payload.get("input")
    if not isinstance(raw, dict):
        raise InvalidRequest("input: required, an object with at least 'prompt'", field="input")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("input.prompt: required, a non-empty string", field="input.prompt")
    fmt = raw.get("output_format", "png")
    if not isinstance(fmt, str) or fmt not in _FORMATS:
        raise InvalidRequest(
            f"input.output_format = {str(fmt)[:20]!r} is invalid: must be one of png, jpg, webp",
            field="input.output_format",
        )
    outputs = raw.get("num_outputs", 1)
    if isinstance(outputs, bool) or not isinstance(outputs, int) or not 1 <= outputs <= MAX_OUTPUTS:
        raise InvalidRequest(
            f"input.num_outputs = {str(outputs)[:20]} is invalid: must be an integer between 1 "
            f"and {MAX_OUTPUTS}",
            field="input.num_outputs",
        )
    parameters = {k: raw[k] for k in _PARAMETERS if k in raw}
    ignored = sorted(set(raw) - set(_PARAMETERS) - {"prompt", "output_format", "num_outputs"})
    if ignored:
        log.warning("ignoring unknown input keys: %s", shown_keys(ignored))
    webhook = payload.get("webhook")
    if webhook is not None and not isinstance(webhook, str):
        raise InvalidRequest("webhook: expected a URL string", field="webhook")
    events = payload.get("webhook_events_filter")
    if events is None:
        events = list(WEBHOOK_EVENTS)
    if not isinstance(events, list) or not all(e in WEBHOOK_EVENTS for e in events):
        raise InvalidRequest(
            "webhook_events_filter: expected a list of " + ", ".join(WEBHOOK_EVENTS),
            field="webhook_events_filter",
        )
    previews = payload.get("previews", True)
    if not isinstance(previews, bool):
        raise InvalidRequest("previews: expected true or false", field="previews")
    return CreateRequest(
        model_id=model_id,
        revision=revision,
        prompt=prompt,
        parameters=parameters,
        input=raw,
        output_format=_FORMATS[fmt],
        num_outputs=outputs,
        webhook=webhook or None,
        webhook_events_filter=events,
        previews=previews,
    )


def parse_prefer_wait(prefer: str | None) -> float | None:
    """Seconds to hold the create answer: `Prefer: wait` = 60, `wait=N` = N (at most 60);
    None without the header. Raises InvalidRequest for a malformed value."""
    if not prefer:
        return None
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not value:
            return float(MAX_WAIT_S)
        try:
            seconds = int(value.strip())
        except ValueError:
            seconds = -1
        if seconds < 1:
            raise InvalidRequest(
                f"Prefer: wait={value[:20]!r} is invalid: expected wait or wait=N, N from 1 to 60",
                field="Prefer",
            )
        return float(min(seconds, MAX_WAIT_S))
    return None


def client_field(exc: ImagineError) -> ImagineError:
    """Validation names fields as the HF API does (`inputs`, `width`); name them as this API's
    clients sent them (`input.prompt`, `input.width`)."""
    if not isinstance(exc, InvalidRequest) or exc.field is None or "." in exc.field:
        return exc
    if exc.field in _TOP_LEVEL_FIELDS:
        return exc
    name = "input.prompt" if exc.field == "inputs" else f"input.{exc.field}"
    message = exc.message
    if message.startswith(exc.field):
        message = name + message[len(exc.field) :]
    return InvalidRequest(message, field=name)


def error_body(exc: ImagineError, status: int) -> dict[str, Any]:
    """Problem details, the way Replicate answers errors."""
    body: dict[str, Any] = {
        "title": type(exc).__name__,
        "detail": exc.message,
        "status": status,
        "code": exc.code,
    }
    field_name = getattr(exc, "field", None)
    if field_name:
        body["invalid_fields"] = [{"field": field_name, "message": exc.message}]
    return body


def render(view: JobView, base_url: str) -> dict[str, Any]:
    """The prediction object of `view`, with absolute URLs under `base_url`."""
    record = view.record
    progress = view.progress
    base = base_url.rstrip("/")
    get = f"{base}/v1/predictions/{record.id}"
    revision = str(record.requests[0].get("model_revision") or "") if record.requests else ""
    outputs = [f"{base}/v1/files/{record.id}/{name}" for name in record.outputs]
    output: Any = None
    if record.state is JobState.SUCCEEDED:
        output = outputs[0] if len(outputs) == 1 else outputs
    logs = record.logs
    step = total = 0
    if progress is not None and progress.total:
        step, total = progress.step, progress.total
        logs += _bar(step, total) + "\n"
    return {
        "id": record.id,
        "model": record.model_id,
        "version": f"{record.model_id}:{revision}" if revision else record.model_id,
        "input": record.input,
        "output": output,
        "error": record.error,
        "logs": logs,
        "status": STATUS[record.state],
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "completed_at": _iso(record.completed_at),
        "metrics": dict(record.metrics),
        "urls": {
            "get": get,
            "cancel": f"{get}/cancel",
            "stream": f"{get}/stream",
            "events": f"{get}/events",
        },
        "queue_position": progress.position if progress is not None else None,
        "progress": {"step": step, "total": total} if total else None,
        "eta_s": progress.eta_s if progress is not None else None,
        "preview": f"{get}/preview" if progress is not None and progress.preview else None,
        "data_removed": False,
    }


def _bar(step: int, total: int) -> str:
    """A tqdm-style line; replicate-python parses `Prediction.progress` from it."""
    filled = step * 10 // total
    return f"{step * 100 // total:3d}%|{'#' * filled}{' ' * (10 - filled)}| {step}/{total}"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
