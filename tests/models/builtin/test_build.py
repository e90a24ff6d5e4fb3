"""The hand-built parts of imagine/shapes: the tokenizer and the fixed 2x autoencoder."""

from __future__ import annotations

import pytest
import torch

from imagine.models.builtin import build, world


@pytest.fixture(scope="module")
def tokenizer():
    return build.make_tokenizer()


def test_every_world_word_is_one_token(tokenizer) -> None:
    for word in world.VOCABULARY:
        ids = tokenizer(word).input_ids
        assert len(ids) == 3, (word, tokenizer.convert_ids_to_tokens(ids))  # bos, word, eos


def test_other_text_still_tokenizes_and_is_truncated(tokenizer) -> None:
    ids = tokenizer("A Zebra!", truncation=True, max_length=build.MAX_TOKENS).input_ids
    assert tokenizer.unk_token_id not in ids[1:-1]
    long = tokenizer("red " * 100, truncation=True, max_length=build.MAX_TOKENS).input_ids
    assert len(long) == build.MAX_TOKENS


def test_tokenizer_is_deterministic(tokenizer) -> None:
    again = build.make_tokenizer()
    assert again.get_vocab() == tokenizer.get_vocab()


@torch.no_grad()
def test_vae_decodes_to_a_nearest_neighbour_upscale() -> None:
    vae = build.make_vae()
    latents = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    decoded = vae.decode(latents).sample
    expected = torch.nn.functional.interpolate(latents, scale_factor=2, mode="nearest")
    assert decoded.shape == (2, 3, 32, 48)
    assert (decoded - expected).abs().max() < 1 / 255


@torch.no_grad()
def test_vae_encodes_to_a_2x2_average() -> None:
    vae = build.make_vae()
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    posterior = vae.encode(image).latent_dist
    expected = torch.nn.functional.avg_pool2d(image, 2)
    assert (posterior.mean - expected).abs().max() < 1 / 255
    assert posterior.std.max() < 1e-4
