"""The operational routes.

    GET /health    liveness, whether auth is on, the engine's per-model report and the Hub's
                   (no token)
    GET /metrics   Prometheus exposition of the engine's `Metrics` (a token when auth is on);
                   404 `{"error"}` when the engine keeps no metrics

The generation routes count each outcome with `record_request`; a request whose model id never
resolved (401, malformed body, unknown model) is counted under the model label `unknown`, so
callers cannot create one series per made-up id.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from imagine.errors import RouteNotFound
from imagine.http.state import ServerState
from imagine.models import hub

__all__ = ["UNRESOLVED_MODEL", "record_request", "router"]

UNRESOLVED_MODEL = "unknown"

router = APIRouter()


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.imagine
    return state


def record_request(state: ServerState, model: str | None, status: int) -> None:
    """Count one finished generation request (a no-op when the engine keeps no metrics).
    `model` is the resolved model id, or None when it never resolved."""
    if state.metrics is not None:
        state.metrics.observe_request(model or UNRESOLVED_MODEL, status)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """`{"status": "ok", "auth": bool, "engine": engine.health()}`; the real engine reports
    `engine.models.<id>.state` (loading / ready / failed / unloaded) for every model it has
    been asked for or preloads; `cache.state` says when the Redis cache is degraded;
    `hub.state` ("ok" | "degraded", when downloads are allowed) when Hub calls time out or
    fail (imagine.models.hub.HubStatus.report)."""
    state = _state(request)
    body: dict[str, Any] = {
        "status": "ok",
        "auth": state.auth.enabled,
        "engine": state.engine.health(),
    }
    cache_health = getattr(state.images.cache, "health", None)
    report = cache_health() if cache_health is not None else None
    if report:  # the Redis cache: {"backend": "redis", "state": "ok" | "degraded", ...}
        body["cache"] = report
    if state.settings.allow_downloads:
        body["hub"] = hub.ENDPOINT.report(quiet_s=state.settings.hub_failure_ttl_s)
    return body


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """The exposition body of every `imagine_*` and `process_*` series. Raises Unauthorized
    (401) without a valid token when auth is on."""
    state = _state(request)
    state.auth.authenticate(request.headers.get("authorization"))
    if state.metrics is None:
        raise RouteNotFound("metrics are off: this server's engine keeps no Metrics")
    body, content_type = state.metrics.render()
    return Response(content=body, headers={"content-type": content_type})
