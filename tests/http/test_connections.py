"""Connection hygiene on a live server (imagine/http/server.py): idle and slowloris sockets are
closed after the configured timeout, and while they are open, /health and generation answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.live import serve

pytestmark = pytest.mark.slow

HEAD_TIMEOUT_S = 3.0
IDLE = 2000
SLOWLORIS = 200


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(
        preload=["imagine/shapes"], head_timeout_s=HEAD_TIMEOUT_S, body_timeout_s=HEAD_TIMEOUT_S
    )
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setblocking(True)
    return sock


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True once the server closes `sock` (EOF or reset) before `deadline`."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_slowloris_sockets_are_closed_and_the_server_still_answers(
    base_url: str,
) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    opened = time.monotonic()
    idle = [_connect(port) for _ in range(IDLE)]
    slow = [_connect(port) for _ in range(SLOWLORIS)]
    for sock in slow:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    stop = threading.Event()

    def dribble() -> None:  # one more header line per socket, never the blank line that ends it
        while not stop.wait(0.5):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        # while 2,200 sockets hold connections open, the server answers
        assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200
        image = httpx.post(
            f"{base_url}/models/imagine/shapes",
            json={"inputs": "a red circle", "parameters": {"num_inference_steps": 2}},
            timeout=30,
        )
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        deadline = opened + HEAD_TIMEOUT_S + 20
        assert all(_closed_by_server(s, deadline) for s in idle), "an idle socket stayed open"
        assert all(_closed_by_server(s, deadline) for s in slow), "a slowloris stayed open"
        assert time.monotonic() - opened >= HEAD_TIMEOUT_S  # not before the timeout
    finally:
        stop.set()
        dribbler.join()
        for sock in idle + slow:
            sock.close()


def test_a_keep_alive_connection_serves_several_requests(base_url: str) -> None:
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{base_url}/health").status_code == 200


def test_a_body_that_never_finishes_is_cut_off(base_url: str) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    with _connect(port) as sock:
        sock.sendall(
            b"POST /models/imagine/shapes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b'\r\nContent-Length: 100\r\n\r\n{"inputs": '
        )
        started = time.monotonic()
        assert _closed_by_server(sock, started + HEAD_TIMEOUT_S + 20)
        assert time.monotonic() - started >= HEAD_TIMEOUT_S - 0.5
