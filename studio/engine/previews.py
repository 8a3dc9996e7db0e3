"""Preview images for the files users take elsewhere.

AUTOMATIC1111, Forge and LoRA managers show `<name>.preview.png` beside a LoRA or checkpoint file;
the same image, small, goes into the file itself as `modelspec.thumbnail` (a data URI). The image is
one of the run's validation samples: by default the first sample of the exported step, or of the
nearest step that has samples; the Checkpoints tab (and `export --preview`) can pick another.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from studio.core.atomic import write_png_atomic
from studio.engine.runs import RunFolder, step_dir_name

PREVIEW_SUFFIX = ".preview.png"
THUMBNAIL_MAX_CHARS = 64 * 1024
"""Longest `modelspec.thumbnail` data URI: the header stays small (A1111 reads whole headers)."""
THUMBNAIL_SIDE = 256


@dataclass(frozen=True)
class SampleImage:
    step: int
    path: Path
    prompt: str
    seed: int

    @property
    def key(self) -> str:
        """`step-000400/p00-s1.png`: how the Checkpoints tab names the image (never a full path)."""
        return f"{step_dir_name(self.step)}/{self.path.name}"

    @property
    def label(self) -> str:
        return f"step {self.step} · seed {self.seed} · {self.prompt}"


def sample_images(run: RunFolder) -> list[SampleImage]:
    """Every validation image of the run that is on disk, by step, in prompts.json order."""
    found = []
    for step in run.sample_steps():
        for entry in run.samples_at(step):
            path = Path(entry["file"])
            if path.is_file():
                found.append(SampleImage(step, path, str(entry.get("prompt", "")), int(entry.get("seed", 0))))
    return found


def default_preview(run: RunFolder, step: int) -> SampleImage | None:
    """The first sample of `step`, else of the nearest step with samples (the earlier one on a tie)."""
    images = sample_images(run)
    if not images:
        return None
    nearest = min({image.step for image in images}, key=lambda s: (abs(s - step), s))
    return next(image for image in images if image.step == nearest)


def find_sample(run: RunFolder, key: str) -> SampleImage:
    """The sample named `key` (see `SampleImage.key`); a name that is not one of the run's samples is refused."""
    for image in sample_images(run):
        if image.key == key:
            return image
    known = ", ".join(image.key for image in sample_images(run)[:6]) or "none (the run rendered no samples)"
    raise ValueError(f"run {run.name} has no sample image {key!r} (samples: {known})")


def preview_path(file: Path) -> Path:
    """`my-lora.safetensors` → `my-lora.preview.png` beside it."""
    return Path(file).with_suffix(PREVIEW_SUFFIX)


def write_preview(image: Path, beside: Path) -> Path:
    """Save `image` as PNG next to the file `beside`, atomically; returns the preview's path."""
    return write_png_atomic(preview_path(beside), _open_rgb(image))


def place_preview(image: Path | None, beside: Path) -> None:
    """`<name>.preview.png` next to `beside`; None removes a stale one an earlier export left."""
    if image is None:
        preview_path(beside).unlink(missing_ok=True)
    else:
        write_preview(image, beside)


def _open_rgb(image: Path) -> Image.Image:
    try:
        with Image.open(image) as img:
            return img.convert("RGB")
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"preview {image} is not an image that can be read: {err}") from None


def thumbnail_data_uri(image: Path, max_chars: int = THUMBNAIL_MAX_CHARS) -> str:
    """`data:image/…;base64,…` of `image` scaled to at most 256 px, at most `max_chars` long.

    PNG when it fits (samples are small and flat), else JPEG, halving the size until it fits.
    """
    rgb = _open_rgb(image)
    side = THUMBNAIL_SIDE
    while side >= 16:
        small = rgb.copy()
        small.thumbnail((side, side), Image.Resampling.LANCZOS)
        for fmt, mime, options in (("PNG", "image/png", {"optimize": True}), ("JPEG", "image/jpeg", {"quality": 85})):
            buffer = io.BytesIO()
            small.save(buffer, format=fmt, **options)
            uri = f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
            if len(uri) <= max_chars:
                return uri
        side //= 2
    raise ValueError(f"{image} does not fit a {max_chars}-character thumbnail even at 16 px")
