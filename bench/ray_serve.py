"""Ray Serve against the single-process server, on the embedded imagine/shapes, in one run.

(a) Latency: one request at a time, alternating between `imagine serve` and `imagine serve --ray`
    (one ingress, one model replica) so machine noise hits both alike. The pipeline itself runs
    differently in the two (Ray sets OMP_NUM_THREADS=1 in a replica with fractional CPUs: torch
    uses one thread, which is faster than two for this tiny model), so Serve's added time is
    taken outside the pipeline: end to end minus the server's own `pipeline` Server-Timing,
    median of each, then the difference (proxy → ingress → handle → replica → back).
(b) Throughput: `--clients` concurrent HF clients, cache off, on the single server and on Serve
    with one and with two model replicas, with how busy the machine's CPUs were meanwhile.
    Two workloads: every request for one model, and requests alternating between two models
    (imagine/shapes and the same weights under a second id): Serve's multiplexing routes a
    model to the replica that has it, so only the second workload can use both replicas.

Each server runs alone while it is measured (started, warmed up, measured, stopped), so the
ratios compare like with like on this machine.

    .venv/bin/python bench/ray_serve.py [-n 20] [--requests 48] [--clients 8] [--steps 10]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import body, median_ms, parser, server  # noqa: E402
from imagine.models.registry import BUILTIN_DIR  # noqa: E402
from tests.ray_serve.server import ray_server  # noqa: E402

MODEL_A = "imagine/shapes"
MODEL_B = "bench/shapes-b"
HEADERS = {"x-use-cache": "false", "x-wait-for-model": "true"}


def _one(client: httpx.Client, url: str, model: str, seed: int, args: object) -> float:
    return _timed(client, url, model, seed, args)[0]


def _timed(
    client: httpx.Client, url: str, model: str, seed: int, args: object
) -> tuple[float, float]:
    """(end-to-end seconds, the server's `pipeline` seconds) of one request."""
    started = time.perf_counter()
    r = client.post(f"{url}/models/{model}", json=body("a red circle", seed, args), headers=HEADERS)
    r.raise_for_status()
    elapsed = time.perf_counter() - started
    pipeline = 0.0
    for part in r.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "pipeline" and dur:
            pipeline = float(dur) / 1000
    return elapsed, pipeline


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _throughput(url: str, models: list[str], args: object) -> tuple[float, float]:
    """(images per second, CPU busy fraction) for `args.requests` requests from
    `args.clients` threads."""
    n, clients = args.requests, args.clients  # type: ignore[attr-defined]
    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:

        def run(i: int) -> float:
            return _one(client, url, models[i % len(models)], 5000 + i, args)

        busy0, total0 = _cpu_busy()
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(run, range(n)))
        rate = n / (time.perf_counter() - started)
        busy1, total1 = _cpu_busy()
        return rate, (busy1 - busy0) / max(1, total1 - total0)


def _warm(url: str, models: list[str], args: object) -> None:
    with httpx.Client(timeout=600) as client:
        for seed in range(2):
            for model in models:
                _one(client, url, model, seed, args)


@contextlib.contextmanager
def _ray(model_dirs: str, replicas: int) -> Iterator[str]:
    env = {
        "IMAGINE_RAY_MODEL_REPLICAS": str(replicas),
        "IMAGINE_MODEL_DIRS": f'["{model_dirs}"]',
        "IMAGINE_ALLOW_DOWNLOADS": "false",
        "IMAGINE_DATA_DIR": tempfile.mkdtemp(prefix="imagine-bench-ray-"),
        "IMAGINE_LOG_LEVEL": "warning",
    }
    with ray_server(env) as running:
        yield running.url


def _single(model_dirs: str) -> contextlib.AbstractContextManager[str]:
    return server(MODEL_A, [model_dirs], preload=f'["{MODEL_A}", "{MODEL_B}"]')


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("-n", type=int, default=20, help="latency: requests of each kind")
    p.add_argument("--requests", type=int, default=48, help="throughput: requests per workload")
    p.add_argument("--clients", type=int, default=8, help="throughput: concurrent clients")
    args = p.parse_args()
    os.environ.setdefault("IMAGINE_LOG_LEVEL", "warning")
    one, two = [MODEL_A], [MODEL_A, MODEL_B]
    with tempfile.TemporaryDirectory(prefix="imagine-bench-models-") as dirs:
        (Path(dirs) / "bench").mkdir()
        (Path(dirs) / "bench" / "shapes-b").symlink_to(BUILTIN_DIR, target_is_directory=True)

        # (a) latency, alternating, both servers up (the idle one costs Ray's background work)
        with _single(dirs) as single_url, _ray(dirs, 1) as ray_url:
            _warm(single_url, one, args)
            _warm(ray_url, one, args)
            single_s: list[tuple[float, float]] = []
            ray_s: list[tuple[float, float]] = []
            with httpx.Client(timeout=600) as client:
                for seed in range(args.n):
                    single_s.append(_timed(client, single_url, MODEL_A, 1000 + seed, args))
                    ray_s.append(_timed(client, ray_url, MODEL_A, 1000 + seed, args))

        # (b) throughput, each server alone
        results: dict[str, dict[str, tuple[float, float]]] = {}
        with _single(dirs) as url:
            _warm(url, two, args)
            results["single process"] = {
                "one model": _throughput(url, one, args),
                "two models": _throughput(url, two, args),
            }
        for replicas in (1, 2):
            with _ray(dirs, replicas) as url:
                _warm(url, two, args)
                results[f"Serve, {replicas} model replica(s)"] = {
                    "one model": _throughput(url, one, args),
                    "two models": _throughput(url, two, args),
                }

    print(f"imagine/shapes, {args.size}x{args.size}, {args.steps} steps, cache off")
    print(f"(a) latency, n={args.n} each, alternating (medians)")
    print(f"  {'':24s} {'end to end':>11s} {'pipeline':>9s} {'outside it':>11s}")
    outside = {}
    for name, runs in (("single process", single_s), ("Ray Serve (1 + 1)", ray_s)):
        e2e, pipe = median_ms([r[0] for r in runs]), median_ms([r[1] for r in runs])
        outside[name] = median_ms([r[0] - r[1] for r in runs])
        print(f"  {name:24s} {e2e:8.1f} ms {pipe:6.1f} ms {outside[name]:8.1f} ms")
    added = outside["Ray Serve (1 + 1)"] - outside["single process"]
    print(
        f"  added by Serve outside the pipeline: {added:.1f} ms per request "
        f"({outside['Ray Serve (1 + 1)'] / outside['single process']:.2f}x the single server's)"
    )
    print(f"(b) throughput, {args.requests} requests, {args.clients} concurrent clients")
    print(f"  {'server':30s} {'one model':>16s} {'two models':>16s}   vs single (one / two)")
    base = results["single process"]
    for name, r in results.items():
        cells = "".join(f" {r[k][0]:6.2f} img/s {100 * r[k][1]:3.0f}%" for k in r)
        ratios = " / ".join(f"{r[k][0] / base[k][0]:.2f}" for k in r)
        print(f"  {name:30s}{cells}   {ratios}")
    one_r = results["Serve, 1 model replica(s)"]
    two_r = results["Serve, 2 model replica(s)"]
    print(
        f"  two replicas vs one: one model {two_r['one model'][0] / one_r['one model'][0]:.2f}x,"
        f" two models {two_r['two models'][0] / one_r['two models'][0]:.2f}x"
        " (the % is how busy the machine's 2 CPUs were)"
    )


if __name__ == "__main__":
    main()
