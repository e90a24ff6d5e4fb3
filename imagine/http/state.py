"""What the routes share, built once by `create_app` and kept on `app.state.imagine`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imagine.auth import TokenAuth
from imagine.settings import Settings

if TYPE_CHECKING:
    from imagine.engine.base import Engine
    from imagine.jobs.service import JobService
    from imagine.metrics import Metrics
    from imagine.service import ImageService

__all__ = ["ServerState", "compute_type"]


def compute_type(settings: Settings) -> str:
    """`cuda`, `mps` or `cpu`, for the `x-compute-type` header. With device `auto`, asks torch
    only if the engine has already imported it (this module never imports torch itself)."""
    if settings.device != "auto":
        return settings.device
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return "cuda"
    return "cpu"


@dataclass(slots=True)
class ServerState:
    settings: Settings
    engine: Engine
    images: ImageService
    auth: TokenAuth
    jobs: JobService | None = None
    compute_type: str = field(default="cpu")
    metrics: Metrics | None = None  # the engine's, when it keeps them (served at /metrics)
