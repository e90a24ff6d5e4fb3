"""The scoreboard of `imagine/shapes`: grammar prompts in, pictures out, checked procedurally.

    imagine eval-builtin --n 400                    # the shipped weights at default settings
    imagine eval-builtin --model runs/shapes/export --guidance 3 --grid grid.png
    imagine eval-builtin --n 120 --width 96 --height 64   # a size other than the native one

Each image is reduced to the world's resolution and every pixel is snapped to the nearest palette
colour. The background is the commonest colour on the border; an object is the pixels of a named
colour; its shape is whichever ideal shape (fitted to its bounding box) overlaps it best; its
position is the anchor nearest its centroid; a relation compares two objects' centroids.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imagine.models.builtin import world

WEIGHTS = Path(__file__).parent / "weights"
_PALETTE_NAMES = list(world.COLOURS)
_PALETTE = np.array([world.COLOURS[c] for c in _PALETTE_NAMES], np.float32)
_MAX_COLOUR_DISTANCE = 70.0  # farther than this from every palette colour: "no colour"
_MIN_OBJECT_PIXELS = 6  # at 32x32; a small object has ~50


def snap(image: Image.Image) -> np.ndarray:
    """Palette index per pixel at native resolution (-1 where no palette colour is near)."""
    small = np.asarray(
        image.convert("RGB").resize((world.NATIVE, world.NATIVE), Image.BOX), np.float32
    )
    dist = np.linalg.norm(small[:, :, None, :] - _PALETTE[None, None], axis=-1)
    index = dist.argmin(-1)
    index[dist.min(-1) > _MAX_COLOUR_DISTANCE] = -1
    return index


def background_of(index: np.ndarray) -> str | None:
    border = np.concatenate([index[0], index[-1], index[:, 0], index[:, -1]])
    border = border[border >= 0]
    return _PALETTE_NAMES[np.bincount(border).argmax()] if border.size else None


_YY, _XX = np.mgrid[0 : world.NATIVE, 0 : world.NATIVE].astype(np.float32)


@dataclass
class Blob:
    colour: str
    mask: np.ndarray
    _fit: tuple[str, float, float, float] | None = None

    @property
    def centroid(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()), float(ys.mean())

    def fit(self) -> tuple[str, float, float, float]:
        """The ideal (shape, cx, cy, radius) that overlaps the mask best (IoU), searched on a grid
        around the centroid. Ideal shapes are clipped by the canvas like the real ones, so objects
        cut by the border still fit."""
        if self._fit is None:
            x0, y0 = self.centroid
            r0 = float(np.sqrt(self.mask.sum() / np.pi))
            offsets = np.arange(-2.0, 2.01, 1.0)
            cx, cy, r = np.meshgrid(
                x0 + offsets, y0 + offsets, np.arange(max(2.0, r0 - 1.5), r0 + 2.51, 0.5)
            )
            cx, cy, r = (a.reshape(-1, 1, 1) for a in (cx, cy, r))
            best = ("circle", x0, y0, r0, -1.0)
            for shape in world.SHAPES:
                ideal = world.inside(shape, _XX - cx, _YY - cy, r)
                iou = (ideal & self.mask).sum((1, 2)) / np.maximum(
                    1, (ideal | self.mask).sum((1, 2))
                )
                k = int(iou.argmax())
                if iou[k] > best[4]:
                    best = (
                        shape,
                        float(cx.flat[k]),
                        float(cy.flat[k]),
                        float(r.flat[k]),
                        float(iou[k]),
                    )
            self._fit = best[:4]
        return self._fit

    def shape(self) -> str:
        return self.fit()[0]

    def position(self) -> str:
        _, x, y, _ = self.fit()
        anchors = {
            p: (fx * world.NATIVE - 0.5, fy * world.NATIVE - 0.5)
            for p, (fx, fy) in world.POSITIONS.items()
        }
        return min(anchors, key=lambda p: (anchors[p][0] - x) ** 2 + (anchors[p][1] - y) ** 2)

    def size(self) -> str:
        r = self.fit()[3]
        small, medium, large = (world.SIZE_RADIUS[s] for s in ("small", "medium", "large"))
        if r < (small + medium) / 2:
            return "small"
        return "large" if r > (medium + large) / 2 else "medium"


def blob(index: np.ndarray, colour: str) -> Blob | None:
    mask = index == _PALETTE_NAMES.index(colour)
    return Blob(colour, mask) if mask.sum() >= _MIN_OBJECT_PIXELS else None


def dominant_object(index: np.ndarray, background: str | None) -> Blob | None:
    """The commonest non-background colour, as a blob."""
    fg = index[(index >= 0) & (index != (_PALETTE_NAMES.index(background) if background else -2))]
    if fg.size == 0:
        return None
    return blob(index, _PALETTE_NAMES[np.bincount(fg).argmax()])


def judge(scene: world.Scene, image: Image.Image) -> dict[str, bool]:
    """Per-attribute verdicts for one generated image; only attributes the prompt names."""
    index = snap(image)
    bg = background_of(index)
    verdict: dict[str, bool] = {}
    if "background" in scene.named:
        verdict["background"] = bg == scene.background
    if scene.relation is None:
        thing = scene.things[0]
        obj = dominant_object(index, bg)
        verdict["colour"] = obj is not None and obj.colour == thing.colour
        named = blob(index, thing.colour)  # judge shape/position on the named colour's pixels
        verdict["shape"] = named is not None and named.shape() == thing.shape
        if "position" in scene.named:
            verdict["position"] = named is not None and named.position() == scene.position
        if "size" in scene.named:
            verdict["size"] = named is not None and named.size() == scene.size
        return verdict
    a, b = (blob(index, t.colour) for t in scene.things)
    verdict["colour_first"] = a is not None
    verdict["colour_second"] = b is not None
    verdict["both_colours"] = a is not None and b is not None
    verdict["shapes"] = (
        a is not None
        and b is not None
        and (a.shape(), b.shape()) == tuple(t.shape for t in scene.things)
    )
    if a is None or b is None:
        verdict["relation"] = False
    else:
        (ax, ay), (bx, by) = a.centroid, b.centroid
        dx, dy = ax - bx, ay - by
        verdict["relation"] = {
            "left of": dx < 0 and abs(dx) > abs(dy),
            "right of": dx > 0 and abs(dx) > abs(dy),
            "above": dy < 0 and abs(dy) > abs(dx),
            "below": dy > 0 and abs(dy) > abs(dx),
        }[scene.relation]
    return verdict


def evaluation_scenes(n: int, seed: int, p_pair: float = 0.4) -> list[world.Scene]:
    """Prompts from the grammar only (colour and shape always named)."""
    rng = np.random.default_rng(seed)
    return [world.sample_scene(rng, p_pair=p_pair, p_omit=0.3) for _ in range(n)]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="imagine eval-builtin", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=WEIGHTS, help="pipeline folder")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--scheduler", default=None)
    p.add_argument("--width", type=int, default=None, help="default: the model's")
    p.add_argument("--height", type=int, default=None, help="default: the model's")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--grid", type=Path, default=None, help="save the first 16 images as a 4x4 grid")
    p.add_argument("--json", type=Path, default=None, help="write the scores here")
    return p.parse_args(argv)


def _settings_for(model: Path):  # -> Settings
    """Settings that serve `model` as `imagine/shapes` would be: the shipped folder as is, any
    other folder (a checkpoint export) through model_dirs under the id `eval/shapes`."""
    from imagine.settings import Settings

    if model.resolve() == WEIGHTS.resolve():
        return Settings(preload=[], allow_downloads=False), "imagine/shapes"
    return Settings(preload=[], allow_downloads=False, allow_path_model_ids=True), str(
        model.resolve()
    )


def main(argv: list[str] | None = None) -> int:
    import asyncio
    import dataclasses

    import torch
    from tqdm import tqdm

    from imagine.models.families.shapes import SPEC
    from imagine.models.manager import ModelManager
    from imagine.validation import build_request

    args = _parse(argv)
    torch.set_flush_denormal(True)
    settings, model_id = _settings_for(args.model)
    manager = ModelManager(settings=settings)
    info = manager.describe(model_id)
    if info.spec.name != "shapes":  # a checkpoint folder: judge it with the shapes spec
        info = dataclasses.replace(info, spec=SPEC)
    model = asyncio.run(manager.load(model_id))
    if model.spec.name != "shapes":
        model.resolved = dataclasses.replace(model.resolved, spec=SPEC)
    params: dict[str, object] = {}
    if args.steps:
        params["num_inference_steps"] = args.steps
    if args.guidance is not None:
        params["guidance_scale"] = args.guidance
    if args.scheduler:
        params["scheduler"] = args.scheduler
    if args.width:
        params["width"] = args.width
    if args.height:
        params["height"] = args.height
    scenes = evaluation_scenes(args.n, args.seed)
    scores: dict[str, dict[str, list[bool]]] = {
        "single": defaultdict(list),
        "pair": defaultdict(list),
    }
    images: list[Image.Image] = []
    start = time.monotonic()
    first = None
    for i in tqdm(range(0, len(scenes), args.batch), desc="eval", dynamic_ncols=True):
        chunk = scenes[i : i + args.batch]
        requests = [
            build_request(
                model_id=model_id,
                prompt=s.prompt,
                parameters={**params, "seed": args.seed * 100_003 + i + j},
                info=info,
                settings=settings,
            )
            for j, s in enumerate(chunk)
        ]
        first = first or requests[0]
        out = [r.image for r in manager.run_batch(model, requests)]
        for scene, image in zip(chunk, out, strict=True):
            kind = "single" if scene.relation is None else "pair"
            for attribute, ok in judge(scene, image).items():
                scores[kind][attribute].append(ok)
        images.extend(out[: max(0, 16 - len(images))])
    elapsed = time.monotonic() - start
    summary = {
        kind: {a: round(100 * float(np.mean(v)), 1) for a, v in sorted(attrs.items())}
        for kind, attrs in scores.items()
    }
    counts = {kind: sum(s.relation is None for s in scenes) for kind in ("single",)}
    counts["pair"] = len(scenes) - counts["single"]
    assert first is not None
    used = {
        "steps": first.num_inference_steps,
        "guidance": first.guidance_scale,
        "scheduler": first.scheduler,
        "size": f"{first.width}x{first.height}",
    }
    print(f"{args.n} prompts, {used}, {elapsed:.0f} s")
    for kind, attrs in summary.items():
        print(f"  {kind} ({counts[kind]}): " + ", ".join(f"{a} {v:.1f}%" for a, v in attrs.items()))
    if args.json:
        report = {"settings": used | {"n": args.n, "seed": args.seed}, "scores": summary}
        args.json.write_text(json.dumps(report, indent=2))
    if args.grid and images:
        w, h = images[0].size
        grid = Image.new("RGB", (4 * w, 4 * h))
        for k, image in enumerate(images[:16]):
            grid.paste(image, ((k % 4) * w, (k // 4) * h))
        grid.save(args.grid)
        args.grid.with_suffix(".txt").write_text("\n".join(s.prompt for s in scenes[:16]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
