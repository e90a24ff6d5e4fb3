"""`imagine serve --ray` as a subprocess for tests and benches: its own Ray instance on loopback.

Readiness is the server's own "listening" line (printed once Serve reports the application
ready), never a sleep. `process_tree` lists a process and its descendants (raylet, GCS,
workers, replicas) from /proc, so a test can check that none outlives a SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RayServer", "process_tree", "ray_server"]


class RayServer:
    def __init__(self, proc: subprocess.Popen[str], url: str, log: list[str]) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def tail(self, lines: int = 60) -> str:
        return "".join(self.log[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ray_server(env: dict[str, str], *, ready_s: float = 240.0) -> Iterator[RayServer]:
    """Run `imagine serve --ray` on a free loopback port with `env` (IMAGINE_*, IMAGINE_RAY_*);
    yield it once it listens; SIGTERM it on exit unless the caller already stopped it."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagine.cli", "serve", "--ray", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a Ctrl-C of the test run reaches it only through us
    )
    log: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if "listening on http://" in line:
                ready.set()
        ready.set()  # exited: let the waiter see it

    threading.Thread(target=watch, daemon=True).start()
    server = RayServer(proc, f"http://127.0.0.1:{port}", log)
    try:
        if not ready.wait(ready_s) or proc.poll() is not None:
            raise RuntimeError("imagine serve --ray did not start:\n" + server.tail())
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def process_tree(root: int) -> dict[int, str]:
    """{pid: command line} of `root` and every process below it, now."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = ppid
        commands[int(entry.name)] = cmdline.strip()
    tree = {root}
    grew = True
    while grew:
        below = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        grew = bool(below)
        tree |= below
    return {pid: commands.get(pid, "") for pid in tree if pid in commands}
