"""What every captioner shares: the options, the error type, and the interface of a model backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image

TINY_RANDOM = "tiny-random"
"""Model name for blip / florence2: a tiny random-weights model built in code (captions mean nothing)."""

MAX_LENGTH_LIMIT = 512
"""Longest caption a model captioner may be asked for, in tokens (BLIP's decoder has 512 positions)."""


class CaptionerError(ValueError):
    """Unknown captioner, weights not available, a folder that is not a dataset, etc.; the message
    names the model or folder and says what to do."""


@dataclass(frozen=True)
class CaptionOptions:
    trigger: str = ""
    """Trigger word, e.g. "ohwx"."""
    class_phrase: str = ""
    """Template: what the subject is, e.g. "toy robot"."""
    description: str = ""
    """Template: a fixed description, e.g. "wearing a striped robe"."""
    prefix_trigger: bool = True
    """Model captioners: start each caption with "<trigger>, " (the template always starts with it)."""
    overwrite: bool = False
    """False: caption only the images that have no caption yet."""
    max_length: int = 77
    """Model captioners: the most new tokens a caption may have."""
    model: str | None = None
    """blip / florence2: a Hub id, a folder (relative names are looked up in `<models_dir>/captioners/`,
    then `<models_dir>`), or "tiny-random"; None = the captioner's default model. The template ignores it."""


class ModelCaptioner(Protocol):
    """A loaded captioning model: turns a batch of RGB images into raw captions (not yet cleaned)."""

    def caption(self, images: list[Image.Image], max_new_tokens: int) -> list[str]: ...
