"""The toy world's pictures and captions: one coloured shape on a plain background, 64 × 64 px.

A scene is a small frozen record (object colour, background colour, shape, position, size, angle,
slight tints) drawn from a seeded `random.Random`, so scene *i* of seed *s* is the same picture on
every machine. `caption` describes it in plain English ("a red circle on a blue background");
`draw_clutter` draws unlabelled pictures of arbitrary colours and shapes, which the autoencoder
also learns from so that it can reproduce things the world does not contain (the demo's robot).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 64
"""Side of a world picture in pixels."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 215, 40),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
}
"""The named colours, drawn as clearly distinct saturated renditions."""

SHAPES = ("circle", "square", "triangle")

TINT = 8
"""Each colour varies by at most this much per channel, so no rendition nears another name."""

_SUPERSAMPLE = 4  # draw 4× larger, then downscale: smooth edges without an anti-aliasing library

# (template, weight): the full phrase most of the time; shorter ones teach each part on its own,
# which keeps the model sensible on prompts with words it has never seen ("ohwx toy robot").
_TEMPLATES: tuple[tuple[str, float], ...] = (
    ("a {colour} {shape} on a {background} background", 0.55),
    ("a photo of a {colour} {shape} on a {background} background", 0.20),
    ("a {shape} on a {background} background", 0.10),
    ("a {colour} {shape}", 0.15),
)


@dataclass(frozen=True)
class Scene:
    colour: str
    background: str
    shape: str
    cx: float
    """Centre across the picture, as a fraction of its side."""
    cy: float
    size: float
    """Side of the shape's bounding box, as a fraction of the picture's side."""
    angle: float
    """Rotation of squares and triangles, in degrees."""
    tint: tuple[int, int, int]
    background_tint: tuple[int, int, int]

    @property
    def phrase(self) -> str:
        """The canonical caption: "a red circle on a blue background"."""
        return phrase(self.colour, self.shape, self.background)


def phrase(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def scene_rng(seed: int, index: int) -> random.Random:
    """The generator of scene `index` of world `seed`: pure, so any scene can be redrawn alone."""
    return random.Random(seed * 1_000_003 + index)


def _tint(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randint(-TINT, TINT) for _ in range(3))  # type: ignore[return-value]


def sample_scene(rng: random.Random, *, colour: str | None = None, background: str | None = None,
                 shape: str | None = None) -> Scene:
    """A random scene; any of colour, background and shape can be fixed. Object and background
    never share a colour."""
    colour = colour or rng.choice([c for c in COLOURS if c != background])
    background = background or rng.choice([c for c in COLOURS if c != colour])
    if background == colour:
        raise ValueError(f"the object and the background are both {colour}: a scene needs two different colours")
    return Scene(
        colour=colour,
        background=background,
        shape=shape or rng.choice(SHAPES),
        cx=rng.uniform(0.38, 0.62),
        cy=rng.uniform(0.38, 0.62),
        size=rng.uniform(0.40, 0.60),
        angle=rng.uniform(-15.0, 15.0),
        tint=_tint(rng),
        background_tint=_tint(rng),
    )


def caption(scene: Scene, rng: random.Random) -> str:
    """One of the caption templates for `scene`, picked by `rng` with the templates' weights."""
    return caption_parts(scene, rng)[0]


def caption_parts(scene: Scene, rng: random.Random) -> tuple[str, frozenset[str]]:
    """A caption as `caption` picks it, and which of colour / shape / background it mentions."""
    templates, weights = zip(*_TEMPLATES)
    template = rng.choices(templates, weights=weights)[0]
    mentions = frozenset(f for f in ("colour", "shape", "background") if "{" + f + "}" in template)
    return template.format(colour=scene.colour, shape=scene.shape, background=scene.background), mentions


def all_captions() -> list[str]:
    """Every caption `caption` can write, in a fixed order."""
    out = []
    for template, _ in _TEMPLATES:
        for colour in COLOURS:
            for background in COLOURS:
                if background == colour:
                    continue
                for shape in SHAPES:
                    out.append(template.format(colour=colour, shape=shape, background=background))
    return list(dict.fromkeys(out))


def _rgb(name: str, tint: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + t)) for c, t in zip(COLOURS[name], tint))  # type: ignore[return-value]


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a square (radius = half its side) or an upright triangle of about the same area."""
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        scale = radius
    else:
        # an equilateral triangle centred on its centroid, point up; 1.25× the square's half-side
        # so that the three shapes cover similar areas
        corners = [(0.0, -1.0), (math.sqrt(3) / 2, 0.5), (-math.sqrt(3) / 2, 0.5)]
        scale = 1.25 * radius
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    return [(cx + scale * (x * cos - y * sin), cy + scale * (x * sin + y * cos)) for x, y in corners]


def draw_scene(scene: Scene, size: int = SIZE) -> Image.Image:
    """The picture of `scene`, `size` pixels square."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), _rgb(scene.background, scene.background_tint))
    draw = ImageDraw.Draw(canvas)
    fill = _rgb(scene.colour, scene.tint)
    cx, cy, radius = scene.cx * big, scene.cy * big, scene.size * big / 2
    if scene.shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, radius, scene.angle), fill=fill)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def draw_clutter(rng: random.Random, size: int = SIZE) -> Image.Image:
    """An unlabelled picture of arbitrary colours: a flat or graded background and 1–6 random
    ellipses, boxes, polygons and strokes, large and small. Only the autoencoder sees these."""
    big = size * _SUPERSAMPLE

    def colour() -> tuple[int, int, int]:
        return tuple(rng.randrange(256) for _ in range(3))  # type: ignore[return-value]

    canvas = Image.new("RGB", (big, big), colour())
    draw = ImageDraw.Draw(canvas)
    if rng.random() < 0.3:  # a vertical gradient
        top, bottom = colour(), colour()
        for y in range(big):
            t = y / (big - 1)
            draw.line([(0, y), (big, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    if rng.random() < 0.3:  # a floor band, as in photos of objects on a table
        draw.rectangle((0, int(big * rng.uniform(0.7, 0.9)), big, big), fill=colour())
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(("ellipse", "box", "polygon", "stroke"))
        w, h = rng.uniform(0.05, 0.6) * big, rng.uniform(0.05, 0.6) * big
        x, y = rng.uniform(0, big - w), rng.uniform(0, big - h)
        if kind == "ellipse":
            draw.ellipse((x, y, x + w, y + h), fill=colour())
        elif kind == "box":
            draw.rounded_rectangle((x, y, x + w, y + h), radius=rng.uniform(0, min(w, h) / 3), fill=colour())
        elif kind == "polygon":
            points = [(rng.uniform(x, x + w), rng.uniform(y, y + h)) for _ in range(rng.randint(3, 6))]
            draw.polygon(points, fill=colour())
        else:
            draw.line([(x, y), (x + w, y + h)], fill=colour(), width=max(1, int(rng.uniform(0.01, 0.06) * big)))
    return canvas.resize((size, size), Image.Resampling.LANCZOS)
