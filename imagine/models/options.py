"""What the settings allow for one model id: whether it may name a folder on disk.

Path ids (`/srv/models/sd`, `./sd`, `~/sd`, `../sd`, or an `org/name` folder relative to the
working directory) let whoever sends the id load any folder the server can read, so they are
off unless `settings.allow_path_model_ids` is set. Ids the operator named (`preload`,
`default_model`) are always allowed. `model_dirs` ids (`org/name`) never climb out of their
folder: the registry refuses `.`, `..` and empty components there.
"""

from __future__ import annotations

from imagine.errors import ModelNotFound
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
