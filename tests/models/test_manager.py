"""ModelManager on tiny real pipelines of every family: determinism, every parameter reaching the
pipeline, batching that does not change pixels, LoRA fusing, scheduler swaps that do not leak."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagine.engine.ports import model_bytes
from imagine.errors import InvalidRequest
from imagine.models.manager import LoadedModel, ModelManager
from imagine.models.spec import sigma_options_table
from imagine.request import GenerationRequest, StepInfo
from imagine.settings import Settings
from imagine.validation import build_request

FAMILIES = ["sd", "sdxl", "sd3", "flux", "kolors"]
BASE = {"num_inference_steps": 2, "width": 32, "height": 32, "seed": 1, "guidance_scale": 3.0}
# A parameter change per row that must change the pixels (FLUX's negative prompt needs
# true_cfg_scale; everywhere else guidance 3.0 > 1 makes it count).
VARIATIONS: dict[str, dict[str, Any]] = {
    "seed": {"seed": 2},
    "steps": {"num_inference_steps": 3},
    "guidance": {"guidance_scale": 6.0},
    "negative_prompt": {"negative_prompt": "blue square", "true_cfg_scale": 2.0},
    "prompt": {"prompt": "a green triangle"},
}


@pytest.fixture(scope="module")
def manager(tiny_model_root: Path) -> ModelManager:
    return ModelManager(settings=Settings(model_dirs=[tiny_model_root], preload=[]))


def load(manager: ModelManager, model_id: str) -> LoadedModel:
    return asyncio.run(manager.load(model_id))


def request(manager: ModelManager, model_id: str, **params: Any) -> GenerationRequest:
    params = {**BASE, **params}
    prompt = params.pop("prompt", "a red circle")
    return build_request(
        model_id=model_id,
        prompt=prompt,
        parameters=params,
        info=manager.describe(model_id),
        settings=manager._settings,
    )


def pixels(manager: ModelManager, model: LoadedModel, *requests: GenerationRequest) -> list:
    results = manager.run_batch(model, list(requests))
    assert [r.request for r in results] == list(requests)
    return [np.asarray(r.image, dtype=np.int16) for r in results]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_generates_deterministically_and_honours_parameters(
    family: str, manager: ModelManager, tiny_model_ids: dict
) -> None:
    model_id = tiny_model_ids[family]
    model = load(manager, model_id)
    base = request(manager, model_id)
    (first,) = pixels(manager, model, base)
    assert first.shape == (32, 32, 3) and first.std() > 0
    (again,) = pixels(manager, model, base)
    assert np.array_equal(first, again), "same seed must give identical pixels"

    for name, change in VARIATIONS.items():
        (other,) = pixels(manager, model, request(manager, model_id, **change))
        assert not np.array_equal(first, other), f"{family}: {name} did not change the image"

    wide = request(manager, model_id, width=48)
    assert pixels(manager, model, wide)[0].shape == (32, 48, 3)

    spec = model.spec
    alt = next(s for s in spec.schedulers if s != spec.default_scheduler)
    (swapped,) = pixels(manager, model, request(manager, model_id, scheduler=alt))
    assert not np.array_equal(first, swapped), f"{family}: scheduler {alt} changed nothing"
    # The swap is undone: the default scheduler gives the first image again.
    assert np.array_equal(first, pixels(manager, model, base)[0])
    assert type(model.pipeline.scheduler) is type(model.base_scheduler)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_matches_single_runs(family: str, manager: ModelManager, tiny_model_ids: dict):
    model_id = tiny_model_ids[family]
    model = load(manager, model_id)
    a = request(manager, model_id, seed=11, prompt="a red circle")
    b = request(manager, model_id, seed=12, prompt="a blue star on green")
    batch = pixels(manager, model, a, b)
    alone = [pixels(manager, model, r)[0] for r in (a, b)]
    for together, single in zip(batch, alone, strict=True):
        assert np.abs(together - single).max() <= 1  # <= 1/255: batched math may round apart


def test_every_scheduler_in_the_allow_list_runs(manager: ModelManager, tiny_model_ids: dict):
    for family in ("sd", "flux"):  # one Euler-family and one flow-matching model
        model_id = tiny_model_ids[family]
        model = load(manager, model_id)
        for name in model.spec.schedulers:
            req = request(manager, model_id, scheduler=name, num_inference_steps=2)
            assert pixels(manager, model, req)[0].shape == (32, 32, 3), name


def test_a_sigma_schedule_changes_the_image_and_is_undone(
    manager: ModelManager, tiny_model_ids: dict
) -> None:
    model_id = tiny_model_ids["sd"]
    model = load(manager, model_id)
    # The tiny model ships Euler, so the plain name runs the model's own scheduler.
    assert type(model.base_scheduler).__name__ == "EulerDiscreteScheduler"
    # 3 steps: at 2 the schedules share both ends, so Karras would change nothing.
    plain = request(manager, model_id, scheduler="EulerDiscreteScheduler", num_inference_steps=3)
    karras = request(
        manager, model_id, scheduler="EulerDiscreteScheduler:karras", num_inference_steps=3
    )
    (before,) = pixels(manager, model, plain)
    (first,) = pixels(manager, model, karras)
    assert model.pipeline.scheduler is model.base_scheduler  # swapped back after the call
    (again,) = pixels(manager, model, karras)
    assert not np.array_equal(before, first), "Karras sigmas changed nothing"
    assert np.array_equal(first, again), "same name and seed must give identical pixels"
    assert np.array_equal(before, pixels(manager, model, plain)[0])
    assert model.pipeline.scheduler is model.base_scheduler
    swapped = model.schedulers["EulerDiscreteScheduler:karras"]  # cached by the full name
    assert swapped.config.use_karras_sigmas and not model.base_scheduler.config.use_karras_sigmas


def test_every_sigma_option_in_the_tables_runs(manager: ModelManager, tiny_model_ids: dict):
    for family in ("sd", "flux"):  # one Euler-family and one flow-matching model
        model_id = tiny_model_ids[family]
        model = load(manager, model_id)
        for name, options in sigma_options_table(model.spec).items():
            for option in options:
                req = request(
                    manager, model_id, scheduler=f"{name}:{option}", num_inference_steps=3
                )
                image = pixels(manager, model, req)[0]
                assert image.shape == (32, 32, 3) and image.std() > 0, req.scheduler


def test_flow_models_reject_euler_only_schedulers(manager: ModelManager, tiny_model_ids: dict):
    with pytest.raises(InvalidRequest) as err:
        request(manager, tiny_model_ids["sd3"], scheduler="DDIMScheduler")
    assert "FlowMatchEulerDiscreteScheduler" in err.value.message


def test_lcm_lora_is_fused_and_served_with_lcm_defaults(
    manager: ModelManager, tiny_model_ids: dict
) -> None:
    lora_id, base_id = tiny_model_ids["sdxl_lcm_lora"], tiny_model_ids["sdxl"]
    lora = load(manager, lora_id)
    assert type(lora.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"  # base's own
    req = build_request(
        model_id=lora_id,
        prompt="a red circle",
        parameters={"width": 32, "height": 32, "seed": 5},
        info=manager.describe(lora_id),
        settings=manager._settings,
    )
    assert (req.scheduler, req.num_inference_steps, req.guidance_scale) == ("LCMScheduler", 4, 1.0)
    with pytest.raises(InvalidRequest, match="between 0 and 2"):
        request(manager, lora_id, guidance_scale=3.0)

    same = {"scheduler": "LCMScheduler", "guidance_scale": 1.0, "seed": 5}
    (fused,) = pixels(manager, lora, request(manager, lora_id, **same))
    (plain,) = pixels(manager, load(manager, base_id), request(manager, base_id, **same))
    assert not np.array_equal(fused, plain), "the fused LoRA must change the output"
    assert lora.pipeline is not load(manager, base_id).pipeline


def test_timings_and_health(manager: ModelManager, tiny_model_ids: dict) -> None:
    model_id = tiny_model_ids["sd"]
    model = load(manager, model_id)
    (result,) = manager.run_batch(model, [request(manager, model_id)])
    t = result.timings
    assert {"text_encoding", "denoising", "decoding", "total"} <= set(t)
    assert 0 < t["denoising"] <= t["total"] and t["text_encoding"] > 0
    health = manager.health()[model_id]
    assert health["state"] == "ready" and health["load_time_s"] > 0
    assert health["device"] == "cpu" and health["dtype"] == "float32"
    assert manager.estimated_load_time(model_id) == 0.0


def test_memory_bytes_is_measured_at_load(manager: ModelManager, tiny_model_ids: dict) -> None:
    sd = load(manager, tiny_model_ids["sd"])
    on_disk = sd.resolved.weight_bytes  # float32 on disk and in memory, plus file headers
    assert 0.8 * on_disk < sd.memory_bytes < 1.2 * on_disk
    assert model_bytes(sd) == sd.memory_bytes  # what the engine's memory budget counts
    assert manager.health()[sd.model_id]["memory_bytes"] == sd.memory_bytes
    # A fused LoRA holds what its base holds: the adapter layers are gone after fusing.
    lora, base = (load(manager, tiny_model_ids[k]) for k in ("sdxl_lcm_lora", "sdxl"))
    assert lora.memory_bytes == base.memory_bytes > 0


def test_observers_hear_every_step_and_stop_the_call_together(
    manager: ModelManager, tiny_model_ids: dict
) -> None:
    model_id = tiny_model_ids["sd"]
    model = load(manager, model_id)
    heard: list[tuple[int, int, int]] = []  # (row, step, total)

    def observer(row: int, stop_at: int | None):
        def observe(info: StepInfo) -> bool:
            heard.append((row, info.step, info.total))
            return stop_at is not None and info.step >= stop_at

        return observe

    requests = [request(manager, model_id, num_inference_steps=5, seed=s) for s in (1, 2)]
    # one row wants to stop at step 1, the other at step 2: the call stops when both do
    results = manager.run_batch(model, requests, observers=[observer(0, 1), observer(1, 2)])
    assert heard == [(0, 1, 5), (1, 1, 5), (0, 2, 5), (1, 2, 5)]
    assert [r.image.size for r in results] == [(32, 32)] * 2  # still decoded; caller discards
    # The next call is not stopped, and every observer hears every step.
    heard.clear()
    manager.run_batch(model, requests[:1], observers=[observer(0, None)])
    assert heard == [(0, 1, 5), (0, 2, 5), (0, 3, 5), (0, 4, 5), (0, 5, 5)]


def test_mixed_batch_is_a_programming_error(manager: ModelManager, tiny_model_ids: dict):
    model_id = tiny_model_ids["sd"]
    model = load(manager, model_id)
    with pytest.raises(ValueError, match="batch_key"):
        manager.run_batch(model, [request(manager, model_id), request(manager, model_id, width=48)])
