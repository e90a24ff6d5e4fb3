"""Folder and file-list facts: which Hub files to fetch, variants, completeness, LoRA files."""

from __future__ import annotations

import json
from pathlib import Path

from imagine.models import folders


def test_pipeline_files_pick_one_weight_set_per_component() -> None:
    repo = [
        ".gitattributes",
        "README.md",
        "model_index.json",
        "v1-5-pruned-emaonly.safetensors",  # root single-file checkpoint: never
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",  # only a variant: keep it
        "text_encoder/config.json",
        "text_encoder/pytorch_model.bin",  # only .bin: keep it
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "text_encoder_2/tokenizer.model",
        "scheduler/scheduler_config.json",
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
    ]
    assert folders.pipeline_files(repo) == sorted(
        [
            "README.md",
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/config.json",
            "text_encoder/pytorch_model.bin",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "text_encoder_2/tokenizer.model",
            "scheduler/scheduler_config.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
            "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "transformer/diffusion_pytorch_model.safetensors.index.json",
        ]
    )


def _component(root: Path, name: str, *files: str) -> None:
    (root / name).mkdir(parents=True)
    for f in files:
        (root / name / f).write_bytes(b"")


def test_weights_variant_and_completeness(tmp_path: Path) -> None:
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "U"]}
    index |= {"scheduler": ["diffusers", "S"], "safety_checker": [None, None]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert not folders.is_complete(tmp_path)  # no unet folder yet
    _component(tmp_path, "scheduler", "scheduler_config.json")
    _component(tmp_path, "unet", "config.json")
    assert not folders.is_complete(tmp_path)  # a model component without weights
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert folders.is_complete(tmp_path)
    assert folders.weights_variant(tmp_path) == "fp16"
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert folders.weights_variant(tmp_path) is None


def test_lora_weight_name(tmp_path: Path) -> None:
    assert folders.lora_weight_name(tmp_path) is None
    (tmp_path / "my_lora.safetensors").write_bytes(b"")
    assert folders.lora_weight_name(tmp_path) == "my_lora.safetensors"
    (tmp_path / folders.LORA_WEIGHTS).write_bytes(b"")
    assert folders.lora_weight_name(tmp_path) == folders.LORA_WEIGHTS
