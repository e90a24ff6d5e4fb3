"""Stable Diffusion XL (StableDiffusionXLPipeline, two CLIP encoders). The LCM-LoRA overrides
(LCMScheduler, 4 steps, guidance <= 2) are applied per model by the registry."""

from __future__ import annotations

from imagine.models.families._common import (
    EULER_SCHEDULERS,
    EULER_SIGMA_OPTIONS,
    GUIDANCE_RANGE,
    standard_call_kwargs,
)
from imagine.models.preview import SDXL
from imagine.models.spec import FamilySpec
from imagine.models.stepwise import unet

SPEC = FamilySpec(
    name="sdxl",
    pipeline_classes=("StableDiffusionXLPipeline",),
    default_steps=30,
    default_guidance=5.0,
    default_width=1024,
    default_height=1024,
    size_multiple=8,
    guidance_range=GUIDANCE_RANGE,
    schedulers=EULER_SCHEDULERS,
    sigma_options=EULER_SIGMA_OPTIONS,
    default_scheduler="EulerDiscreteScheduler",
    max_prompt_tokens=77,
    build_call_kwargs=standard_call_kwargs,
    preview=SDXL,
    stepwise=unet.SDXL,
)
