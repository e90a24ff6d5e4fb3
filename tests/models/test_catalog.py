"""The models a server offers (imagine.models.catalog): from the settings, model_dirs and the
Hugging Face cache, on real folders laid out as each source lays them out. (That it imports no
torch is tests/http/test_no_torch.py's: the app imports it.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from imagine.models import catalog
from imagine.settings import Settings


def _touch(path: Path, text: str = "{}") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_sources_in_order(tmp_path: Path) -> None:
    dirs, hf = tmp_path / "dirs", tmp_path / "hub"
    _touch(dirs / "acme" / "painter" / "model_index.json")
    _touch(dirs / "acme--lora" / "pytorch_lora_weights.safetensors")
    _touch(dirs / "solo" / "model_index.json")
    _touch(dirs / "acme" / "not-a-model" / "notes.txt")
    _touch(hf / "models--stabilityai--sdxl-turbo" / "snapshots" / "abc123" / "model_index.json")
    _touch(hf / "models--acme--painter" / "snapshots" / "def456" / "model_index.json")
    _touch(hf / "models--org--tokenizer-only" / "snapshots" / "0a1b" / "tokenizer.json")
    _touch(hf / "datasets--org--data" / "snapshots" / "1" / "model_index.json")
    settings = Settings(default_model="acme/painter", preload=["imagine/shapes"], model_dirs=[dirs])
    entries = catalog.list_models(settings, also=["org/loaded"], hf_cache_dir=hf)
    assert [(e.model_id, e.sources) for e in entries] == [
        ("acme/painter", ("default", "model_dir", "hf_cache")),
        ("imagine/shapes", ("preload", "builtin")),
        ("org/loaded", ()),
        ("solo", ("model_dir",)),
        ("acme/lora", ("model_dir",)),
        ("stabilityai/sdxl-turbo", ("hf_cache",)),
    ]


def test_a_missing_cache_or_folder_lists_the_configured_models(tmp_path: Path) -> None:
    settings = Settings(preload=[], model_dirs=[tmp_path / "nowhere"])
    entries = catalog.list_models(settings, hf_cache_dir=tmp_path / "no-cache")
    assert [e.model_id for e in entries] == ["imagine/shapes"]


def test_at_most_max_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "MAX_LISTED", 5)
    for i in range(12):
        _touch(tmp_path / f"org--m{i:02d}" / "model_index.json")
    entries = catalog.list_models(
        Settings(preload=[], model_dirs=[tmp_path]), hf_cache_dir=tmp_path / "none"
    )
    assert len(entries) == 5 and entries[0].model_id == "imagine/shapes"
