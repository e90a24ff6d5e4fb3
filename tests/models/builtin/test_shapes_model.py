"""The shipped `imagine/shapes` weights, loaded the way the server loads them, judged by the
procedural evaluator: a smoke test of fidelity, and each parameter acting as it should."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagine.models.builtin import WEIGHTS_DIR, evaluate, world
from imagine.models.families.shapes import MODEL_ID, SPEC
from imagine.models.manager import LoadedModel, ModelManager
from imagine.settings import Settings
from imagine.validation import build_request


@pytest.fixture(scope="module")
def shapes(monkeypatch_module: pytest.MonkeyPatch) -> tuple[ModelManager, LoadedModel]:
    import torch

    torch.set_flush_denormal(True)
    # The default model must load with no network at all.
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    manager = ModelManager(settings=Settings(preload=[], allow_downloads=False))
    return manager, asyncio.run(manager.load(MODEL_ID))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def generate(
    shapes: tuple[ModelManager, LoadedModel], prompts: list[str], **params: Any
) -> list[Image.Image]:
    """One batch (the requests share every parameter but prompt and seed)."""
    manager, model = shapes
    seeds = params.pop("seeds", range(len(prompts)))
    requests = [
        build_request(
            model_id=MODEL_ID,
            prompt=p,
            parameters={**params, "seed": s},
            info=manager.describe(MODEL_ID),
            settings=manager._settings,
        )
        for p, s in zip(prompts, seeds, strict=True)
    ]
    return [r.image for r in manager.run_batch(model, requests)]


def fidelity(scenes: list[world.Scene], images: list[Image.Image]) -> float:
    """The fraction of all named attributes the pictures get right."""
    verdicts = [
        ok for s, im in zip(scenes, images, strict=True) for ok in evaluate.judge(s, im).values()
    ]
    return float(np.mean(verdicts))


def background_accuracy(scenes: list[world.Scene], images: list[Image.Image]) -> float:
    """Over the scenes whose prompt names a background: the fraction the picture gets right."""
    named = [(s, im) for s, im in zip(scenes, images, strict=True) if "background" in s.named]
    return float(np.mean([evaluate.judge(s, im)["background"] for s, im in named]))


def colour_share(image: Image.Image, colour: str) -> float:
    index = evaluate.snap(image)
    return float((index == list(world.COLOURS).index(colour)).mean())


def test_weights_ship_inside_the_package_and_load_offline(shapes) -> None:
    manager, model = shapes
    assert (WEIGHTS_DIR / "model_index.json").exists()
    assert type(model.pipeline).__name__ == "StableDiffusionPipeline"
    assert manager.describe(MODEL_ID).spec.name == "shapes"
    size = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    assert size <= 20 * 1024 * 1024


def test_default_image_has_the_default_size(shapes) -> None:
    (image,) = generate(shapes, ["a red circle"])
    spec = shapes[0].describe(MODEL_ID).spec
    assert image.size == (spec.default_width, spec.default_height)


@pytest.mark.parametrize("size", [(32, 32), (96, 64), (128, 128)])
def test_other_sizes_give_an_image_of_that_size(shapes, size: tuple[int, int]) -> None:
    (image,) = generate(shapes, ["a blue square, white background"], width=size[0], height=size[1])
    assert image.size == size


def test_fidelity_smoke(shapes) -> None:
    """A loose bar that a broken model (noise, one colour everywhere) cannot pass: chance is
    1/7 for a background and well under 0.2 over all attributes. The shipped model gets about
    nine attributes in ten right on the evaluator's 400 prompts (see the model card)."""
    scenes = evaluate.evaluation_scenes(16, seed=101)
    images = generate(shapes, [s.prompt for s in scenes])
    assert background_accuracy(scenes, images) >= 0.8
    assert fidelity(scenes, images) >= 0.35


def test_same_seed_same_pixels_and_another_seed_differs(shapes) -> None:
    a, b, c = generate(shapes, ["a green triangle on the right"] * 3, seeds=[7, 7, 8])
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_guidance_raises_fidelity(shapes) -> None:
    scenes = evaluate.evaluation_scenes(16, seed=102)
    prompts = [s.prompt for s in scenes]
    weak = fidelity(scenes, generate(shapes, prompts, guidance_scale=1.0))
    strong = fidelity(scenes, generate(shapes, prompts, guidance_scale=7.0))
    # The shipped model already follows prompts well without guidance (0.87 here); guidance
    # 7 takes it to 0.92 (fixed seeds, so these figures repeat on this machine).
    assert strong > weak + 0.03, (weak, strong)


def object_colour(image: Image.Image) -> str | None:
    index = evaluate.snap(image)
    blob = evaluate.dominant_object(index, evaluate.background_of(index))
    return blob.colour if blob is not None else None


def test_negative_prompt_naming_the_colour_lowers_its_share(shapes) -> None:
    """Prompts that leave the colour open; the negative prompt names one. Measured on the
    objects: the whole picture's share of the colour can even rise, since nothing in the prompt
    forbids a background of it (the shipped model, blue: 6 of 24 objects blue without the
    negative prompt, none with it, while blue backgrounds went from 4 to 9)."""
    prompts = ["a large circle", "a large square", "a large triangle"] * 8
    plain = [object_colour(im) for im in generate(shapes, prompts)]
    before = after = 0
    for colour in ("red", "blue", "yellow"):
        negated = [object_colour(im) for im in generate(shapes, prompts, negative_prompt=colour)]
        before, after = before + plain.count(colour), after + negated.count(colour)
    assert before >= 4, plain  # the colours do come up unprompted, so a drop means something
    assert after <= before // 3, (before, after)


def test_more_steps_do_not_break_it(shapes) -> None:
    scenes = evaluate.evaluation_scenes(8, seed=103)
    images = generate(shapes, [s.prompt for s in scenes], num_inference_steps=60)
    assert background_accuracy(scenes, images) >= 0.8
    assert fidelity(scenes, images) >= 0.35


@pytest.mark.parametrize("scheduler", SPEC.schedulers)
def test_every_allowed_scheduler_gives_a_recognisable_image(shapes, scheduler: str) -> None:
    """Recognisable, at the model's level: the background the prompt names, and an object in
    most pictures (the shipped model draws none in about one picture in six)."""
    scenes = [s for s in evaluate.evaluation_scenes(12, seed=104) if "background" in s.named][:6]
    images = generate(shapes, [s.prompt for s in scenes], scheduler=scheduler)
    assert background_accuracy(scenes, images) >= 0.8, scheduler
    with_object = [
        evaluate.dominant_object(index, evaluate.background_of(index)) is not None
        for index in map(evaluate.snap, images)
    ]
    assert sum(with_object) >= 4, (scheduler, with_object)


def test_a_larger_size_shows_the_native_scene(shapes) -> None:
    """256x256 is the 64x64 picture of the same prompt and seed, scaled: shrunk back it matches
    the native one far more closely than two seeds' pictures match each other (drawn at 256x256
    itself, the model tiled dozens of small objects over the canvas)."""
    prompts = [
        "a large yellow triangle at the top, blue background",
        "a red circle left of a green square",
    ]
    native = generate(shapes, prompts, seeds=[3, 4])
    large = generate(shapes, prompts, width=256, height=256, seeds=[3, 4])
    other_seeds = generate(shapes, prompts, seeds=[5, 6])
    for small, big, other in zip(native, large, other_seeds, strict=True):
        assert big.size == (256, 256)
        shrunk = np.asarray(big.resize(small.size, Image.BOX), np.float32)
        same = np.abs(shrunk - np.asarray(small, np.float32)).mean()
        different = np.abs(np.asarray(other, np.float32) - np.asarray(small, np.float32)).mean()
        assert same < 4.0 and same < different / 5, (same, different)


def test_previews_of_a_scaled_size_come_from_the_native_canvas_in_its_shape(shapes) -> None:
    manager, model = shapes
    request = build_request(
        model_id=MODEL_ID,
        prompt="a blue square",
        parameters={"seed": 1, "width": 256, "height": 128, "num_inference_steps": 4},
        info=manager.describe(MODEL_ID),
        settings=manager._settings,
    )
    previews: list[Image.Image] = []

    def observe(step) -> bool:
        image = step.preview(512)
        assert image is not None
        previews.append(image)
        return False

    (result,) = manager.run_batch(model, [request], observers=[observe])
    assert result.image.size == (256, 128)
    assert len(previews) == 4
    assert max(previews[-1].size) <= SPEC.render_size[0]  # never larger than what was drawn
    assert previews[-1].width == 2 * previews[-1].height  # the shape of the final picture


@pytest.mark.slow
def test_a_non_square_size_scores_about_as_well_as_the_native_one(shapes) -> None:
    """96x64 stretches the native scene; the evaluator (which judges at the world's square
    resolution) must score it within a few points of 64x64 on the same prompts and seeds.
    Drawn at 96x64 itself the model scored far lower (the README's and model card's table)."""
    scenes = evaluate.evaluation_scenes(16, seed=105)
    prompts = [s.prompt for s in scenes]
    native = fidelity(scenes, generate(shapes, prompts))
    wide = fidelity(scenes, generate(shapes, prompts, width=96, height=64))
    assert native >= 0.35  # the comparison means something only if the model works at all
    print(f"fidelity 64x64 {native:.3f}, 96x64 {wide:.3f}")
    assert wide >= native - 0.05, (native, wide)
