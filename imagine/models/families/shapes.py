"""The embedded model `imagine/shapes` (weights in imagine/models/builtin/weights/, owned by the
lead): a pixel-space 32x32 UNet behind a 2x upsampling "VAE", loaded as a StableDiffusionPipeline.

The numbers below are the model's; change them here when the model changes. The registry uses this
spec as is for the embedded model (no per-folder overrides).

It always draws at its native 64x64 and the manager scales the picture to the requested size
(`render_size`): run at 256x256 its UNet sees a 128x128 canvas it was never trained on and tiles
dozens of small objects over it instead of the one scene the prompt asks for.
"""

from __future__ import annotations

from imagine.models.families._common import (
    EULER_SCHEDULERS,
    EULER_SIGMA_OPTIONS,
    standard_call_kwargs,
)
from imagine.models.preview import PIXELS
from imagine.models.spec import FamilySpec
from imagine.models.stepwise import unet

MODEL_ID = "imagine/shapes"
NATIVE_SIZE = 64  # 32x32 UNet x 2 upsampling
DEFAULT_STEPS = 16
DEFAULT_GUIDANCE = 5.0
DEFAULT_SCHEDULER = "DPMSolverMultistepScheduler"
SIZE_MULTIPLE = 8
# No beta sigmas: they are linear in sigma, and on these linear betas (sigma_max ~157) they spend
# the steps at high noise and end far from the data's spread even at 20 steps (checked on
# diffusers 0.42.1 as in _common.py).
SIGMA_OPTIONS = {name: ("karras", "exponential") for name in EULER_SIGMA_OPTIONS}
# Offered by clients (the web page): the native size, larger squares it scales up to, and the
# non-square sizes the evaluator was checked at (they stretch the square scene).
SIZE_PRESETS = ((64, 64), (128, 128), (256, 256), (512, 512), (96, 64), (64, 96))


SPEC = FamilySpec(
    name="shapes",
    # Same pipeline class as "sd": the registry picks this spec by model id, not by class.
    pipeline_classes=(),
    default_steps=DEFAULT_STEPS,
    default_guidance=DEFAULT_GUIDANCE,
    default_width=NATIVE_SIZE,
    default_height=NATIVE_SIZE,
    size_multiple=SIZE_MULTIPLE,
    guidance_range=(0.0, 20.0),
    schedulers=EULER_SCHEDULERS,
    sigma_options=SIGMA_OPTIONS,
    default_scheduler=DEFAULT_SCHEDULER,
    # A pixel-space model under guidance predicts x0 far outside [-1, 1] early on; DDIM/DDPM's
    # clip_sample then clips x0 but keeps the unclipped noise estimate, and the picture washes
    # out (measured: background 10 % with DDIM vs 100 % with DPM++ on the same weights).
    scheduler_overrides={
        "DDIMScheduler": {"clip_sample": False},
        "DDPMScheduler": {"clip_sample": False},
    },
    max_prompt_tokens=24,  # the tokenizer's model_max_length (build.MAX_TOKENS)
    build_call_kwargs=standard_call_kwargs,
    preferred_dtype="float32",  # tiny model: half precision buys nothing and risks NaNs
    preview=PIXELS,
    render_size=(NATIVE_SIZE, NATIVE_SIZE),
    size_presets=SIZE_PRESETS,
    stepwise=unet.SD,
)
