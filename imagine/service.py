"""The service layer: what every API does with a request, knowing no transport.

    describe → validate → cache → engine → encode → cache put

Two ways to run: `generate` / `generate_many` (cache first, then the engine; the caller waits),
or `submit` + `finish` (an engine Job the caller can watch: progress, previews, cancel).

Seed-less requests (the HF API's cache semantics, applied on every API): with the cache on, an
identical request that names no seed gets the seed of the first such request, so the same image
(and `x-seed`); the first one's seed is remembered under a seed-less key. Without the cache
(`x-use-cache: false`) it keeps the fresh random seed validation chose.

The HF, OpenAI and A1111 routes, the job runner (imagine.jobs.service) and the CLI call this
(a Ray ingress will too); none of them repeats it. Validation and encoding run in worker threads
(they may touch disk or take milliseconds), the engine on its own threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio.to_thread

from imagine import imaging
from imagine.cache.base import CachedImage, ResultCache
from imagine.engine.base import Engine
from imagine.engine.job import Job, PreviewPolicy
from imagine.errors import ModelNotFound, Overloaded
from imagine.models import hub
from imagine.models.spec import ModelInfo
from imagine.request import GenerationRequest, GenerationResult, OutputFormat
from imagine.settings import Settings

__all__ = ["EncodedImage", "ImageService", "consecutive_seeds"]

# imagine.validation.build_request's signature (keyword-only):
# (model_id, prompt, parameters, info, settings, output_format) -> GenerationRequest
BuildRequest = Callable[..., GenerationRequest]


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """One finished image as every API hands it out."""

    body: bytes
    content_type: str
    seed: int
    cache: Literal["hit", "miss"]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class ImageService:
    """describe / validate / generate-with-cache / encode, over one engine and one cache."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        cache: ResultCache | None = None,
        build_request: BuildRequest | None = None,
        previews: PreviewPolicy | None = None,
    ) -> None:
        if build_request is None:
            from imagine.validation import build_request as real

            build_request = real
        self.settings = settings
        self.engine = engine
        self.cache = cache
        self._build_request = build_request
        self.previews = previews  # how often a watched job renders a preview; None: never

    async def describe(self, model_id: str, *, client_id: str | None = None) -> ModelInfo:
        """Resolve a model id without loading it (may read disk). Raises ModelNotFound,
        Overloaded (the Hub's lookups are full, or the Hub did not answer in time).

        A worker thread resolves what is local; an id that needs the Hub is looked up on the
        Hub's own threads (imagine.models.hub) while this awaits it holding no thread, so a
        stalled Hub cannot take the threads validation and encoding of other requests need.
        Lookups it starts count against `client_id`'s share (settings.hub_lookups_per_client)."""
        _check_model_id(model_id)

        def local_or_pending() -> ModelInfo:
            with hub.pending_instead_of_waiting(client_id):
                return self.engine.describe(model_id)

        for _ in range(_HUB_ROUNDS):
            try:
                return await anyio.to_thread.run_sync(local_or_pending)
            except hub.HubLookupPending as pending:
                await pending.wait()  # then ask again: the answer is remembered
        raise Overloaded(
            f"Model {model_id}: still resolving after {_HUB_ROUNDS} Hub lookups; retry",
            retry_after=1.0,
        )

    async def validate(
        self,
        model_id: str,
        prompt: Any,
        parameters: Mapping[str, Any],
        output_format: OutputFormat = "png",
        *,
        info: ModelInfo | None = None,
        client_id: str | None = None,
    ) -> GenerationRequest:
        """The canonical request (against `info` when the caller already described the
        model; else described for `client_id`). Raises ModelNotFound, InvalidRequest (naming
        the field), Overloaded (see `describe`)."""
        _check_model_id(model_id)
        described = info or await self.describe(model_id, client_id=client_id)

        def build() -> GenerationRequest:
            return self._build_request(
                model_id=described.model_id,
                prompt=prompt,
                parameters=dict(parameters),
                info=described,
                settings=self.settings,
                output_format=output_format,
            )

        return await anyio.to_thread.run_sync(build)

    async def cached(self, request: GenerationRequest) -> EncodedImage | None:
        """The cached image of exactly this request, if any."""
        if self.cache is None:
            return None
        hit = await self.cache.get(request.cache_key())
        if hit is None:
            return None
        return EncodedImage(
            body=hit.body, content_type=hit.content_type, seed=hit.seed, cache="hit"
        )

    async def generate(
        self,
        request: GenerationRequest,
        *,
        client_id: str,
        use_cache: bool = True,
        wait_for_model: bool = False,
    ) -> EncodedImage:
        """One image, from the cache when allowed, else from the engine (then cached).
        Raises what `Engine.generate` raises; cancelling the caller cancels the work."""
        if use_cache:
            hit = await self.cached(request)
            if hit is not None:
                return hit
        result = await self.engine.generate(
            request, client_id=client_id, wait_for_model=wait_for_model
        )
        return await self.encode(result)

    async def generate_many(
        self,
        first: GenerationRequest,
        n: int,
        *,
        client_id: str,
        seeded: bool,
        use_cache: bool = True,
        wait_for_model: bool = False,
    ) -> list[EncodedImage]:
        """`n` images with consecutive seeds from `first`'s, run side by side (the engine
        batches them). `seeded`: the client named the seed; when it did not, the seed-less
        cache semantics apply (module docstring). One failure cancels the others."""
        alias = None
        if not seeded and use_cache and self.cache is not None:
            alias = _seedless_key(first)
            known = await self.cache.get(alias)
            if known is not None:
                first, alias = replace(first, seed=known.seed), None
        images = await _all(
            self.generate(
                r, client_id=client_id, use_cache=use_cache, wait_for_model=wait_for_model
            )
            for r in consecutive_seeds(first, n)
        )
        if alias is not None and self.cache is not None:
            await self.cache.put(alias, CachedImage(body=b"", content_type=_SEED, seed=first.seed))
        return images

    def submit(
        self,
        request: GenerationRequest,
        *,
        client_id: str,
        wait_for_model: bool = False,
        previews: bool = False,
    ) -> Job:
        """Admit one request to the engine and return its Job at once (to watch or cancel);
        `previews` renders previews by the server's policy. `finish` gets its image."""
        return self.engine.submit(
            request,
            client_id=client_id,
            wait_for_model=wait_for_model,
            previews=self.previews if previews else None,
        )

    async def finish(self, job: Job) -> EncodedImage:
        """The encoded (and cached) image of a submitted job, within the request timeout."""
        return await self.encode(await self.engine.wait(job))

    async def encode(self, result: GenerationResult) -> EncodedImage:
        """Encode a result in its request's format (parameters embedded) and cache it."""
        used = result.request
        started = time.perf_counter()
        body = await anyio.to_thread.run_sync(
            imaging.encode, result.image, used.output_format, used.parameters(), used.output_quality
        )
        timings = {**result.timings, "encoding": time.perf_counter() - started}
        content_type = imaging.CONTENT_TYPES[used.output_format]
        if self.cache is not None:
            await self.cache.put(
                used.cache_key(), CachedImage(body=body, content_type=content_type, seed=used.seed)
            )
        return EncodedImage(
            body=body, content_type=content_type, seed=used.seed, cache="miss", timings=timings
        )


def consecutive_seeds(first: GenerationRequest, n: int) -> list[GenerationRequest]:
    """`n` requests: `first`, then the next seeds (wrapping below 2**63), as Replicate's
    num_outputs, OpenAI's n and A1111's batches number their images."""
    return [replace(first, seed=(first.seed + i) % 2**63) for i in range(n)]


# A seed-less key holds only the seed of the first seed-less request (an empty body): the
# image itself stays under its full key, or is made again from that seed if it was evicted.
_SEED = "application/x-imagine-seed"


def _seedless_key(request: GenerationRequest) -> str:
    return "seedless:" + replace(request, seed=0).cache_key()


async def _all(work: Iterable[Awaitable[EncodedImage]]) -> list[EncodedImage]:
    """Await every image; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# A model's id, then its LoRA's base: each may be one Hub lookup to wait for (module hub).
_HUB_ROUNDS = 4

# Hub ids are at most 96 characters; a longer one is refused before it reaches the registry,
# an error body or a log line (a 100,000-character id came back in a 100 KB 404).
MAX_MODEL_ID_CHARS = 200


def _check_model_id(model_id: str) -> None:
    if len(model_id) > MAX_MODEL_ID_CHARS:
        raise ModelNotFound(
            f"model id of {len(model_id)} characters: ids are at most {MAX_MODEL_ID_CHARS}"
        )
