"""A real uvicorn server on a loopback port, in a thread, for the client tests.

The socket is bound and listening before uvicorn starts, so the first `GET /health` simply
waits in the kernel's accept queue until the server serves it: readiness without sleeps.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Yields the base URL (`http://127.0.0.1:<port>`) of `app` served by uvicorn."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
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
