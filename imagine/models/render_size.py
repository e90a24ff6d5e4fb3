"""A family that draws at its own size (FamilySpec.render_size, the embedded model) has its
images and previews scaled to the request's size here; every other family's already have it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from imagine.request import GenerationRequest, no_preview


def at_request_size(image: Any, request: GenerationRequest) -> Any:
    """The image at the requested size: a family with a render_size (spec) draws at its own size
    and is scaled here; every other family's image already has it."""
    size = (request.width, request.height)
    if image.size == size:
        return image
    return image.resize(size, Image.LANCZOS)


def request_preview(tap: Any, row: int, request: GenerationRequest) -> Callable[[int], Any]:
    """Request `row`'s preview renderer for StepInfo: the tap's latest x0 estimate, in the
    request's aspect (a family with a render_size draws at its own; its final image is
    stretched to the request's size, so its previews are too)."""
    if tap is None:
        return no_preview

    def render(max_side: int) -> Any:
        image = tap.image(row, max_side=max_side)
        if image is None or image.width * request.height == image.height * request.width:
            return image
        side = max(image.size)
        if request.width >= request.height:
            size = (side, max(1, round(side * request.height / request.width)))
        else:
            size = (max(1, round(side * request.width / request.height)), side)
        return image.resize(size, Image.BILINEAR)

    return render
