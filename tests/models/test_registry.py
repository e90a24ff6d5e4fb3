"""ModelRegistry: every source in order, families from model_index.json, LoRA bases and LCM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from imagine.errors import ModelNotFound
from imagine.models import registry as registry_module
from imagine.models.families import FAMILIES, family_for_pipeline_class
from imagine.models.registry import ModelRegistry
from imagine.settings import Settings

FAMILY_OF = {"sd": "sd", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux", "kolors": "kolors"}


def registry(
    *dirs: Path, hf_cache: Path | None = None, downloads: bool = False, **settings: Any
) -> ModelRegistry:
    values: dict[str, Any] = {"preload": [], **settings}
    full = Settings(model_dirs=list(dirs), allow_downloads=downloads, **values)
    return ModelRegistry(settings=full, hf_cache_dir=hf_cache)


def pipeline_folder(path: Path, class_name: str = "StableDiffusionPipeline") -> Path:
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return path


def test_family_table_lookup() -> None:
    assert family_for_pipeline_class("FluxPipeline") is FAMILIES["flux"]
    assert family_for_pipeline_class("StableDiffusionPipeline") is FAMILIES["sd"]
    assert family_for_pipeline_class("NoSuchPipeline") is None


@pytest.mark.parametrize("key", sorted(FAMILY_OF))
def test_tiny_models_resolve_by_id(key: str, tiny_model_root: Path, tiny_model_ids: dict) -> None:
    resolved = registry(tiny_model_root).resolve(tiny_model_ids[key])
    assert resolved.spec.name == FAMILY_OF[key]
    assert resolved.source == "model_dir"
    assert resolved.path == tiny_model_root / tiny_model_ids[key]
    assert resolved.lora_path is None and len(resolved.revision) == 16


def test_native_size_and_scheduler_come_from_the_folder(
    tiny_model_root: Path, tiny_model_ids: dict
) -> None:
    reg = registry(tiny_model_root)
    sd = reg.resolve(tiny_model_ids["sd"]).spec
    assert (sd.default_width, sd.default_height) == (64, 64)  # 32 latent x VAE factor 2
    assert sd.default_scheduler == "EulerDiscreteScheduler"
    assert reg.resolve(tiny_model_ids["sd3"]).spec.default_width == 32


def test_lcm_lora_resolves_its_base_through_the_chain(
    tiny_model_root: Path, tiny_model_ids: dict
) -> None:
    reg = registry(tiny_model_root)
    base = reg.resolve(tiny_model_ids["sdxl"])
    lora = reg.resolve(tiny_model_ids["sdxl_lcm_lora"])
    assert lora.path == base.path
    assert lora.lora_path == tiny_model_root / tiny_model_ids["sdxl_lcm_lora"]
    assert lora.spec.name == "sdxl"
    assert lora.spec.default_scheduler == "LCMScheduler"
    assert (lora.spec.default_steps, lora.spec.default_guidance) == (4, 1.0)
    assert lora.spec.guidance_range == (0.0, 2.0)
    assert lora.revision.startswith(base.revision + "+")


def test_lora_without_base_uses_the_fallback_table(tmp_path: Path, tiny_model_root: Path) -> None:
    lora = tmp_path / "latent-consistency" / "lcm-lora-sdxl"
    shutil.copytree(tiny_model_root / "tiny" / "sdxl-lcm-lora", lora)
    (lora / "README.md").write_text("# no metadata\n")
    base_dir = tmp_path / "stabilityai" / "stable-diffusion-xl-base-1.0"
    shutil.copytree(tiny_model_root / "tiny" / "sdxl", base_dir)
    resolved = registry(tmp_path).resolve("latent-consistency/lcm-lora-sdxl")
    assert resolved.path == base_dir
    assert resolved.spec.default_scheduler == "LCMScheduler"  # "lcm" in the id


def test_lora_with_no_base_anywhere_names_the_fix(tmp_path: Path) -> None:
    lora = tmp_path / "me" / "my-lora"
    lora.mkdir(parents=True)
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFound, match="base_model"):
        registry(tmp_path).resolve("me/my-lora")


def test_double_dash_layout_and_alias(tmp_path: Path) -> None:
    pipeline_folder(tmp_path / "Kwai-Kolors--Kolors-diffusers", "KolorsPipeline")
    reg = registry(tmp_path)
    for model_id in ("Kwai-Kolors/Kolors-diffusers", "Kwai-Kolors/Kolors"):
        resolved = reg.resolve(model_id)
        assert resolved.spec.name == "kolors" and resolved.model_id == model_id


def test_path_ids_when_enabled(tiny_model_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tiny_model_root / "tiny" / "sd"
    reg = registry(allow_path_model_ids=True)
    assert reg.resolve(str(folder)).source == "path"
    monkeypatch.chdir(tiny_model_root)
    assert reg.resolve("./tiny/sd").path == folder
    assert reg.resolve("tiny/sd").source == "path"  # relative to the working directory
    monkeypatch.chdir(tiny_model_root / "tiny")
    assert reg.resolve("../tiny/sd").path == folder


@pytest.mark.parametrize("as_id", ["absolute", "./tiny/sd", "../tiny/sd", "tiny//sd", "~"])
def test_path_ids_are_refused_by_default(
    as_id: str, tiny_model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_model_root / "tiny")
    model_id = str(tiny_model_root / "tiny" / "sd") if as_id == "absolute" else as_id
    with pytest.raises(ModelNotFound) as err:
        registry().resolve(model_id)
    assert "path model ids are disabled" in err.value.message
    assert "allow_path_model_ids = true" in err.value.message
    assert "IMAGINE_ALLOW_PATH_MODEL_IDS" in err.value.message


def test_relative_folders_are_not_found_by_default(
    tiny_model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `POST /models//srv/m` reaches the registry as "srv/m": from "/" that is a path too.
    monkeypatch.chdir(tiny_model_root)
    with pytest.raises(ModelNotFound, match="allow_path_model_ids is off"):
        registry().resolve("tiny/sd")
    assert registry(tiny_model_root).resolve("tiny/sd").source == "model_dir"  # ids still work


def test_operator_named_path_ids_are_allowed(tiny_model_root: Path) -> None:
    folder = str(tiny_model_root / "tiny" / "sd")
    assert registry(preload=[folder]).resolve(folder).source == "path"
    assert registry(default_model=folder).resolve(folder).source == "path"
    with pytest.raises(ModelNotFound, match="disabled"):
        registry(preload=[folder]).resolve(folder + "/../sd")


def test_hf_cache_snapshot(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--cached"
    pipeline_folder(repo / "snapshots" / commit, "StableDiffusion3Pipeline")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    resolved = registry(hf_cache=tmp_path / "hub").resolve("org/cached")
    assert resolved.source == "hf_cache" and resolved.revision == commit
    assert resolved.spec.name == "sd3" and resolved.repo_id == "org/cached"


def test_unknown_model_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        registry(tmp_path, hf_cache=tmp_path / "hub").resolve("org/nothing")
    message = err.value.message
    assert "org/nothing" in message and str(tmp_path) in message
    assert "Hugging Face cache" in message
    assert "Hub" not in message  # allow_downloads=False: the Hub was not asked


def test_unsupported_pipeline_class(tmp_path: Path) -> None:
    pipeline_folder(tmp_path / "org" / "video", "WanPipeline")
    with pytest.raises(ModelNotFound, match="WanPipeline.*supported: .*FluxPipeline"):
        registry(tmp_path).resolve("org/video")


@pytest.mark.parametrize("model_id", ["../outside", "org/../../outside", "org/..", "/outside"])
def test_ids_cannot_climb_out_of_model_dirs(model_id: str, tmp_path: Path) -> None:
    pipeline_folder(tmp_path / "outside")
    (tmp_path / "models" / "org").mkdir(parents=True)
    with pytest.raises(ModelNotFound, match="disabled"):
        registry(tmp_path / "models").resolve(model_id)
    assert registry(tmp_path / "models")._model_dir_candidates(model_id) == []


def test_builtin_model_missing_weights_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "BUILTIN_DIR", tmp_path / "weights")
    with pytest.raises(ModelNotFound, match="embedded"):
        registry().resolve("imagine/shapes")
    pipeline_folder(tmp_path / "weights")
    resolved = registry().resolve("imagine/shapes")
    assert resolved.spec is FAMILIES["shapes"] and resolved.source == "builtin"


def test_revision_changes_when_weights_change(tmp_path: Path) -> None:
    folder = pipeline_folder(tmp_path / "org" / "m")
    before = registry(tmp_path).resolve("org/m").revision
    (folder / "unet").mkdir()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"0" * 10)
    assert registry(tmp_path).resolve("org/m").revision != before


def test_hub_lookup_fetches_only_the_index_and_remembers_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network here: stand in for the Hub transfer only (the lookup logic is what is tested).
    monkeypatch.setattr(registry_module.huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    reg = registry(hf_cache=tmp_path / "hub", downloads=True)
    asked: list[tuple[str, list[str]]] = []

    def download(repo_id: str, patterns: list[str]) -> str:
        asked.append((repo_id, patterns))
        if repo_id != "org/remote":
            raise OSError("404")
        snap = tmp_path / "snapshots" / ("a" * 40)
        if not snap.exists():
            pipeline_folder(snap, "FluxPipeline")
        return str(snap)

    monkeypatch.setattr(reg, "_download", download)
    resolved = reg.resolve("org/remote")
    assert resolved.needs_fetch and resolved.source == "hub" and resolved.spec.name == "flux"
    assert resolved.revision == "a" * 40
    assert asked == [("org/remote", ["model_index.json", "README.md"])]

    for _ in range(3):
        with pytest.raises(ModelNotFound, match="Hugging Face Hub"):
            reg.resolve("org/missing")
    assert [a for a, _ in asked].count("org/missing") == 1
