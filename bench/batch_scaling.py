"""What batching can gain at most: images/s of one pipeline call at batch 1, 2, 4, 8, 16.

Calls the embedded model through the ModelManager (no server), so the ratio at batch 8 over
batch 1 is the ceiling of the server's "batching on vs off at concurrency 8" figure.

    .venv/bin/python bench/batch_scaling.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per batch size")
    args = p.parse_args()

    from imagine.models.families.shapes import MODEL_ID
    from imagine.models.manager import ModelManager
    from imagine.settings import Settings
    from imagine.validation import build_request

    settings = Settings(preload=[], allow_downloads=False)
    manager = ModelManager(settings=settings)
    info = manager.describe(MODEL_ID)
    model = asyncio.run(manager.load(MODEL_ID))

    def requests(n: int, first_seed: int) -> list:
        return [
            build_request(
                model_id=MODEL_ID,
                prompt="a shape",
                parameters={"seed": first_seed + i},
                info=info,
                settings=settings,
            )
            for i in range(n)
        ]

    rates: dict[int, float] = {}
    for size in (1, 2, 4, 8, 16):
        manager.run_batch(model, requests(size, 0))  # warm-up at this size
        times = []
        for r in range(args.repeats):
            started = time.perf_counter()
            manager.run_batch(model, requests(size, 100 * (r + 1)))
            times.append(time.perf_counter() - started)
        rates[size] = size / statistics.median(times)
    print(f"{MODEL_ID} at its defaults; one pipeline call per batch")
    for size, rate in rates.items():
        print(f"batch {size:>2}: {rate:5.2f} images/s = {rate / rates[1]:.2f}x batch 1")


if __name__ == "__main__":
    main()
