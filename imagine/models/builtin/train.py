"""Train the embedded `imagine/shapes` model from a seed (CPU is enough; a GPU is used if present).

    imagine train-builtin --out runs/shapes            # train (resumes from runs/shapes/ckpt.pt)
    imagine train-builtin --out runs/shapes --export imagine/models/builtin/weights

Recipe (see the model card for why): infinite procedural data, v-prediction with a min-SNR-5 + 1
loss weighting, the text encoder trained jointly from scratch, 10 % empty prompts for
classifier-free guidance, AdamW with warm-up and cosine decay, an EMA of the weights that ships.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from tqdm import tqdm
from transformers import CLIPTokenizer

from imagine.models.builtin import build, world

CFG_DROP = 0.1
MIN_SNR_GAMMA = 5.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="imagine train-builtin", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/shapes"), help="checkpoint folder")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument(
        "--max-minutes", type=float, default=0.0, help="stop (and checkpoint) after this"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--stop-at", type=int, default=0, help="stop (and checkpoint) at this step")
    p.add_argument("--export", type=Path, default=None, help="write the EMA pipeline here and exit")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this run's checkpoint weights (and EMA) with a fresh optimiser and "
        "schedule: a warm restart, for a second phase of training",
    )
    return p.parse_args(argv)


def _lr(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Trainer:
    """Owns the models, optimiser, EMA and data stream; checkpoints everything needed to resume."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        torch.manual_seed(args.seed)
        # The token ids are baked into the text encoder: a resumed or exported run must use the
        # very tokenizer it was trained with, so it lives beside the checkpoint.
        saved = args.out / "tokenizer"
        self.tokenizer = (
            CLIPTokenizer.from_pretrained(saved) if saved.exists() else build.make_tokenizer()
        )
        self.text_encoder = build.make_text_encoder(self.tokenizer).to(device)
        self.unet = build.make_unet(cross_attention_dim=self.text_encoder.config.hidden_size).to(
            device
        )
        self.ema = [copy.deepcopy(self.unet).eval(), copy.deepcopy(self.text_encoder).eval()]
        for m in self.ema:
            m.requires_grad_(False)
        self.params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=args.lr, weight_decay=0.01)
        self.noise = DDPMScheduler(**build.SCHEDULER_CONFIG)
        self.alphas = self.noise.alphas_cumprod.to(device)
        self.rng = np.random.default_rng(args.seed)
        self.step = 0

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=build.MAX_TOKENS,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids).last_hidden_state

    def train_step(self) -> float:
        args = self.args
        pixels, prompts = world.batch(self.rng, args.batch, p_vague=0.1)
        drop = self.rng.random(args.batch) < CFG_DROP
        prompts = ["" if d else p for p, d in zip(prompts, drop, strict=True)]
        x0 = torch.from_numpy(pixels).to(self.device)
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        t = torch.randint(0, build.TRAIN_TIMESTEPS, (args.batch,), generator=gen).to(self.device)
        a = self.alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        # Loss weighting, in terms of the implied x0 error: min(SNR, γ) + 1. Plain min-SNR-γ
        # (weight min(SNR, γ)) starves the high-noise steps, where background and layout are
        # decided (measured: background at chance after 1,600 steps); the +1 keeps v-prediction's
        # full weight there, the cap keeps the low-noise steps from dominating.
        snr = a.flatten() / (1 - a.flatten())
        weight = (torch.clamp(snr, max=MIN_SNR_GAMMA) + 1) / (snr + 1)

        for group in self.opt.param_groups:
            group["lr"] = _lr(self.step, args)
        pred = self.unet(noisy, t, self._encode(prompts)).sample
        loss = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * weight).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self._update_ema()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.args.ema, (1 + self.step) / (10 + self.step))
        for ema, live in zip(self.ema, (self.unet, self.text_encoder), strict=True):
            for pe, pl in zip(ema.parameters(), live.parameters(), strict=True):
                pe.lerp_(pl, 1 - decay)

    def state(self) -> dict:
        return {
            "step": self.step,
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "ema_unet": self.ema[0].state_dict(),
            "ema_text_encoder": self.ema[1].state_dict(),
            "opt": self.opt.state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load(self, state: dict) -> None:
        self.step = state["step"]
        self.unet.load_state_dict(state["unet"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.ema[0].load_state_dict(state["ema_unet"])
        self.ema[1].load_state_dict(state["ema_text_encoder"])
        self.opt.load_state_dict(state["opt"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])

    def warm_start(self, state: dict) -> None:
        """Take the weights and EMA of an earlier run; optimiser, schedule and data start anew."""
        self.unet.load_state_dict(state["unet"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.ema[0].load_state_dict(state["ema_unet"])
        self.ema[1].load_state_dict(state["ema_text_encoder"])

    def pipeline(self) -> StableDiffusionPipeline:
        """The EMA weights assembled as a stock StableDiffusionPipeline (on CPU, fp32)."""
        return StableDiffusionPipeline(
            vae=build.make_vae(),
            text_encoder=copy.deepcopy(self.ema[1]).cpu(),
            tokenizer=self.tokenizer,
            unet=copy.deepcopy(self.ema[0]).cpu(),
            scheduler=build.make_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def export(trainer: Trainer, folder: Path) -> None:
    """Save the EMA pipeline in fp16 (it is upcast on load) with safetensors."""
    pipe = trainer.pipeline()
    pipe.unet.to(torch.float16)
    pipe.text_encoder.to(torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trainer = Trainer(args, device)
    ckpt = args.out / "ckpt.pt"
    if ckpt.exists():
        trainer.load(torch.load(ckpt, map_location=device, weights_only=False))
        print(f"resumed from {ckpt} at step {trainer.step}")
    elif args.init is not None:
        trainer.warm_start(torch.load(args.init, map_location=device, weights_only=False))
        print(f"warm start from {args.init}")
    if args.export is not None:
        export(trainer, args.export)
        print(f"exported step {trainer.step} to {args.export}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    trainer.tokenizer.save_pretrained(args.out / "tokenizer")
    start = time.monotonic()
    bar = tqdm(
        total=args.steps, initial=trainer.step, desc="train", dynamic_ncols=True, mininterval=10
    )
    smooth = None
    while trainer.step < args.steps:
        loss = trainer.train_step()
        smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
        bar.update(1)
        bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{_lr(trainer.step, args):.1e}", refresh=False)
        out_of_time = bool(args.max_minutes) and (time.monotonic() - start) / 60 > args.max_minutes
        out_of_time |= trainer.step == args.stop_at
        if trainer.step % args.checkpoint_every == 0 or trainer.step == args.steps or out_of_time:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(trainer.state(), tmp)
            tmp.replace(ckpt)  # atomic: a kill mid-save never corrupts the checkpoint
        if out_of_time:
            print(f"stopping at step {trainer.step}: --max-minutes reached")
            break
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
