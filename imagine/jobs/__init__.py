"""Jobs: the durable side of a request's life (record, store, runner, webhooks).

The engine's `Job` (imagine.engine.job) is one image's in-memory lifecycle; a `JobRecord` here is
what a client created (one to four images), written to a `JobStore` before it is acknowledged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagine.jobs.store import JobStore
    from imagine.settings import Settings


def create_job_store(settings: Settings, *, data_dir: Path) -> JobStore:
    """The configured job store: SQLite in `data_dir`, or Redis at `settings.redis_url`."""
    if settings.job_store == "redis":
        from imagine.jobs.redis_store import RedisJobStore

        return RedisJobStore(url=settings.redis_url, prefix=settings.redis_job_prefix)
    from imagine.jobs.sqlite_store import SQLiteJobStore

    return SQLiteJobStore(data_dir=data_dir)


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/imagine, else ~/.local/share/imagine (where `imagine serve` keeps jobs)."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "imagine"
