"""Cost of live previews on the embedded model: one pipeline call at `imagine/shapes` defaults,
with a step callback that does nothing vs one that, under a PreviewTap, renders and JPEG-encodes
(quality 70) a preview every step, or every 4th step (steps 0, 4, 8, ...).

The modes alternate call by call with the same prompts and seeds, on the model's own thread (as
the server runs them). Prints each mode's median, its ratio to the plain call, and the median
cost of one preview (render + encode). The goal: <= 1.05x at the default preview rate.
On a shared machine, trust the paired ratio and "previews alone" more than the raw medians.

    .venv/bin/python bench/preview_cost.py [-n 20] [--every 1 4] [--threads 0]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from typing import Any

WARMUP = 3
QUALITY = 70


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=20, help="measured calls per mode")
    p.add_argument("--every", type=int, nargs="+", default=[1, 4], help="preview every k steps")
    p.add_argument("--max-side", type=int, default=256, help="preview size limit")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()

    import torch

    from imagine.models.builtin.evaluate import evaluation_scenes
    from imagine.models.families.shapes import MODEL_ID
    from imagine.models.manager import ModelManager
    from imagine.models.preview import PreviewTap
    from imagine.settings import Settings
    from imagine.validation import build_request

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    settings = Settings(preload=[], allow_downloads=False)
    manager = ModelManager(settings=settings)
    info = manager.describe(MODEL_ID)
    spec = info.spec
    assert spec.preview is not None and spec.build_call_kwargs is not None
    model = asyncio.run(manager.load(MODEL_ID))
    assert model.thread is not None
    pipe = model.pipeline
    prompts = [s.prompt for s in evaluation_scenes(args.n + WARMUP, seed=5)]
    preview_s: list[float] = []

    def generate(i: int, every: int) -> float:
        """Seconds for call i with a preview every `every` steps (0: no tap, a no-op callback)."""
        request = build_request(
            model_id=MODEL_ID,
            prompt=prompts[i],
            parameters={"seed": i},
            info=info,
            settings=settings,
        )
        kwargs = spec.build_call_kwargs([request], [torch.Generator("cpu").manual_seed(i)])
        pipe.scheduler = model.scheduler_for(request.scheduler)

        def nothing(p: Any, step: int, timestep: Any, cb_kwargs: dict) -> dict:
            return cb_kwargs

        def render(p: Any, step: int, timestep: Any, cb_kwargs: dict) -> dict:
            if step % every == 0:
                start = time.perf_counter()
                image = tap.image(0, max_side=args.max_side)
                if image is not None:
                    image.save(io.BytesIO(), "JPEG", quality=QUALITY)
                preview_s.append(time.perf_counter() - start)
            return cb_kwargs

        start = time.perf_counter()
        try:
            if every == 0:
                pipe(**kwargs, callback_on_step_end=nothing)
            else:
                with PreviewTap(
                    pipe, spec.preview, height=request.height, width=request.width
                ) as tap:
                    pipe(**kwargs, callback_on_step_end=render)
        finally:
            pipe.scheduler = model.base_scheduler
        return time.perf_counter() - start

    modes = [0, *args.every]
    times: dict[int, list[float]] = {m: [] for m in modes}
    for i in range(args.n + WARMUP):
        for m in modes if i % 2 == 0 else modes[::-1]:  # alternate the order too
            seconds = model.thread.submit(generate, i, m).result()
            if i >= WARMUP:  # the first calls warm up allocators and caches
                times[m].append(seconds)

    base = statistics.median(times[0])
    per_preview = statistics.median(preview_s)
    print(
        f"imagine/shapes, {spec.default_steps} steps {spec.default_scheduler}, "
        f"{spec.default_width}x{spec.default_height}, batch 1, torch threads "
        f"{torch.get_num_threads()}, {args.n} calls per mode, JPEG q{QUALITY}, "
        f"max_side {args.max_side}"
    )
    print(f"no previews:          median {base * 1000:7.1f} ms")
    for m in args.every:
        median = statistics.median(times[m])
        # Paired: call i of each mode ran back to back with the same prompt and seed, so the
        # median of per-call ratios shrugs off load from other processes better than medians do.
        paired = statistics.median(t / b for t, b in zip(times[m], times[0], strict=True))
        # Accounted: the time the previews themselves took (a floor on the true overhead).
        previews = len(range(0, spec.default_steps, m))
        label = "every step" if m == 1 else f"every {m} steps"
        print(
            f"preview {label:<13} median {median * 1000:7.1f} ms   ratio {median / base:.3f}   "
            f"paired ratio {paired:.3f}   previews alone "
            f"{1 + previews * per_preview / base:.3f}"
        )
    print(f"one preview (render + JPEG): median {per_preview * 1e6:.0f} us")


if __name__ == "__main__":
    main()
