"""The Serve application: imagine's whole HTTP app as the ingress, model replicas behind it.

    Serve proxy (HTTP) ─► Ingress replica(s): create_app(settings, RemoteEngine, Redis cache,
                          Redis job store) — HF, jobs, OpenAI, A1111, the page, /metrics
                              │ handle.options(multiplexed_model_id=<model>, stream=True)
                              ▼   .generate(request) → JobSnapshot … Finished | Failed
                          ModelReplica replicas: @serve.multiplexed LRU of models, each model
                          run by imagine's own Engine (imagine.ray_serve.model_host)

`build_app(args)` is the application builder (`serve run imagine.ray_serve.deployments:build_app`
or `import_path` in a Serve config): `args` may hold `settings` (imagine settings, over the
IMAGINE_* environment) and `models_per_replica`. Scaling (`num_replicas` or
`autoscaling_config`), `ray_actor_options` and `max_ongoing_requests` come from the Serve config
per deployment ("Ingress", "ModelReplica"). `build_local_app(settings, options)` is what
`imagine serve --ray` runs, with replicas and resources from `RayOptions` (IMAGINE_RAY_*).

No `from __future__ import annotations` here: Serve's FastAPI integration reads the annotations
of the ingress class at runtime, and as strings they made every POST a 422.
"""

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from imagine.engine.job import PreviewPolicy
from imagine.errors import ImagineError, Overloaded
from imagine.ray_serve.config import RayOptions, replica_settings
from imagine.ray_serve.events import ReplicaEvent, error_to_wire
from imagine.request import GenerationRequest
from imagine.settings import Settings

__all__ = ["Ingress", "ModelReplica", "build_app", "build_local_app", "ray_router"]


@serve.deployment(name="ModelReplica")
class ModelReplica:
    """Runs requests for the models Serve routes here (`generate` streams their events)."""

    def __init__(self, settings: dict[str, Any], models_per_replica: int) -> None:
        from imagine.auth import install_log_redaction
        from imagine.ray_serve.model_host import ModelHost

        context = serve.get_replica_context()
        self._host = ModelHost(settings=Settings(**settings), replica=context.replica_id.unique_id)
        install_log_redaction("ray.serve", settings=Settings(**settings))  # Hub tokens too

        async def load_model(model_id: str) -> Any:
            return await self._host.load(model_id)

        # Wrapped here, not as a decorated method, so the LRU size comes from the config.
        self._model = serve.multiplexed(max_num_models_per_replica=models_per_replica)(load_model)

    async def generate(
        self,
        request: GenerationRequest,
        client_id: str,
        previews: PreviewPolicy | None,
        job_id: str,
        force: bool,
    ) -> AsyncIterator[ReplicaEvent]:
        try:
            model = await self._model(serve.get_multiplexed_model_id())
        except ImagineError as exc:
            yield error_to_wire(exc)
            return
        async for event in self._host.stream(
            model, request, client_id=client_id, previews=previews, job_id=job_id, force=force
        ):
            yield event

    def whoami(self) -> dict[str, Any]:
        """This replica's id, process, loaded models and requests queued or running
        (GET /ray/models/{id}/replica)."""
        return {
            "replica": self._host.replica,
            "pid": os.getpid(),
            "models": self._host.loaded(),
            "busy": self._host.busy(),
        }


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """imagine's FastAPI app, built in the replica around a RemoteEngine."""

    def __init__(self, models: DeploymentHandle, settings: dict[str, Any]) -> None:
        from imagine.auth import install_log_redaction

        self._models = models
        self._settings = Settings(**settings)
        install_log_redaction("ray.serve", settings=self._settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        from imagine.cli import build_cache
        from imagine.http.app import create_app
        from imagine.ray_serve.remote_engine import RemoteEngine

        engine = RemoteEngine(
            settings=self._settings,
            open_stream=self._open_stream,
            is_replica_lost=_replica_lost,
            translate=_translate,
            resubmits=3,
        )
        relay = None
        if self._settings.job_store == "redis":
            from imagine.jobs.relay import RedisJobRelay

            # jobs run in the ingress replica that created them; the others follow them here
            relay = RedisJobRelay(
                url=self._settings.redis_url, prefix=self._settings.redis_job_prefix
            )
        app = create_app(
            self._settings,
            engine,
            build_cache(self._settings, metrics=engine.metrics),
            job_relay=relay,
        )
        app.state.ray_models = self._models
        app.include_router(ray_router)
        app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
        return app

    def _open_stream(
        self,
        request: GenerationRequest,
        *,
        client_id: str,
        previews: PreviewPolicy | None,
        job_id: str,
        force: bool,
    ) -> Any:
        handle = self._models.options(multiplexed_model_id=request.model_id, stream=True)
        return handle.generate.remote(request, client_id, previews, job_id, force)


class ReplicaHeader:
    """`x-imagine-replica: <id>` on every answer: which ingress replica served it (pure ASGI,
    so streams pass untouched)."""

    def __init__(self, app: Any, *, replica: str) -> None:
        self._app = app
        self._header = (b"x-imagine-replica", replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self._app(scope, receive, tagged)


ray_router = APIRouter()


@ray_router.get("/ray/models/{model_id:path}/replica")
async def model_replica(request: Request, model_id: str) -> JSONResponse:
    """Which model replica a request for `model_id` goes to now: Serve routes to one that has
    the model loaded when there is one. {"replica", "pid", "models", "busy"}; a token when
    tokens are on."""
    from imagine.http.errors import error_response

    state = request.app.state.imagine
    try:
        state.auth.authenticate(request.headers.get("authorization"))
    except ImagineError as exc:
        return error_response(exc)
    handle = request.app.state.ray_models.options(multiplexed_model_id=model_id)
    async with asyncio.timeout(30):
        return JSONResponse(await handle.whoami.remote())


def _replica_lost(exc: BaseException) -> bool:
    return isinstance(exc, RayActorError | ActorUnavailableError)


def _translate(exc: BaseException) -> ImagineError | None:
    if isinstance(exc, BackPressureError):
        return Overloaded("every model replica is full; retry later", retry_after=1.0)
    return None


# On shutdown (SIGTERM, a rolling update, scaling down) a replica finishes what it holds for up
# to 30 s, checking every 0.5 s: Serve's defaults (2 s, 20 s) made an idle stop take seconds.
_GRACEFUL = {"graceful_shutdown_wait_loop_s": 0.5, "graceful_shutdown_timeout_s": 30.0}


def build_app(args: dict[str, Any]) -> Any:
    """The Serve application, as a Serve config's `import_path` names it: `args` may hold
    `settings` (over IMAGINE_*) and `models_per_replica`; replicas, resources and autoscaling
    come from the config's `deployments` (Serve's defaults otherwise: one replica each)."""
    settings = Settings.load(None, **dict(args.get("settings") or {}))
    models_per_replica = int(args.get("models_per_replica", RayOptions().models_per_replica))
    data = replica_settings(settings)
    models = ModelReplica.options(**_GRACEFUL, max_ongoing_requests=128)
    ingress = Ingress.options(**_GRACEFUL, max_ongoing_requests=1000)
    return ingress.bind(models.bind(data, models_per_replica), data)


def build_local_app(settings: Settings, options: RayOptions) -> Any:
    """The application `imagine serve --ray` runs: replicas and resources from `options`."""
    data = replica_settings(settings)
    models = ModelReplica.options(
        **_GRACEFUL,
        num_replicas=options.model_replicas,
        max_ongoing_requests=options.replica_max_ongoing,
        ray_actor_options={"num_cpus": options.replica_cpus, "num_gpus": options.replica_gpus},
    )
    ingress = Ingress.options(
        **_GRACEFUL,
        num_replicas=options.ingress_replicas,
        max_ongoing_requests=options.ingress_max_ongoing,
        ray_actor_options={"num_cpus": options.ingress_cpus},
    )
    return ingress.bind(models.bind(data, options.models_per_replica), data)
