"""The models a server can offer without asking the Hub: the configured default, the preloaded
ones, the embedded model, pipeline and LoRA folders under `model_dirs`, and snapshots in the
Hugging Face cache. `GET /models` lists them (the web page's model picker); an id not listed
here may still resolve (the Hub, a path id), it is just not offered.

Reads disk (globs, no file contents): call it off the event loop. No torch, no resolving: a
listed folder that turns out not to be servable answers 404 when it is used, as any id would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imagine.models import folders
from imagine.settings import Settings

__all__ = ["MAX_LISTED", "CatalogEntry", "list_models"]

# families/shapes.py's MODEL_ID, not imported: the families import torch and the HTTP edge must not.
BUILTIN_ID = "imagine/shapes"
# A model dir or HF cache with thousands of folders must not make one page load read them all.
MAX_LISTED = 500
# What marks a folder as servable: a pipeline's index, or a LoRA's weights (registry.py).
_MARKERS = ("model_index.json", folders.LORA_WEIGHTS)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One offered id and why it is offered, in the order of `SOURCES`."""

    model_id: str
    sources: tuple[str, ...]


# Why an id is offered: the default model, preloaded, the embedded model, a folder under
# model_dirs, a snapshot in the Hugging Face cache.
SOURCES = ("default", "preload", "builtin", "model_dir", "hf_cache")


def list_models(
    settings: Settings, *, also: Iterable[str] = (), hf_cache_dir: Path | None = None
) -> list[CatalogEntry]:
    """Every offered id once, the default first, then the preloaded ones, then `also` (ids the
    engine already knows, e.g. loaded on demand), the embedded model, model_dirs and the HF cache
    (`hf_cache_dir`, default: huggingface_hub's, which honours HF_HOME / HF_HUB_CACHE). At most
    MAX_LISTED."""
    found: dict[str, list[str]] = {}

    def add(model_id: str, source: str | None) -> None:
        if model_id not in found and len(found) >= MAX_LISTED:
            return
        sources = found.setdefault(model_id, [])
        if source is not None and source not in sources:
            sources.append(source)

    add(settings.default_model, "default")
    for model_id in settings.preload:
        add(model_id, "preload")
    for model_id in also:
        add(model_id, None)
    add(BUILTIN_ID, "builtin")
    for root in settings.model_dirs:
        for model_id in _model_dir_ids(Path(root)):
            add(model_id, "model_dir")
    for model_id in _hf_cache_ids(hf_cache_dir or _default_hf_cache()):
        add(model_id, "hf_cache")
    order = {name: i for i, name in enumerate(SOURCES)}
    return [
        CatalogEntry(model_id, tuple(sorted(sources, key=order.__getitem__)))
        for model_id, sources in found.items()
    ]


def _model_dir_ids(root: Path) -> Iterator[str]:
    """`org/name` and `org--name` folders (the registry's two layouts) and single `name` ones,
    at most two levels deep, in name order."""
    seen = 0
    for depth in ("*", "*/*"):
        for marker in _MARKERS:
            for path in sorted(root.glob(f"{depth}/{marker}")):
                parts = path.parent.relative_to(root).parts
                yield "/".join(parts) if len(parts) == 2 else parts[0].replace("--", "/", 1)
                seen += 1
                if seen >= MAX_LISTED:
                    return


def _hf_cache_ids(cache: Path) -> Iterator[str]:
    """Repo ids of the cache's model snapshots that hold a pipeline or a LoRA
    (`models--org--name/snapshots/<commit>/…`), in name order."""
    if not cache.is_dir():
        return
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        if any(any(snapshots.glob(f"*/{marker}")) for marker in _MARKERS):
            yield repo.name.removeprefix("models--").replace("--", "/", 1)


def _default_hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)
