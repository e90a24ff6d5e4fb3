"""Building one pipeline from a ResolvedModel: where it runs (device, dtype), the
`from_pretrained` keyword arguments, LoRA fusing, and how much memory the result holds.

BLOCKING throughout (the manager calls it from a worker thread). Raises whatever diffusers
raises; the manager turns that into ModelLoadFailed.
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch

from imagine.models import folders
from imagine.models.registry import ResolvedModel
from imagine.settings import Settings


def placement(settings: Settings, resolved: ResolvedModel) -> tuple[torch.device, torch.dtype]:
    """settings.device/dtype; "auto" = CUDA with the family's dtype when present, else CPU
    float32 (half precision on CPU is slow or unsupported for several ops)."""
    if settings.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(settings.device)
    if settings.dtype != "auto":
        return device, getattr(torch, settings.dtype)
    if device.type == "cpu":
        return device, torch.float32
    return device, getattr(torch, resolved.spec.preferred_dtype)


def pretrained_kwargs(resolved: ResolvedModel, dtype: torch.dtype) -> dict[str, Any]:
    """Keyword arguments for `DiffusionPipeline.from_pretrained(resolved.path, ...)`: the
    dtype, the weights variant, and None for each component the model is served without."""
    kwargs: dict[str, Any] = {name: None for name in resolved.skip_components}
    kwargs.update(dtype=dtype, variant=folders.weights_variant(resolved.path))
    return kwargs


def build_pipeline(resolved: ResolvedModel, device: torch.device, dtype: torch.dtype) -> Any:
    """Load the pipeline onto `device`, with its LoRA (if any) fused into the base weights."""
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        str(resolved.path), **pretrained_kwargs(resolved, dtype)
    )
    pipe.to(device)
    if resolved.lora_path is not None:
        pipe.load_lora_weights(
            str(resolved.lora_path), weight_name=folders.lora_weight_name(resolved.lora_path)
        )
        pipe.fuse_lora()
        # Fused into the base weights: drop the adapter layers so each step runs plain.
        pipe.unload_lora_weights()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def memory_bytes(pipeline: Any) -> int:
    """Bytes held by the parameters and buffers of the pipeline's torch modules (each tensor
    counted once, even when components share it). Activations and caches are not included."""
    seen: set[int] = set()
    total = 0
    for component in pipeline.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in (*component.parameters(), *component.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total
