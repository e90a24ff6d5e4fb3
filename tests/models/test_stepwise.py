"""Step-level batching on tiny real pipelines of every family (imagine/models/stepwise).

Requests with mixed step counts, schedulers and guidance (≤ 1 included) are stepped together,
one joining mid-way and one leaving (canceled) mid-way; each finished image must be the one the
family's stock pipeline draws for that request alone (`run_batch` of one), within 1/255.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagine.engine.ports import StepFailed
from imagine.models.manager import LoadedModel, ModelManager
from imagine.models.stepwise.runner import StepRunner
from imagine.request import GenerationRequest
from imagine.settings import Settings
from imagine.validation import build_request

UNET = {
    "a": {"num_inference_steps": 4, "guidance_scale": 3.0},
    "b": {
        "num_inference_steps": 6,
        "guidance_scale": 1.0,
        "scheduler": "EulerAncestralDiscreteScheduler",
    },
    "late": {
        "num_inference_steps": 3,
        "guidance_scale": 7.5,
        "scheduler": "DDIMScheduler",
        "negative_prompt": "blue",
    },
    "canceled": {"num_inference_steps": 5, "scheduler": "DPMSolverMultistepScheduler"},
}
FLOW = {
    "a": {"num_inference_steps": 4, "guidance_scale": 3.0},
    "b": {"num_inference_steps": 6, "guidance_scale": 1.0, "scheduler": "UniPCMultistepScheduler"},
    "late": {
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "scheduler": "DPMSolverMultistepScheduler",
        "negative_prompt": "blue",
        "true_cfg_scale": 2.0,  # FLUX: a negative prompt counts only with true CFG
    },
    "canceled": {"num_inference_steps": 5},
}
CASES = {
    "sd": UNET,
    "sdxl": UNET,
    "kolors": UNET,
    "sd3": FLOW,
    "flux": FLOW,
    "sdxl_lcm_lora": {
        "a": {"num_inference_steps": 4, "guidance_scale": 1.5},
        "b": {"num_inference_steps": 2, "guidance_scale": 1.0},
        "late": {"num_inference_steps": 3, "guidance_scale": 2.0, "negative_prompt": "blue"},
        "canceled": {"num_inference_steps": 5},
    },
}
JOIN_AT = 2  # "late" joins after the others' second step; "canceled" leaves then


@pytest.fixture(scope="module")
def manager(tiny_model_root: Path) -> ModelManager:
    return ModelManager(settings=Settings(model_dirs=[tiny_model_root], preload=[]))


def make(manager: ModelManager, model_id: str, seed: int, **params: Any) -> GenerationRequest:
    params = {"width": 32, "height": 32, "seed": seed, **params}
    if params.get("true_cfg_scale") is not None and "flux" not in model_id:
        params.pop("true_cfg_scale")
    return build_request(
        model_id=model_id,
        prompt=f"a red circle {seed}",
        parameters=params,
        info=manager.describe(model_id),
        settings=manager._settings,
    )


def solo(manager: ModelManager, model: LoadedModel, request: GenerationRequest) -> np.ndarray:
    (result,) = manager.run_batch(model, [request])
    return np.asarray(result.image, dtype=np.int16)


def run_mixed(runner: StepRunner, requests: dict[str, GenerationRequest]) -> dict[str, Any]:
    """Steps the requests as the engine's step worker would; returns each finished image."""
    rows = runner.start([requests["a"], requests["b"], requests["canceled"]], previews=True)
    done: dict[str, Any] = {}
    names = {id(row): name for row, name in zip(rows, ["a", "b", "canceled"], strict=True)}
    steps = 0
    while rows:
        if steps == JOIN_AT:
            (late,) = runner.start([requests["late"]], previews=True)
            names[id(late)] = "late"
            canceled = [row for row in rows if names[id(row)] == "canceled"]
            runner.drop(canceled)
            rows = [row for row in rows if row not in canceled] + [late]
        runner.step(rows)
        steps += 1
        for row in rows:
            assert runner.preview(row)(64) is not None, "every step has a preview"
        finished = [row for row in rows if row.done]
        if finished:
            for row, result in zip(finished, runner.finish(finished), strict=True):
                done[names[id(row)]] = result
            rows = [row for row in rows if not row.done]
    return done


@pytest.mark.parametrize("family", list(CASES))
def test_stepped_images_match_solo_pipeline_calls(
    family: str, manager: ModelManager, tiny_model_ids: dict
) -> None:
    model_id = tiny_model_ids[family]
    model = asyncio.run(manager.load(model_id))
    runner = manager.stepper(model)
    assert runner is not None
    requests = {
        name: make(manager, model_id, seed, **params)
        for seed, (name, params) in enumerate(CASES[family].items(), start=1)
    }
    # The mix really is mixed: step counts, schedulers and guidance differ between rows.
    assert len({r.num_inference_steps for r in requests.values()}) == 4
    assert len({r.guidance_scale for r in requests.values()}) >= 3
    done = run_mixed(runner, requests)
    assert set(done) == {"a", "b", "late"}
    for name in ("a", "b", "late"):
        alone = solo(manager, model, requests[name])
        stepped = np.asarray(done[name].image, dtype=np.int16)
        assert stepped.shape == alone.shape
        assert np.abs(stepped - alone).max() <= 1, f"{family}/{name} differs from its solo call"
        assert done[name].request == requests[name]
        assert done[name].timings["denoising"] > 0


def test_shapes_model_steps_like_its_pipeline(manager: ModelManager) -> None:
    """The embedded model draws every size at 64x64 (render_size), so a 64x64 and a 128x128
    request step together; each comes back at its own size, as from run_batch."""
    model_id = "imagine/shapes"
    model = asyncio.run(manager.load(model_id))
    runner = manager.stepper(model)
    assert runner is not None
    requests = {
        name: make(manager, model_id, seed, **{**params, "width": 64, "height": 64})
        for seed, (name, params) in enumerate(UNET.items(), start=1)
    }
    requests["late"] = make(manager, model_id, 9, **{**UNET["late"], "width": 128, "height": 128})
    done = run_mixed(runner, requests)
    for name in ("a", "b", "late"):
        alone = solo(manager, model, requests[name])
        stepped = np.asarray(done[name].image, dtype=np.int16)
        assert stepped.shape == alone.shape == (requests[name].height, requests[name].width, 3)
        # At 64x64 within 1/255; the 128x128 one is that image upscaled (LANCZOS can turn a
        # sub-unit difference into 2), so it is compared at the size it was drawn at.
        if stepped.shape[0] != 64:
            stepped, alone = (
                np.asarray(Image.fromarray(a.astype(np.uint8)).resize((64, 64)), dtype=np.int16)
                for a in (stepped, alone)
            )
        assert np.abs(stepped - alone).max() <= 1, f"shapes/{name} differs from its solo call"


def test_a_failing_row_fails_alone(manager: ModelManager, tiny_model_ids: dict) -> None:
    """A row whose denoiser input is broken fails; the row stepped with it still steps."""
    model_id = tiny_model_ids["sd"]
    model = asyncio.run(manager.load(model_id))
    runner = manager.stepper(model)
    assert runner is not None
    good, bad = runner.start(
        [make(manager, model_id, 1, num_inference_steps=2), make(manager, model_id, 2)],
        previews=False,
    )
    bad.cond["encoder_hidden_states"] = bad.cond["encoder_hidden_states"][..., :3]
    with pytest.raises(StepFailed) as caught:
        runner.step([good, bad])
    assert list(caught.value.errors) == [bad]
    assert "Generation failed" in caught.value.errors[bad].message
    assert good.index == 1 and bad.index == 0


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_every_allowed_scheduler_steps_like_its_pipeline(
    family: str, manager: ModelManager, tiny_model_ids: dict
) -> None:
    """Each scheduler a request may name (second-order Heun/KDPM2, whose timesteps list holds
    two entries per step, and the singlestep solvers included) runs stepped beside a row of
    another scheduler and gives its solo image."""
    model_id = tiny_model_ids[family]
    model = asyncio.run(manager.load(model_id))
    runner = manager.stepper(model)
    assert runner is not None
    for seed, name in enumerate(model.spec.schedulers, start=1):
        request = make(manager, model_id, seed, num_inference_steps=3, scheduler=name)
        partner = make(manager, model_id, 99, num_inference_steps=8, guidance_scale=1.0)
        rows = runner.start([request, partner], previews=False)
        while not rows[0].done:
            runner.step(rows)
        (result,) = runner.finish(rows[:1])
        runner.drop(rows[1:])
        stepped = np.asarray(result.image, dtype=np.int16)
        assert np.abs(stepped - solo(manager, model, request)).max() <= 1, name
