"""The built-in base models, in one place: their names, families, what their weights are, and folders.

- `toy-sd15`: SD1.5 classes pretrained on the toy world (coloured shapes, 64 px); shipped in git.
  Its images mean something: the offline demo and the quality tests run on it.
- `tiny-sd15` / `tiny-sdxl`: the real architectures at minimal width with random weights, built in
  code; fast structural tests. Their images are noise by design, and the UI says so.

Importing this module is cheap (no torch): the config schema checks names against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from studio.world.builtin import TOY_SD15

Family = Literal["sd15", "sdxl"]


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    family: Family
    pretrained: bool
    """False: random weights, so every image is noise."""
    summary: str


def _random(name: str, family: Family) -> BuiltinModel:
    return BuiltinModel(name, family, False, f"{family} architecture at minimal width, random weights: "
                        "its images are noise by design")


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    TOY_SD15: BuiltinModel(TOY_SD15, "sd15", True,
                           "SD1.5 pretrained on the toy world: coloured circles, squares and triangles, 64 px"),
    "tiny-sd15": _random("tiny-sd15", "sd15"),
    "tiny-sdxl": _random("tiny-sdxl", "sdxl"),
}

NOISE_NOTE = "random-weight model: its images are noise by design"


def builtin_model_dir(name: str) -> Path:
    """The diffusers folder of built-in model `name` (tiny ones are built and cached on first use)."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"{name!r} is not a built-in model: expected one of {', '.join(BUILTIN_MODELS)}")
    if BUILTIN_MODELS[name].pretrained:
        from studio.world.builtin import toy_dir

        return toy_dir(name)
    from studio.engine.tiny import tiny_model_dir

    return tiny_model_dir(name)


def noise_note(base: str | None) -> str | None:
    """`NOISE_NOTE` when `base` names a random-weight built-in model, else None."""
    model = BUILTIN_MODELS.get((base or "").strip())
    return NOISE_NOTE if model is not None and not model.pretrained else None
