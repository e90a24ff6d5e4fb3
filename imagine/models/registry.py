"""Model id → ResolvedModel: where the weights are, which family spec (with this model's
overrides), which LoRA, and a revision string for cache keys. Nothing is loaded here.

Sources, first match wins:
  1. the embedded `imagine/shapes` (imagine/models/builtin/weights/)
  2. settings.model_dirs: id `org/name` → `<dir>/org/name` or `<dir>/org--name`
  3. the id as a filesystem path (absolute, or relative to the working directory)
  4. the Hugging Face cache (`snapshot_download(local_files_only=True)`; honours HF_HOME)
  5. the Hub, when settings.allow_downloads and HF_HUB_OFFLINE is unset: only model_index.json
     and the card are fetched here; the weights are fetched by `fetch()` at load time.

A folder with model_index.json is a pipeline; its `_class_name` picks the family. A folder
without one but with `pytorch_lora_weights.safetensors` (or a card tagged `lora`) is a LoRA: its
base comes from the card's `base_model` (or BASE_FALLBACK) and resolves through the same chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub.repocard import metadata_load

from imagine.errors import ModelNotFound
from imagine.models.families import family_for_pipeline_class, supported_pipeline_classes
from imagine.models.families import shapes as shapes_family
from imagine.models.spec import FamilySpec
from imagine.settings import Settings

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin" / "weights"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"

# Ids whose repo is not the diffusers layout, mapped to the one that is.
ALIASES: dict[str, str] = {"Kwai-Kolors/Kolors": "Kwai-Kolors/Kolors-diffusers"}
# LoRA cards that do not name their base model.
BASE_FALLBACK: dict[str, str] = {
    "latent-consistency/lcm-lora-sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "latent-consistency/lcm-lora-sdv1-5": "runwayml/stable-diffusion-v1-5",
    "latent-consistency/lcm-lora-ssd-1b": "segmind/SSD-1B",
}
# What a diffusers pipeline folder needs: configs, tokenizers, safetensors weights of components.
# No root-level files beyond the index and card (single-file checkpoints are many GB).
PIPELINE_PATTERNS = ["model_index.json", "README.md", "*/*.json", "*/*.txt", "*/*.model"]
PIPELINE_PATTERNS += ["*/*.safetensors"]
LORA_PATTERNS = ["README.md", "*.json", LORA_WEIGHTS]
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a model lives and how to serve it. `path` is complete unless `needs_fetch`."""

    model_id: str
    path: Path
    spec: FamilySpec
    revision: str
    source: str  # "builtin" | "model_dir" | "path" | "hf_cache" | "hub"
    pipeline_class: str
    lora_path: Path | None = None
    needs_fetch: bool = False  # Hub model whose weights are not downloaded yet
    repo_id: str | None = None  # the Hub repo behind `path` (after aliases)
    lora_repo_id: str | None = None
    lora_needs_fetch: bool = False

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights on disk (0 when not downloaded), for load-time estimates."""
        total = 0
        for root in (self.path, self.lora_path):
            if root is not None and root.is_dir():
                total += sum(f.stat().st_size for f in root.rglob("*.safetensors") if f.is_file())
        return total


class ModelRegistry:
    """Resolves model ids; results are cached per id (a failed resolution is not)."""

    def __init__(self, *, settings: Settings, hf_cache_dir: Path | None = None) -> None:
        self._settings = settings
        self._hf_cache_dir = (
            hf_cache_dir  # None: huggingface_hub's default (HF_HOME / HF_HUB_CACHE)
        )
        self._cache: dict[str, ResolvedModel] = {}
        self._lock = threading.Lock()

    def resolve(self, model_id: str) -> ResolvedModel:
        """Resolve `model_id`. Raises ModelNotFound naming where it looked."""
        with self._lock:
            hit = self._cache.get(model_id)
        if hit is not None:
            return hit
        resolved = self._resolve(model_id, allow_lora=True)
        with self._lock:
            self._cache[model_id] = resolved
        return resolved

    def fetch(self, resolved: ResolvedModel) -> ResolvedModel:
        """Download what `resolved` still lacks from the Hub (blocking; call off the event loop).
        Returns the complete ResolvedModel. Raises whatever huggingface_hub raises."""
        path, lora = resolved.path, resolved.lora_path
        if resolved.needs_fetch and resolved.repo_id:
            path = Path(self._download(resolved.repo_id, PIPELINE_PATTERNS))
        if resolved.lora_needs_fetch and resolved.lora_repo_id:
            lora = Path(self._download(resolved.lora_repo_id, LORA_PATTERNS))
        done = dataclasses.replace(
            resolved, path=path, lora_path=lora, needs_fetch=False, lora_needs_fetch=False
        )
        with self._lock:
            self._cache[resolved.model_id] = done
        return done

    # --- lookup chain -------------------------------------------------------------------

    def _resolve(self, model_id: str, *, allow_lora: bool) -> ResolvedModel:
        if model_id == shapes_family.MODEL_ID:
            if not (BUILTIN_DIR / "model_index.json").is_file():
                raise ModelNotFound(
                    f"Model {model_id} is the embedded model, but its weights are missing from "
                    f"{BUILTIN_DIR}"
                )
            return self._from_folder(model_id, BUILTIN_DIR, "builtin", allow_lora=False)
        repo_id = ALIASES.get(model_id, model_id)
        looked: list[str] = []
        for folder in self._model_dir_candidates(repo_id):
            looked.append(str(folder))
            if _is_model_folder(folder):
                return self._from_folder(model_id, folder, "model_dir", allow_lora=allow_lora)
        as_path = Path(model_id).expanduser()
        looked.append(f"path {as_path}")
        if _is_model_folder(as_path):
            return self._from_folder(model_id, as_path.resolve(), "path", allow_lora=allow_lora)
        if _REPO_ID.match(repo_id):
            looked.append("the Hugging Face cache")
            cached = self._from_hf_cache(repo_id)
            if cached is not None and _is_model_folder(cached):
                return self._from_folder(
                    model_id, cached, "hf_cache", allow_lora=allow_lora, repo_id=repo_id
                )
            if self._settings.allow_downloads and not huggingface_hub.constants.HF_HUB_OFFLINE:
                looked.append("the Hugging Face Hub")
                hub = self._from_hub(model_id, repo_id, allow_lora=allow_lora)
                if hub is not None:
                    return hub
        raise ModelNotFound(f"Model {model_id} not found; looked in: " + "; ".join(looked))

    def _model_dir_candidates(self, model_id: str) -> list[Path]:
        # Refuse ids that could climb out of a model dir.
        parts = model_id.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in model_id:
            return []
        out = []
        for root in self._settings.model_dirs:
            out.append(root.joinpath(*parts))
            if len(parts) == 2:
                out.append(root / f"{parts[0]}--{parts[1]}")
        return out

    def _from_hf_cache(self, repo_id: str) -> Path | None:
        try:
            return Path(
                huggingface_hub.snapshot_download(
                    repo_id, cache_dir=self._hf_cache_dir, local_files_only=True
                )
            )
        except Exception:  # not cached (LocalEntryNotFoundError) or a malformed cache entry
            return None

    def _from_hub(self, model_id: str, repo_id: str, *, allow_lora: bool) -> ResolvedModel | None:
        """Fetch only the small files that say what the repo is; weights wait for fetch()."""
        try:
            folder = Path(self._download(repo_id, ["model_index.json", "README.md"]))
        except Exception as exc:
            log.info("hub lookup of %s failed: %s", repo_id, exc)
            return None
        if (folder / "model_index.json").is_file():
            resolved = self._from_folder(model_id, folder, "hub", allow_lora=False, repo_id=repo_id)
            return dataclasses.replace(resolved, needs_fetch=True)
        if allow_lora and _card_says_lora(folder):
            resolved = self._lora(model_id, folder, "hub", repo_id)
            return dataclasses.replace(resolved, lora_needs_fetch=True, lora_repo_id=repo_id)
        return None

    def _download(self, repo_id: str, patterns: list[str]) -> str:
        return huggingface_hub.snapshot_download(
            repo_id, cache_dir=self._hf_cache_dir, allow_patterns=patterns
        )

    # --- folders ------------------------------------------------------------------------

    def _from_folder(
        self,
        model_id: str,
        folder: Path,
        source: str,
        *,
        allow_lora: bool,
        repo_id: str | None = None,
    ) -> ResolvedModel:
        index = folder / "model_index.json"
        if not index.is_file():
            if not allow_lora:
                raise ModelNotFound(f"Model {model_id}: {folder} is not a diffusers pipeline")
            return self._lora(model_id, folder, source, repo_id)
        try:
            config = json.loads(index.read_text())
            pipeline_class = str(config["_class_name"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotFound(f"Model {model_id}: unreadable {index}: {exc}") from exc
        if source == "builtin":
            spec = shapes_family.SPEC  # the embedded model's numbers live in families/shapes.py
        else:
            family = family_for_pipeline_class(pipeline_class)
            if family is None:
                raise ModelNotFound(
                    f"Model {model_id} is a {pipeline_class}, which this server does not serve "
                    f"(supported: {', '.join(supported_pipeline_classes())})"
                )
            spec = _with_folder_overrides(family, folder)
        return ResolvedModel(
            model_id=model_id,
            path=folder,
            spec=spec,
            revision=_revision(folder, source),
            source=source,
            pipeline_class=pipeline_class,
            repo_id=repo_id,
        )

    def _lora(self, model_id: str, folder: Path, source: str, repo_id: str | None) -> ResolvedModel:
        card = _card(folder)
        base_id = _base_model(card) or BASE_FALLBACK.get(repo_id or model_id)
        if not base_id:
            raise ModelNotFound(
                f"Model {model_id} is a LoRA whose card names no base_model; add `base_model:` "
                f"to {folder / 'README.md'}"
            )
        base = self._resolve(base_id, allow_lora=False)
        spec = base.spec
        if _is_lcm(model_id, card, folder):
            spec = dataclasses.replace(
                spec,
                default_scheduler="LCMScheduler",
                default_steps=4,
                default_guidance=1.0,
                guidance_range=(0.0, 2.0),
                schedulers=tuple(dict.fromkeys((*spec.schedulers, "LCMScheduler"))),
            )
        lora_rev = _revision(folder, source)
        return dataclasses.replace(
            base,
            model_id=model_id,
            spec=spec,
            revision=f"{base.revision}+{lora_rev}",
            lora_path=folder,
            lora_repo_id=repo_id,
        )


# --- helpers ------------------------------------------------------------------------------


def _is_model_folder(path: Path) -> bool:
    try:
        return path.is_dir() and (
            (path / "model_index.json").is_file()
            or (path / LORA_WEIGHTS).is_file()
            or _card_says_lora(path)
        )
    except OSError:
        return False


def _card(folder: Path) -> dict[str, Any]:
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    try:
        return metadata_load(readme) or {}
    except Exception:  # a malformed card is just a card without metadata
        return {}


def _tags(card: dict[str, Any]) -> list[str]:
    tags = card.get("tags") or []
    return [str(t).lower() for t in (tags if isinstance(tags, list) else [tags])]


def _card_says_lora(folder: Path) -> bool:
    return "lora" in _tags(_card(folder))


def _base_model(card: dict[str, Any]) -> str | None:
    base = card.get("base_model")
    if isinstance(base, list):
        base = base[0] if base else None
    return str(base) if base else None


def _is_lcm(model_id: str, card: dict[str, Any], folder: Path) -> bool:
    if "lcm" in model_id.lower() or "lcm" in _tags(card):
        return True
    readme = folder / "README.md"
    text = readme.read_text(errors="replace").lower() if readme.is_file() else ""
    return "latent consistency" in text or "lcm-lora" in text


def _with_folder_overrides(spec: FamilySpec, folder: Path) -> FamilySpec:
    """The model's own native size and (when allowed) its own scheduler as the defaults."""
    changes: dict[str, Any] = {}
    size = _native_size(folder)
    if size:
        changes.update(default_width=size, default_height=size)
    sched = _read_json(folder / "scheduler" / "scheduler_config.json").get("_class_name")
    if sched in spec.schedulers:
        changes["default_scheduler"] = sched
    return dataclasses.replace(spec, **changes) if changes else spec


def _native_size(folder: Path) -> int | None:
    """sample_size of the denoiser x the VAE's downscale factor, when both are known."""
    denoiser = _read_json(folder / "unet" / "config.json") or _read_json(
        folder / "transformer" / "config.json"
    )
    blocks = _read_json(folder / "vae" / "config.json").get("block_out_channels")
    sample = denoiser.get("sample_size")
    if isinstance(sample, list):
        sample = sample[0]
    if not isinstance(sample, int) or not blocks:
        return None
    return sample * 2 ** (len(blocks) - 1)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _revision(folder: Path, source: str) -> str:
    """Hub snapshots are named by commit; local folders get a hash of names, sizes and mtimes."""
    if source in ("hf_cache", "hub") and folder.parent.name == "snapshots":
        return folder.name
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        digest.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
