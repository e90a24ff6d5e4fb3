"""A real uvicorn server on a loopback port, in a thread, for the client tests.

The socket is bound and listening before uvicorn starts, so the first `GET /health` simply
waits in the kernel's accept queue until the server serves it: readiness without sleeps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from imagine.http.server import uvicorn_config
from imagine.settings import Settings


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Yields the base URL (`http://127.0.0.1:<port>`) of `app` served by uvicorn."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    imagine = getattr(app.state, "imagine", None)  # a plain app (a webhook receiver) too
    settings = imagine.settings if imagine is not None else Settings()
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        ready = httpx.get(f"{base}/health", timeout=60)
        assert ready.status_code == 200, ready.text
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def serve_process(
    env: dict[str, str], log: Path, *, ready_s: float = 120.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`imagine serve` in a process of its own on a free loopback port, with IMAGINE_* `env`,
    its output appended to `log`. Yields (process, base URL) once /health answers (polled
    against a deadline); terminates it on exit unless the test already ended it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imagine.cli", "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "imagine serve did not answer in time"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
