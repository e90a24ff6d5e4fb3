"""The A1111 wire format: parsing txt2img/options bodies, the sampler table, rendering info,
infotexts, progress and errors. Pure: no server, no torch."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from typing import Any

import pytest
import webuiapi

from imagine.errors import InvalidRequest, ModelNotFound
from imagine.models.spec import FamilySpec
from imagine.protocols import a1111
from imagine.request import GenerationRequest
from imagine.service import consecutive_seeds

# Two made-up families, by the schedulers they allow: an epsilon-prediction one and a
# flow-matching one (the real specs import torch).
EULER = FamilySpec(
    name="eps",
    pipeline_classes=(),
    default_steps=20,
    default_guidance=7.0,
    default_width=64,
    default_height=64,
    size_multiple=8,
    guidance_range=(0.0, 20.0),
    schedulers=(
        "DDIMScheduler",
        "DDPMScheduler",
        "DEISMultistepScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "EulerAncestralDiscreteScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
        "LCMScheduler",
    ),
    default_scheduler="EulerDiscreteScheduler",
    sigma_options={
        name: ("karras", "exponential")
        for name in (
            "DEISMultistepScheduler",
            "DPMSolverMultistepScheduler",
            "DPMSolverSinglestepScheduler",
            "EulerDiscreteScheduler",
            "HeunDiscreteScheduler",
            "KDPM2DiscreteScheduler",
            "KDPM2AncestralDiscreteScheduler",
            "UniPCMultistepScheduler",
        )
    },
)
FLOW = dataclasses.replace(
    EULER,
    name="flow",
    schedulers=(
        "FlowMatchEulerDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "UniPCMultistepScheduler",
    ),
    default_scheduler="FlowMatchEulerDiscreteScheduler",
    sigma_options={
        "FlowMatchEulerDiscreteScheduler": ("karras", "exponential"),
        "UniPCMultistepScheduler": ("karras",),
    },
)


def _webuiapi_payload(**kwargs: Any) -> dict[str, Any]:
    """The exact body the real `webuiapi` client posts for txt2img (network stubbed out)."""
    sent: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def post(url: str, json: dict[str, Any], **_: Any) -> None:
        sent.update(json)
        raise Stop

    api = webuiapi.WebUIApi(host="127.0.0.1", port=9)  # nothing listens on port 9
    api.session.post = post  # type: ignore[method-assign]
    with pytest.raises(Stop):
        api.txt2img(**kwargs)
    return sent


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# --- parsing


def test_webuiapi_body_parses_with_its_extra_keys_warned_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = _webuiapi_payload(prompt="a red circle", width=64, height=64, steps=4, seed=-1)
    assert len(payload) > 30 and payload["scheduler"] == "automatic"
    with caplog.at_level(logging.WARNING, logger="imagine.protocols.a1111"):
        parsed = a1111.parse_txt2img(_body(payload))
    assert parsed.prompt == "a red circle"
    assert parsed.params["seed"] is None  # -1: random
    assert parsed.canonical("X")["scheduler"] == "X"
    assert (parsed.params["width"], parsed.params["num_inference_steps"]) == (64, 4)
    assert parsed.params["guidance_scale"] == payload["cfg_scale"]
    assert (parsed.sampler, parsed.scheduler, parsed.n) == ("Euler a", "automatic", 1)
    assert parsed.send_images is True and parsed.checkpoint is None
    assert parsed.parameters["prompt"] == "a red circle" and "enable_hr" not in parsed.parameters
    (record,) = caplog.records
    shown = record.getMessage().rsplit("keys: ", 1)[1].split(" (+")[0].split(", ")
    names = [name.strip("'") for name in shown]  # escaped: shown as Python literals
    assert "enable_hr" in names and len(names) == 20  # at most 20 named
    assert not {"prompt", "seed", "steps", "sampler_name", "scheduler"} & set(names)


def test_the_warning_about_unknown_keys_is_cut_short(caplog: pytest.LogCaptureFixture) -> None:
    payload: dict[str, Any] = {"prompt": "x"}
    payload.update({f"k{i:04d}" + "x" * 5000: i for i in range(2000)})
    with caplog.at_level(logging.WARNING, logger="imagine.protocols.a1111"):
        a1111.parse_txt2img(_body(payload))
    (record,) = caplog.records
    assert len(record.getMessage()) < 20 * 45 + 200
    assert "2000" in record.getMessage() and "in all" in record.getMessage()


def test_open_webui_body_leaves_the_rest_to_the_model() -> None:
    parsed = a1111.parse_txt2img(
        _body({"prompt": "a cat", "batch_size": 2, "width": 512, "height": 512, "steps": 50})
    )
    assert parsed.n == 2 and parsed.sampler is None and parsed.scheduler is None
    assert parsed.params["guidance_scale"] is None and parsed.params["negative_prompt"] is None


def test_sampler_index_and_override_checkpoint() -> None:
    parsed = a1111.parse_txt2img(
        _body(
            {
                "prompt": "x",
                "sampler_index": "DDIM",
                "n_iter": 3,
                "override_settings": {
                    "sd_model_checkpoint": "tiny/sd",
                    "CLIP_stop_at_last_layers": 2,
                },
            }
        )
    )
    assert (parsed.sampler, parsed.checkpoint, parsed.n) == ("DDIM", "tiny/sd", 3)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 3, "n_iter": 3}, "batch_size"),
        ({"n_iter": "2"}, "n_iter"),
        ({"batch_size": True}, "batch_size"),
        ({"override_settings": ["x"]}, "override_settings"),
        (
            {"override_settings": {"sd_model_checkpoint": 3}},
            "override_settings.sd_model_checkpoint",
        ),
        ({"sampler_name": 5}, "sampler_name"),
        ({"sampler_name": "Euler\u0000"}, "sampler_name"),
        ({"scheduler": "\ud800"}, "scheduler"),  # a lone surrogate: JSON allows it
        ({"send_images": "yes"}, "send_images"),
    ],
)
def test_malformed_fields_are_named(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        a1111.parse_txt2img(_body({"prompt": "x", **payload}))
    assert caught.value.field == field
    assert caught.value.message.startswith(field)


@pytest.mark.parametrize("body", [b"[1, 2]", b"{not json", b'"text"'])
def test_a_body_that_is_not_an_object_names_body(body: bytes) -> None:
    for parse in (a1111.parse_txt2img, a1111.parse_options):
        with pytest.raises(InvalidRequest) as caught:
            parse(body)
        assert caught.value.field == "body"


def test_options_take_only_the_checkpoint() -> None:
    assert a1111.parse_options(_body({"sd_model_checkpoint": "tiny/sd", "x": 1})) == "tiny/sd"
    assert a1111.parse_options(_body({"samples_format": "png"})) is None
    with pytest.raises(InvalidRequest) as caught:
        a1111.parse_options(_body({"sd_model_checkpoint": ["a"]}))
    assert caught.value.field == "sd_model_checkpoint"


# --- samplers


@pytest.mark.parametrize(
    ("sampler", "schedule", "expected"),
    [
        ("Euler a", "automatic", "EulerAncestralDiscreteScheduler"),
        ("euler A", None, "EulerAncestralDiscreteScheduler"),
        ("k_euler_a", None, "EulerAncestralDiscreteScheduler"),
        ("Euler", None, "EulerDiscreteScheduler"),
        ("DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler"),
        ("DPM++ 2M", "Uniform", "DPMSolverMultistepScheduler"),
        ("DPM++ 2M Karras", None, "DPMSolverMultistepScheduler:karras"),
        ("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler:karras"),
        ("DPM++ 2M", "karras", "DPMSolverMultistepScheduler:karras"),
        ("DPM++ 2M Karras", "Exponential", "DPMSolverMultistepScheduler:karras"),  # name wins
        ("DPM++ 2M exponential", None, "DPMSolverMultistepScheduler:exponential"),
        ("DPM++ SDE", "Exponential", "DPMSolverSinglestepScheduler:exponential"),
        ("DPM2 a Karras", None, "KDPM2AncestralDiscreteScheduler:karras"),
        ("Heun", None, "HeunDiscreteScheduler"),
        ("DDIM", None, "DDIMScheduler"),
        ("UniPC", None, "UniPCMultistepScheduler"),
        ("LCM", None, "LCMScheduler"),
        (None, "automatic", None),
        (None, None, None),
        (None, "Karras", "EulerDiscreteScheduler:karras"),
    ],
)
def test_a1111_names_map_to_diffusers_schedulers(
    sampler: str | None, schedule: str | None, expected: str | None
) -> None:
    assert a1111.scheduler_for(sampler, schedule, EULER) == expected


def test_every_listed_sampler_maps_to_a_class_the_model_allows() -> None:
    for spec in (EULER, FLOW):
        listed = a1111.samplers(spec)
        assert listed and all(set(s) == {"name", "aliases", "options"} for s in listed)
        for entry in listed:
            scheduler = a1111.scheduler_for(entry["name"], "automatic", spec)
            assert scheduler is not None and scheduler.split(":")[0] in spec.schedulers
            # info reports the name back (a Karras name as its base name + schedule type)
            name, schedule = a1111.sampler_names(scheduler)
            expected = entry["options"].get("scheduler", "automatic").title()
            assert entry["name"] in (name, f"{name} {schedule}") and schedule == expected


def test_flow_models_run_euler_as_flow_euler_and_refuse_ancestral_samplers() -> None:
    assert a1111.scheduler_for("Euler", None, FLOW) == "FlowMatchEulerDiscreteScheduler"
    names = {s["name"] for s in a1111.samplers(FLOW)}
    assert "Euler a" not in names and {"Euler", "DPM++ 2M", "UniPC"} <= names
    with pytest.raises(InvalidRequest) as caught:
        a1111.scheduler_for("Euler a", None, FLOW)
    assert caught.value.field == "sampler_name"
    assert "not available" in caught.value.message
    assert all(name in caught.value.message for name in names)


def test_an_unknown_sampler_lists_the_valid_names() -> None:
    with pytest.raises(InvalidRequest) as caught:
        a1111.scheduler_for("Restart", "automatic", EULER)
    assert caught.value.field == "sampler_name"
    assert all(s["name"] in caught.value.message for s in a1111.samplers(EULER))


@pytest.mark.parametrize(
    ("sampler", "schedule", "field"),
    [
        ("Euler a", "Karras", "scheduler"),  # ancestral Euler has no sigma flags
        ("Euler a Karras", "automatic", "sampler_name"),
        ("DPM++ 2M", "Beta", "scheduler"),  # not offered by this family
        ("DDIM", "Exponential", "scheduler"),
    ],
)
def test_a_schedule_type_the_sampler_does_not_take_is_refused(
    sampler: str, schedule: str, field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        a1111.scheduler_for(sampler, schedule, EULER)
    assert caught.value.field == field
    assert "Automatic, Uniform" in caught.value.message


def test_listed_karras_names_follow_what_the_model_supports() -> None:
    assert "DPM++ 2M Karras" in {s["name"] for s in a1111.samplers(EULER)}
    assert not any("Karras" in s["name"] for s in a1111.samplers(FLOW))
    assert a1111.scheduler_for("UniPC", "Karras", FLOW) == "UniPCMultistepScheduler:karras"


def test_an_unknown_schedule_type_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidRequest) as caught:
        a1111.scheduler_for("Euler", "Polyexponential", EULER)
    assert caught.value.field == "scheduler"
    labels = [s["label"] for s in a1111.schedulers()]
    assert {"Automatic", "Karras"} <= set(labels)
    assert all(label in caught.value.message for label in labels)


def test_schedulers_have_a1111s_shape() -> None:
    for entry in a1111.schedulers():
        assert set(entry) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
        assert entry["name"] == entry["name"].lower()


# --- rendering


def _request(**changes: Any) -> GenerationRequest:
    base = GenerationRequest(
        model_id="imagine/shapes",
        prompt="a red circle",
        negative_prompt="blurry",
        width=64,
        height=48,
        num_inference_steps=12,
        guidance_scale=7.0,
        scheduler="DPMSolverMultistepScheduler:karras",
        seed=41,
    )
    return dataclasses.replace(base, **changes)


def test_infotext_reads_like_a1111s() -> None:
    text = a1111.infotext(_request(), "imagine/shapes", "abc123")
    prompt, negative, params = text.split("\n")
    assert prompt == "a red circle" and negative == "Negative prompt: blurry"
    fields = dict(part.split(": ", 1) for part in params.split(", "))
    assert fields["Steps"] == "12" and fields["Seed"] == "41" and fields["Size"] == "64x48"
    assert fields["Sampler"] == "DPM++ 2M" and fields["Schedule type"] == "Karras"
    assert fields["CFG scale"] == "7" and fields["Model"] == "imagine/shapes"
    plain = a1111.infotext(_request(negative_prompt=None, scheduler="DDIMScheduler"), "m", None)
    assert "Negative prompt" not in plain and "Schedule type" not in plain
    assert "Model hash" not in plain
    assert '"a, b"' in a1111.infotext(_request(), "a, b", None)  # quoted like A1111's


def test_info_is_a_json_string_about_the_images_returned() -> None:
    parsed = a1111.parse_txt2img(_body({"prompt": "a red circle", "batch_size": 3}))
    first = _request(seed=2**63 - 2)
    made = consecutive_seeds(first, 3)
    info = json.loads(a1111.render_info(parsed, first, made, "imagine/shapes", "abc", "2024"))
    assert info["seed"] == first.seed
    assert info["all_seeds"] == [r.seed for r in made] and len(set(info["all_seeds"])) == 3
    assert len(info["infotexts"]) == 3 and f"Seed: {made[2].seed}" in info["infotexts"][2]
    assert info["sampler_name"] == "DPM++ 2M" and info["scheduler"] == "Karras"
    assert info["sd_model_name"] == "imagine/shapes" and info["batch_size"] == 3
    assert (info["subseed"], info["all_subseeds"]) == (-1, [])
    none = json.loads(a1111.render_info(parsed, first, [], "m", None, "2024"))
    assert none["all_seeds"] == [] and none["infotexts"] == []


def test_validation_fields_are_renamed_for_a1111_clients() -> None:
    renamed = a1111.client_field(
        InvalidRequest("num_inference_steps = 900 is invalid: ...", field="num_inference_steps")
    )
    assert isinstance(renamed, InvalidRequest) and renamed.field == "steps"
    assert renamed.message.startswith("steps = 900")
    assert a1111.client_field(InvalidRequest("inputs must be ...", field="inputs")).field == (
        "prompt"
    )
    width = InvalidRequest("width ...", field="width")
    assert a1111.client_field(width) is width
    parsed = a1111.parse_txt2img(_body({"prompt": "x", "sampler_name": "Euler a"}))
    sigma = InvalidRequest("scheduler = 'X:karras' is invalid", field="scheduler")
    moved = a1111.client_field(sigma, parsed)
    assert moved.field == "sampler_name" and "Euler a" in moved.message  # type: ignore[attr-defined]


def test_error_body_has_a1111s_keys_and_names_the_field() -> None:
    body = a1111.error_body(InvalidRequest("width = 65 is invalid", field="width"))
    assert body["error"] == "InvalidRequest" and body["field"] == "width"
    assert body["detail"] == body["errors"] == "width = 65 is invalid"
    assert body["code"] == "invalid_request"
    assert a1111.error_body(ModelNotFound("no"), field="sd_model_checkpoint")["field"] == (
        "sd_model_checkpoint"
    )


def test_progress_idle_and_running() -> None:
    idle = a1111.progress_body()
    assert idle["progress"] == 0 and idle["current_image"] is None
    assert idle["state"]["job_count"] == 0 and idle["state"]["interrupted"] is False
    busy = a1111.progress_body(
        fraction=1.5, job_count=2, job_no=1, step=3, steps=10, started=1.0, image=b"\xff\xd8"
    )
    assert busy["progress"] == 1.0
    assert busy["state"]["sampling_step"] == 3 and busy["state"]["job_timestamp"] != "0"
    assert base64.b64decode(busy["current_image"]) == b"\xff\xd8"
