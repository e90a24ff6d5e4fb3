"""Encode a generated image as PNG, JPEG or WebP with its generation parameters embedded.

Where the parameters go (read them back with `read_parameters`):
  - PNG: a tEXt chunk `parameters` holding JSON, a readable one-line `Comment`, and `Software`.
  - JPEG / WebP: EXIF `UserComment` (ASCII-prefixed JSON), `ImageDescription` (the readable
    line) and `Software`.

Quality: JPEG 92 with 4:4:4 chroma (no colour bleeding on the thin edges diffusion models draw),
WebP lossy 90 (method 4: a fair speed/size trade). PNG uses compress_level 6 (zlib default).
Encoding is CPU work: call it from a worker thread, not on the event loop.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from imagine import __version__
from imagine.request import OutputFormat

__all__ = ["CONTENT_TYPES", "encode", "read_parameters", "readable_line"]

CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

JPEG_QUALITY = 92
WEBP_QUALITY = 90
PNG_COMPRESS_LEVEL = 6

_SOFTWARE = f"imagine {__version__}"
_TAG_IMAGE_DESCRIPTION = 0x010E
_TAG_SOFTWARE = 0x0131
_TAG_EXIF_IFD = 0x8769
_TAG_USER_COMMENT = 0x9286
_ASCII_PREFIX = b"ASCII\x00\x00\x00"  # EXIF UserComment character-code header


def encode(
    image: Image.Image,
    fmt: OutputFormat,
    parameters: Mapping[str, Any],
    quality: int | None = None,
) -> bytes:
    """The encoded bytes of `image` in `fmt` with `parameters` (JSON-able) embedded; `quality`
    (1-100) for JPEG and WebP, else their defaults (PNG is lossless and ignores it).

    Raises ValueError for an unknown format.
    """
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(CONTENT_TYPES)}")
    as_json = json.dumps(dict(parameters), sort_keys=True, default=str)
    line = readable_line(parameters)
    buf = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        info.add_text("parameters", as_json)
        info.add_text("Comment", line)
        info.add_text("Software", _SOFTWARE)
        image.save(buf, "PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
        return buf.getvalue()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    exif = Image.Exif()
    exif[_TAG_IMAGE_DESCRIPTION] = line
    exif[_TAG_SOFTWARE] = _SOFTWARE
    exif.get_ifd(_TAG_EXIF_IFD)[_TAG_USER_COMMENT] = _ASCII_PREFIX + as_json.encode("ascii")
    if fmt == "jpeg":
        rgb.save(buf, "JPEG", quality=quality or JPEG_QUALITY, subsampling=0, exif=exif.tobytes())
    else:
        rgb.save(buf, "WEBP", quality=quality or WEBP_QUALITY, method=4, exif=exif.tobytes())
    return buf.getvalue()


def convert(data: bytes, size: tuple[int, int], fmt: OutputFormat) -> bytes:
    """An encoded image (a preview) resized to `size` and encoded in `fmt`, without metadata."""
    with Image.open(io.BytesIO(data)) as image:
        resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    resized.save(buf, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt])
    return buf.getvalue()


def readable_line(parameters: Mapping[str, Any]) -> str:
    """One human line, e.g. `a cat | negative: blurry | model: x/y, seed: 1, steps: 20, ...`."""
    parts = [str(parameters.get("prompt", ""))]
    if parameters.get("negative_prompt"):
        parts.append(f"negative: {parameters['negative_prompt']}")
    labels = {
        "model_id": "model",
        "seed": "seed",
        "num_inference_steps": "steps",
        "guidance_scale": "guidance",
        "scheduler": "scheduler",
    }
    details = [f"{label}: {parameters[k]}" for k, label in labels.items() if k in parameters]
    if "width" in parameters and "height" in parameters:
        details.append(f"size: {parameters['width']}x{parameters['height']}")
    extras = parameters.get("extras") or {}
    details.extend(f"{k}: {v}" for k, v in dict(extras).items())
    parts.append(", ".join(details))
    return " | ".join(p for p in parts if p)


def read_parameters(data: bytes) -> dict[str, Any] | None:
    """The parameters dict embedded by `encode`, or None when the image carries none."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "PNG":
            raw = img.info.get("parameters")
            return json.loads(raw) if raw else None
        comment = img.getexif().get_ifd(_TAG_EXIF_IFD).get(_TAG_USER_COMMENT)
    if not comment:
        return None
    if isinstance(comment, str):
        comment = comment.encode("utf-8", "surrogateescape")
    if comment.startswith(_ASCII_PREFIX):
        comment = comment[len(_ASCII_PREFIX) :]
    return json.loads(comment.decode("ascii"))
