"""`GET /models`: the models this server offers, each with its state.

    {"default_model": "imagine/shapes",
     "models": [{"model_id", "state", "sources", "queued"?, "error"?}, ...]}

`state` is the engine's (`unloaded`, `loading`, `ready`, `failed`), `sources` says why the id is
offered (imagine.models.catalog: default, preload, builtin, model_dir, hf_cache). The other APIs
list models in their own shapes (`/v1/models`, `/sdapi/v1/sd-models`) without state; the web
page's model picker reads this one. Needs a token when tokens are on; errors in the HF shape.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from imagine.errors import ImagineError
from imagine.http.errors import error_response
from imagine.http.state import ServerState
from imagine.models.catalog import list_models

__all__ = ["router"]

router = APIRouter()


@router.get("/models")
async def models(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.imagine
    try:
        state.auth.authenticate(request.headers.get("authorization"))
    except ImagineError as exc:
        return error_response(exc)
    engine_models: dict[str, Any] = state.engine.health().get("models", {})
    entries = await anyio.to_thread.run_sync(
        lambda: list_models(state.settings, also=engine_models)
    )
    listed = []
    for entry in entries:
        known = engine_models.get(entry.model_id, {})
        item: dict[str, Any] = {
            "model_id": entry.model_id,
            "state": known.get("state", "unloaded"),
            "sources": list(entry.sources),
        }
        if "queued" in known:
            item["queued"] = known["queued"]
        if known.get("error"):
            item["error"] = known["error"]
        listed.append(item)
    return JSONResponse({"default_model": state.settings.default_model, "models": listed})
