"""Live previews of a generation in progress: after any denoising step, a small RGB picture of
each request's current x0 estimate (the predicted clean image), with no VAE decode.

The idea is ComfyUI's "Latent2RGB" previewer: each VAE latent pixel is, to a first approximation,
a linear function of the colour of the patch it encodes, so `rgb = x0 · factors + bias` (one RGB
row per latent channel, result in [-1, 1]) gives a blurry but recognisable picture for almost
nothing. TAESD (a tiny distilled decoder) would look nicer but costs a model per latent space.

`PreviewSpec` and the constants import no torch (FamilySpec carries one, and spec.py is a torch-free
contract module); `PreviewTap` imports torch and Pillow lazily, in its methods.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

RGB = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class PreviewSpec:
    """How to turn one latent space's x0 into RGB in [-1, 1]."""

    factors: tuple[RGB, ...]  # one RGB row per latent channel
    bias: RGB = (0.0, 0.0, 0.0)
    packed: bool = False  # FLUX: latents are (B, (h/2)*(w/2), 4*C), 2x2 patches packed
    pixel_space: bool = False  # the x0 is already RGB in [-1, 1] (factors unused)


# Linear latent->RGB coefficients: `latent_rgb_factors` / `latent_rgb_factors_bias` from ComfyUI's
# comfy/latent_formats.py (github.com/comfyanonymous/ComfyUI, commit 040a3243). ComfyUI is
# GPL-3.0; only the numbers are taken (measured facts about each VAE's latent space), no code.
# They apply to the latents as the pipelines hold them (scaled, and shifted for SD3/FLUX), which
# is ComfyUI's "process_in" space.
SD15 = PreviewSpec(
    factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)
SDXL = PreviewSpec(  # also Kolors, which ships the SDXL VAE
    factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    bias=(0.1084, -0.0175, -0.0011),
)
SD3 = PreviewSpec(
    factors=(
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    bias=(0.2394, 0.2135, 0.1925),
)
FLUX = PreviewSpec(
    factors=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    bias=(-0.0329, -0.0718, -0.0851),
    packed=True,
)
# imagine/shapes denoises RGB itself (at half resolution; its "VAE" is a 2x upsampler).
PIXELS = PreviewSpec(factors=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), pixel_space=True)

# Multistep solvers whose `model_outputs` hold data (x0) predictions; others hold noise.
_DATA_ALGORITHMS = frozenset({"dpmsolver++", "sde-dpmsolver++", "data_prediction"})
_FLOW_SCHEDULERS = frozenset({"FlowMatchEulerDiscreteScheduler"})
_MISSING = object()


class PreviewTap:
    """Records the x0 estimate of every row after each `pipe.scheduler.step` of one pipeline call.

    Enter it on the model's thread after the call's scheduler is set, and read `image(row)` from
    `callback_on_step_end` (same thread, after the step). Exiting restores `scheduler.step`.
    The recorded tensors are references, not copies; x0 rows are computed only when asked for.
    """

    def __init__(
        self,
        pipe: Any,
        preview: PreviewSpec,
        *,
        height: int,
        width: int,
        vae_scale_factor: int | None = None,
        scheduler: Any = None,
    ) -> None:
        self._pipe = pipe
        # The scheduler whose steps it records: the pipeline's (one call), or one request's own
        # (step-level batching gives every request a scheduler instance).
        self._target = scheduler
        self._preview = preview
        self._height, self._width = int(height), int(width)
        self._vae_scale = int(vae_scale_factor or getattr(pipe, "vae_scale_factor", None) or 8)
        self._scheduler: Any = None
        self._saved: Any = _MISSING
        # x0 = a * first + b * second (second None: x0 = first), each (B, ...).
        self._record: tuple[torch.Tensor, torch.Tensor | None, float, float] | None = None
        self.source: str | None = None  # where the latest x0 came from (see _capture)

    def __enter__(self) -> PreviewTap:
        target = self._target if self._target is not None else self._pipe.scheduler
        scheduler = self._scheduler = target
        self._saved = vars(scheduler).get("step", _MISSING)
        original = scheduler.step

        # wraps: pipelines read the step's signature to decide whether to pass eta / generator.
        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            return_dict = kwargs.pop("return_dict", True)
            out = original(*args, return_dict=True, **kwargs)
            try:
                self._capture(scheduler, out, args, kwargs)
            except Exception:  # a preview must never fail the generation
                log.debug("preview capture failed", exc_info=True)
            if return_dict or not dataclasses.is_dataclass(out):
                return out
            return tuple(getattr(out, f.name) for f in dataclasses.fields(out))

        scheduler.step = step
        return self

    def __exit__(self, *exc: object) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        if self._saved is _MISSING:
            vars(scheduler).pop("step", None)
        else:
            scheduler.step = self._saved

    def available(self) -> bool:
        """Whether a step has been recorded."""
        return self._record is not None

    def _capture(self, scheduler: Any, out: Any, args: tuple, kwargs: dict) -> None:
        model_output = args[0] if args else kwargs.get("model_output")
        sample = args[2] if len(args) > 2 else kwargs.get("sample")
        config = scheduler.config
        latest = getattr(scheduler, "model_outputs", None)
        latest = latest[-1] if latest else None
        for name in ("pred_original_sample", "denoised"):  # Euler, DDIM, Heun, KDPM2 / LCM
            if getattr(out, name, None) is not None:
                return self._set(name, getattr(out, name))
        if latest is not None:  # DPM-Solver, UniPC, DEIS: the data (or noise) prediction
            if config.get("algorithm_type") in _DATA_ALGORITHMS or config.get("predict_x0"):
                return self._set("model_outputs", latest)
            sigma = _last_sigma(scheduler)
            if sigma is not None and sample is not None:
                alpha_t, sigma_t = (float(v) for v in scheduler._sigma_to_alpha_sigma_t(sigma))
                return self._set(
                    "model_outputs_eps", sample, latest, 1 / alpha_t, -sigma_t / alpha_t
                )
        elif type(scheduler).__name__ in _FLOW_SCHEDULERS and "per_token_timesteps" not in kwargs:
            sigma = _last_sigma(scheduler)  # flow matching: x0 = x_t - sigma * v
            if sigma is not None and sample is not None and model_output is not None:
                return self._set("flow", sample, model_output, 1.0, -float(sigma))
        prev = getattr(out, "prev_sample", None)
        self._set("prev_sample", prev if prev is not None else out[0])

    def _set(
        self, source: str, first: Any, second: Any = None, a: float = 1.0, b: float = 0.0
    ) -> None:
        second = second.detach() if second is not None else None
        self._record = (first.detach(), second, a, b)
        self.source = source

    def x0(self, row: int) -> torch.Tensor | None:
        """The latest x0 of `row` as float32 (C, h, w), unpacked for FLUX; None before a step.
        It may share memory with the pipeline's tensors: read it, never write to it."""
        if self._record is None:
            return None
        first, second, a, b = self._record
        if not 0 <= row < first.shape[0]:
            raise IndexError(f"row {row} out of a batch of {first.shape[0]}")
        import torch

        x = first[row].float()
        if second is not None:
            x = torch.add(x * a if a != 1.0 else x, second[row].float(), alpha=b)
        if self._preview.packed and x.ndim == 2:
            x = self._unpack(x)
        return x

    def _unpack(self, x: torch.Tensor) -> torch.Tensor | None:
        """One row of FluxPipeline._unpack_latents: (h/2 * w/2, 4C) -> (C, h, w)."""
        h = 2 * (self._height // (self._vae_scale * 2))
        w = 2 * (self._width // (self._vae_scale * 2))
        n, c4 = x.shape
        if n != (h // 2) * (w // 2) or c4 % 4:
            return None
        x = x.reshape(h // 2, w // 2, c4 // 4, 2, 2).permute(2, 0, 3, 1, 4)
        return x.reshape(c4 // 4, h, w)

    def image(self, row: int, *, max_side: int = 256) -> Image.Image | None:
        """The latest x0 of `row` as an RGB picture with the generation's aspect ratio, its longer
        side <= max_side and never above the x0's own resolution; None before the first step.
        A latent with another channel count than the spec's gets a grey picture of the mean."""
        import torch
        import torch.nn.functional as F
        from PIL import Image

        x = self.x0(row)
        if x is None or x.ndim != 3:
            return None
        channels, h, w = x.shape
        if self._preview.pixel_space and channels == 3:
            rgb = x
        elif channels == len(self._preview.factors):
            factors = torch.tensor(self._preview.factors, dtype=torch.float32, device=x.device)
            bias = torch.tensor(self._preview.bias, dtype=torch.float32, device=x.device)
            rgb = torch.einsum("chw,cr->rhw", x, factors) + bias.view(3, 1, 1)
        else:
            rgb = x.mean(0, keepdim=True).expand(3, h, w)
        size = self._size(h, w, max_side)
        if size != (h, w):
            rgb = F.interpolate(rgb[None], size=size, mode="area")[0]
        pixels = rgb.add(1.0).mul(127.5).clamp(0, 255).round().to(torch.uint8)
        return Image.fromarray(pixels.permute(1, 2, 0).contiguous().cpu().numpy(), "RGB")

    def _size(self, h: int, w: int, max_side: int) -> tuple[int, int]:
        """(height, width) of the preview: the requested aspect, the longer side capped."""
        side = max(1, min(max_side, max(h, w)))
        if self._width >= self._height:
            return max(1, round(side * self._height / self._width)), side
        return side, max(1, round(side * self._width / self._height))


def _last_sigma(scheduler: Any) -> Any:
    """The sigma of the step just taken (step_index was advanced by it)."""
    index, sigmas = getattr(scheduler, "step_index", None), getattr(scheduler, "sigmas", None)
    if index is None or sigmas is None or index < 1:
        return None
    return sigmas[index - 1]
