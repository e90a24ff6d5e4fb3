"""Live previews (imagine/models/preview.py) on the tiny pipeline of every family and on the
embedded `imagine/shapes`: a preview after the first step, the requested aspect and size, rows
that differ, results untouched by the tap, `scheduler.step` restored, and x0 taken from the right
place for each kind of scheduler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from imagine.models import loading
from imagine.models.families.shapes import MODEL_ID as SHAPES_ID
from imagine.models.preview import FLUX, SD15, SDXL, PreviewSpec, PreviewTap
from imagine.models.registry import ModelRegistry
from imagine.settings import Settings

WIDTH, HEIGHT = 64, 32  # width 2x height
MAX_SIDE = 24
SEEDS = (1, 2)
# Where each family's default scheduler leaves its x0 estimate.
SOURCES = {
    "sd": "pred_original_sample",
    "sdxl": "pred_original_sample",
    "sdxl_lcm_lora": "denoised",
    "sd3": "flow",
    "flux": "flow",
    "kolors": "pred_original_sample",
    "shapes": "model_outputs",
}


@pytest.fixture(scope="module")
def pipelines(tiny_model_root: Path) -> Any:
    """load(key) -> (pipeline, spec), each model loaded once for the module."""
    torch.set_flush_denormal(True)
    registry = ModelRegistry(
        settings=Settings(model_dirs=[tiny_model_root], preload=[], allow_downloads=False)
    )
    cache: dict[str, tuple[Any, Any]] = {}

    def load(key: str) -> tuple[Any, Any]:
        if key not in cache:
            from tests.fixtures.tiny_pipelines import TINY_IDS

            resolved = registry.resolve(SHAPES_ID if key == "shapes" else TINY_IDS[key])
            pipe = loading.build_pipeline(resolved, torch.device("cpu"), torch.float32)
            cache[key] = (pipe, resolved.spec)
        return cache[key]

    return load


def use_scheduler(pipe: Any, spec: Any, name: str, **config: Any) -> None:
    """Swap in `name` built from the pipeline's scheduler config, as the manager does."""
    import diffusers

    base = pipe.components["scheduler"]
    overrides = {**spec.scheduler_overrides.get(name, {}), **config}
    pipe.scheduler = getattr(diffusers, name).from_config(base.config, **overrides)


def fitted(preview: PreviewSpec, pipe: Any) -> PreviewSpec:
    """The family's preview cut to the tiny model's latent channels (tiny SD3 has 4, FLUX 1)."""
    channels = pipe.vae.config.latent_channels
    if preview.pixel_space or channels == len(preview.factors):
        return preview
    return PreviewSpec(factors=preview.factors[:channels], bias=preview.bias, packed=preview.packed)


def call(pipe: Any, *, steps: int = 3, output_type: str = "np", **kwargs: Any) -> Any:
    prompt = kwargs.pop("prompt", "a red circle on a blue background")
    return pipe(
        prompt=[prompt] * len(SEEDS),
        num_inference_steps=steps,
        guidance_scale=2.0,
        width=WIDTH,
        height=HEIGHT,
        generator=[torch.Generator().manual_seed(s) for s in SEEDS],
        output_type=output_type,
        **kwargs,
    )[0]


def run_with_tap(
    pipe: Any, preview: PreviewSpec, *, max_side: int = MAX_SIDE, **kwargs: Any
) -> tuple[Any, list[list[Image.Image | None]], list[list[torch.Tensor]], PreviewTap]:
    """One call under a tap; per step, the preview and the x0 of each row."""
    images: list[list[Image.Image | None]] = []
    x0s: list[list[torch.Tensor]] = []

    def on_step_end(p: Any, step: int, timestep: Any, cb_kwargs: dict) -> dict:
        images.append([tap.image(row, max_side=max_side) for row in range(len(SEEDS))])
        x0s.append([tap.x0(row).clone() for row in range(len(SEEDS))])
        return cb_kwargs

    with PreviewTap(pipe, preview, height=HEIGHT, width=WIDTH) as tap:
        assert not tap.available()
        out = call(pipe, callback_on_step_end=on_step_end, **kwargs)
    return out, images, x0s, tap


def assert_step_restored(pipe: Any) -> None:
    assert "step" not in vars(pipe.scheduler)
    assert pipe.scheduler.step.__func__ is type(pipe.scheduler).step


def assert_shape(image: Image.Image | None, max_side: int) -> None:
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    w, h = image.size
    assert max(w, h) <= max_side
    assert abs(h - w * HEIGHT / WIDTH) <= 1, (w, h)


@pytest.mark.parametrize("family", list(SOURCES))
def test_family_previews_follow_the_generation_and_change_nothing(
    family: str, pipelines: Any
) -> None:
    pipe, spec = pipelines(family)
    assert spec.preview is not None
    use_scheduler(pipe, spec, spec.default_scheduler)
    without = call(pipe)
    out, images, _, tap = run_with_tap(pipe, fitted(spec.preview, pipe))

    assert np.array_equal(out, without), "the tap changed the result"
    assert_step_restored(pipe)
    assert tap.source == SOURCES[family] and tap.available()
    assert len(images) == 3 and all(im is not None for im in images[0])
    for step in images:
        for image in step:
            assert_shape(image, MAX_SIDE)
    first, second = (np.asarray(im) for im in images[-1])
    assert not np.array_equal(first, second), "rows of different seeds gave the same preview"
    # Never upscaled: with a large max_side the preview is the x0's own resolution.
    latent_side = max(tap.x0(0).shape[1:])
    assert max(tap.image(0, max_side=4096).size) == latent_side


def test_shapes_preview_resembles_the_final_picture(pipelines: Any) -> None:
    from imagine.models.builtin.evaluate import evaluation_scenes

    pipe, spec = pipelines("shapes")
    use_scheduler(pipe, spec, spec.default_scheduler)
    prompt = evaluation_scenes(1, seed=5)[0].prompt
    out, images, _, _ = run_with_tap(pipe, spec.preview, max_side=256, steps=8, prompt=prompt)
    for row, preview in enumerate(images[-1]):
        assert preview is not None
        final = Image.fromarray((out[row] * 255).round().astype(np.uint8)).resize(
            preview.size, Image.Resampling.BOX
        )
        diff = np.abs(np.asarray(final, np.float32) - np.asarray(preview, np.float32)).mean()
        assert diff < 40, f"row {row}: preview differs from the picture by {diff:.1f}"


# (scheduler, config, expected source, whether the last step's x0 is the final latents)
SCHEDULERS = [
    ("EulerDiscreteScheduler", {}, "pred_original_sample", True),
    ("DDIMScheduler", {}, "pred_original_sample", False),
    ("DPMSolverMultistepScheduler", {}, "model_outputs", True),
    ("UniPCMultistepScheduler", {}, "model_outputs", False),
    ("DEISMultistepScheduler", {}, "model_outputs_eps", False),
    ("LCMScheduler", {}, "denoised", True),
]


@pytest.mark.parametrize(("name", "config", "source", "final_is_x0"), SCHEDULERS)
def test_each_scheduler_kind_gives_its_x0(
    name: str, config: dict, source: str, final_is_x0: bool, pipelines: Any
) -> None:
    pipe, spec = pipelines("sd")
    use_scheduler(pipe, spec, name, **config)
    without = call(pipe, output_type="latent")
    latents, images, x0s, tap = run_with_tap(pipe, SD15, output_type="latent")
    assert torch.equal(latents, without)
    assert_step_restored(pipe)
    assert tap.source == source and images[0][0] is not None
    assert all(torch.isfinite(x).all() for step in x0s for x in step)
    if final_is_x0:  # the last step lands on sigma 0: its result is its x0 estimate
        for row in range(len(SEEDS)):
            torch.testing.assert_close(x0s[-1][row], latents[row], atol=1e-4, rtol=1e-4)


def test_noise_predicting_solver_recovers_the_same_x0_as_data_predicting(pipelines: Any) -> None:
    pipe, spec = pipelines("sd")
    first: dict[str, list[torch.Tensor]] = {}
    for algorithm in ("dpmsolver", "dpmsolver++"):
        use_scheduler(
            pipe,
            spec,
            "DPMSolverMultistepScheduler",
            algorithm_type=algorithm,
            final_sigmas_type="sigma_min",  # "zero" does not run with noise prediction
        )
        _, _, x0s, tap = run_with_tap(pipe, SD15, steps=2, output_type="latent")
        assert tap.source == ("model_outputs_eps" if algorithm == "dpmsolver" else "model_outputs")
        first[algorithm] = x0s[0]
    for a, b in zip(first["dpmsolver"], first["dpmsolver++"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_matching_x0_lands_on_the_final_latents(family: str, pipelines: Any) -> None:
    from diffusers import FluxPipeline

    pipe, spec = pipelines(family)
    use_scheduler(pipe, spec, "FlowMatchEulerDiscreteScheduler")
    latents, _, x0s, tap = run_with_tap(pipe, fitted(spec.preview, pipe), output_type="latent")
    assert tap.source == "flow"
    if spec.preview.packed:  # FLUX returns packed latents; the tap unpacks them the same way
        latents = FluxPipeline._unpack_latents(latents, HEIGHT, WIDTH, pipe.vae_scale_factor)
    for row in range(len(SEEDS)):
        torch.testing.assert_close(x0s[-1][row], latents[row].float(), atol=1e-4, rtol=1e-4)


# --- without a pipeline -----------------------------------------------------------------------


class FakeScheduler:
    config: dict[str, Any] = {}

    def step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = True) -> Any:
        from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput

        out = EulerDiscreteSchedulerOutput(prev_sample=sample, pred_original_sample=model_output)
        return out if return_dict else (out.prev_sample, out.pred_original_sample)


class FakePipe:
    vae_scale_factor = 8

    def __init__(self) -> None:
        self.scheduler = FakeScheduler()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_any_batch_and_dtype(dtype: torch.dtype, batch: int) -> None:
    pipe = FakePipe()
    x0 = torch.randn(batch, 4, 16, 32, generator=torch.Generator().manual_seed(0))
    with PreviewTap(pipe, SD15, height=128, width=256) as tap:
        prev, pred = pipe.scheduler.step(x0.to(dtype), 0, x0, return_dict=False)
        assert prev is x0 and pred.dtype == dtype  # the caller's return_dict is honoured
        for row in range(batch):
            image = tap.image(row)
            assert image is not None and image.size == (32, 16)
            exact = PreviewTap(FakePipe(), SD15, height=128, width=256)
            exact._set("pred_original_sample", x0)
            diff = np.abs(np.asarray(image, np.int16) - np.asarray(exact.image(row), np.int16))
            assert diff.max() <= (1 if dtype == torch.float32 else 8)
        with pytest.raises(IndexError):
            tap.image(batch)
    assert_step_restored(pipe)


def test_a_scheduler_with_no_x0_falls_back_to_its_result() -> None:
    from diffusers.schedulers.scheduling_utils import SchedulerOutput

    class Plain(FakeScheduler):
        def step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = True):
            out = SchedulerOutput(prev_sample=sample * 0.5)
            return out if return_dict else (out.prev_sample,)

    pipe = FakePipe()
    pipe.scheduler = Plain()
    sample = torch.randn(2, 4, 8, 8)
    with PreviewTap(pipe, SD15, height=64, width=64) as tap:
        (prev,) = pipe.scheduler.step(sample, 0, sample, return_dict=False)
        assert tap.source == "prev_sample" and torch.equal(tap.x0(1), prev[1])


def test_projection_and_bias_and_grey_fallback() -> None:
    tap = PreviewTap(FakePipe(), SDXL, height=64, width=64)
    tap._set("pred_original_sample", torch.zeros(1, 4, 8, 8))
    expected = [round((b + 1) * 127.5) for b in SDXL.bias]
    assert (np.asarray(tap.image(0)) == expected).all()
    tap._set("pred_original_sample", torch.full((1, 5, 8, 8), 0.5))  # 5 channels: not SDXL's
    assert (np.asarray(tap.image(0)) == round(1.5 * 127.5)).all()


def test_flux_rows_are_unpacked_like_the_pipeline() -> None:
    from diffusers import FluxPipeline

    latents = torch.randn(2, 16, 16, 32, generator=torch.Generator().manual_seed(0))
    packed = FluxPipeline._pack_latents(latents, 2, 16, 16, 32)
    tap = PreviewTap(FakePipe(), FLUX, height=128, width=256)
    tap._set("pred_original_sample", packed)
    for row in range(2):
        assert torch.equal(tap.x0(row), latents[row])
        assert tap.image(row).size == (32, 16)


def test_an_existing_instance_step_is_put_back() -> None:
    pipe = FakePipe()
    own = pipe.scheduler.step
    pipe.scheduler.step = own  # e.g. another tap further out
    with PreviewTap(pipe, SD15, height=64, width=64):
        assert pipe.scheduler.step is not own
    assert vars(pipe.scheduler)["step"] is own


def test_spec_and_preview_modules_import_no_torch() -> None:
    code = "import sys, imagine.models.spec, imagine.models.preview; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_family_and_lcm_lora_carry_a_preview(pipelines: Any, tiny_model_root: Path) -> None:
    from imagine.models.families import FAMILIES

    assert all(spec.preview is not None for spec in FAMILIES.values())
    _, lcm = pipelines("sdxl_lcm_lora")
    assert lcm.default_scheduler == "LCMScheduler" and lcm.preview is SDXL
