"""What the routes share, built once by `create_app` and kept on `app.state.imagine`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagine.auth import TokenAuth
from imagine.settings import Settings

if TYPE_CHECKING:  # these import torch (through the family spec); the HTTP layer must not
    from imagine.cache.base import ResultCache
    from imagine.engine.base import Engine, ModelInfo
    from imagine.metrics import Metrics
    from imagine.request import GenerationRequest

# imagine.validation.build_request's signature (keyword-only):
# (model_id, prompt, parameters, info, settings, output_format) -> GenerationRequest
BuildRequest = Callable[..., "GenerationRequest"]

__all__ = ["BuildRequest", "ServerState", "compute_type", "default_build_request"]


def default_build_request(
    *,
    model_id: str,
    prompt: str,
    parameters: dict[str, Any],
    info: ModelInfo,
    settings: Settings,
    output_format: str,
) -> GenerationRequest:
    """`imagine.validation.build_request`, imported on first use (it imports torch)."""
    from imagine.validation import build_request

    return build_request(
        model_id=model_id,
        prompt=prompt,
        parameters=parameters,
        info=info,
        settings=settings,
        output_format=output_format,
    )


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
    cache: ResultCache | None
    auth: TokenAuth
    build_request: BuildRequest = default_build_request
    compute_type: str = field(default="cpu")
    metrics: Metrics | None = None  # the engine's, when it keeps them (served at /metrics)
