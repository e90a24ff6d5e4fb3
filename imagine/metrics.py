"""Prometheus series for imagine, on a dedicated registry passed explicitly (no hidden globals).

Build one `Metrics` per server, hand it to the engine, the result cache and the HTTP layer, and
serve `metrics.render()` at `/metrics`. Every series name starts with `imagine_`; the registry
also carries the standard `process_*` series (resident memory, CPU) of this process.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Pipeline stages reported in GenerationResult.timings that get their own histogram series.
STAGES = ("text_encoding", "denoising", "decoding")

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BATCH_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    """All imagine series. Methods are cheap and thread-safe (prometheus-client locks)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.requests = Counter(
            "imagine_requests",
            "HTTP requests by model and status code",
            ["model", "status"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "imagine_queue_depth", "Requests waiting in a model's queue", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "imagine_batch_size",
            "Requests per pipeline call",
            ["model"],
            buckets=_BATCH_SIZES,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "imagine_queue_seconds",
            "Time from admission to the start of compute",
            ["model"],
            buckets=_SECONDS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "imagine_stage_seconds",
            "Pipeline time per stage, per batch",
            ["model", "stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "imagine_batch_seconds",
            "Wall time of one pipeline call",
            ["model"],
            buckets=_SECONDS,
            registry=r,
        )
        self.denoising_steps = Counter(
            "imagine_denoising_steps",
            "Denoising steps computed (steps × images), counted as they run: interrupted and "
            "failed pipeline calls included",
            ["model"],
            registry=r,
        )
        self.steps_per_second = Gauge(
            "imagine_steps_per_second",
            "Denoising steps × images per second, last batch",
            ["model"],
            registry=r,
        )
        self.batch_failures = Counter(
            "imagine_batch_failures", "Pipeline calls that raised", ["model"], registry=r
        )
        self.cancelled = Counter(
            "imagine_cancelled_requests",
            "Requests cancelled by their client",
            ["model", "where"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "imagine_cache_lookups", "Result cache lookups", ["result"], registry=r
        )
        self.models_loaded = Gauge("imagine_models_loaded", "Models loaded now", registry=r)
        self.model_memory = Gauge(
            "imagine_model_memory_bytes", "Memory held by each loaded model", ["model"], registry=r
        )
        self.model_loads = Counter(
            "imagine_model_loads",
            "Model load attempts by outcome",
            ["model", "outcome"],
            registry=r,
        )

        self.jobs = Counter(
            "imagine_jobs", "Jobs created and ended, by state", ["state"], registry=r
        )
        self.webhook_deliveries = Counter(
            "imagine_webhook_deliveries",
            "Webhook messages by outcome (delivered, retried, failed, dropped)",
            ["outcome"],
            registry=r,
        )
        self.sse_subscribers = Gauge(
            "imagine_sse_subscribers",
            "Open event streams (replicate: urls.stream; imagine: urls.events)",
            ["stream"],
            registry=r,
        )

    # --- helpers for the layers that own each event

    def observe_request(self, model: str, status: int) -> None:
        """Count one finished HTTP request (called by the HTTP layer)."""
        self.requests.labels(model=model, status=str(status)).inc()

    def observe_cache(self, *, hit: bool) -> None:
        self.cache_lookups.labels(result="hit" if hit else "miss").inc()

    def observe_batch(
        self, model: str, *, size: int, seconds: float, steps: int, timings: Mapping[str, float]
    ) -> None:
        """One successful pipeline call of `size` images at `steps` steps; `timings` are the
        per-stage seconds of the call (any result's timings: stages are shared by the batch).
        `denoising_steps` is not counted here: the worker counts each step as it runs."""
        self.batch_size.labels(model=model).observe(size)
        self.batch_seconds.labels(model=model).observe(seconds)
        for stage in STAGES:
            if stage in timings:
                self.stage_seconds.labels(model=model, stage=stage).observe(timings[stage])
        denoise = timings.get("denoising") or seconds
        if denoise > 0:
            self.steps_per_second.labels(model=model).set(size * steps / denoise)

    def set_models(self, memory_by_model: Mapping[str, int]) -> None:
        """Replace the loaded-model series with `memory_by_model` (model id → bytes)."""
        self.models_loaded.set(len(memory_by_model))
        self.model_memory.clear()
        for model, nbytes in memory_by_model.items():
            self.model_memory.labels(model=model).set(nbytes)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for `GET /metrics`."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
