"""Step functions of the flow-matching transformer families: SD3 and FLUX.1.

Each mirrors its pipeline's `__call__` (diffusers 0.42.1) for one request. SD3: CFG rows
[uncond, cond] with per-row pooled projections, the dynamic shift `mu` from the latent size.
FLUX: one row per request (its guidance is embedded: a [B] guidance vector), `true_cfg_scale`
> 1 with a negative prompt adds a negative row; the text and image position ids are 2-D and
shared by the batch (same size; the T5 text is padded to the same length); timesteps / 1000.
Neither pipeline passes a generator to its scheduler's `step`, so neither do these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from imagine.models.stepwise.row import Row, groups, initial_latents, stack, timesteps

# The pipelines' own max_sequence_length defaults: every prompt is padded to them, which is what
# lets rows of different prompts share one transformer call.
SD3_TEXT_LENGTH = 256
FLUX_TEXT_LENGTH = 512


def _shift(scheduler: Any, image_seq_len: int, max_shift: float) -> float:
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift  # slow import: see unet.py

    config = scheduler.config
    return calculate_shift(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", max_shift),
    )


def _retrieve_timesteps(*args: Any, **kwargs: Any) -> Any:
    from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps  # slow: see unet.py

    return retrieve_timesteps(*args, **kwargs)


def _rows_of(negative: torch.Tensor | None, positive: torch.Tensor, i: int) -> torch.Tensor:
    one = slice(i, i + 1)
    return positive[one] if negative is None else torch.cat([negative[one], positive[one]])


class SD3Steps:
    """StableDiffusion3Pipeline."""

    def encode(self, pipe: Any, rows: Sequence[Row]) -> None:
        key = lambda row: (row.request.guidance_scale > 1, row.request.negative_prompt is None)  # noqa: E731
        for group in groups(rows, key):
            cfg = group[0].request.guidance_scale > 1
            negatives = None
            if group[0].request.negative_prompt is not None:
                negatives = [row.request.negative_prompt or "" for row in group]
            embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                prompt=[row.request.prompt for row in group],
                prompt_2=None,
                prompt_3=None,
                negative_prompt=negatives,
                do_classifier_free_guidance=cfg,
                device=pipe._execution_device,
                num_images_per_prompt=1,
                max_sequence_length=SD3_TEXT_LENGTH,
            )
            for i, row in enumerate(group):
                row.cond["encoder_hidden_states"] = _rows_of(negative if cfg else None, embeds, i)
                row.cond["pooled_projections"] = _rows_of(
                    negative_pooled if cfg else None, pooled, i
                )
                row.copies = 2 if cfg else 1
                row.cfg_scale = row.request.guidance_scale

    def prepare(self, pipe: Any, row: Row) -> None:
        device = pipe._execution_device
        row.latents = initial_latents(pipe, row, pipe.transformer.config.in_channels)
        kwargs: dict[str, Any] = {}
        if row.scheduler.config.get("use_dynamic_shifting", None):
            _, _, height, width = row.latents.shape
            patch = pipe.transformer.config.patch_size
            kwargs["mu"] = _shift(row.scheduler, (height // patch) * (width // patch), 1.16)
        row.timesteps, _ = _retrieve_timesteps(
            row.scheduler, row.request.num_inference_steps, device, sigmas=None, **kwargs
        )

    def forward(self, pipe: Any, rows: Sequence[Row]) -> torch.Tensor:
        return pipe.transformer(
            hidden_states=torch.cat([torch.cat([row.latents] * row.copies) for row in rows]),
            timestep=timesteps(rows),
            encoder_hidden_states=stack(rows, "encoder_hidden_states"),
            pooled_projections=stack(rows, "pooled_projections"),
            return_dict=False,
        )[0]

    def decode(self, pipe: Any, rows: Sequence[Row]) -> list[Any]:
        latents = torch.cat([row.latents for row in rows])
        config = pipe.vae.config
        latents = latents / config.scaling_factor + config.shift_factor
        image = pipe.vae.decode(latents, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="pil")


class FluxSteps:
    """FluxPipeline."""

    def encode(self, pipe: Any, rows: Sequence[Row]) -> None:
        embeds, pooled, text_ids = self._encode(pipe, [row.request.prompt for row in rows])
        true_cfg = [row for row in rows if _true_cfg(row) > 1]
        negatives: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if true_cfg:
            neg, neg_pooled, _ = self._encode(pipe, [r.request.negative_prompt for r in true_cfg])
            negatives = {
                id(r): (neg[i : i + 1], neg_pooled[i : i + 1]) for i, r in enumerate(true_cfg)
            }
        guidance_embeds = pipe.transformer.config.guidance_embeds
        for i, row in enumerate(rows):
            one = slice(i, i + 1)
            negative = negatives.get(id(row))
            row.cond["encoder_hidden_states"] = embeds[one]
            row.cond["pooled_projections"] = pooled[one]
            if negative is not None:
                row.cond["encoder_hidden_states"] = torch.cat([negative[0], embeds[one]])
                row.cond["pooled_projections"] = torch.cat([negative[1], pooled[one]])
            row.copies = 2 if negative is not None else 1
            row.cfg_scale = _true_cfg(row)
            if guidance_embeds:
                row.cond["guidance"] = torch.full(
                    [row.copies],
                    row.request.guidance_scale,
                    device=embeds.device,
                    dtype=torch.float32,
                )
            row.shared["txt_ids"] = text_ids

    def _encode(self, pipe: Any, prompts: list[Any]) -> tuple[torch.Tensor, ...]:
        return pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            max_sequence_length=FLUX_TEXT_LENGTH,
        )

    def prepare(self, pipe: Any, row: Row) -> None:
        device = pipe._execution_device
        steps = row.request.num_inference_steps
        channels = pipe.transformer.config.in_channels // 4
        row.latents, row.shared["img_ids"] = initial_latents(pipe, row, channels)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        if getattr(row.scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        mu = _shift(row.scheduler, row.latents.shape[1], 1.15)
        row.timesteps, _ = _retrieve_timesteps(row.scheduler, steps, device, sigmas=sigmas, mu=mu)
        row.scheduler.set_begin_index(0)

    def forward(self, pipe: Any, rows: Sequence[Row]) -> torch.Tensor:
        latents = torch.cat([torch.cat([row.latents] * row.copies) for row in rows])
        guidance = stack(rows, "guidance") if "guidance" in rows[0].cond else None
        return pipe.transformer(
            hidden_states=latents,
            timestep=timesteps(rows, latents.dtype) / 1000,
            guidance=guidance,
            pooled_projections=stack(rows, "pooled_projections"),
            encoder_hidden_states=stack(rows, "encoder_hidden_states"),
            txt_ids=rows[0].shared["txt_ids"],
            img_ids=rows[0].shared["img_ids"],
            return_dict=False,
        )[0]

    def decode(self, pipe: Any, rows: Sequence[Row]) -> list[Any]:
        row = rows[0]
        latents = torch.cat([r.latents for r in rows])
        latents = pipe._unpack_latents(latents, row.height, row.width, pipe.vae_scale_factor)
        config = pipe.vae.config
        latents = latents / config.scaling_factor + config.shift_factor
        image = pipe.vae.decode(latents, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="pil")


def _true_cfg(row: Row) -> float:
    if row.request.negative_prompt is None:
        return 1.0
    return float(dict(row.request.extras).get("true_cfg_scale", 1.0))


SD3 = SD3Steps()
FLUX = FluxSteps()
