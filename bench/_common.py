"""Shared pieces of the benchmarks: the model to serve, an `imagine serve` subprocess, timing.

The model is `--model` from `--model-dir` (e.g. the embedded `imagine/shapes` once it ships);
by default a tiny offline SD pipeline is built into a temporary folder, so the scripts run
anywhere. Servers run as separate processes so that the client's own Python work does not
share a GIL with the server it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TINY_ID = "tiny/sd"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=None, help="model id (default: a tiny SD built now)")
    p.add_argument("--model-dir", type=Path, default=None, help="folder holding <model id>/")
    p.add_argument("--size", type=int, default=64, help="width and height in pixels")
    p.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    return p


@contextmanager
def model_source(args: argparse.Namespace) -> Iterator[tuple[str, list[str]]]:
    """(model id, model_dirs) to serve; builds the tiny SD pipeline when no model is given."""
    if args.model is not None:
        yield args.model, [str(args.model_dir)] if args.model_dir else []
        return
    import torch

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from tests.fixtures.tiny_pipelines import TINY_IDS, _sd

    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as tmp:
        torch.manual_seed(0)
        _sd().save_pretrained(Path(tmp) / TINY_IDS["sd"])
        yield TINY_IDS["sd"], [tmp]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(model_id: str, model_dirs: list[str], **settings: object) -> Iterator[str]:
    """Run `imagine serve` with IMAGINE_* settings; yields its base URL once it listens and the
    model is loaded (readiness from the server's log lines and one waiting request)."""
    port = free_port()
    env = {
        **os.environ,
        "IMAGINE_MODEL_DIRS": json.dumps(model_dirs),
        "IMAGINE_DEFAULT_MODEL": model_id,
        "IMAGINE_PRELOAD": json.dumps([model_id]),
        "IMAGINE_ALLOW_DOWNLOADS": "false",
        "IMAGINE_LOG_LEVEL": "warning",
        **{f"IMAGINE_{k.upper()}": str(v) for k, v in settings.items()},
    }
    env["IMAGINE_LOG_LEVEL"] = "info"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from imagine.cli import main; sys.exit(main())",
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if len(log) < 200:
                log.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(300) or proc.poll() is not None:
            raise RuntimeError("imagine serve did not start:\n" + "".join(log[-30:]))
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def body(prompt: str, seed: int, args: argparse.Namespace) -> dict[str, object]:
    return {
        "inputs": prompt,
        "parameters": {
            "width": args.size,
            "height": args.size,
            "num_inference_steps": args.steps,
            "seed": seed,
        },
    }


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000
