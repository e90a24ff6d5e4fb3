"""The procedural world: deterministic, exact colours, and a judge that agrees with the renderer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imagine.models.builtin import evaluate, world


def test_same_seed_same_scenes_and_pixels() -> None:
    a_pixels, a_prompts = world.batch(np.random.default_rng(3), 8, p_vague=0.1)
    b_pixels, b_prompts = world.batch(np.random.default_rng(3), 8, p_vague=0.1)
    c_pixels, c_prompts = world.batch(np.random.default_rng(4), 8, p_vague=0.1)
    assert a_prompts == b_prompts
    assert np.array_equal(a_pixels, b_pixels)
    assert a_prompts != c_prompts


def test_pictures_hold_only_the_exact_palette_colours() -> None:
    rng = np.random.default_rng(0)
    palette = {tuple(c) for c in world.COLOURS.values()}
    for _ in range(50):
        scene = world.sample_scene(rng)
        colours = {tuple(int(v) for v in px) for px in world.render(scene).reshape(-1, 3)}
        assert colours <= palette
        assert tuple(world.COLOURS[scene.background]) in colours
        for thing in scene.things:
            assert tuple(world.COLOURS[thing.colour]) in colours, scene.prompt


def test_grammar_prompts_use_only_world_words() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        prompt = world.sample_scene(rng, p_vague=0.2).prompt
        words = prompt.replace(",", " , ").split()
        assert set(words) <= set(world.VOCABULARY), prompt


def test_pair_prompts_follow_the_two_object_grammar() -> None:
    rng = np.random.default_rng(2)
    scene = world.pair_scene(rng, p_omit=0.0)
    first, second = scene.things
    assert scene.prompt.startswith(
        f"a {first.colour} {first.shape} {scene.relation} a {second.colour}"
    )
    assert scene.prompt.endswith(f", {scene.background} background")
    assert scene.background not in (first.colour, second.colour)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_judge_scores_ground_truth_pictures_perfectly(size: int) -> None:
    """The evaluator must agree with the renderer, at the native size and upscaled."""
    for scene in evaluate.evaluation_scenes(60, seed=size):
        image = Image.fromarray(world.render(scene)).resize((size, size), Image.NEAREST)
        verdict = evaluate.judge(scene, image)
        assert verdict and all(verdict.values()), (scene.prompt, verdict)


def test_judge_catches_wrong_pictures() -> None:
    scenes = evaluate.evaluation_scenes(40, seed=9)
    wrong = 0
    for scene, other in zip(scenes, scenes[1:], strict=False):
        image = Image.fromarray(world.render(other))
        wrong += not all(evaluate.judge(scene, image).values())
    assert wrong >= 30  # a different scene almost always fails some attribute
