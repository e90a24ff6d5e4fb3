"""A1111's samplers and schedule types, mapped onto diffusers scheduler classes and sigma options
(the table of the diffusers docs), and back for `info`.

A sampler maps to a class, optionally with a sigma option ("DPMSolverMultistepScheduler:karras").
The option comes from a legacy name's suffix ("DPM++ 2M Karras", which wins, as in A1111) or the
separate `scheduler` field (A1111 >= 1.9). "Automatic" keeps the model's own sigma schedule:
A1111 >= 1.9 picks Karras for some samplers under "Automatic"; here, as in A1111 < 1.9, ask for
"Karras" by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagine.errors import InvalidRequest
from imagine.models.spec import FamilySpec, supported_sigma_options

__all__ = ["SAMPLERS", "Sampler", "sampler_names", "samplers", "scheduler_for", "schedulers"]


@dataclass(frozen=True, slots=True)
class Sampler:
    name: str
    aliases: tuple[str, ...]
    classes: tuple[str, ...]  # diffusers classes; the first the model's family allows is used
    sigmas: str | None = None  # the option a legacy name carries ("DPM++ 2M Karras")


# Left out: "DPM++ 2M SDE" (DPM++ with algorithm_type="sde-dpmsolver++": no canonical scheduler
# string carries it), LMS (needs scipy; not among the families' schedulers), DPM fast/adaptive.
_BASE = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), ("DPMSolverMultistepScheduler",)),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), ("DPMSolverSinglestepScheduler",)),
    Sampler("DPM2", ("k_dpm_2",), ("KDPM2DiscreteScheduler",)),
    Sampler("DPM2 a", ("k_dpm_2_a",), ("KDPM2AncestralDiscreteScheduler",)),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), ("EulerAncestralDiscreteScheduler",)),
    # Forge's "Euler" on flow-matching models (SD3, FLUX) is their flow Euler
    Sampler("Euler", ("k_euler",), ("EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler")),
    Sampler("Heun", ("k_heun",), ("HeunDiscreteScheduler",)),
    Sampler("DDIM", ("ddim",), ("DDIMScheduler",)),
    Sampler("DDPM", ("ddpm",), ("DDPMScheduler",)),
    Sampler("UniPC", ("unipc",), ("UniPCMultistepScheduler",)),
    Sampler("DEIS", ("deis",), ("DEISMultistepScheduler",)),
    Sampler("LCM", ("k_lcm",), ("LCMScheduler",)),
)
# The names A1111 < 1.9 listed with Karras sigmas (it still accepts any "<sampler> <schedule>").
_KARRAS = tuple(
    Sampler(f"{s.name} Karras", (f"{s.aliases[0]}_ka",), s.classes, "karras")
    for s in _BASE
    if s.name in ("DPM++ 2M", "DPM++ SDE", "DPM2", "DPM2 a")
)
SAMPLERS = _BASE + _KARRAS
_BY_NAME = {n.lower(): s for s in SAMPLERS for n in (s.name, *s.aliases)}

# A1111's schedule types: (name, label, default_rho, need_inner_model) → the sigma option
# ("" = none: the model's own spacing). A1111's others (Polyexponential, SGM Uniform, KL
# Optimal, Align Your Steps, Simple, Normal, DDIM) have no diffusers counterpart here.
_SCHEDULES = (
    ("automatic", "Automatic", -1.0, False, None),
    ("uniform", "Uniform", -1.0, True, ""),
    ("karras", "Karras", 7.0, False, "karras"),
    ("exponential", "Exponential", -1.0, False, "exponential"),
    ("beta", "Beta", -1.0, False, "beta"),
)
_SCHEDULE_BY_NAME = {k.lower(): row for row in _SCHEDULES for k in row[:2]}
_LABELS = {row[4]: row[1] for row in _SCHEDULES if row[4]}


def scheduler_for(sampler: str | None, schedule: str | None, spec: FamilySpec) -> str | None:
    """The canonical scheduler ("Class" or "Class:option") for an A1111 sampler and schedule
    type on a model of `spec`; None: the model's default. Raises InvalidRequest naming
    `sampler_name` or `scheduler` and listing the valid names."""
    row = None
    if schedule is not None:
        row = _SCHEDULE_BY_NAME.get(schedule.strip().lower())
        if row is None:
            valid = ", ".join(label for _, label, *_ in _SCHEDULES)
            raise InvalidRequest(
                f"scheduler = {schedule[:40]!r} is unknown: must be one of {valid}",
                field="scheduler",
            )
    option = row[4] if row is not None else None
    if sampler is None:  # the model's default sampler, with the schedule type asked for
        cls, named = spec.default_scheduler, None
    else:
        found = _BY_NAME.get(sampler.strip().lower())
        named = found.sigmas if found else None
        if found is None:  # "<sampler> <schedule label>", as A1111 >= 1.9 accepts
            base, _, label = sampler.strip().rpartition(" ")
            suffix = _SCHEDULE_BY_NAME.get(label.lower())
            found = _BY_NAME.get(base.lower()) if suffix and suffix[4] else None
            named = suffix[4] if found and suffix else None
        allowed = [c for c in (found.classes if found else ()) if c in spec.schedulers]
        if not allowed:
            valid = ", ".join(s["name"] for s in samplers(spec))
            what = "unknown" if found is None else f"not available for {spec.name} models"
            raise InvalidRequest(
                f"sampler_name = {sampler[:40]!r} is {what}: must be one of {valid}",
                field="sampler_name",
            )
        cls = allowed[0]
    sigmas = named or option  # a schedule in the sampler's name wins, as in A1111
    if sigmas and sigmas not in supported_sigma_options(spec, cls):
        field, value = ("sampler_name", sampler) if named else ("scheduler", schedule)
        valid = ", ".join(
            ["Automatic", "Uniform"] + [_LABELS[o] for o in supported_sigma_options(spec, cls)]
        )
        raise InvalidRequest(
            f"{field} = {str(value)[:40]!r}: {sampler_names(cls)[0]} takes no {_LABELS[sigmas]} "
            f"schedule on {spec.name} models; its schedule types: {valid}",
            field=field,
        )
    if sampler is None and not sigmas:
        return None
    return f"{cls}:{sigmas}" if sigmas else cls


def sampler_names(scheduler: str) -> tuple[str, str]:
    """(A1111 sampler name, schedule label) of a canonical scheduler, for `info`."""
    cls, _, option = scheduler.partition(":")
    name = next((s.name for s in _BASE if cls in s.classes), cls)
    return name, _LABELS.get(option, option.title() or "Automatic")


def samplers(spec: FamilySpec | None = None) -> list[dict[str, Any]]:
    """`GET /sdapi/v1/samplers`: every sampler, or those a model of `spec` can run."""
    return [
        {
            "name": s.name,
            "aliases": list(s.aliases),
            "options": {"scheduler": s.sigmas} if s.sigmas else {},
        }
        for s in SAMPLERS
        if spec is None or any(_runs(spec, c, s.sigmas) for c in s.classes)
    ]


def _runs(spec: FamilySpec, cls: str, sigmas: str | None) -> bool:
    return cls in spec.schedulers and (not sigmas or sigmas in supported_sigma_options(spec, cls))


def schedulers() -> list[dict[str, Any]]:
    """`GET /sdapi/v1/schedulers`."""
    return [
        {"name": n, "label": label, "aliases": None, "default_rho": rho, "need_inner_model": inner}
        for n, label, rho, inner, _ in _SCHEDULES
    ]
