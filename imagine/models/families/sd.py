"""Stable Diffusion 1.x / 2.x (StableDiffusionPipeline, UNet + CLIP, 8x latent VAE)."""

from __future__ import annotations

from imagine.models.families._common import (
    EULER_SCHEDULERS,
    EULER_SIGMA_OPTIONS,
    GUIDANCE_RANGE,
    standard_call_kwargs,
)
from imagine.models.preview import SD15
from imagine.models.spec import FamilySpec
from imagine.models.stepwise import unet

SPEC = FamilySpec(
    name="sd",
    pipeline_classes=("StableDiffusionPipeline",),
    default_steps=30,
    default_guidance=7.5,
    # 512 for SD 1.x; the registry replaces it with the model's own size (768 for SD 2.x).
    default_width=512,
    default_height=512,
    size_multiple=8,
    guidance_range=GUIDANCE_RANGE,
    schedulers=EULER_SCHEDULERS,
    sigma_options=EULER_SIGMA_OPTIONS,
    # SD 1.5 ships PNDM, which fails below 4 steps; the registry keeps the model's own scheduler
    # when it is in the allow-list and falls back to this one otherwise.
    default_scheduler="EulerDiscreteScheduler",
    max_prompt_tokens=77,
    build_call_kwargs=standard_call_kwargs,
    preview=SD15,
    stepwise=unet.SD,
)
