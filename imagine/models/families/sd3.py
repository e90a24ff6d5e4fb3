"""Stable Diffusion 3 (StableDiffusion3Pipeline: MMDiT, 2x CLIP + optional T5, flow matching)."""

from __future__ import annotations

from imagine.models.families._common import (
    FLOW_OVERRIDES,
    FLOW_SCHEDULERS,
    FLOW_SIGMA_OPTIONS,
    GUIDANCE_RANGE,
    standard_call_kwargs,
)
from imagine.models.preview import SD3
from imagine.models.spec import FamilySpec, OptionalPart
from imagine.models.stepwise import flow

SPEC = FamilySpec(
    name="sd3",
    pipeline_classes=("StableDiffusion3Pipeline",),
    default_steps=28,
    default_guidance=7.0,
    default_width=1024,
    default_height=1024,
    size_multiple=16,  # VAE factor 8 x patch size 2; the pipeline raises otherwise
    guidance_range=GUIDANCE_RANGE,
    schedulers=FLOW_SCHEDULERS,
    sigma_options=FLOW_SIGMA_OPTIONS,
    default_scheduler="FlowMatchEulerDiscreteScheduler",
    scheduler_overrides=FLOW_OVERRIDES,
    max_prompt_tokens=256,
    build_call_kwargs=standard_call_kwargs,
    # Without T5 (4.7B parameters; SD3-medium weighs ~6 GB instead of ~15.5) the pipeline
    # encodes the prompt with its two CLIPs alone, which read 77 tokens.
    optional_parts={
        "t5": OptionalPart(components=("text_encoder_3", "tokenizer_3"), max_prompt_tokens=77)
    },
    preview=SD3,
    stepwise=flow.SD3,
)
