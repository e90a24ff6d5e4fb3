"""ModelManager loading: shared concurrent loads, failures that name the cause and can be retried,
unloading, and pipeline errors surfacing as GenerationFailed."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest

from imagine.errors import GenerationFailed, ModelLoadFailed, ModelNotFound
from imagine.models.manager import ModelManager
from imagine.settings import Settings
from imagine.validation import build_request


def manager_for(*dirs: Path) -> ModelManager:
    return ModelManager(settings=Settings(model_dirs=list(dirs), preload=[]))


async def test_concurrent_loads_share_one_pipeline(tiny_model_root: Path, tiny_model_ids: dict):
    manager = manager_for(tiny_model_root)
    model_id = tiny_model_ids["sd"]
    assert manager.state(model_id) == "unloaded"
    assert manager.estimated_load_time(model_id) > 0  # from the size of the weights
    first = asyncio.ensure_future(manager.load(model_id))
    await asyncio.sleep(0)  # let the first caller start the load (ordering, not timing)
    assert manager.state(model_id) == "loading"
    assert manager.describe(model_id).state == "loading"
    loaded = await asyncio.gather(first, manager.load(model_id), manager.load(model_id))
    assert loaded[0] is loaded[1] is loaded[2]
    assert manager.state(model_id) == "ready"
    assert await manager.load(model_id) is loaded[0]


async def test_one_waiter_cancelling_does_not_cancel_the_load(
    tiny_model_root: Path, tiny_model_ids: dict
) -> None:
    manager = manager_for(tiny_model_root)
    model_id = tiny_model_ids["sd"]
    impatient = asyncio.ensure_future(manager.load(model_id))
    await asyncio.sleep(0)
    impatient.cancel()
    loaded = await manager.load(model_id)
    assert loaded.pipeline is not None and manager.state(model_id) == "ready"


async def test_failed_load_names_the_cause_and_a_later_load_retries(
    tmp_path: Path, tiny_model_root: Path
) -> None:
    folder = tmp_path / "org" / "broken"
    shutil.copytree(tiny_model_root / "tiny" / "sd", folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    manager = manager_for(tmp_path)

    with pytest.raises(ModelLoadFailed) as err:
        await manager.load("org/broken")
    assert "org/broken" in err.value.message and "failed to load" in err.value.message
    assert manager.state("org/broken") == "failed"
    assert manager.health()["org/broken"]["last_error"] == err.value.message

    weights.write_bytes(good)  # fixed on disk: the next load tries again and succeeds
    loaded = await manager.load("org/broken")
    assert loaded.pipeline is not None and manager.state("org/broken") == "ready"
    assert manager.health()["org/broken"]["last_error"] is None


async def test_unknown_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        await manager_for(tmp_path).load("org/missing")


async def test_unload_frees_and_reload_works(tiny_model_root: Path, tiny_model_ids: dict):
    manager = manager_for(tiny_model_root)
    model_id = tiny_model_ids["sd"]
    loaded = await manager.load(model_id)
    first_load = manager.health()[model_id]["load_time_s"]
    manager.unload(model_id)
    assert manager.state(model_id) == "unloaded" and loaded.pipeline is None
    assert manager.estimated_load_time(model_id) == pytest.approx(first_load)  # measured
    with pytest.raises(GenerationFailed, match="unloaded"):
        manager.run_batch(loaded, [_request(manager, model_id)])
    again = await manager.load(model_id)
    assert again is not loaded and manager.state(model_id) == "ready"
    manager.unload("never/loaded")  # a no-op


def test_pipeline_errors_become_generation_failed(tiny_model_root: Path, tiny_model_ids: dict):
    manager = manager_for(tiny_model_root)
    model_id = tiny_model_ids["sd"]
    loaded = asyncio.run(manager.load(model_id))
    # Bypass validation (which would reject it) to make diffusers itself raise a ValueError:
    # that is our bug, so it must surface as a server error, not a client error.
    bad = dataclasses.replace(_request(manager, model_id), width=36)  # SD: not a multiple of 8
    with pytest.raises(GenerationFailed, match="ValueError"):
        manager.run_batch(loaded, [bad])
    # The pipeline is still usable afterwards, with its own scheduler back in place.
    assert type(loaded.pipeline.scheduler) is type(loaded.base_scheduler)
    (ok,) = manager.run_batch(loaded, [_request(manager, model_id)])
    assert ok.image.size == (32, 32)


def _request(manager: ModelManager, model_id: str):
    return build_request(
        model_id=model_id,
        prompt="a red circle",
        parameters={"width": 32, "height": 32, "num_inference_steps": 2, "seed": 3},
        info=manager.describe(model_id),
        settings=manager._settings,
    )
