"""The OpenAPI document, true to what the server sends.

FastAPI alone described these routes badly (they read their bodies themselves): no request
bodies, a 422 that is never sent, none of the 400/401/404/429/503 that are, images typed as
JSON. Here each operation gets its body, its success content type and its API's error shape
for every status it can answer; `tests/http/test_openapi.py` holds the server to it with
schemathesis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from imagine.http.openapi_schemas import SCHEMAS, ref

__all__ = ["install_openapi"]

_IMAGES = {
    t: {"schema": {"type": "string", "format": "binary"}}
    for t in ("image/png", "image/jpeg", "image/webp")
}
# schemathesis (as any SSE reader) sees events, not text: {"event", "data", "id"}
_SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "event": {"type": "string"},
                "data": {"type": "string"},
                "id": {"type": "string"},
            },
        }
    }
}
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad request: the message names the field and what is allowed",
    401: "A token is configured and this request has none, or a wrong one",
    404: "No such model, job or file",
    410: "The job's results passed job_ttl_s and were deleted",
    413: "The body is larger than max_body_bytes",
    429: "Overloaded: retry after Retry-After seconds",
    500: "The model failed to load or to generate, or a server bug (no traceback)",
    503: "The model is loading (estimated_time says how long)",
}
_HEADERS = {
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "whole seconds ≥ 1"}},
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
}


@dataclass(frozen=True)
class Operation:
    """What one operation accepts and answers."""

    ok: dict[str, Any]  # content of the success answer
    errors: tuple[int, ...]
    error_schema: str
    body: str | None = None  # a schema name, sent as JSON
    ok_status: int = 200
    extra_body: dict[str, Any] = field(default_factory=dict)  # other body content types


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref(name)}}


_HF_GENERATE = Operation(
    ok=_IMAGES,
    errors=(400, 401, 404, 413, 429, 500, 503),
    error_schema="HFError",
    body="TextToImageRequest",
    extra_body={"text/plain": {"schema": {"type": "string", "minLength": 1}}},
)
_HF_STATUS = Operation(ok=_json("ModelStatus"), errors=(401, 404), error_schema="HFError")
# GET / answers a browser (Accept: text/html) with the web page, needing no token.
_ROOT = Operation(
    ok={**_json("ModelStatus"), "text/html": {"schema": {"type": "string"}}},
    errors=(401, 404),
    error_schema="HFError",
)
_JOB = (401, 404, 410, 500)
_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", "/"): _HF_GENERATE,
    ("get", "/"): _ROOT,
    **{
        (method, f"{prefix}/{{model_id}}"): _HF_GENERATE if method == "post" else _HF_STATUS
        for prefix in ("/models", "/hf-inference/models", "/pipeline/text-to-image")
        for method in ("post", "get")
    },
    ("get", "/models"): Operation(ok=_json("ModelCatalog"), errors=(401,), error_schema="HFError"),
    ("get", "/models/{model_id}/info"): Operation(
        ok=_json("ModelInfo"), errors=(401, 404), error_schema="HFError"
    ),
    ("get", "/health"): Operation(ok=_json("Health"), errors=(), error_schema="HFError"),
    ("get", "/metrics"): Operation(
        ok={"text/plain": {"schema": {"type": "string"}}}, errors=(401,), error_schema="HFError"
    ),
    **{
        ("post", path): Operation(
            ok=_json("Prediction"),
            errors=(400, 401, 404, 413, 429, 500),
            error_schema="Problem",
            body="PredictionRequest",
            ok_status=201,
        )
        for path in ("/v1/models/{owner}/{name}/predictions", "/v1/predictions")
    },
    ("get", "/v1/predictions"): Operation(
        ok=_json("PredictionPage"), errors=(400, 401, 500), error_schema="Problem"
    ),
    ("get", "/v1/predictions/{job_id}"): Operation(
        ok=_json("Prediction"), errors=_JOB, error_schema="Problem"
    ),
    ("post", "/v1/predictions/{job_id}/cancel"): Operation(
        ok=_json("Prediction"), errors=_JOB, error_schema="Problem"
    ),
    ("get", "/v1/predictions/{job_id}/stream"): Operation(
        ok=_SSE, errors=_JOB, error_schema="Problem"
    ),
    ("get", "/v1/predictions/{job_id}/events"): Operation(
        ok=_SSE, errors=_JOB, error_schema="Problem"
    ),
    ("get", "/v1/predictions/{job_id}/preview"): Operation(
        ok={"image/jpeg": _IMAGES["image/jpeg"]}, errors=_JOB, error_schema="Problem"
    ),
    ("get", "/v1/files/{job_id}/{name}"): Operation(
        ok=_IMAGES, errors=(404, 410, 500), error_schema="Problem"
    ),
    ("post", "/v1/images/generations"): Operation(
        ok={**_json("ImagesResponse"), **_SSE},
        errors=(400, 401, 404, 413, 429, 500, 503),
        error_schema="OpenAIError",
        body="ImagesRequest",
    ),
    ("get", "/v1/models"): Operation(
        ok=_json("ModelList"), errors=(401,), error_schema="OpenAIError"
    ),
    ("post", "/sdapi/v1/txt2img"): Operation(
        ok=_json("Txt2ImgResponse"),
        errors=(400, 401, 404, 413, 429, 500, 503),
        error_schema="A1111Error",
        body="Txt2ImgRequest",
    ),
    ("get", "/sdapi/v1/options"): Operation(
        ok=_json("A1111Options"), errors=(401,), error_schema="A1111Error"
    ),
    ("post", "/sdapi/v1/options"): Operation(
        ok={"application/json": {"schema": {"type": "null"}}},
        errors=(400, 401, 404, 413),
        error_schema="A1111Error",
        body="A1111Options",
    ),
    **{
        ("get", f"/sdapi/v1/{name}"): Operation(
            ok=_json("A1111List"), errors=(401,), error_schema="A1111Error"
        )
        for name in ("sd-models", "samplers", "schedulers")
    },
    ("get", "/sdapi/v1/scripts"): Operation(
        ok={"application/json": {"schema": {"type": "object"}}},
        errors=(401,),
        error_schema="A1111Error",
    ),
    ("get", "/sdapi/v1/progress"): Operation(
        ok=_json("A1111Progress"), errors=(401,), error_schema="A1111Error"
    ),
    ("post", "/sdapi/v1/interrupt"): Operation(
        ok={"application/json": {"schema": {"type": "object"}}},
        errors=(401,),
        error_schema="A1111Error",
    ),
}


def install_openapi(
    app: FastAPI,
    operations: dict[tuple[str, str], Operation] | None = None,
    schemas: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Replace `app.openapi` with the true document (built once, on first use). Routes other
    modules describe (`operations`, `schemas`) are merged in."""
    table = {**_OPERATIONS, **(operations or {})}
    components = {**SCHEMAS, **(schemas or {})}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _build(app, table, components)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _build(
    app: FastAPI, table: dict[tuple[str, str], Operation], schemas: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for path, methods in document.get("paths", {}).items():
        for method, op in methods.items():
            spec = table.get((method, path))
            if spec is None:
                raise RuntimeError(f"{method.upper()} {path} is not described in the document")
            _describe(op, spec)
    document.setdefault("components", {})["schemas"] = dict(schemas)
    return document


def _describe(op: dict[str, Any], spec: Operation) -> None:
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {**_json(spec.body), **spec.extra_body},
        }
    responses: dict[str, Any] = {
        str(spec.ok_status): {"description": _REASONS[spec.ok_status], "content": spec.ok}
    }
    for status in spec.errors:
        answer: dict[str, Any] = {
            "description": _REASONS[status],
            "content": _json(spec.error_schema),
        }
        if status in _HEADERS:
            answer["headers"] = _HEADERS[status]
        responses[str(status)] = answer
    op["responses"] = responses
