"""Builds the parts of `imagine/shapes` as stock diffusers/transformers classes.

The model is a pixel-space diffusion model at 32x32 that loads as a plain
`StableDiffusionPipeline`, so the registry serves it like any other model:

- tokenizer: a CLIP BPE tokenizer whose merges make every word of the world one token;
- text encoder: a small `CLIPTextModel`, trained jointly with the denoiser;
- denoiser: a small `UNet2DConditionModel` on RGB "latents" in [-1, 1];
- VAE: an `AutoencoderKL` whose weights are set by hand (not trained) so that decoding is a
  nearest-neighbour 2x upscale and encoding a 2x2 average pool. GroupNorm would normally destroy
  absolute levels; the trick is to carry each value as a (+x, -x) channel pair next to a large
  constant pair (+K, -K), so the group's mean is exactly 0 and its spread is ~K whatever x is.
  SiLU is then made linear by evaluating it far into its linear regime on both members of the pair
  and taking the difference.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from imagine.models.builtin.world import VOCABULARY

MAX_TOKENS = 24
_K = 64.0  # the constant channel: large against |x| <= ~1.5, small enough for fp16
_B = 12.0  # where SiLU is evaluated: silu(12 + x) - silu(12 - x) = 2x within ~2e-4

TRAIN_TIMESTEPS = 1000
SCHEDULER_CONFIG = dict(
    num_train_timesteps=TRAIN_TIMESTEPS,
    beta_schedule="linear",  # the DDPM pixel-space schedule, not SD's latent "scaled_linear"
    beta_start=0.0001,
    beta_end=0.02,
    prediction_type="v_prediction",
    timestep_spacing="trailing",  # sampling starts at the last (pure-noise) timestep
    steps_offset=1,  # what StableDiffusionPipeline would rewrite it to anyway (with a warning)
)


def _clip_tokenizer(merges: list[tuple[str, str]]) -> CLIPTokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for piece in alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]:
        vocab.setdefault(piece, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def make_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over the byte alphabet whose merges turn each world word into one token;
    any other text still tokenizes (into characters and pieces of words).

    The merges are built deterministically (a BPE trainer breaks ties in no fixed order): first a
    left-to-right chain per word, then, for any word another word's merges split differently,
    merges appended (so applied last) that join the pieces it did get. Repeat until every word is
    one token.
    """
    merges: list[tuple[str, str]] = []
    for word in sorted(VOCABULARY):
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    for _ in range(len(VOCABULARY)):
        tokenizer = _clip_tokenizer(merges)
        split = [t for w in sorted(VOCABULARY) if len(t := tokenizer.tokenize(w)) > 1]
        if not split:
            return tokenizer
        for pieces in split:
            while len(pieces) > 1:
                pair = (pieces[0], pieces[1])
                if pair not in merges:
                    merges.append(pair)
                pieces = [pieces[0] + pieces[1], *pieces[2:]]
    raise RuntimeError("could not make every world word a single token")


def make_text_encoder(tokenizer: CLIPTokenizer, *, hidden: int = 128) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_unet(
    *, cross_attention_dim: int = 128, channels: tuple[int, ...] = (32, 64, 64)
) -> UNet2DConditionModel:
    """Convolutions at 32x32 and 16x16, attention (self and cross) only at 8x8 and in the middle,
    plus a pooled text embedding added to the timestep embedding (`addition_embed_type="text"`)
    that modulates every ResNet block (FiLM, `scale_shift`).

    Why the pooled path: with cross-attention alone, a from-scratch text encoder was ignored for
    the first thousand steps (predictions for "blue background" and "" were identical; attention
    sank onto the start token, which a causal CLIP encodes the same for every prompt). A global
    text vector reaching every block gives background, colour and layout a direct route. Both
    paths are stock diffusers, and `StableDiffusionPipeline` needs no extra inputs for them.
    Measured on 2 CPU cores: attention at 16x16 cost 5x the inference time for little gain.
    """
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=32,
        norm_num_groups=32,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        resnet_time_scale_shift="scale_shift",
    )


def make_scheduler() -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(**SCHEDULER_CONFIG)


def _centre_taps(conv: torch.nn.Conv2d, mapping: dict[int, list[tuple[int, float]]]) -> None:
    """Zero a conv, then set out[o] = sum(w * in[i]) through the kernel's centre tap."""
    conv.weight.zero_()
    if conv.bias is not None:
        conv.bias.zero_()
    k = conv.kernel_size[0] // 2
    for out_ch, terms in mapping.items():
        for in_ch, w in terms:
            conv.weight[out_ch, in_ch, k, k] = w


def _signed_pairs_in(conv_in: torch.nn.Conv2d, n: int) -> None:
    """in: n channels -> out: (+x_0..+x_n-1, -x_0..-x_n-1, +K, -K)."""
    _centre_taps(
        conv_in, {**{i: [(i, 1.0)] for i in range(n)}, **{n + i: [(i, -1.0)] for i in range(n)}}
    )
    conv_in.bias[2 * n] = _K
    conv_in.bias[2 * n + 1] = -_K


def _linear_out(
    norm: torch.nn.GroupNorm, conv_out: torch.nn.Conv2d, n: int, extra: dict[int, float]
) -> None:
    """After the group norm (std ~ K/2), rescale to +-x around _B so SiLU is ~linear, then subtract
    the pair: out_i = (silu(B + x_i) - silu(B - x_i)) / 2 = x_i. `extra` sets constant outputs."""
    norm.weight.zero_()
    norm.bias.zero_()
    norm.weight[: 2 * n] = _K / 2
    norm.bias[: 2 * n] = _B
    _centre_taps(conv_out, {i: [(i, 0.5), (n + i, -0.5)] for i in range(n)})
    for ch, value in extra.items():
        conv_out.bias[ch] = value


def _silence_residuals(module: torch.nn.Module) -> None:
    """Every ResnetBlock2D becomes the identity (its residual branch outputs zero)."""
    for name, sub in module.named_modules():
        if name.endswith("conv2") and isinstance(sub, torch.nn.Conv2d):
            sub.weight.zero_()
            sub.bias.zero_()


@torch.no_grad()
def make_vae(channels: int = 3) -> AutoencoderKL:
    """A fixed 2x autoencoder: decode = nearest-neighbour upscale, encode = 2x2 average pool."""
    width = 2 * channels + 2
    vae = AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        latent_channels=channels,
        block_out_channels=(width, width),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=1,
        sample_size=64,
        scaling_factor=1.0,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=False,
        force_upcast=False,
    )
    dec, enc = vae.decoder, vae.encoder
    _silence_residuals(vae)
    identity = {c: [(c, 1.0)] for c in range(width)}
    _signed_pairs_in(dec.conv_in, channels)
    for block in dec.up_blocks:
        for up in block.upsamplers or []:
            _centre_taps(up.conv, identity)
    _linear_out(dec.conv_norm_out, dec.conv_out, channels, {})

    _signed_pairs_in(enc.conv_in, channels)
    for block in enc.down_blocks:
        for down in block.downsamplers or []:
            # Downsample2D pads (0, 1, 0, 1) then a stride-2 3x3 conv: taps [0:2, 0:2] are the
            # 2x2 block the output pixel covers.
            down.conv.weight.zero_()
            down.conv.bias.zero_()
            for c in range(width):
                down.conv.weight[c, c, 0:2, 0:2] = 0.25
    # Encoder output: mean = the pooled image, log-variance = -30 (a near-deterministic encoding).
    _linear_out(
        enc.conv_norm_out, enc.conv_out, channels, {channels + c: -30.0 for c in range(channels)}
    )
    return vae
