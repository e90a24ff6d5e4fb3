"""Model id → ResolvedModel: where the weights are, which family spec (with this model's
overrides), which LoRA, and a revision string for cache keys. Nothing is loaded here.

Sources, first match wins:
  1. the embedded `imagine/shapes` (imagine/models/builtin/weights/)
  2. settings.model_dirs: id `org/name` → `<dir>/org/name` or `<dir>/org--name`
  3. the id as a filesystem path (absolute, or relative to the working directory), only when
     path ids are allowed (settings.allow_path_model_ids, or an id the operator named in
     preload / default_model; see imagine/models/options.py). Otherwise an id that can only be
     a path (`/x`, `~/x`, `./x`, `../x`) is ModelNotFound at once, saying how to enable them.
  4. the Hugging Face cache (`snapshot_download(local_files_only=True)`; honours HF_HOME)
  5. the Hub, when settings.allow_downloads and HF_HUB_OFFLINE is unset: only model_index.json
     and the card are fetched here, through `hub.HubLookups` (threads of their own, one lookup
     per id, a bound on lookups, answers remembered briefly); the weights are fetched by
     `fetch()` at load time. Every Hub call has connect and read timeouts (hub.bound_timeouts).

A folder with model_index.json is a pipeline; its `_class_name` picks the family. A folder
without one but with `pytorch_lora_weights.safetensors` (or a card tagged `lora`) is a LoRA: its
base comes from the card's `base_model` (or BASE_FALLBACK) and resolves through the same chain.
`settings.model_options` (parts a model is served without) shape the spec, the revision and
what is fetched (imagine/models/options.py); a LoRA takes its base's.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub

from imagine.errors import ModelNotFound
from imagine.models import folders, hub, options
from imagine.models.families import family_for_pipeline_class, supported_pipeline_classes
from imagine.models.families import shapes as shapes_family
from imagine.models.spec import FamilySpec
from imagine.settings import Settings

BUILTIN_DIR = Path(__file__).parent / "builtin" / "weights"
LORA_WEIGHTS = folders.LORA_WEIGHTS

# Ids whose repo is not the diffusers layout, mapped to the one that is.
ALIASES: dict[str, str] = {"Kwai-Kolors/Kolors": "Kwai-Kolors/Kolors-diffusers"}
# LoRA cards that do not name their base model.
BASE_FALLBACK: dict[str, str] = {
    "latent-consistency/lcm-lora-sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "latent-consistency/lcm-lora-sdv1-5": "runwayml/stable-diffusion-v1-5",
    "latent-consistency/lcm-lora-ssd-1b": "segmind/SSD-1B",
}
LORA_PATTERNS = ["README.md", "*.json", "*.safetensors"]
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
    skip_components: tuple[str, ...] = ()  # not loaded or fetched (settings.model_options)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights on disk that a load reads (0 when not downloaded), for load-time
        estimates."""
        total = 0
        for root in (self.path, self.lora_path):
            if root is not None and root.is_dir():
                total += sum(
                    f.stat().st_size
                    for f in root.rglob("*.safetensors")
                    if f.is_file() and f.relative_to(root).parts[0] not in self.skip_components
                )
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
        self.hub = hub.HubLookups(settings=settings)
        if settings.allow_downloads:
            hub.bound_timeouts(
                connect_s=settings.hub_connect_timeout_s, read_s=settings.hub_read_timeout_s
            )

    def resolve(self, model_id: str) -> ResolvedModel:
        """Resolve `model_id`. Raises ModelNotFound naming where it looked, Overloaded (the
        Hub's lookups are full or slow: see imagine.models.hub) and, within
        `hub.pending_instead_of_waiting()`, hub.HubLookupPending."""
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
            # One set of weights per component (see folders.pipeline_files), not every format.
            files = huggingface_hub.HfApi().list_repo_files(resolved.repo_id)
            wanted = folders.pipeline_files(files, skip=resolved.skip_components)
            path = Path(self._download(resolved.repo_id, wanted))
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
        paths_allowed = options.path_ids_allowed(self._settings, model_id)
        if not paths_allowed and options.looks_like_path(model_id):
            raise options.path_ids_disabled(model_id)
        repo_id = ALIASES.get(model_id, model_id)
        looked: list[str] = []
        for folder in self._model_dir_candidates(repo_id):
            looked.append(str(folder))
            if folders.is_model_folder(folder):
                return self._from_folder(model_id, folder, "model_dir", allow_lora=allow_lora)
        if paths_allowed:
            as_path = Path(model_id).expanduser()
            looked.append(f"path {as_path}")
            if folders.is_model_folder(as_path):
                return self._from_folder(model_id, as_path.resolve(), "path", allow_lora=allow_lora)
        if _REPO_ID.match(repo_id) and not options.looks_like_path(repo_id):
            looked.append("the Hugging Face cache")
            cached = self._from_hf_cache(repo_id)
            if cached is not None and folders.is_model_folder(cached):
                resolved = self._from_folder(
                    model_id, cached, "hf_cache", allow_lora=allow_lora, repo_id=repo_id
                )
                complete = folders.is_complete(cached, skip=resolved.skip_components)
                if resolved.lora_path is not None or complete:
                    return resolved
                if self._settings.allow_downloads:  # a partial snapshot: fetch the rest at load
                    return dataclasses.replace(resolved, needs_fetch=True)
            if self._settings.allow_downloads and not huggingface_hub.constants.HF_HUB_OFFLINE:
                remote, note = self._from_hub(model_id, repo_id, allow_lora=allow_lora)
                if remote is not None:
                    return remote
                looked.append(f"the Hugging Face Hub ({note})" if note else "the Hugging Face Hub")
        where = "; ".join(looked) or "nothing (no model_dirs, and not a Hub repo id)"
        hint = "" if paths_allowed else " (not as a filesystem path: allow_path_model_ids is off)"
        raise ModelNotFound(f"Model {model_id} not found; looked in: {where}{hint}")

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

    def _from_hub(
        self, model_id: str, repo_id: str, *, allow_lora: bool
    ) -> tuple[ResolvedModel | None, str]:
        """Fetch only the small files that say what the repo is; weights wait for fetch().
        Returns the model, or None and why (for the error message)."""
        answer = self.hub.lookup(
            repo_id, lambda: self._download(repo_id, ["model_index.json", "README.md"])
        )
        folder = answer.folder
        if folder is None:
            return None, answer.note
        if (folder / "model_index.json").is_file():
            resolved = self._from_folder(model_id, folder, "hub", allow_lora=False, repo_id=repo_id)
            return dataclasses.replace(resolved, needs_fetch=True), ""
        if allow_lora and folders.card_says_lora(folder):
            resolved = self._lora(model_id, folder, "hub", repo_id)
            return dataclasses.replace(resolved, lora_needs_fetch=True, lora_repo_id=repo_id), ""
        return None, ""

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
            spec = folders.with_folder_overrides(family, folder)
        loading = options.load_options(self._settings, model_id, spec)
        return ResolvedModel(
            model_id=model_id,
            path=folder,
            spec=loading.spec,
            revision=folders.revision(folder, source) + loading.revision_suffix,
            source=source,
            pipeline_class=pipeline_class,
            repo_id=repo_id,
            skip_components=loading.skip_components,
        )

    def _lora(self, model_id: str, folder: Path, source: str, repo_id: str | None) -> ResolvedModel:
        card = folders.card(folder)
        base_id = folders.base_model(card) or BASE_FALLBACK.get(repo_id or model_id)
        if not base_id:
            raise ModelNotFound(
                f"Model {model_id} is a LoRA whose card names no base_model; add `base_model:` "
                f"to {folder / 'README.md'}"
            )
        base = self._resolve(base_id, allow_lora=False)
        spec = base.spec
        if folders.is_lcm(model_id, card, folder):
            spec = dataclasses.replace(
                spec,
                default_scheduler="LCMScheduler",
                default_steps=4,
                default_guidance=1.0,
                guidance_range=(0.0, 2.0),
                schedulers=tuple(dict.fromkeys((*spec.schedulers, "LCMScheduler"))),
            )
        lora_rev = folders.revision(folder, source)
        return dataclasses.replace(
            base,
            model_id=model_id,
            spec=spec,
            revision=f"{base.revision}+{lora_rev}",
            lora_path=folder,
            lora_repo_id=repo_id,
        )
