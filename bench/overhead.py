"""(a) Server overhead: end-to-end HTTP latency vs the same pipeline call made directly.

Runs `imagine serve` in a subprocess and, in this process, the same model through diffusers
directly (same kwargs the family spec builds, same seed), alternating one of each so machine
noise hits both alike. Prints both medians and the overhead as a fraction of the direct time.

    .venv/bin/python bench/overhead.py [--model imagine/shapes --model-dir DIR] [-n 30]
"""

from __future__ import annotations

import time

import httpx

from bench._common import body, median_ms, model_source, parser, server


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("-n", type=int, default=30, help="measured requests of each kind")
    args = p.parse_args()

    import torch

    from imagine.models.manager import ModelManager
    from imagine.settings import Settings
    from imagine.validation import build_request

    torch.set_flush_denormal(True)
    with model_source(args) as (model_id, dirs), server(model_id, dirs) as url:
        settings = Settings(model_dirs=dirs, preload=[], allow_downloads=False)
        manager = ModelManager(settings=settings)
        info = manager.describe(model_id)
        import asyncio

        loaded = asyncio.run(manager.load(model_id))
        pipe, spec = loaded.pipeline, info.spec
        assert spec.build_call_kwargs is not None

        def direct(seed: int) -> float:
            request = build_request(
                model_id=model_id,
                prompt="a red circle",
                parameters=body("", seed, args)["parameters"],
                info=info,
                settings=settings,  # type: ignore[arg-type]
            )
            gen = [torch.Generator("cpu").manual_seed(request.seed)]
            kwargs = spec.build_call_kwargs([request], gen)
            pipe.scheduler = loaded.scheduler_for(request.scheduler)
            started = time.perf_counter()
            # On the thread that loaded the pipeline, as a script does everything on one thread
            # (a second thread's OpenMP team would slow both: see LoadedModel.thread).
            assert loaded.thread is not None
            loaded.thread.submit(pipe, **kwargs).result()
            return time.perf_counter() - started

        stages: dict[str, list[float]] = {}  # the server's own Server-Timing, per stage
        with httpx.Client(timeout=600) as client:

            def http(seed: int) -> float:
                started = time.perf_counter()
                r = client.post(
                    f"{url}/models/{model_id}",
                    json=body("a red circle", seed, args),
                    headers={"x-use-cache": "false", "x-wait-for-model": "true"},
                )
                r.raise_for_status()
                elapsed = time.perf_counter() - started
                for part in r.headers.get("server-timing", "").split(","):
                    name, _, dur = part.strip().partition(";dur=")
                    if dur:
                        stages.setdefault(name, []).append(float(dur) / 1000)
                return elapsed

            for seed in range(3):  # warm-up both paths
                direct(seed), http(seed)
            stages.clear()
            d, h = [], []
            for seed in range(args.n):
                d.append(direct(1000 + seed))
                time.sleep(0.2)
                h.append(http(1000 + seed))
    dm, hm = median_ms(d), median_ms(h)
    print(f"model {model_id}, {args.size}x{args.size}, {args.steps} steps, n={args.n} each")
    print(f"direct pipeline call   median {dm:8.1f} ms")
    print(f"HTTP end to end        median {hm:8.1f} ms")
    print(f"server overhead        {hm - dm:8.1f} ms = {100 * (hm - dm) / dm:.1f} % of direct")
    print("inside the server (Server-Timing medians):")
    for name, values in stages.items():
        print(f"  {name:20s} {median_ms(values):8.1f} ms")


if __name__ == "__main__":
    main()
