"""Pieces the family specs share: scheduler allow-lists and the standard call-kwargs builder.

Scheduler lists come from checks on diffusers 0.42.1 (see docs/models.md and the README):
- Euler-family (epsilon / v-prediction) models run all of EULER_SCHEDULERS. Left out on purpose:
  DPMSolverSDE (needs torchsde), LMS (needs scipy), EDMEuler (another parameterisation) and PNDM
  (fails below 4 steps).
- Flow-matching models (SD3, FLUX) run FlowMatchEuler, and DPM++ / UniPC only with flow sigmas
  (FLOW_OVERRIDES); FlowMatchHeun fails on FLUX.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from imagine.request import GenerationRequest

EULER_SCHEDULERS: tuple[str, ...] = (
    "DDIMScheduler",
    "DDPMScheduler",
    "DEISMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "UniPCMultistepScheduler",
    "LCMScheduler",
)

FLOW_SCHEDULERS: tuple[str, ...] = (
    "FlowMatchEulerDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
)

# Which sigma options (spec.SIGMA_OPTIONS) each class really applies, checked on diffusers 0.42.1:
# built from SD 1.5 / SDXL / SD3 / FLUX scheduler configs with the flag, timesteps set as the
# pipelines set them, then sampled (4 and 20 steps) with the exact denoiser of a Gaussian data set:
# a kept option changed the schedule and still ended at the data's mean and spread. Each kept
# (family, class, option) also ran at 1, 2, 3 and 8 steps on the tiny pipelines of every family.
# - Epsilon / v-prediction: the eight below take all three. DDIM, DDPM, EulerAncestral and LCM
#   have no such flags: diffusers drops them and runs the default schedule.
# - Flow matching: FlowMatchEuler takes all three (applied after the shift); UniPC with flow
#   sigmas takes karras only (its exponential and beta schedules ignore the flow sigmas: NaN);
#   DPM++ with flow sigmas takes none (all three ignore the flow sigmas: NaN).
_ALL_SIGMAS: tuple[str, ...] = ("karras", "exponential", "beta")
EULER_SIGMA_OPTIONS: Mapping[str, tuple[str, ...]] = {
    name: _ALL_SIGMAS
    for name in (
        "DEISMultistepScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
    )
}
FLOW_SIGMA_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "FlowMatchEulerDiscreteScheduler": _ALL_SIGMAS,
    "UniPCMultistepScheduler": ("karras",),
}

_FLOW_SIGMAS: Mapping[str, Any] = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
FLOW_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    "DPMSolverMultistepScheduler": _FLOW_SIGMAS,
    "UniPCMultistepScheduler": _FLOW_SIGMAS,
}

# Most models are trained at one size; guidance beyond this only burns the image.
GUIDANCE_RANGE: tuple[float, float] = (0.0, 20.0)


def standard_call_kwargs(
    requests: Sequence[GenerationRequest], generators: list[torch.Generator]
) -> dict[str, Any]:
    """Pipeline kwargs for a batch that shares one batch_key (so the scalars of the first apply
    to all). `negative_prompt` is passed only when the requests carry one: validation already
    dropped it where the family would ignore it. Extras (e.g. FLUX `true_cfg_scale`) pass through.
    """
    if len(requests) != len(generators) or not requests:
        raise ValueError("one generator per request, and at least one request")
    first = requests[0]
    kwargs: dict[str, Any] = {
        "prompt": [r.prompt for r in requests],
        "num_inference_steps": first.num_inference_steps,
        "guidance_scale": first.guidance_scale,
        "width": first.width,
        "height": first.height,
        "generator": generators,
        "output_type": "pil",
    }
    if first.negative_prompt is not None:
        kwargs["negative_prompt"] = [r.negative_prompt or "" for r in requests]
    kwargs.update(dict(first.extras))
    return kwargs
