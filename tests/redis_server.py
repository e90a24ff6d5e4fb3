"""A real, throwaway redis-server for tests: free port, temp dir, no persistence.

Readiness is the server's own "Ready to accept connections" log line followed by a PING, never a
sleep. Skips the test when redis-server is not installed (scripts/test-deps.sh installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(*, ready_timeout_s: float = 20.0) -> Iterator[str]:
    """Run redis-server and yield its URL; terminate it on exit."""
    with redis_server_process(ready_timeout_s=ready_timeout_s) as (url, _):
        yield url


@contextlib.contextmanager
def redis_server_process(
    *, ready_timeout_s: float = 20.0, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run redis-server (on `port`, else a free one) and yield (URL, process), for tests that
    freeze it (SIGSTOP) or kill and restart it; on exit it is resumed if stopped and
    terminated."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (run scripts/test-deps.sh)")
    with tempfile.TemporaryDirectory(prefix="imagine-redis-") as workdir:
        port = port or free_port()
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            workdir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "notice",
        ]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        log: list[str] = []

        def watch() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.append(line)
                if "Ready to accept connections" in line:
                    ready.set()
            ready.set()  # exited: let the waiter see it

        threading.Thread(target=watch, daemon=True).start()
        try:
            if not ready.wait(ready_timeout_s) or proc.poll() is not None:
                raise RuntimeError("redis-server did not start:\n" + "".join(log))
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            assert client.ping()
            client.close()
            yield url, proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
