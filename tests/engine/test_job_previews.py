"""Every family's tiny pipeline yields previews through the engine: a Job submitted with a
preview policy publishes JPEG previews of the requested aspect ratio while it runs, and its
steps 1..N in order."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from imagine.engine.engine import Engine
from imagine.engine.job import PreviewPolicy
from imagine.models.manager import ModelManager
from imagine.request import JobState
from imagine.settings import Settings
from imagine.validation import build_request

pytestmark = pytest.mark.slow

FAMILIES = ("sd", "sdxl", "sdxl_lcm_lora", "sd3", "flux", "kolors")


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_job_publishes_steps_and_previews(
    family: str, tiny_model_root: Path, tiny_model_ids: dict[str, str]
) -> None:
    model_id = tiny_model_ids[family]
    settings = Settings(model_dirs=[tiny_model_root], preload=[], allow_downloads=False)
    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    try:
        await engine.load(model_id)
        info = engine.describe(model_id)
        multiple = info.spec.size_multiple
        request = build_request(
            model_id=model_id,
            prompt="a red circle",
            parameters={"width": 4 * multiple, "height": 2 * multiple, "num_inference_steps": 3},
            info=info,
            settings=settings,
        )
        job = engine.submit(
            request,
            client_id="t",
            wait_for_model=True,
            previews=PreviewPolicy(every_steps=1, interval_s=0.0),
        )
        steps: list[int] = []
        previews: dict[int, Image.Image] = {}  # by the step each was rendered at
        async for snap in job.events():
            if snap.state is JobState.RUNNING and (not steps or snap.step != steps[-1]):
                steps.append(snap.step)
            if snap.preview is not None:
                previews[snap.preview_step] = Image.open(io.BytesIO(snap.preview))
        assert job.state is JobState.SUCCEEDED
        assert steps == [0, 1, 2, 3]
        assert previews, "no preview was published"
        assert set(previews) == {1, 2, 3}  # every step, as the policy asks
        for preview in previews.values():
            assert preview.format == "JPEG" and preview.mode == "RGB"
            assert abs(preview.width / preview.height - 2.0) <= 0.5  # tiny latents round
    finally:
        await engine.close()
