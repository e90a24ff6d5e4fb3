"""What the A1111 routes keep and look up besides the service layer: each caller's model
choice and txt2img runs (for options, progress and interrupt), and the checkpoint list
(sd-models) that `sd_model_checkpoint` names are resolved against."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from imagine.engine.job import Job
from imagine.errors import ImagineError, ModelNotFound
from imagine.http.state import ServerState
from imagine.settings import Settings

__all__ = ["Caller", "Callers", "CheckpointNotFound", "Run", "checkpoint", "models", "short_hash"]

MAX_CALLERS = 4096  # callers whose model choice and runs are kept (least recently seen go)
MAX_LISTED = 500  # models listed by sd-models


class CheckpointNotFound(ModelNotFound):
    """A `sd_model_checkpoint` that names nothing this server can serve (404)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(eq=False)
class Run:
    """One txt2img in flight, for progress and interrupt."""

    count: int
    jobs: list[Job] = field(default_factory=list)
    ready: int = 0  # images from the cache
    started: float = field(default_factory=time.time)
    interrupted: bool = False


@dataclass(eq=False)
class Caller:
    id: str  # the engine's client id: the token's digest, or the client's address
    model: str | None = None
    runs: list[Run] = field(default_factory=list)


class Callers:
    """Per-caller state, least recently seen evicted past `limit` (a client inventing callers
    cannot grow it; an evicted caller's runs go on, out of progress/interrupt's sight)."""

    def __init__(self, limit: int = MAX_CALLERS) -> None:
        self._limit = limit
        self._by_id: OrderedDict[str, Caller] = OrderedDict()

    def get(self, caller: str) -> Caller:
        entry = self._by_id.pop(caller, None) or Caller(caller)
        self._by_id[caller] = entry
        while len(self._by_id) > self._limit:
            self._by_id.popitem(last=False)
        return entry

    def peek(self, caller: str) -> Caller | None:
        return self._by_id.get(caller)


def _model_ids(settings: Settings) -> list[str]:
    """default_model, preload, then model_dirs' pipeline folders (`name`, `org/name`,
    `org--name`), at most two levels deep. Reads disk: call off the event loop."""
    ids = [settings.default_model, *settings.preload]
    for root in settings.model_dirs:
        for path in sorted(root.glob("*/model_index.json")) + sorted(
            root.glob("*/*/model_index.json")
        ):
            parts = path.parent.relative_to(root).parts
            ids.append("/".join(parts) if len(parts) == 2 else parts[0].replace("--", "/", 1))
            if len(ids) > MAX_LISTED:
                break
    return list(dict.fromkeys(ids))[:MAX_LISTED]


async def short_hash(state: ServerState, model_id: str) -> str | None:
    try:
        return (await state.images.describe(model_id)).revision[:10] or None
    except ImagineError:
        return None


async def models(state: ServerState) -> list[dict[str, Any]]:
    ids = await anyio.to_thread.run_sync(_model_ids, state.settings)
    hashes = [await short_hash(state, model_id) for model_id in ids]
    return [
        {
            "title": model_id,
            "model_name": model_id,
            "hash": short,
            "sha256": None,
            "filename": model_id,  # not the server's path
            "config": None,
        }
        for model_id, short in zip(ids, hashes, strict=True)
    ]


async def checkpoint(state: ServerState, name: str, field: str, client_id: str) -> str:
    """The model id `name` means: an id, or a listed title / model_name / hash (any case),
    optionally with A1111's " [hash]" suffix. Raises CheckpointNotFound naming `field`."""
    wanted = name.strip()
    if wanted.endswith("]") and " [" in wanted:
        wanted = wanted[: wanted.rindex(" [")]
    try:
        return (await state.images.describe(wanted, client_id=client_id)).model_id
    except ModelNotFound as exc:
        cause = exc.message
    listed_models = await models(state)
    for entry in listed_models:
        if wanted.lower() in (entry["title"].lower(), entry["hash"] or entry["title"].lower()):
            return str(entry["title"])
    listed = ", ".join(m["title"] for m in listed_models[:20])
    raise CheckpointNotFound(f"{field} = {name[:100]!r}: {cause}; listed: {listed}", field=field)
