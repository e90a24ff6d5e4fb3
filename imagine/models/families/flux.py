"""FLUX.1 (FluxPipeline). Guidance is *embedded* (FLUX.1-dev: one pass, no CFG), so a negative
prompt does nothing unless `true_cfg_scale` > 1, which runs a second, real CFG pass."""

from __future__ import annotations

from imagine.models.families._common import (
    FLOW_OVERRIDES,
    FLOW_SCHEDULERS,
    FLOW_SIGMA_OPTIONS,
    GUIDANCE_RANGE,
    standard_call_kwargs,
)
from imagine.models.preview import FLUX
from imagine.models.spec import FamilySpec
from imagine.models.stepwise import flow

SPEC = FamilySpec(
    name="flux",
    pipeline_classes=("FluxPipeline",),
    default_steps=28,
    default_guidance=3.5,
    default_width=1024,
    default_height=1024,
    size_multiple=16,  # the pipeline silently floors other sizes; we reject them instead
    guidance_range=GUIDANCE_RANGE,
    schedulers=FLOW_SCHEDULERS,
    sigma_options=FLOW_SIGMA_OPTIONS,
    default_scheduler="FlowMatchEulerDiscreteScheduler",
    scheduler_overrides=FLOW_OVERRIDES,
    max_prompt_tokens=512,
    extras={"true_cfg_scale": (1.0, 20.0)},
    build_call_kwargs=standard_call_kwargs,
    negative_prompt_scale="true_cfg_scale",
    preferred_dtype="bfloat16",
    preview=FLUX,
    stepwise=flow.FLUX,
)
