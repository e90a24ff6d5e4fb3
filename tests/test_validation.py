"""build_request: defaults, ranges, and error messages that name the field, value and range."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from imagine.errors import InvalidRequest
from imagine.models.families import FAMILIES
from imagine.models.spec import ModelInfo
from imagine.settings import Settings
from imagine.validation import MAX_SEED, build_request

SETTINGS = Settings(max_pixels=512 * 512, max_steps=50, max_prompt_chars=100, preload=[])


def info(family: str = "sd", **overrides: Any) -> ModelInfo:
    spec = dataclasses.replace(FAMILIES[family], **overrides)
    return ModelInfo(model_id="org/model", spec=spec, revision="rev1", state="unloaded")


def build(params: dict[str, Any], *, family: str = "sd", prompt: Any = "a cat", **spec: Any):
    return build_request(
        model_id="org/model",
        prompt=prompt,
        parameters=params,
        info=info(family, **spec),
        settings=SETTINGS,
        output_format="png",
    )


def test_defaults_come_from_the_spec() -> None:
    req = build({}, default_width=256, default_height=128)
    spec = FAMILIES["sd"]
    assert (req.width, req.height) == (256, 128)
    assert req.num_inference_steps == spec.default_steps
    assert req.guidance_scale == spec.default_guidance
    assert req.scheduler == spec.default_scheduler
    assert req.negative_prompt is None
    assert 0 <= req.seed <= MAX_SEED
    assert req.model_revision == "rev1"
    assert req.extras == ()


def test_explicit_values_and_integral_floats() -> None:
    req = build(
        {
            "width": 256.0,
            "height": 128,
            "num_inference_steps": 7.0,
            "guidance_scale": 3,
            "seed": 42.0,
            "scheduler": "DDIMScheduler",
            "negative_prompt": "blurry",
        },
        default_width=64,
    )
    assert (req.width, req.height, req.num_inference_steps, req.seed) == (256, 128, 7, 42)
    assert isinstance(req.width, int) and isinstance(req.seed, int)
    assert req.guidance_scale == 3.0 and req.scheduler == "DDIMScheduler"
    assert req.negative_prompt == "blurry"


def test_null_means_default() -> None:
    req = build({"width": None, "seed": None, "negative_prompt": None}, default_width=64)
    assert req.width == 64


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"width": 512.5}, "width", ["512.5", "multiple of 8"]),
        ({"width": 100}, "width", ["100", "multiple of 8"]),
        ({"width": -8}, "width", ["-8", "positive"]),
        ({"width": 0}, "width", ["0"]),
        ({"height": "512"}, "height", ["'512'"]),
        ({"height": True}, "height", ["True"]),
        ({"width": 1024, "height": 512}, "width", ["524288", "262144"]),
        ({"num_inference_steps": 0}, "num_inference_steps", ["0", "between 1 and 50"]),
        ({"num_inference_steps": 51}, "num_inference_steps", ["51", "between 1 and 50"]),
        ({"num_inference_steps": 2.5}, "num_inference_steps", ["2.5"]),
        ({"guidance_scale": 21}, "guidance_scale", ["21", "between 0 and 20"]),
        ({"guidance_scale": -1}, "guidance_scale", ["-1"]),
        ({"guidance_scale": float("nan")}, "guidance_scale", ["nan"]),
        ({"guidance_scale": "high"}, "guidance_scale", ["'high'"]),
        ({"scheduler": "PNDMScheduler"}, "scheduler", ["PNDMScheduler", "EulerDiscreteScheduler"]),
        ({"scheduler": 3}, "scheduler", ["3", "one of"]),
        ({"seed": -1}, "seed", ["-1", str(MAX_SEED)]),
        ({"seed": 2**63}, "seed", [str(2**63)]),
        ({"seed": "7"}, "seed", ["'7'"]),
        ({"negative_prompt": 5}, "negative_prompt", ["5", "string"]),
        ({"negative_prompt": "x" * 101}, "negative_prompt", ["101", "100"]),
    ],
)
def test_errors_name_field_value_and_range(params: dict, field: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as err:
        build(params)
    assert err.value.field == field
    assert field in err.value.message
    for word in words:
        assert word in err.value.message


@pytest.mark.parametrize("prompt", ["", "   ", None, 12])
def test_prompt_must_be_non_empty_text(prompt: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        build({}, prompt=prompt)
    assert err.value.field == "inputs"


def test_prompt_length_limit() -> None:
    build({}, prompt="x" * 100)
    with pytest.raises(InvalidRequest, match="101 characters.*100"):
        build({}, prompt="x" * 101)


def test_pixel_budget_allows_exactly_the_limit() -> None:
    req = build({"width": 512, "height": 512})
    assert req.width * req.height == SETTINGS.max_pixels


def test_default_size_over_the_budget_says_so() -> None:
    with pytest.raises(InvalidRequest, match="model's default size"):
        build({}, family="sdxl")


def test_size_multiple_follows_the_family() -> None:
    build({"width": 264, "height": 256}, family="sdxl")
    with pytest.raises(InvalidRequest, match="multiple of 16"):
        build({"width": 264, "height": 256}, family="flux")


def test_unknown_keys_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imagine.validation"):
        req = build({"foo": 1, "true_cfg_scale": 3.0, "width": 64, "height": 64})
    assert "foo" in caplog.text and "true_cfg_scale" in caplog.text
    assert req.extras == ()  # not a FLUX model: the FLUX extra never reaches the pipeline


def test_flux_extras_are_validated_and_canonical() -> None:
    small = {"width": 256, "height": 256}
    req = build({**small, "true_cfg_scale": 4, "negative_prompt": "blue"}, family="flux")
    assert req.extras == (("true_cfg_scale", 4.0),)
    assert req.negative_prompt == "blue"
    with pytest.raises(InvalidRequest) as err:
        build({**small, "true_cfg_scale": 0.5}, family="flux")
    assert err.value.field == "true_cfg_scale" and "between 1 and 20" in err.value.message


def test_ignored_negative_prompt_is_dropped() -> None:
    # Classic CFG: a negative prompt needs guidance > 1.
    assert build({"negative_prompt": "blue", "guidance_scale": 1.0}).negative_prompt is None
    assert build({"negative_prompt": "blue", "guidance_scale": 1.5}).negative_prompt == "blue"
    # FLUX: guidance is embedded; the negative prompt needs true_cfg_scale > 1.
    flux = build(
        {"negative_prompt": "blue", "guidance_scale": 7.0, "width": 256, "height": 256},
        family="flux",
    )
    assert flux.negative_prompt is None
    # An empty negative prompt is no negative prompt.
    assert build({"negative_prompt": "  "}).negative_prompt is None


def test_random_seeds_differ_and_fixed_seed_gives_same_cache_key() -> None:
    assert len({build({}).seed for _ in range(5)}) == 5
    a, b = build({"seed": 3}), build({"seed": 3.0})
    assert a == b and a.cache_key() == b.cache_key()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_names_the_field_and_what_is_allowed(family: str) -> None:
    spec = FAMILIES[family]
    ok = {"width": spec.size_multiple * 8, "height": spec.size_multiple * 8}
    lo, hi = spec.guidance_range
    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        ({"scheduler": "NoSuchScheduler"}, "scheduler", list(spec.schedulers)),
        ({"scheduler": ["EulerDiscreteScheduler"]}, "scheduler", list(spec.schedulers)),
        ({"scheduler": ""}, "scheduler", list(spec.schedulers)),
        ({"width": spec.size_multiple + 1}, "width", [f"multiple of {spec.size_multiple}"]),
        ({"height": 10**12}, "height", [str(SETTINGS.max_pixels)]),
        ({"guidance_scale": hi + 1}, "guidance_scale", [f"between {lo:g} and {hi:g}"]),
        ({"num_inference_steps": 0}, "num_inference_steps", ["between 1 and 50"]),
        ({"seed": "x"}, "seed", [str(MAX_SEED)]),
    ]
    cases += [
        ({name: "x"}, name, [f"between {a:g} and {b:g}"]) for name, (a, b) in spec.extras.items()
    ]
    for params, field, allowed in cases:
        with pytest.raises(InvalidRequest) as err:
            build({**ok, **params}, family=family)
        assert err.value.field == field, (params, err.value.message)
        assert err.value.message.startswith(field), err.value.message
        for word in allowed:
            assert word in err.value.message, (params, err.value.message)


def test_a_huge_value_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidRequest) as err:
        build({"scheduler": "x" * 100_000})
    assert len(err.value.message) < 1000 and "100002 characters" in err.value.message


@pytest.mark.parametrize(
    ("prompt", "params", "field", "needle"),
    [
        ("a \ud800 cat", {}, "inputs", "lone surrogate"),
        ("a \x00 cat", {}, "inputs", "NUL"),
        ("a cat", {"negative_prompt": "dark \udfff"}, "negative_prompt", "lone surrogate"),
        ("a cat", {"negative_prompt": "dark\x00"}, "negative_prompt", "NUL"),
    ],
)
def test_text_that_no_tokenizer_can_take_is_a_400_naming_the_field(
    prompt: str, params: dict[str, Any], field: str, needle: str
) -> None:
    # A lone surrogate raised inside the tokenizer and failed a whole batch (issue 9, defect 3).
    with pytest.raises(InvalidRequest) as exc:
        build({**params, "guidance_scale": 7.0}, prompt=prompt)
    assert exc.value.field == field
    assert exc.value.message.startswith(field) and needle in exc.value.message


@pytest.mark.parametrize(
    ("family", "scheduler"),
    [
        ("sd", "EulerDiscreteScheduler:karras"),
        ("sd", "DPMSolverMultistepScheduler:exponential"),
        ("flux", "FlowMatchEulerDiscreteScheduler:karras"),
        ("flux", "UniPCMultistepScheduler:karras"),
    ],
)
def test_a_sigma_suffix_the_scheduler_supports_is_kept(family: str, scheduler: str) -> None:
    size = {"width": 256, "height": 256}  # within SETTINGS.max_pixels for every family
    req = build({**size, "scheduler": scheduler}, family=family)
    assert req.scheduler == scheduler
    plain = build(
        {**size, "scheduler": scheduler.partition(":")[0], "seed": req.seed}, family=family
    )
    # Different sigmas never share a cache entry or a batch.
    assert req.cache_key() != plain.cache_key()
    spec = FAMILIES[family]
    assert spec.batch_key(req) != spec.batch_key(plain)


@pytest.mark.parametrize(
    ("family", "scheduler", "words"),
    [
        ("sd", "DDIMScheduler:karras", ["DDIMScheduler takes no sigma suffix"]),
        ("sd", "EulerDiscreteScheduler:", ["EulerDiscreteScheduler takes the sigma suffixes"]),
        ("sd", "EulerDiscreteScheduler:Karras", [":karras, :exponential"]),
        ("sd", "EulerDiscreteScheduler:karras:x", [":karras"]),
        ("flux", "DPMSolverMultistepScheduler:karras", ["takes no sigma suffix"]),
        ("flux", "UniPCMultistepScheduler:exponential", ["takes the sigma suffixes :karras"]),
        ("sd", "NoSuchScheduler:karras", ["one of DDIMScheduler", "sigma suffix :karras"]),
        ("sd", "FlowMatchEulerDiscreteScheduler:karras", ["EulerDiscreteScheduler", ":karras"]),
    ],
)
def test_a_sigma_suffix_the_scheduler_lacks_is_refused(
    family: str, scheduler: str, words: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as err:
        build({"width": 256, "height": 256, "scheduler": scheduler}, family=family)
    assert err.value.field == "scheduler"
    assert repr(scheduler) in err.value.message
    for word in words:
        assert word in err.value.message, err.value.message
