"""settings.model_options: SD3 served without its T5 (not loaded, not needed on disk, not
fetched), with its own revision and prompt limit; bad options name the setting."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagine.errors import ModelLoadFailed
from imagine.models import folders
from imagine.models.manager import LoadedModel, ModelManager
from imagine.models.registry import ModelRegistry
from imagine.settings import Settings
from imagine.validation import build_request

T5_PARTS = ("text_encoder_3", "tokenizer_3")


def _pixels(manager: ModelManager, model: LoadedModel) -> np.ndarray:
    request = build_request(
        model_id=model.model_id,
        prompt="a red circle",
        parameters={"width": 32, "height": 32, "num_inference_steps": 2, "seed": 4},
        info=manager.describe(model.model_id),
        settings=manager._settings,
    )
    (result,) = manager.run_batch(model, [request])
    return np.asarray(result.image, dtype=np.int16)


def _module_bytes(module: object) -> int:
    tensors = [*module.parameters(), *module.buffers()]  # type: ignore[attr-defined]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_sd3_without_t5_loads_and_generates(
    tmp_path: Path, tiny_model_root: Path, tiny_model_ids: dict
) -> None:
    full_id, reduced_id = tiny_model_ids["sd3"], "org/sd3-no-t5"
    # The reduced copy has no T5 on disk at all: it must not be needed.
    shutil.copytree(
        tiny_model_root / full_id,
        tmp_path / reduced_id,
        ignore=lambda d, names: [n for n in names if n in T5_PARTS],
    )
    settings = Settings(
        model_dirs=[tiny_model_root, tmp_path],
        preload=[],
        model_options={reduced_id: {"without": ["t5"]}},
    )
    manager = ModelManager(settings=settings)

    full_info, reduced_info = manager.describe(full_id), manager.describe(reduced_id)
    assert (full_info.spec.max_prompt_tokens, reduced_info.spec.max_prompt_tokens) == (256, 77)
    assert reduced_info.revision.endswith("+without-t5")
    assert not full_info.revision.endswith("+without-t5")

    reduced = asyncio.run(manager.load(reduced_id))
    assert reduced.pipeline.text_encoder_3 is None and reduced.pipeline.tokenizer_3 is None
    full = asyncio.run(manager.load(full_id))
    t5_bytes = _module_bytes(full.pipeline.text_encoder_3)
    assert t5_bytes > 0 and reduced.memory_bytes == full.memory_bytes - t5_bytes

    image = _pixels(manager, reduced)
    assert image.shape == (32, 32, 3) and image.std() > 0
    assert np.array_equal(image, _pixels(manager, reduced)), "still deterministic"
    assert not np.array_equal(image, _pixels(manager, full)), "T5 made no difference"


def _registry(tmp_path: Path, model_options: dict) -> ModelRegistry:
    settings = Settings(
        model_dirs=[tmp_path], preload=[], allow_downloads=False, model_options=model_options
    )
    return ModelRegistry(settings=settings, hf_cache_dir=tmp_path / "hub")


@pytest.mark.parametrize(
    ("pipeline_class", "without", "words"),
    [
        ("FluxPipeline", ["t5"], ["'t5'", "flux", "optional parts: none"]),
        ("StableDiffusion3Pipeline", ["clip"], ["'clip'", "sd3", "optional parts: t5"]),
    ],
)
def test_unknown_optional_part_names_the_setting(
    tmp_path: Path, pipeline_class: str, without: list[str], words: list[str]
) -> None:
    folder = tmp_path / "org" / "m"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline_class}))
    with pytest.raises(ModelLoadFailed) as err:
        _registry(tmp_path, {"org/m": {"without": without}}).resolve("org/m")
    assert "model_options['org/m'].without" in err.value.message
    for word in words:
        assert word in err.value.message


def test_hf_snapshot_without_t5_weights_is_complete_when_t5_is_skipped(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--sd3"
    snap = repo / "snapshots" / commit
    index = {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "X"]}
    index |= {name: ["transformers", "T"] for name in T5_PARTS}
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text(json.dumps(index))
    (snap / "transformer").mkdir()
    (snap / "transformer" / "config.json").write_text("{}")
    (snap / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert not folders.is_complete(snap)
    assert folders.is_complete(snap, skip=T5_PARTS)
    # Offline and incomplete, it would not resolve; without T5 it is complete and resolves.
    resolved = _registry(tmp_path, {"org/sd3": {"without": ["t5"]}}).resolve("org/sd3")
    assert resolved.source == "hf_cache" and not resolved.needs_fetch
    assert resolved.skip_components == T5_PARTS and resolved.revision == commit + "+without-t5"


def test_t5_files_are_not_fetched() -> None:
    repo = [
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "text_encoder_3/config.json",
        "text_encoder_3/model-00001-of-00002.safetensors",
        "tokenizer_3/spiece.model",
    ]
    assert folders.pipeline_files(repo, skip=T5_PARTS) == sorted(repo[:3])


def test_model_options_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGINE_MODEL_OPTIONS", raising=False)
    config = tmp_path / "imagine.toml"
    model_id = "stabilityai/stable-diffusion-3-medium-diffusers"
    config.write_text(f'[model_options."{model_id}"]\nwithout = ["t5"]\n')
    assert Settings.load(config).model_options[model_id].without == ["t5"]
