"""Per-stage timings of one pipeline call, measured with module hooks (no pipeline edits).

Stages, in seconds:
  text_encoding  time spent inside the text encoders' forward passes
  denoising      from the first denoiser (unet / transformer) call to the end of the last step
  decoding       from the end of the last step to the call's return (VAE decode + to PIL)
  total          the whole call
"""

from __future__ import annotations

import time
from typing import Any

_TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
_DENOISERS = ("unet", "transformer")


class StageClock:
    """Context manager around one pipeline call; `step_done()` is called from the step callback."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._handles: list[Any] = []
        self._start = self._end = 0.0
        self._first_denoise: float | None = None
        self._last_step: float | None = None
        self._text = 0.0
        self._text_started: float | None = None

    def __enter__(self) -> StageClock:
        for name in _TEXT_ENCODERS:
            module = getattr(self._pipe, name, None)
            if module is not None and hasattr(module, "register_forward_pre_hook"):
                self._handles.append(module.register_forward_pre_hook(self._text_pre))
                self._handles.append(module.register_forward_hook(self._text_post))
        for name in _DENOISERS:
            module = getattr(self._pipe, name, None)
            if module is not None and hasattr(module, "register_forward_pre_hook"):
                self._handles.append(module.register_forward_pre_hook(self._denoise_pre))
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = time.perf_counter()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def step_done(self) -> None:
        self._last_step = time.perf_counter()

    def _text_pre(self, *_: Any) -> None:
        self._text_started = time.perf_counter()

    def _text_post(self, *_: Any) -> None:
        if self._text_started is not None:
            self._text += time.perf_counter() - self._text_started
            self._text_started = None

    def _denoise_pre(self, *_: Any) -> None:
        if self._first_denoise is None:
            self._first_denoise = time.perf_counter()

    def timings(self) -> dict[str, float]:
        out = {"total": self._end - self._start, "text_encoding": self._text}
        if self._first_denoise is not None and self._last_step is not None:
            out["denoising"] = self._last_step - self._first_denoise
            out["decoding"] = self._end - self._last_step
        return out
