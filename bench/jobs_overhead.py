"""The job API's cost: create with `Prefer: wait` vs the sync HF POST, previews on vs off.

One `imagine serve` (jobs in a temporary folder); three kinds of request alternate, one of each
per round, so machine noise hits all alike: the HF POST (cache off), a job with previews at the
default rate, and a job with `"previews": false`. Every request has its own seed (nothing is
served from the cache). Prints the medians and the two ratios.

    .venv/bin/python bench/jobs_overhead.py --model imagine/shapes --steps 16 [-n 30]
"""

from __future__ import annotations

import tempfile
import time

import httpx

from bench._common import body, median_ms, model_source, parser, server


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("-n", type=int, default=30, help="measured requests of each kind")
    args = p.parse_args()
    with (
        model_source(args) as (model_id, dirs),
        tempfile.TemporaryDirectory(prefix="imagine-bench-jobs-") as data_dir,
        server(model_id, dirs, data_dir=data_dir) as url,
        httpx.Client(timeout=600) as client,
    ):

        def hf(seed: int) -> float:
            started = time.perf_counter()
            r = client.post(
                f"{url}/models/{model_id}",
                json=body("a red circle", seed, args),
                headers={"x-use-cache": "false", "x-wait-for-model": "true"},
            )
            r.raise_for_status()
            return time.perf_counter() - started

        def job(seed: int, previews: bool) -> float:
            params = body("a red circle", seed, args)["parameters"]
            payload = {"input": {"prompt": "a red circle", **params}, "previews": previews}
            started = time.perf_counter()
            r = client.post(
                f"{url}/v1/models/{model_id}/predictions",
                json=payload,
                headers={"prefer": "wait"},
            )
            r.raise_for_status()
            assert r.json()["status"] == "succeeded", r.text
            # the client then downloads the image, as `replicate.run` does
            client.get(r.json()["output"]).raise_for_status()
            return time.perf_counter() - started

        for seed in range(3):  # warm-up
            hf(seed), job(100 + seed, True), job(200 + seed, False)
        h, j, q = [], [], []
        for seed in range(args.n):
            h.append(hf(1000 + seed))
            j.append(job(2000 + seed, True))
            q.append(job(3000 + seed, False))
    hm, jm, qm = median_ms(h), median_ms(j), median_ms(q)
    print(f"model {model_id}, {args.size}x{args.size}, {args.steps} steps, n={args.n} each")
    print(f"HF POST (sync)                  median {hm:8.1f} ms")
    print(f"job, Prefer: wait, previews on  median {jm:8.1f} ms")
    print(f"job, Prefer: wait, previews off median {qm:8.1f} ms")
    print(f"job API vs HF POST (previews on)  {jm / hm:.3f}x")
    print(f"previews on vs off                {jm / qm:.3f}x")


if __name__ == "__main__":
    main()
