"""The procedural world of the embedded `imagine/shapes` model: scenes, prompts and pictures.

Everything here is deterministic given a `numpy.random.Generator`, so training data, evaluation
prompts and tests reproduce from a seed. Pictures are rendered at `NATIVE` pixels with hard
edges, so every pixel holds one of the exact palette colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NATIVE = 32  # the resolution the denoiser works at; the model's decoder doubles it

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 30),
    "green": (30, 170, 60),
    "blue": (30, 80, 230),
    "purple": (140, 50, 200),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")  # plus an unnamed medium
POSITIONS = {  # phrase -> centre as a fraction of the canvas (x, y)
    "on the left": (0.25, 0.5),
    "on the right": (0.75, 0.5),
    "at the top": (0.5, 0.25),
    "at the bottom": (0.5, 0.75),
    "in the center": (0.5, 0.5),
}
RELATIONS = ("left of", "right of", "above", "below")
# Half-widths in native pixels.
SIZE_RADIUS = {"small": 4.0, "medium": 6.0, "large": 8.5}
PAIR_RADIUS = 5.0
JITTER = 1.5  # max displacement of a centre, in native pixels


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    cx: float  # centre, native pixels
    cy: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """A picture's content, and the prompt that describes it (possibly partially)."""

    things: tuple[Thing, ...]
    background: str
    prompt: str
    # Which attributes the prompt names, for the evaluator: e.g. {"colour", "shape", "position"}.
    named: frozenset[str] = field(default_factory=frozenset)
    size: str = "medium"  # single objects only
    position: str | None = None  # single objects only
    relation: str | None = None  # pairs only


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator) -> float:
    return float(rng.uniform(-JITTER, JITTER))


def single_scene(rng: np.random.Generator, *, p_omit: float = 0.25, p_vague: float = 0.0) -> Scene:
    """`a [small|large] <colour> <shape> [<position>][, <colour> background]`.

    Optional parts are left out with probability `p_omit`; with `p_vague` the colour or the shape
    is left out too ("a red shape", "a circle"), which the grammar does not need but which teaches
    the model single words, as negative prompts use them.
    """
    colour = _pick(rng, list(COLOURS))
    shape = _pick(rng, SHAPES)
    size = _pick(rng, ("small", "medium", "large"))
    position = _pick(rng, list(POSITIONS))
    background = _pick(rng, [c for c in COLOURS if c != colour])
    named = {"colour", "shape"}
    words = ["a"]
    if size != "medium" and rng.random() > p_omit:
        words.append(size)
        named.add("size")
    if rng.random() < p_vague:
        named.discard("colour")
    else:
        words.append(colour)
    if rng.random() < p_vague:
        named.discard("shape")
        words.append("shape")
    else:
        words.append(shape)
    if rng.random() > p_omit:
        words.append(position)
        named.add("position")
    prompt = " ".join(words)
    if rng.random() > p_omit:
        prompt += f", {background} background"
        named.add("background")
    fx, fy = POSITIONS[position]
    thing = Thing(
        colour,
        shape,
        fx * NATIVE - 0.5 + _jitter(rng),
        fy * NATIVE - 0.5 + _jitter(rng),
        SIZE_RADIUS[size] + float(rng.uniform(-0.5, 0.5)),
    )
    return Scene((thing,), background, prompt, frozenset(named), size=size, position=position)


def pair_scene(rng: np.random.Generator, *, p_omit: float = 0.25) -> Scene:
    """`a <colour> <shape> (left of|right of|above|below) a <colour> <shape>`
    `[, <colour> background]`."""
    c1, c2 = (str(c) for c in rng.choice(list(COLOURS), size=2, replace=False))
    s1, s2 = _pick(rng, SHAPES), _pick(rng, SHAPES)
    relation = _pick(rng, RELATIONS)
    background = _pick(rng, [c for c in COLOURS if c not in (c1, c2)])
    # Centres: the first object sits on the side the relation names, the second opposite.
    lo, hi = 0.27 * NATIVE - 0.5, 0.73 * NATIVE - 0.5
    mid = NATIVE / 2 - 0.5
    first, second = {
        "left of": ((lo, mid), (hi, mid)),
        "right of": ((hi, mid), (lo, mid)),
        "above": ((mid, lo), (mid, hi)),
        "below": ((mid, hi), (mid, lo)),
    }[relation]
    things = tuple(
        Thing(c, s, x + _jitter(rng), y + _jitter(rng), PAIR_RADIUS + float(rng.uniform(-0.5, 0.5)))
        for c, s, (x, y) in ((c1, s1, first), (c2, s2, second))
    )
    prompt = f"a {c1} {s1} {relation} a {c2} {s2}"
    named = {"colour", "shape", "relation"}
    if rng.random() > p_omit:
        prompt += f", {background} background"
        named.add("background")
    return Scene(things, background, prompt, frozenset(named), relation=relation)


def sample_scene(
    rng: np.random.Generator, *, p_pair: float = 0.35, p_omit: float = 0.25, p_vague: float = 0.0
) -> Scene:
    if rng.random() < p_pair:
        return pair_scene(rng, p_omit=p_omit)
    return single_scene(rng, p_omit=p_omit, p_vague=p_vague)


_YY, _XX = np.mgrid[0:NATIVE, 0:NATIVE].astype(np.float32)


def inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray | float) -> np.ndarray:
    """Whether offsets (dx, dy) from a centre lie inside `shape` of half-size r (broadcasts)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = r * 0.86  # about the circle's area
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # Upward triangle: apex at the top, base at the bottom, a little larger to match the area.
    top, bottom = -r * 1.05, r * 0.85
    t = (dy - top) / (bottom - top)  # 0 at apex, 1 at base
    return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r * 1.15)


def shape_mask(thing: Thing, size: int = NATIVE) -> np.ndarray:
    """Boolean mask of a thing on a `size`-pixel canvas (coordinates scale with size)."""
    scale = size / NATIVE
    if size == NATIVE:
        yy, xx = _YY, _XX
    else:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Pixel centres in native units.
    x = (xx + 0.5) / scale - 0.5
    y = (yy + 0.5) / scale - 0.5
    return inside(thing.shape, x - thing.cx, y - thing.cy, thing.radius)


def render(scene: Scene, size: int = NATIVE) -> np.ndarray:
    """The scene as an HxWx3 uint8 array with exact palette colours (no anti-aliasing)."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = COLOURS[scene.background]
    for thing in scene.things:
        img[shape_mask(thing, size)] = COLOURS[thing.colour]
    return img


def batch(rng: np.random.Generator, n: int, **kwargs: float) -> tuple[np.ndarray, list[str]]:
    """`n` scenes as a float32 array in [-1, 1] (N, 3, H, W) and their prompts."""
    scenes = [sample_scene(rng, **kwargs) for _ in range(n)]
    pixels = np.stack([render(s) for s in scenes]).astype(np.float32) / 127.5 - 1.0
    return pixels.transpose(0, 3, 1, 2).copy(), [s.prompt for s in scenes]


VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        {"a", "shape", "background", "small", "large", ","}
        | set(COLOURS)
        | set(SHAPES)
        | {w for p in POSITIONS for w in p.split()}
        | {w for r in RELATIONS for w in r.split()}
    )
)
