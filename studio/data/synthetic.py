"""Generated image sets for the benchmarks: distinct drawn pictures (shapes on a two-colour background)
with a caption each, from a seed."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = ["red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "white", "black", "grey", "brown"]
MIXED_SIZES = [(512, 512), (512, 384), (384, 512)]
"""`mixed` sets cycle through these aspect ratios (scaled to `side` on the long side)."""


def write_image_set(folder: Path, count: int, side: int, seed: int = 0, *, mixed: bool = False) -> Path:
    """`count` distinct images of `side` px with a `.txt` caption each: square PNGs, or with `mixed` three
    aspect ratios, every third a JPEG, and file times an hour back (as a dataset's files are when it is
    opened, so none is too fresh for the scan cache)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    past = time.time() - 3600
    for i in range(count):
        width, height = (n * side // 512 for n in MIXED_SIZES[i % len(MIXED_SIZES)]) if mixed else (side, side)
        top, bottom = rng.choice(COLOURS), rng.choice(COLOURS)
        image = Image.new("RGB", (width, height), top)
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, height // 2, width, height), fill=bottom)
        shapes = []
        for _ in range(rng.randint(1, 4)):
            colour, kind = rng.choice(COLOURS), rng.choice(["circle", "square"])
            x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(side / 16, side / 4)
            (draw.ellipse if kind == "circle" else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
            shapes.append(f"a {colour} {kind}")
        path = folder / f"img_{i:04d}.{'jpg' if mixed and i % 3 == 2 else 'png'}"
        image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        caption = path.with_suffix(".txt")
        caption.write_text(f"ohwx, {', '.join(shapes)}, {top} and {bottom} background", encoding="utf-8")
        if mixed:
            for written in (path, caption):
                os.utime(written, (past, past))
    return folder
