"""The HF wire adapter: every body shape the clients send, Accept, boolean headers."""

from __future__ import annotations

import json

import pytest

from imagine.errors import InvalidRequest
from imagine.protocols.hf import negotiate_format, parse_body, parse_bool_header


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_modern_body() -> None:
    wire = parse_body(
        _json({"inputs": "cat", "parameters": {"seed": 1, "guidance_scale": 7}}),
        "application/json",
    )
    assert wire.prompt == "cat"
    assert wire.parameters == {"seed": 1, "guidance_scale": 7}
    assert (wire.use_cache, wire.wait_for_model) == (None, None)


@pytest.mark.parametrize("body", [{"inputs": "cat"}, {"inputs": "cat", "parameters": {}}])
def test_parameters_absent_or_empty(body: dict[str, object]) -> None:
    assert parse_body(_json(body)).parameters == {}


def test_target_size_fills_width_height_and_explicit_wins() -> None:
    wire = parse_body(
        _json({"inputs": "c", "parameters": {"target_size": {"width": 8, "height": 16}}})
    )
    assert wire.parameters == {"width": 8, "height": 16}
    both = {"target_size": {"width": 8, "height": 16}, "width": 32}
    assert parse_body(_json({"inputs": "c", "parameters": both})).parameters == {
        "width": 32,
        "height": 16,
    }


def test_negative_prompt_list_is_joined() -> None:
    wire = parse_body(_json({"inputs": "c", "parameters": {"negative_prompt": ["a", " b ", ""]}}))
    assert wire.parameters["negative_prompt"] == "a, b"
    empty = parse_body(_json({"inputs": "c", "parameters": {"negative_prompt": []}}))
    assert empty.parameters["negative_prompt"] is None


def test_integral_floats_and_unknown_keys_pass_through() -> None:
    params = {"width": 512.0, "num_inference_steps": 20.0, "extra_thing": [1], "true_cfg_scale": 4}
    assert parse_body(_json({"inputs": "c", "parameters": params})).parameters == params


def test_legacy_options() -> None:
    wire = parse_body(
        _json({"inputs": "c", "options": {"use_cache": False, "wait_for_model": True}})
    )
    assert (wire.use_cache, wire.wait_for_model) == (False, True)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_raw_text_body_is_prompt(content_type: str | None) -> None:
    assert parse_body(b"a lighthouse at dusk", content_type).prompt == "a lighthouse at dusk"


def test_json_body_without_json_content_type() -> None:
    wire = parse_body(
        b' {"inputs": "x", "parameters": {"seed": 2}}', "application/x-www-form-urlencoded"
    )
    assert (wire.prompt, wire.parameters) == ("x", {"seed": 2})


def test_bare_json_string_is_prompt() -> None:
    assert parse_body(b'"a cat"', "application/json").prompt == "a cat"


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (b"{bad", None, "body"),
        (b"nope", "application/json", "body"),
        (b"", None, "inputs"),
        (b"[1]", "application/json", "body"),
        (b'{"inputs": null}', None, "inputs"),
        (b'{"inputs": ["a"]}', None, "inputs"),
        (b'{"inputs": "  "}', None, "inputs"),
        (b'{"inputs": "x", "parameters": "y"}', None, "parameters"),
        (b'{"inputs": "x", "parameters": {"target_size": [1, 2]}}', None, "target_size"),
        (b'{"inputs": "x", "parameters": {"negative_prompt": [1]}}', None, "negative_prompt"),
        (b'{"inputs": "x", "parameters": {"negative_prompt": {}}}', None, "negative_prompt"),
        (b'{"inputs": "x", "options": 1}', None, "options"),
        (b'{"inputs": "x", "options": {"wait_for_model": "yes"}}', None, "options.wait_for_model"),
        (b"\xc3\x28", None, "body"),
    ],
)
def test_malformed_bodies_name_the_field(body: bytes, content_type: str | None, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body, content_type)
    assert info.value.field == field
    assert field.split(".")[-1] in info.value.message


@pytest.mark.parametrize(
    ("values", "fmt"),
    [
        (["image/jpeg", "image/png"], "jpeg"),
        (["image/png", "image/jpeg"], "png"),
        (["image/webp"], "webp"),
        (["IMAGE/JPG"], "jpeg"),
        (["image/tiff, image/bmp, image/webp;q=0.2"], "webp"),
        (["image/tiff"], "png"),
        (["*/*"], "png"),
        (["image/*"], "png"),
        ([], "png"),
        ([""], "png"),
    ],
)
def test_negotiate_format(values: list[str], fmt: str) -> None:
    assert negotiate_format(values) == fmt


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("true", True), ("1", True), ("True", True), ("false", False), ("0", False)],
)
def test_bool_headers(value: str | None, expected: bool | None) -> None:
    assert parse_bool_header("x-use-cache", value) is expected


def test_bad_bool_header_names_it() -> None:
    with pytest.raises(InvalidRequest, match="x-use-cache"):
        parse_bool_header("x-use-cache", "perhaps")
