"""One typed settings object, loaded once (TOML file, then IMAGINE_* environment) and passed
explicitly to whatever needs it. No module reads the environment on its own."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "imagine/shapes"


def hash_token(token: str) -> str:
    """Tokens are kept only as SHA-256 hex digests; requests are hashed and compared in constant
    time."""
    return hashlib.sha256(token.encode()).hexdigest()


class ModelOptions(BaseModel):
    """How to load one model (`model_options` in the settings, keyed by model id)."""

    model_config = ConfigDict(extra="forbid")

    # Optional parts of the model not to load, by the names its family spec gives them
    # (FamilySpec.optional_parts), e.g. ["t5"] serves SD3 without its 4.7B T5 text encoder.
    without: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    """Every knob of the server. Environment variables are `IMAGINE_<FIELD>` (lists as JSON)."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_", extra="forbid")

    # --- network and auth
    host: str = "127.0.0.1"
    port: int = 8000
    allow_unauthenticated_public: bool = False  # binding beyond loopback with no tokens needs this
    tokens: list[str] = Field(default_factory=list)  # plain tokens; hashed at load, never kept
    token_hashes: list[str] = Field(default_factory=list)  # or SHA-256 hex digests directly
    # /openapi.json, /docs, /redoc (behind the token when tokens are configured); false: none
    docs: bool = True

    # --- connections (imagine/http/server.py)
    # A connection must send its request head within head_timeout_s of opening (or of its last
    # response) and the body within body_timeout_s of the head, else it is closed: idle and
    # slowloris sockets cannot pile up. Quiet keep-alive connections close after keep_alive_s.
    head_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    # Connections + requests at once; past it a request is answered 503 at once. Kept below the
    # open-files limit (raised to its hard maximum at start).
    max_connections: int = 4096

    # --- models
    default_model: str = DEFAULT_MODEL
    preload: list[str] = Field(default_factory=lambda: [DEFAULT_MODEL])
    ready_after_preload: bool = True  # listen only once the preloaded models are loaded
    model_dirs: list[Path] = Field(default_factory=list)  # folders searched for <id> sub-folders
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    memory_budget_bytes: int = 0  # 0 = no budget (never evict)
    allow_downloads: bool = True  # False = resolve from local folders and the HF cache only
    # Model ids that are filesystem paths ("/srv/m", "./m", "~/m", "../m", or a folder relative
    # to the working directory): off, so HTTP clients cannot make the server load any folder it
    # can read. Ids named in `preload` or `default_model` are the operator's and always allowed;
    # `imagine generate` turns this on (its user is local). See docs/models.md.
    allow_path_model_ids: bool = False
    # Per-model load options by model id (a LoRA's come from its base model's id), e.g.
    # [model_options."stabilityai/stable-diffusion-3-medium-diffusers"] without = ["t5"]
    model_options: dict[str, ModelOptions] = Field(default_factory=dict)

    # --- request limits
    max_pixels: int = 1024 * 1024
    max_steps: int = 100
    max_prompt_chars: int = 2000
    # Largest request body (0 = no limit): a larger one is a 413 before it is read. Bodies here
    # are prompts and a few numbers; 1 MiB leaves room for any client's extra keys.
    max_body_bytes: int = 1024 * 1024

    # --- engine
    queue_size: int = 64  # per model
    per_client_queue: int = 16  # queued requests one token/client may hold
    # Requests to the engine one token (or address, with auth off) may make per minute, in
    # bursts of up to that many; past it a 429 with Retry-After. 0 = no limit. Cache hits
    # are free.
    client_requests_per_minute: int = 0
    # "request": a batch is whole requests with the same size, steps, scheduler and guidance,
    # run to the end before the next starts. "step": requests of the same size are stepped
    # together one denoising step at a time, joining and leaving between steps whatever their
    # steps, scheduler or guidance (families without step functions stay request-level).
    # Step is the default: no head-of-line blocking, 2x throughput on mixed requests, lower
    # latency under load in most runs (bench/step_batching.py; README "Benchmarks").
    batching: Literal["request", "step"] = "step"
    max_batch_size: int = 8  # requests per pipeline call, or per step in step batching
    batch_wait_ms: float = 20.0
    request_timeout_s: float = 600.0
    # A request predicted (from the model's cost, measured when it loads) to run longer than
    # this is refused with a 400 naming the limit, so one request cannot hold a model for
    # minutes: a small request then waits well under 30 s behind the largest one allowed.
    # 0 = no limit (and no calibration calls at load).
    max_request_s: float = 15.0
    # Largest sum of width×height one pipeline call may hold (0 = no limit): bounds activation
    # memory. A single request above it is refused with 400; batches are cut to fit it.
    max_batch_pixels: int = 0

    # --- result cache
    cache_backend: Literal["memory", "redis", "none"] = "memory"
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_ttl_s: float = 3600.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "imagine:result:"  # keys are <prefix><request.cache_key()>
    # Each Redis cache call gives up after this; after 3 failures in a row Redis is skipped for
    # 5 s (a circuit breaker), so a frozen Redis never holds requests up.
    redis_timeout_s: float = 0.25

    # --- jobs (the Replicate-shaped API)
    # "sqlite": one file in data_dir, images beside it; "redis": redis_url, shared by replicas.
    job_store: Literal["sqlite", "redis"] = "sqlite"
    # Where the SQLite job store keeps jobs.sqlite3 and outputs/. None: `imagine serve` uses
    # $XDG_DATA_HOME/imagine (~/.local/share/imagine); an app built without one (tests) uses a
    # temporary folder that is deleted at shutdown.
    data_dir: Path | None = None
    # The base of absolute URLs in webhook payloads (API answers use the request's own URL);
    # default: the URL the client created the job at.
    public_url: str | None = None
    job_ttl_s: float = 3600.0  # results (and inputs) are deleted this long after a job ends
    redis_job_prefix: str = "imagine:job:"
    # Webhooks: targets must match an entry (CIDR network or exact host name); signed with the
    # secret (Standard Webhooks, "whsec_<base64>") when one is set.
    webhook_allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1", "localhost"])
    webhook_secret: str | None = None
    webhook_retries: int = 4
    # Previews of running jobs: after a step, at most every N steps and T ms; 0 ms = every step.
    previews: bool = True
    preview_every_steps: int = 1
    preview_interval_ms: float = 250.0
    preview_max_side: int = 256

    # --- the OpenAI Images API (/v1/images/generations)
    # `model` names apps send by default, mapped to imagine model ids ("" = default_model); any
    # other name must be a model id this server can serve.
    openai_model_aliases: dict[str, str] = Field(
        default_factory=lambda: dict.fromkeys(
            ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"), ""
        )
    )
    openai_max_n: int = 4  # most images one request may ask for (`n`)

    # --- the Hub (model ids found nowhere local are looked up on the Hugging Face Hub)
    # Every Hub call (lookups and weight downloads) gives up after these: connecting, and
    # waiting for the next bytes (huggingface_hub itself waits forever on some calls).
    hub_connect_timeout_s: float = Field(default=5.0, gt=0)
    hub_read_timeout_s: float = Field(default=10.0, gt=0)
    # Lookups run on a pool of their own threads, so a stalled Hub holds only these and never
    # the threads requests for local models need; one lookup per id (concurrent requests for it
    # share it). Past `hub_max_lookups` running or waiting, a new id is refused at once with
    # 429 + Retry-After; a request waits `hub_lookup_timeout_s` at most for its lookup (then
    # 429 too; the lookup goes on and its answer is remembered).
    hub_lookup_threads: int = Field(default=4, ge=1)
    hub_max_lookups: int = Field(default=16, ge=1)
    # Of those, how many one client (token, or address with auth off) may start: past it its
    # new ids are a 429, so made-up ids from one client leave room for everyone else's.
    hub_lookups_per_client: int = Field(default=4, ge=1)
    hub_lookup_timeout_s: float = Field(default=30.0, gt=0)
    # An id the Hub does not have is not asked for again for `hub_miss_ttl_s`; one whose lookup
    # failed (timeout, network, Hub 429/5xx) for `hub_failure_ttl_s` (both answer 404 meanwhile).
    # /health reports the Hub "degraded" from a failure until a Hub call succeeds or
    # `hub_failure_ttl_s` passes without another failure.
    hub_miss_ttl_s: float = Field(default=60.0, gt=0)
    hub_failure_ttl_s: float = Field(default=15.0, gt=0)

    log_level: str = "info"

    @field_validator("token_hashes")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [h.lower() for h in v]

    def all_token_hashes(self) -> frozenset[str]:
        return frozenset(self.token_hashes) | {hash_token(t) for t in self.tokens}

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: object) -> Settings:
        """File values first, then IMAGINE_* environment, then explicit overrides (CLI flags)."""
        file_values: dict[str, object] = {}
        if config_file is not None:
            with open(config_file, "rb") as f:
                file_values = tomllib.load(f)
        # pydantic-settings ranks init kwargs above the environment; we want the environment to
        # win over the file, so read the environment alone first and merge by hand.
        from_env = cls().model_dump(exclude_unset=True)
        merged = {**file_values, **from_env}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**merged)
