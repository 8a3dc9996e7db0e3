"""Aspect-ratio buckets (NovelAI / kohya style): train landscape and portrait images uncropped.

Each bucket is a (width, height) whose sides are multiples of `step` and whose area is at most
`resolution²`, so every batch costs about the same memory as the square. An image goes to the
bucket whose aspect ratio is closest to its own, then is resized and centre-cropped to it.
"""

from __future__ import annotations

import math


def make_buckets(resolution: int, step: int = 64, max_aspect: float = 2.0) -> list[tuple[int, int]]:
    """All (width, height) buckets for `resolution`, sorted from tallest to widest.

    For every height (multiple of `step`) the widest landscape bucket that fits the area and the
    aspect limit is kept, only the largest bucket per aspect ratio survives, and the landscape
    set is mirrored into portrait. The square `resolution × resolution` is always included.
    """
    if step <= 0:
        raise ValueError(f"bucket step must be a positive number of pixels, got {step}")
    if resolution < step or resolution % step:
        raise ValueError(f"resolution {resolution} must be a positive multiple of the bucket step {step}")
    if max_aspect < 1.0:
        raise ValueError(f"max_aspect must be at least 1.0 (the square), got {max_aspect}")
    max_area = resolution * resolution
    by_aspect: dict[float, tuple[int, int]] = {}
    for height in range(step, resolution + 1, step):
        width = min(max_area // height, int(height * max_aspect)) // step * step
        if width < height:
            continue
        aspect = width / height
        kept = by_aspect.get(aspect)
        if kept is None or kept[0] * kept[1] < width * height:
            by_aspect[aspect] = (width, height)
    landscape = set(by_aspect.values())
    buckets = landscape | {(h, w) for w, h in landscape}
    return sorted(buckets, key=lambda wh: (wh[0] / wh[1], wh[0]))


def assign_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to `width / height` (compared in log space)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if not buckets:
        raise ValueError("no buckets to choose from: make_buckets() returned none")
    target = math.log(width / height)
    return min(buckets, key=lambda wh: abs(math.log(wh[0] / wh[1]) - target))
