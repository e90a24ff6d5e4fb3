"""The HF-compatible routes.

    POST /                                        the default model
    POST /models/{model_id}                       (ids contain slashes)
    POST /hf-inference/models/{model_id}
    POST /pipeline/text-to-image/{model_id}
    GET  on each of those                         small JSON status of the model (GET / from a
                                                  browser: the web page, routes_page)
    GET  /models/{model_id}/info                  defaults, limits, sizes, schedulers of the model

(`/health` and `/metrics` are in `monitoring`.)

One POST: auth → parse body (imagine.protocols.hf) → negotiate format → the service layer
(validate → cache → engine → encode → cache put; cancelled when the client goes away).
Every POST's outcome (its status code) is counted in the engine's metrics, when it has them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from imagine.errors import ImagineError, ModelNotFound
from imagine.http.disconnect import unless_disconnected
from imagine.http.errors import error_response, internal_error_response
from imagine.http.monitoring import record_request
from imagine.http.routes_page import page_response, wants_page
from imagine.http.state import ServerState
from imagine.models.spec import ModelInfo, sigma_options_table, size_presets
from imagine.protocols.hf import negotiate_format, parse_body, parse_bool_header
from imagine.protocols.replicate import MAX_OUTPUTS
from imagine.service import EncodedImage

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter()

_PREFIXES = ("/models", "/hf-inference/models", "/pipeline/text-to-image")


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.imagine
    return state


def _client_id(request: Request, state: ServerState) -> str:
    """Authenticates (raises Unauthorized). The token digest when auth is on, else the peer IP."""
    digest = state.auth.authenticate(request.headers.get("authorization"))
    if digest is not None:
        return digest
    return request.client.host if request.client else "unknown"


def _clean_model_id(model_id: str) -> str:
    model_id = model_id.strip("/")
    if not model_id:
        raise ModelNotFound("no model id in the path: use /models/<owner>/<name>")
    return model_id


async def _describe(request: Request, state: ServerState, model_id: str) -> ModelInfo:
    """Authenticate, then resolve the id without loading. Raises Unauthorized, ModelNotFound."""
    client_id = _client_id(request, state)
    return await state.images.describe(_clean_model_id(model_id), client_id=client_id)


@router.get("/models/{model_id:path}/info")
async def model_info(request: Request, model_id: str) -> JSONResponse:
    state = _state(request)
    try:
        info = await _describe(request, state, model_id)
    except ImagineError as exc:
        return error_response(exc)
    spec = info.spec
    s = state.settings
    return JSONResponse(
        {
            "model_id": info.model_id,
            "family": spec.name,
            "revision": info.revision,
            "state": info.state,
            "defaults": {
                "num_inference_steps": spec.default_steps,
                "guidance_scale": spec.default_guidance,
                "width": spec.default_width,
                "height": spec.default_height,
                "scheduler": spec.default_scheduler,
            },
            "limits": {
                "size_multiple": spec.size_multiple,
                "max_pixels": s.max_pixels,
                "max_steps": s.max_steps,
                "guidance_range": list(spec.guidance_range),
                "max_prompt_chars": s.max_prompt_chars,
                "max_prompt_tokens": spec.max_prompt_tokens,
                "max_outputs": MAX_OUTPUTS,  # images one job may ask for (num_outputs)
            },
            # Sizes to offer (the default first); a render_size means the model always draws
            # at that size and scales the picture to the one requested (imagine/shapes).
            "size_presets": [
                {"width": w, "height": h} for w, h in size_presets(spec, s.max_pixels)
            ],
            "render_size": (
                {"width": spec.render_size[0], "height": spec.render_size[1]}
                if spec.render_size
                else None
            ),
            "schedulers": list(spec.schedulers),
            # Sigma suffixes a scheduler takes ("DPMSolverMultistepScheduler:karras").
            "sigma_options": sigma_options_table(spec),
            "extras": {k: list(v) for k, v in spec.extras.items()},
        }
    )


async def _status(request: Request, model_id: str) -> JSONResponse:
    state = _state(request)
    try:
        info = await _describe(request, state, model_id)
    except ImagineError as exc:
        return error_response(exc)
    return JSONResponse(
        {
            "model_id": info.model_id,
            "task": "text-to-image",
            "state": info.state,
            "loaded": info.state == "ready",
        }
    )


@dataclass(slots=True)
class _Resolved:
    """The model id once validation has resolved it (the metrics label), else None."""

    model_id: str | None = None


async def _generate(request: Request, model_id: str) -> Response:
    state = _state(request)
    request_id: str = getattr(request.state, "request_id", "")
    resolved = _Resolved()
    try:
        response = await _generate_or_raise(request, state, model_id, resolved)
    except ImagineError as exc:
        response = error_response(exc)
    except ClientDisconnect:  # gone before its body arrived (or cut off by the body limit)
        response = Response(status_code=499)
    except Exception as exc:  # a bug somewhere below: 500 without the traceback
        response = internal_error_response(exc, request_id)
    record_request(state, resolved.model_id, response.status_code)
    return response


async def _generate_or_raise(
    request: Request, state: ServerState, model_id: str, resolved: _Resolved
) -> Response:
    client_id = _client_id(request, state)
    model_id = _clean_model_id(model_id)
    wire = parse_body(await request.body(), request.headers.get("content-type"))
    fmt = negotiate_format(request.headers.getlist("accept"))
    use_cache = _flag(request, "x-use-cache", wire.use_cache, default=True)
    wait = _flag(request, "x-wait-for-model", wire.wait_for_model, default=False)
    started = time.perf_counter()
    info = await state.images.describe(model_id, client_id=client_id)
    resolved.model_id = info.model_id
    gen = await state.images.validate(model_id, wire.prompt, wire.parameters, fmt, info=info)
    images = await unless_disconnected(
        request,
        state.images.generate_many(
            gen,
            1,
            client_id=client_id,
            seeded=wire.parameters.get("seed") is not None,
            use_cache=use_cache,
            wait_for_model=wait,
        ),
    )
    if images is None:  # the client went away; nobody reads this
        return Response(status_code=499)
    return _image_response(images[0], time.perf_counter() - started, state)


def _flag(request: Request, header: str, legacy: bool | None, *, default: bool) -> bool:
    """The header wins over the legacy `options` field, which wins over the default."""
    value = parse_bool_header(header, request.headers.get(header))
    if value is not None:
        return value
    return default if legacy is None else legacy


# Stage names in the Server-Timing header (browsers' dev tools and the overhead bench read it).
_TIMING_NAMES = {
    "queue": "queue",
    "text_encoding": "text",
    "denoising": "denoise",
    "decoding": "decode",
    "total": "pipeline",
    "encoding": "encode",
}


def server_timing(timings: dict[str, float]) -> str:
    """`queue;dur=1.2, text;dur=3.4, ...` in milliseconds, stages in a fixed order."""
    return ", ".join(
        f"{name};dur={1000 * timings[key]:.1f}"
        for key, name in _TIMING_NAMES.items()
        if key in timings
    )


def _image_response(image: EncodedImage, seconds: float, state: ServerState) -> Response:
    headers = {
        "x-seed": str(image.seed),
        "x-compute-time": f"{seconds:.3f}",
        "x-compute-type": state.compute_type,
        "x-cache": image.cache,
    }
    if image.timings:
        headers["server-timing"] = server_timing(image.timings)
    return Response(content=image.body, media_type=image.content_type, headers=headers)


async def _post_default(request: Request) -> Response:
    return await _generate(request, _state(request).settings.default_model)


async def _get_default(request: Request) -> Response:
    # A browser opening the server gets the web page; API clients the default model's status.
    if wants_page(request.headers.get("accept")):
        return page_response(request)
    return await _status(request, _state(request).settings.default_model)


async def _post_model(request: Request, model_id: str) -> Response:
    return await _generate(request, model_id)


async def _get_model(request: Request, model_id: str) -> JSONResponse:
    return await _status(request, model_id)


router.add_api_route("/", _post_default, methods=["POST"], include_in_schema=True)
router.add_api_route("/", _get_default, methods=["GET"])
for _prefix in _PREFIXES:
    router.add_api_route(f"{_prefix}/{{model_id:path}}", _post_model, methods=["POST"])
    router.add_api_route(f"{_prefix}/{{model_id:path}}", _get_model, methods=["GET"])
