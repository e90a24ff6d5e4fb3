"""What the settings say about one model id: whether it may name a folder on disk (path ids),
and which optional parts of the model to leave out (`model_options`).

Path ids (`/srv/models/sd`, `./sd`, `~/sd`, `../sd`, or an `org/name` folder relative to the
working directory) let whoever sends the id load any folder the server can read, so they are
off unless `settings.allow_path_model_ids` is set. Ids the operator named (`preload`,
`default_model`) are always allowed. `model_dirs` ids (`org/name`) never climb out of their
folder: the registry refuses `.`, `..` and empty components there.

`model_options[id].without` names parts from the family's `optional_parts` (SD3: "t5"); their
components are not loaded (nor downloaded), the spec's prompt limit follows, and the revision
changes, so cached results of the full model are never served for the reduced one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from imagine.errors import ModelLoadFailed, ModelNotFound
from imagine.models.spec import FamilySpec
from imagine.settings import Settings

_DOT_PARTS = frozenset({"", ".", ".."})


def looks_like_path(model_id: str) -> bool:
    """True for ids only a filesystem path would have: absolute, home-relative (`~`), with a
    backslash, or with an empty, `.` or `..` component. `org/name` ids are not paths."""
    if not model_id or model_id.startswith(("/", "~")) or "\\" in model_id:
        return True
    return any(part in _DOT_PARTS for part in model_id.split("/"))


def path_ids_allowed(settings: Settings, model_id: str) -> bool:
    """May `model_id` be looked up as a filesystem path?"""
    if settings.allow_path_model_ids:
        return True
    return model_id == settings.default_model or model_id in settings.preload


def path_ids_disabled(model_id: str) -> ModelNotFound:
    """The error for a path id while path ids are off; the message says how to turn them on."""
    return ModelNotFound(
        f"Model {model_id!r} is a filesystem path, and path model ids are disabled on this "
        "server. To serve a local folder, put it under one of the `model_dirs` folders and use "
        "its <org>/<name> id, or (trusted clients only) set allow_path_model_ids = true "
        "(environment: IMAGINE_ALLOW_PATH_MODEL_IDS=true)."
    )


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What `model_options[id]` changes for one model."""

    spec: FamilySpec
    skip_components: tuple[str, ...] = ()  # passed as None to from_pretrained, never fetched
    revision_suffix: str = ""  # appended to the model's revision (cache keys)


def load_options(settings: Settings, model_id: str, spec: FamilySpec) -> LoadOptions:
    """Apply `settings.model_options[model_id]` to `spec`. Raises ModelLoadFailed naming the
    setting when it names a part the family does not have (a server configuration error)."""
    options = settings.model_options.get(model_id)
    if options is None or not options.without:
        return LoadOptions(spec=spec)
    components: list[str] = []
    for name in options.without:
        part = spec.optional_parts.get(name)
        if part is None:
            allowed = ", ".join(spec.optional_parts) or "none"
            raise ModelLoadFailed(
                f"Model {model_id}: settings model_options[{model_id!r}].without names "
                f"{name!r}, which {spec.name} models cannot be served without "
                f"(their optional parts: {allowed})"
            )
        components.extend(part.components)
        if part.max_prompt_tokens is not None:
            limit = min(spec.max_prompt_tokens, part.max_prompt_tokens)
            spec = dataclasses.replace(spec, max_prompt_tokens=limit)
    parts = sorted(set(options.without))
    return LoadOptions(
        spec=spec,
        skip_components=tuple(dict.fromkeys(components)),
        revision_suffix="+without-" + "-".join(parts),
    )
