"""Read a picture of the toy world back by a pixel rule, independent of any model.

- Background colour: the median of the border pixels (a one-pixel frame, two pixels deep), named
  by the nearest of the world's colours.
- Object colour: every pixel far from the background's colour is named by its nearest world colour
  (the background's own name excluded); the most frequent name wins. A picture with too few such
  pixels has no object.

Shapes are not judged here: the rule for them is `toy-clip` (see `studio.world.report`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from studio.world.scene import COLOURS

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)
_BORDER = 2
_FAR = 80.0
"""RGB distance from the background above which a pixel counts as part of the object."""
_MIN_OBJECT = 0.02
"""Fewer object pixels than this fraction of the picture: no object."""


@dataclass(frozen=True)
class Reading:
    background: str
    colour: str | None
    """The object's colour; None when no object stands out from the background."""
    object_fraction: float


def _nearest(pixels: np.ndarray, exclude: str | None = None) -> np.ndarray:
    distances = np.linalg.norm(pixels[:, None, :] - _PALETTE[None, :, :], axis=-1)
    if exclude is not None:
        distances[:, _NAMES.index(exclude)] = np.inf
    return distances.argmin(axis=1)


def read_picture(image: Image.Image) -> Reading:
    """The background and object colours of `image` by the pixel rule."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([rgb[:_BORDER].reshape(-1, 3), rgb[-_BORDER:].reshape(-1, 3),
                             rgb[:, :_BORDER].reshape(-1, 3), rgb[:, -_BORDER:].reshape(-1, 3)])
    background_rgb = np.median(border, axis=0)
    background = _NAMES[int(_nearest(background_rgb[None])[0])]
    pixels = rgb.reshape(-1, 3)
    far = np.linalg.norm(pixels - background_rgb, axis=1) > _FAR
    fraction = float(far.mean())
    if fraction < _MIN_OBJECT:
        return Reading(background, None, fraction)
    names = _nearest(pixels[far], exclude=background)
    colour = _NAMES[int(np.bincount(names, minlength=len(_NAMES)).argmax())]
    return Reading(background, colour, fraction)
