"""Step functions of the UNet families: SD 1.x/2.x (and imagine/shapes), SDXL and Kolors.

Each mirrors its pipeline's `__call__` (diffusers 0.42.1) for one request: `encode_prompt`,
`retrieve_timesteps`, `prepare_latents` with the request's scheduler in place, classifier-free
guidance as [uncond, cond] rows when guidance > 1 (and the UNet takes no guidance embedding),
SDXL/Kolors' pooled text and size ids as per-row `added_cond_kwargs`, LCM's guidance embedding
as a per-row `timestep_cond`, the scheduler's `step` with the request's generator, the VAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from imagine.models.stepwise.row import (
    Row,
    extra_step_kwargs,
    groups,
    initial_latents,
    stack,
    timesteps,
)


def _do_cfg(pipe: Any, row: Row) -> bool:
    return row.request.guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None


def _encode_key(pipe: Any, row: Row) -> tuple[bool, bool]:
    # A missing negative prompt is not "" for SDXL (zeros when force_zeros_for_empty_prompt):
    # rows are encoded together only when both are alike.
    return _do_cfg(pipe, row), row.request.negative_prompt is None


def _negatives(rows: Sequence[Row]) -> list[str] | None:
    if rows[0].request.negative_prompt is None:
        return None
    return [row.request.negative_prompt or "" for row in rows]


class SDSteps:
    """StableDiffusionPipeline (SD 1.x/2.x, imagine/shapes)."""

    begin_index_zero = False  # SD's __call__ does not call scheduler.set_begin_index(0)

    def encode(self, pipe: Any, rows: Sequence[Row]) -> None:
        for group in groups(rows, lambda row: _encode_key(pipe, row)):
            cfg = _do_cfg(pipe, group[0])
            embeds, negative = pipe.encode_prompt(
                [row.request.prompt for row in group],
                pipe._execution_device,
                1,
                cfg,
                _negatives(group),
            )
            for i, row in enumerate(group):
                self._conditioning(pipe, row, embeds[i : i + 1], negative, i, cfg)

    def _conditioning(
        self, pipe: Any, row: Row, embeds: torch.Tensor, negative: Any, i: int, cfg: bool
    ) -> None:
        row.cond["encoder_hidden_states"] = (
            torch.cat([negative[i : i + 1], embeds]) if cfg else embeds
        )
        self._finish_conditioning(pipe, row, cfg, embeds.dtype)

    def _finish_conditioning(self, pipe: Any, row: Row, cfg: bool, dtype: torch.dtype) -> None:
        row.copies = 2 if cfg else 1
        row.cfg_scale = row.request.guidance_scale
        dim = pipe.unet.config.time_cond_proj_dim
        if dim is not None:  # LCM-distilled UNets embed the guidance instead of running CFG
            scale = torch.tensor(row.request.guidance_scale - 1).repeat(1)
            embedding = pipe.get_guidance_scale_embedding(scale, embedding_dim=dim)
            row.cond["timestep_cond"] = embedding.to(device=pipe._execution_device, dtype=dtype)

    def prepare(self, pipe: Any, row: Row) -> None:
        # Imported here: the family specs import this module, and diffusers' pipeline modules
        # take seconds to import (the HTTP edge reads the specs without running a pipeline).
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
            retrieve_timesteps,
        )

        device = pipe._execution_device
        row.timesteps, _ = retrieve_timesteps(
            row.scheduler, row.request.num_inference_steps, device
        )
        if self.begin_index_zero and hasattr(row.scheduler, "set_begin_index"):
            row.scheduler.set_begin_index(0)
        row.latents = initial_latents(pipe, row, pipe.unet.config.in_channels)
        row.step_kwargs = extra_step_kwargs(pipe, row)

    def forward(self, pipe: Any, rows: Sequence[Row]) -> torch.Tensor:
        sample = torch.cat(
            [
                row.scheduler.scale_model_input(torch.cat([row.latents] * row.copies), row.t)
                for row in rows
            ]
        )
        timestep_cond = stack(rows, "timestep_cond") if "timestep_cond" in rows[0].cond else None
        return pipe.unet(
            sample,
            timesteps(rows),
            encoder_hidden_states=stack(rows, "encoder_hidden_states"),
            timestep_cond=timestep_cond,
            added_cond_kwargs=self._added(rows),
            return_dict=False,
        )[0]

    def _added(self, rows: Sequence[Row]) -> dict[str, torch.Tensor] | None:
        return None

    def decode(self, pipe: Any, rows: Sequence[Row]) -> list[Any]:
        latents = torch.cat([row.latents for row in rows])
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        image, nsfw = pipe.run_safety_checker(image, pipe._execution_device, latents.dtype)
        denormalize = [True] * image.shape[0] if nsfw is None else [not n for n in nsfw]
        return pipe.image_processor.postprocess(
            image, output_type="pil", do_denormalize=denormalize
        )


class SDXLSteps(SDSteps):
    """StableDiffusionXLPipeline: two CLIPs, pooled text and size ids per row."""

    begin_index_zero = True

    def encode(self, pipe: Any, rows: Sequence[Row]) -> None:
        for group in groups(rows, lambda row: _encode_key(pipe, row)):
            cfg = _do_cfg(pipe, group[0])
            embeds, negative, pooled, negative_pooled = self._encode_prompt(
                pipe, [row.request.prompt for row in group], cfg, _negatives(group)
            )
            for i, row in enumerate(group):
                one = slice(i, i + 1)
                row.cond["encoder_hidden_states"] = (
                    torch.cat([negative[one], embeds[one]]) if cfg else embeds[one]
                )
                row.cond["text_embeds"] = (
                    torch.cat([negative_pooled[one], pooled[one]]) if cfg else pooled[one]
                )
                ids = self._time_ids(pipe, row, embeds.dtype, pooled)
                row.cond["time_ids"] = ids.repeat(row.cond["text_embeds"].shape[0], 1)
                self._finish_conditioning(pipe, row, cfg, embeds.dtype)

    def _encode_prompt(
        self, pipe: Any, prompts: list[str], cfg: bool, negatives: list[str] | None
    ) -> tuple[torch.Tensor, ...]:
        return pipe.encode_prompt(
            prompt=prompts,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=negatives,
        )

    def _projection_dim(self, pipe: Any, pooled: torch.Tensor) -> int:
        if pipe.text_encoder_2 is None:
            return int(pooled.shape[-1])
        return pipe.text_encoder_2.config.projection_dim

    def _time_ids(self, pipe: Any, row: Row, dtype: torch.dtype, pooled: Any) -> torch.Tensor:
        size = (row.height, row.width)
        ids = pipe._get_add_time_ids(
            size,
            (0, 0),
            size,
            dtype=dtype,
            text_encoder_projection_dim=self._projection_dim(pipe, pooled),
        )
        return ids.to(pipe._execution_device)

    def _added(self, rows: Sequence[Row]) -> dict[str, torch.Tensor] | None:
        return {"text_embeds": stack(rows, "text_embeds"), "time_ids": stack(rows, "time_ids")}

    def decode(self, pipe: Any, rows: Sequence[Row]) -> list[Any]:
        latents = torch.cat([row.latents for row in rows])
        vae = pipe.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        if upcast:
            pipe.upcast_vae()
            latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if upcast:
            vae.to(dtype=torch.float16)
        watermark = getattr(pipe, "watermark", None)
        if watermark is not None:
            image = watermark.apply_watermark(image)
        return pipe.image_processor.postprocess(image, output_type="pil")


class KolorsSteps(SDXLSteps):
    """KolorsPipeline: SDXL's UNet and VAE behind a ChatGLM text encoder."""

    begin_index_zero = False  # Kolors' __call__ does not call set_begin_index(0)

    def _projection_dim(self, pipe: Any, pooled: torch.Tensor) -> int:
        return int(pooled.shape[-1])


SD = SDSteps()
SDXL = SDXLSteps()
KOLORS = KolorsSteps()
