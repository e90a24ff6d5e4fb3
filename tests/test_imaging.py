"""Encoding: each format decodes, carries the parameters, keeps the size."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagine.imaging import CONTENT_TYPES, encode, read_parameters, readable_line

PARAMS = {
    "model_id": "org/model",
    "prompt": "a red cube ünïcode",
    "negative_prompt": "blurry",
    "width": 40,
    "height": 24,
    "num_inference_steps": 2,
    "guidance_scale": 7.5,
    "scheduler": "DDIMScheduler",
    "seed": 42,
    "extras": {"true_cfg_scale": 4.0},
}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_round_trip(fmt: str) -> None:
    image = Image.new("RGB", (40, 24), (200, 10, 10))
    data = encode(image, fmt, PARAMS)  # type: ignore[arg-type]
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == fmt.upper() and decoded.size == (40, 24)
    assert read_parameters(data) == PARAMS
    assert CONTENT_TYPES[fmt] == f"image/{fmt}"


def test_png_is_lossless_and_has_readable_comment() -> None:
    image = Image.frombytes("RGB", (8, 8), bytes(range(192)))
    data = encode(image, "png", PARAMS)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.tobytes() == image.tobytes()
    assert decoded.info["Comment"] == readable_line(PARAMS)
    assert decoded.info["Software"].startswith("imagine")


def test_jpeg_exif_description() -> None:
    data = encode(Image.new("RGB", (8, 8)), "jpeg", PARAMS)
    exif = Image.open(io.BytesIO(data)).getexif()
    assert "seed: 42" in exif[0x010E] and "model: org/model" in exif[0x010E]


def test_rgba_is_flattened_for_jpeg() -> None:
    data = encode(Image.new("RGBA", (8, 8)), "jpeg", PARAMS)
    assert Image.open(io.BytesIO(data)).mode == "RGB"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="tiff"):
        encode(Image.new("RGB", (8, 8)), "tiff", PARAMS)  # type: ignore[arg-type]


def test_readable_line() -> None:
    line = readable_line(PARAMS)
    assert line.startswith("a red cube ünïcode | negative: blurry | model: org/model, seed: 42")
    assert "size: 40x24" in line and "true_cfg_scale: 4.0" in line
