"""Latency of one default image from the embedded model, against the 0.5 s bar of issue 3.

Loads `imagine/shapes` through the ModelManager (the code path the server uses) and generates one
image at the model's default settings again and again, cycling through grammar prompts and
seeds. Prints the median, the 90th percentile, and the median as a fraction of the bar.

    .venv/bin/python bench/shapes_latency.py [-n 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

BAR_S = 0.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=30, help="measured images")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()

    import numpy as np
    import torch

    from imagine.models.builtin.evaluate import evaluation_scenes
    from imagine.models.families.shapes import MODEL_ID
    from imagine.models.manager import ModelManager
    from imagine.settings import Settings
    from imagine.validation import build_request

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    settings = Settings(preload=[], allow_downloads=False)
    manager = ModelManager(settings=settings)
    info = manager.describe(MODEL_ID)
    model = asyncio.run(manager.load(MODEL_ID))
    prompts = [s.prompt for s in evaluation_scenes(args.n + 3, seed=5)]
    times = []
    for i, prompt in enumerate(prompts):
        request = build_request(
            model_id=MODEL_ID, prompt=prompt, parameters={"seed": i}, info=info, settings=settings
        )
        start = time.perf_counter()
        manager.run_batch(model, [request])
        if i >= 3:  # the first calls warm up allocators and caches
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    spec = info.spec
    print(
        f"imagine/shapes, {spec.default_steps} steps {spec.default_scheduler}, guidance "
        f"{spec.default_guidance}, {spec.default_width}x{spec.default_height}, "
        f"torch threads {torch.get_num_threads()}, {len(times)} images"
    )
    print(
        f"median {median * 1000:.0f} ms, p90 {np.percentile(times, 90) * 1000:.0f} ms, "
        f"median / {BAR_S} s bar = {median / BAR_S:.2f}"
    )


if __name__ == "__main__":
    main()
