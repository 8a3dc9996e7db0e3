"""The built-in demo dataset: 16 drawn photos of one toy robot, captioned with a trigger word.

It lets the whole flow (check, train, compare, score) run offline with no user data. The robot
keeps its look (orange body, silver head, cyan eyes, yellow antenna ball) while its position,
size, pose, tilt and background change, which is what a LoRA concept dataset looks like. A few
images are landscape or portrait so aspect buckets are exercised.

The robot is the concept the toy world (`studio.world`) does not contain: the backgrounds are the
world's named colours and the captions use the world's words around the trigger ("a photo of ohwx
toy robot on a blue background"), so `toy-sd15` already draws the background it is asked for and a
LoRA has only the robot to learn. Generation is seeded and written once under
`cache_dir()/datasets/demo`; `DEMO_VERSION` is stored beside the images, and a folder from another
version is rebuilt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from studio.core.atomic import write_text_atomic
from studio.paths import build_cached_dir, cache_dir
from studio.world.scene import COLOURS

# "ohwx" is one rare token in CLIP's vocabulary ("zwx" splits into "z" + "wx"), the usual choice
# for kohya-style trigger words.
DEMO_TRIGGER = "ohwx"
DEMO_CLASS = "toy robot"
DEMO_VERSION = 3
DEMO_COUNT = 16
_SEED = 1234
_MARKER = ".demo-version"
_SUPERSAMPLE = 4  # draw 4x larger, then downscale: smooth edges without an anti-aliasing library

_BACKGROUNDS = COLOURS
"""The toy world's named colours, so that the base model knows every background a caption names."""
_BODY = (228, 92, 38)
_HEAD = (196, 200, 210)
_DARK = (55, 58, 66)
_EYES = (40, 220, 235)
_ACCENT = (250, 215, 60)


@dataclass(frozen=True)
class _Shot:
    size: tuple[int, int]
    background: str
    x: float  # feet position across the image, 0..1
    height: float  # robot height as a fraction of the image height
    pose: str  # "down", "raised", "out"
    tilt: float  # degrees


def demo_dataset_dir() -> Path:
    """The demo dataset folder, generated on first use (atomically: temp folder, then rename)."""
    return build_cached_dir(cache_dir() / "datasets" / "demo", _is_current, generate_demo_dataset)


def generate_demo_dataset(folder: Path) -> list[Path]:
    """Draw the demo images and their `.txt` captions into `folder`; returns the image paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(_SEED)
    images = []
    for index in range(DEMO_COUNT):
        shot = _plan_shot(index, rng)
        path = folder / f"robot_{index:02d}.png"
        _draw(shot).save(path, format="PNG")
        write_text_atomic(path.with_suffix(".txt"), _caption(shot) + "\n")
        images.append(path)
    # written last: a folder with the marker is complete
    write_text_atomic(folder / _MARKER, f"{DEMO_VERSION}\n")
    return images


def _is_current(folder: Path) -> bool:
    marker = folder / _MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == str(DEMO_VERSION)


def _plan_shot(index: int, rng: random.Random) -> _Shot:
    size = {3: (128, 96), 9: (128, 96), 6: (96, 128), 12: (96, 128)}.get(index, (128, 128))
    x = rng.choice((0.3, 0.5, 0.5, 0.7))
    height = rng.uniform(0.5, 0.82)
    # keep outstretched arms and hands (0.52 of a robot height each side, more when tilted) in the frame
    half_width = min(0.5, 0.68 * height * size[1] / size[0])
    return _Shot(
        size=size,
        background=list(_BACKGROUNDS)[index % len(_BACKGROUNDS)],
        x=min(max(x, half_width), 1.0 - half_width),
        height=height,
        pose=("down", "raised", "out")[rng.randrange(3)],
        tilt=rng.uniform(-10.0, 10.0),
    )


def demo_caption(background: str) -> str:
    """The demo's caption for a picture on `background` (one of the world's colours)."""
    return f"a photo of {DEMO_TRIGGER} {DEMO_CLASS} on a {background} background"


def _caption(shot: _Shot) -> str:
    return demo_caption(shot.background)


def _draw(shot: _Shot) -> Image.Image:
    width, height = (side * _SUPERSAMPLE for side in shot.size)
    background = _BACKGROUNDS[shot.background]
    canvas = Image.new("RGB", (width, height), background)
    floor_y = int(height * 0.86)
    shade = tuple(int(c * 0.82) for c in background)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, floor_y, width, height), fill=shade)

    robot_h = shot.height * height
    feet = (shot.x * width, floor_y + 0.02 * height)
    shadow = tuple(int(c * 0.65) for c in background)
    spread, depth = 0.3 * robot_h, 0.04 * robot_h
    draw.ellipse((feet[0] - spread, feet[1] - depth, feet[0] + spread, feet[1] + depth), fill=shadow)

    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    _draw_robot(ImageDraw.Draw(layer), feet, robot_h, shot.pose)
    layer = layer.rotate(shot.tilt, resample=Image.Resampling.BICUBIC, center=feet)
    canvas = Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
    return canvas.resize(shot.size, Image.Resampling.LANCZOS)


def _draw_robot(draw: ImageDraw.ImageDraw, feet: tuple[float, float], h: float, pose: str) -> None:
    """The robot, in units of its height `h`, measured up from its feet."""
    fx, fy = feet

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (fx + x0 * h, fy - y1 * h, fx + x1 * h, fy - y0 * h)

    def point(x: float, y: float) -> tuple[float, float]:
        return (fx + x * h, fy - y * h)

    arm = max(2, int(0.07 * h))
    shoulders = ((-0.22, 0.55), (0.22, 0.55))
    hands = {
        "down": ((-0.29, 0.28), (0.29, 0.28)),
        "raised": ((-0.36, 0.86), (0.36, 0.86)),
        "out": ((-0.47, 0.55), (0.47, 0.55)),
    }[pose]
    for shoulder, hand in zip(shoulders, hands):
        draw.line([point(*shoulder), point(*hand)], fill=_DARK, width=arm)
        draw.ellipse(box(hand[0] - 0.05, hand[1] - 0.05, hand[0] + 0.05, hand[1] + 0.05), fill=_ACCENT)

    draw.rectangle(box(-0.17, 0.0, -0.06, 0.22), fill=_DARK)  # legs
    draw.rectangle(box(0.06, 0.0, 0.17, 0.22), fill=_DARK)
    draw.rounded_rectangle(box(-0.23, 0.2, 0.23, 0.6), radius=0.04 * h, fill=_BODY)
    draw.rectangle(box(-0.11, 0.32, 0.11, 0.48), fill=_ACCENT)  # chest panel
    for i, x in enumerate((-0.06, 0.0, 0.06)):
        draw.ellipse(box(x - 0.02, 0.38, x + 0.02, 0.42), fill=(_EYES, _BODY, _DARK)[i])
    draw.rectangle(box(-0.05, 0.6, 0.05, 0.64), fill=_DARK)  # neck
    draw.rounded_rectangle(box(-0.18, 0.63, 0.18, 0.88), radius=0.05 * h, fill=_HEAD)
    for x in (-0.075, 0.075):
        draw.ellipse(box(x - 0.04, 0.74, x + 0.04, 0.82), fill=_EYES)
    draw.line([point(-0.07, 0.68), point(0.07, 0.68)], fill=_DARK, width=max(1, int(0.02 * h)))
    draw.line([point(0.0, 0.88), point(0.0, 0.95)], fill=_DARK, width=max(1, int(0.025 * h)))
    draw.ellipse(box(-0.035, 0.94, 0.035, 1.0), fill=_ACCENT)
