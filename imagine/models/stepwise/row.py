"""One request's denoising, held between steps, and what a family supplies to step it.

In step-level batching a model's worker runs one denoising step at a time over every active
request of compatible shape; requests join at the next step and leave when done. A `Row` is
one request in that loop: its own scheduler instance, generator, latents, timesteps and text
conditioning. Sharing a scheduler between requests crashes (Euler, DPM++ 2M advance their
step index twice) or drifts (DDIM at unequal step counts), and Euler draws noise inside
`step()`, so each request's own generator goes there (measured on diffusers 0.42.1).

A family plugs in through `StepFamily`: how it encodes prompts, prepares a row's timesteps and
latents, runs its denoiser over stacked rows, and decodes — each built from the family's stock
diffusers pipeline methods, mirroring what its `__call__` does, so a row's image is the one the
pipeline makes alone (tests/models/stepwise check it within 1/255).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from imagine.request import GenerationRequest


@dataclass(eq=False)
class Row:
    """One request between denoising steps (only the model's thread touches it)."""

    request: GenerationRequest
    owner: Any  # whose row it is (the engine's Job)
    scheduler: Any  # this request's own instance
    generator: torch.Generator
    width: int  # the size the pipeline runs at (a family's render_size, else the request's)
    height: int
    # Text conditioning, each tensor with a leading dim of `copies` rows: [uncond, cond] under
    # classifier-free guidance (FLUX true CFG: [negative, cond]), else [cond].
    cond: dict[str, torch.Tensor] = field(default_factory=dict)
    copies: int = 1
    cfg_scale: float = 1.0  # applied as uncond + scale * (cond - uncond) when copies == 2
    latents: torch.Tensor | None = None
    timesteps: Any = None  # this request's scheduler.timesteps
    index: int = 0  # steps done
    step_kwargs: dict[str, Any] = field(default_factory=dict)  # generator / eta, when taken
    shared: dict[str, Any] = field(default_factory=dict)  # per-shape inputs (FLUX ids)
    timings: dict[str, float] = field(default_factory=dict)  # kept by the runner

    @property
    def total(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.index >= self.total

    @property
    def t(self) -> torch.Tensor:
        return self.timesteps[self.index]


class StepFamily(Protocol):
    """A family's step functions (see the module docstring). All run on the model's thread."""

    def encode(self, pipe: Any, rows: Sequence[Row]) -> None:
        """Fill each row's `cond`, `copies` and `cfg_scale` (rows may be encoded together)."""

    def prepare(self, pipe: Any, row: Row) -> None:
        """Set the row's timesteps on its scheduler and draw its initial latents."""

    def forward(self, pipe: Any, rows: Sequence[Row]) -> torch.Tensor:
        """One denoiser call over the rows' stacked copies, each at its own timestep; the output
        has `sum(row.copies)` rows in the same order."""

    def decode(self, pipe: Any, rows: Sequence[Row]) -> list[Any]:
        """The finished rows' PIL images (rows share one size)."""


def advance(row: Row, block: torch.Tensor) -> None:
    """Guidance and the scheduler step for one row, from its block of the denoiser's output."""
    if row.copies == 2:
        uncond, cond = block.chunk(2)
        pred = uncond + row.cfg_scale * (cond - uncond)
    else:
        pred = block
    row.latents = row.scheduler.step(
        pred, row.t, row.latents, **row.step_kwargs, return_dict=False
    )[0]
    row.index += 1


def initial_latents(pipe: Any, row: Row, channels: int) -> Any:
    """The pipeline's `prepare_latents` for one row: its generator, and its scheduler in place
    (SD scales the noise by that scheduler's init_noise_sigma, valid after its set_timesteps)."""
    with using_scheduler(pipe, row.scheduler):
        return pipe.prepare_latents(
            1,
            channels,
            row.height,
            row.width,
            row.cond["encoder_hidden_states"].dtype,
            pipe._execution_device,
            row.generator,
            None,
        )


def extra_step_kwargs(pipe: Any, row: Row) -> dict[str, Any]:
    """What a UNet pipeline's `prepare_extra_step_kwargs(generator, eta=0.0)` passes to this
    row's scheduler's `step`: the generator and eta where its signature takes them."""
    params = set(inspect.signature(row.scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = row.generator
    return kwargs


@contextlib.contextmanager
def using_scheduler(pipe: Any, scheduler: Any) -> Iterator[None]:
    """`pipe.scheduler` is `scheduler` inside (prepare_latents reads its init_noise_sigma)."""
    saved, pipe.scheduler = pipe.scheduler, scheduler
    try:
        yield
    finally:
        pipe.scheduler = saved


def stack(rows: Sequence[Row], name: str) -> torch.Tensor:
    return torch.cat([row.cond[name] for row in rows])


def timesteps(rows: Sequence[Row], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One timestep per copy. Euler's are float32, DPM's and DDIM's int64: float32 holds both
    exactly (timesteps < 2**24), and the denoisers' time embeddings compute in float."""
    return torch.cat([row.t.reshape(1).to(dtype).expand(row.copies) for row in rows])


def groups(rows: Sequence[Row], key: Any) -> Iterator[list[Row]]:
    """Rows split by `key(row)`, first-seen order (for encoding rows together)."""
    by: dict[Any, list[Row]] = {}
    for row in rows:
        by.setdefault(key(row), []).append(row)
    yield from by.values()
