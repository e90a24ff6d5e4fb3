"""`imagine serve --ray`: the Serve application on a Ray instance of its own, on this machine.

    ray.init (in this process: it owns the Ray instance) → serve.start(http_options: --host,
    --port) → serve.run(build_local_app) → wait for SIGTERM/SIGINT → serve.shutdown → ray.shutdown

Ray 2.60 has no environment variable for Serve's HTTP address, so --host/--port travel in
`http_options`. Stopping ends every raylet, worker and replica this process started. On a
cluster use deploy/ray-serve.yaml with `serve deploy` (or KubeRay's RayService) instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from imagine.ray_serve.config import RayOptions
from imagine.settings import Settings

__all__ = ["RAY_ENV", "serve_on_ray"]

# Set before Ray starts (its processes inherit them):
RAY_ENV = {
    # Bind the node to loopback addresses on one machine, not the interface address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report to Anyscale
    # On a busy small machine the proxy's first health checks took over Serve's default.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
}


def serve_on_ray(settings: Settings, options: RayOptions | None = None) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    options = options or RayOptions()
    if options.ingress_replicas > 1 and settings.job_store != "redis":
        # a job runs in the ingress replica that created it; the others find it in Redis
        print(
            'imagine: several ingress replicas need job_store = "redis" (and cache_backend = '
            '"redis" to share cached images)',
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    import ray
    from ray import serve

    from imagine.ray_serve.deployments import build_local_app

    started = time.monotonic()
    ray.init(include_dashboard=False, logging_level=settings.log_level.upper())
    try:
        # After ray.init, which installs handlers of its own.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        serve.start(
            http_options={"host": settings.host, "port": settings.port},
            proxy_location="HeadOnly",
        )
        app = build_local_app(settings, options)
        serve.run(app, name=options.app_name, route_prefix="/", blocking=False)
        print(
            f"imagine on Ray Serve listening on http://{_url_host(settings.host)}:{settings.port}"
            f" ({options.ingress_replicas} ingress, {options.model_replicas} model replica(s), "
            f"ready in {time.monotonic() - started:.1f} s)",
            flush=True,
        )
        stop.wait()
        print("imagine: stopping Serve and Ray", flush=True)
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
