"""The family table: one FamilySpec per model family, looked up by pipeline class name.

Adding a family = a module here exporting SPEC, one line in FAMILIES, one tiny-pipeline test.
"""

from __future__ import annotations

from imagine.models.families import flux, kolors, sd, sd3, sdxl, shapes
from imagine.models.spec import FamilySpec

FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec for spec in (sd.SPEC, sdxl.SPEC, sd3.SPEC, flux.SPEC, kolors.SPEC, shapes.SPEC)
}

_BY_CLASS: dict[str, FamilySpec] = {
    cls: spec for spec in FAMILIES.values() for cls in spec.pipeline_classes
}


def family_for_pipeline_class(name: str) -> FamilySpec | None:
    """The family whose pipeline is `name` (model_index.json `_class_name`), or None."""
    return _BY_CLASS.get(name)


def supported_pipeline_classes() -> tuple[str, ...]:
    """Every pipeline class some family serves, for error messages."""
    return tuple(sorted(_BY_CLASS))


__all__ = ["FAMILIES", "family_for_pipeline_class", "supported_pipeline_classes"]
