"""What a model folder (or a Hub repo's file list) says about itself: is it a pipeline or a LoRA,
what its card declares, its native size, its revision, and which weight files to fetch or load.

Pure functions over paths and file names, so the registry stays a lookup chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub.repocard import metadata_load

from imagine.models.spec import FamilySpec

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SMALL_FILES = ("model_index.json", "README.md")
_COMPONENT_FILE_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")


def is_model_folder(path: Path) -> bool:
    """A diffusers pipeline folder, or a LoRA folder (weights file or card tagged `lora`)."""
    try:
        return path.is_dir() and (
            (path / "model_index.json").is_file()
            or (path / LORA_WEIGHTS).is_file()
            or card_says_lora(path)
        )
    except OSError:
        return False


def is_complete(folder: Path, *, skip: Iterable[str] = ()) -> bool:
    """Every component named in model_index.json (but those in `skip`) has its folder, and
    every model component (one with a config.json) has weights: a Hub snapshot may hold only
    the index and card so far."""
    index = read_json(folder / "model_index.json")
    skipped = set(skip)
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if name in skipped:
            continue
        component = folder / name
        if not component.is_dir():
            return False
        if (component / "config.json").is_file() and not any(
            p.name.endswith(_WEIGHT_SUFFIXES) for p in component.iterdir()
        ):
            return False
    return True


def lora_weight_name(folder: Path) -> str | None:
    """The LoRA weights file to load: the diffusers default, else the folder's only
    .safetensors file, else None (let diffusers decide)."""
    if (folder / LORA_WEIGHTS).is_file():
        return LORA_WEIGHTS
    candidates = sorted(p.name for p in folder.glob("*.safetensors"))
    return candidates[0] if len(candidates) == 1 else None


def card(folder: Path) -> dict[str, Any]:
    """The YAML metadata of the folder's README.md ({} when absent or malformed)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    try:
        return metadata_load(readme) or {}
    except Exception:  # a malformed card is just a card without metadata
        return {}


def tags(meta: dict[str, Any]) -> list[str]:
    raw = meta.get("tags") or []
    return [str(t).lower() for t in (raw if isinstance(raw, list) else [raw])]


def card_says_lora(folder: Path) -> bool:
    return "lora" in tags(card(folder))


def base_model(meta: dict[str, Any]) -> str | None:
    """The card's `base_model` (the first one when it lists several)."""
    base = meta.get("base_model")
    if isinstance(base, list):
        base = base[0] if base else None
    return str(base) if base else None


def is_lcm(model_id: str, meta: dict[str, Any], folder: Path) -> bool:
    """An LCM LoRA: the id or a tag says `lcm`, or the card talks about latent consistency."""
    if "lcm" in model_id.lower() or "lcm" in tags(meta):
        return True
    readme = folder / "README.md"
    text = readme.read_text(errors="replace").lower() if readme.is_file() else ""
    return "latent consistency" in text or "lcm-lora" in text


def with_folder_overrides(spec: FamilySpec, folder: Path) -> FamilySpec:
    """The model's own native size and (when allowed) its own scheduler as the defaults."""
    changes: dict[str, Any] = {}
    size = native_size(folder)
    if size:
        changes.update(default_width=size, default_height=size)
    sched = read_json(folder / "scheduler" / "scheduler_config.json").get("_class_name")
    if sched in spec.schedulers:
        changes["default_scheduler"] = sched
    return dataclasses.replace(spec, **changes) if changes else spec


def native_size(folder: Path) -> int | None:
    """sample_size of the denoiser x the VAE's downscale factor, when both are known."""
    denoiser = read_json(folder / "unet" / "config.json") or read_json(
        folder / "transformer" / "config.json"
    )
    blocks = read_json(folder / "vae" / "config.json").get("block_out_channels")
    sample = denoiser.get("sample_size")
    if isinstance(sample, list):
        sample = sample[0]
    if not isinstance(sample, int) or not blocks:
        return None
    return sample * 2 ** (len(blocks) - 1)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def revision(folder: Path, source: str) -> str:
    """Hub snapshots are named by commit; local folders get a hash of names, sizes and mtimes."""
    if source in ("hf_cache", "hub") and folder.parent.name == "snapshots":
        return folder.name
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        digest.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def pipeline_files(repo_files: Iterable[str], *, skip: Iterable[str] = ()) -> list[str]:
    """The files of a diffusers repo worth downloading: the index, the card, each component's
    configs and tokenizer files, and ONE set of weights per component — safetensors over .bin,
    full precision over an fp16 variant (kept only where it is the only one). Root-level
    single-file checkpoints (many GB, not the diffusers layout) and the components in `skip`
    (not loaded) are left out."""
    files = list(repo_files)
    skipped = set(skip)
    chosen = [f for f in files if f in _SMALL_FILES]
    by_component: dict[str, list[str]] = {}
    for f in files:
        parts = f.split("/")
        if len(parts) != 2 or parts[0] in skipped:
            continue
        component, name = parts
        if name.endswith(_WEIGHT_SUFFIXES):
            by_component.setdefault(component, []).append(f)
        elif name.endswith(_COMPONENT_FILE_SUFFIXES):
            chosen.append(f)
    for weights in by_component.values():
        for pick in (
            lambda f: f.endswith(".safetensors") and not _is_variant(f),
            lambda f: f.endswith(".bin") and not _is_variant(f),
            lambda f: f.endswith(".safetensors"),
            lambda f: f.endswith(".bin"),
        ):
            picked = [f for f in weights if pick(f)]
            if picked:
                chosen.extend(picked)
                break
    return sorted(chosen)


def weights_variant(folder: Path) -> str | None:
    """ "fp16" when some component of the folder has only fp16-variant weights (diffusers then
    needs `variant="fp16"`, and falls back to plain weights where they exist); else None."""
    for component in folder.iterdir() if folder.is_dir() else ():
        if not component.is_dir():
            continue
        weights = [p.name for p in component.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES)]
        if weights and all(_is_variant(w) for w in weights):
            return "fp16"
    return None


def _is_variant(name: str) -> bool:
    # diffusers names variants `<name>.fp16.safetensors`, sharded `<name>.fp16-00001-of-00002...`.
    return ".fp16." in name or ".fp16-" in name
