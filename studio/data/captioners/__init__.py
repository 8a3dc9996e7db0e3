"""Auto-captioning for a dataset folder: one entry point, a small module per backend.

`caption_dataset(folder, captioner, options)` captions the images of a dataset (all of them with
`overwrite`, else those without a caption) and writes `.txt` sidecars all or nothing: every caption
is computed first and written in one `save_captions` call, so a failure at any point (weights
missing, offline, a crash mid-way) leaves every caption file as it was.

Backends: `template` (template.py: trigger word + class phrase, no model), `blip` (blip.py) and
`florence2` (florence2.py), which run under the accelerator lock. `loading.py` finds their weights
and explains what to do when they are missing; `tiny.py` builds the `tiny-random` models that tests
and offline trials use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from studio.data.captioners.base import MAX_LENGTH_LIMIT, TINY_RANDOM, CaptionerError, CaptionOptions
from studio.data.captioners.loading import DEFAULT_MODELS, ModelSource, resolve_model
from studio.data.captioners.template import template_caption
from studio.data.captioners.text import with_trigger

if TYPE_CHECKING:
    import torch

    from studio.data.captioners.base import ModelCaptioner
    from studio.data.dataset import DatasetScan, ImageItem

__all__ = [
    "BATCH_SIZE", "CAPTIONERS", "DEFAULT_MODELS", "TINY_RANDOM", "CaptionOptions", "CaptionResult", "CaptionerError",
    "caption_dataset",
]

CAPTIONERS: dict[str, str] = {
    "template": "Template: trigger word + class phrase (+ a fixed description) on every image; no model, instant",
    "blip": "BLIP: one short sentence per image (Salesforce BLIP base, ~1 GB download on first use)",
    "florence2": "Florence-2: a detailed caption, a few sentences per image (Florence-2 base, ~0.5 GB download "
                 "on first use)",
}
BATCH_SIZE = 8
"""Images per model call: enough to keep a GPU busy, small enough for BLIP large in fp16 on a T4."""


@dataclass
class CaptionResult:
    captions: dict[Path, str]
    """The new captions, image path (as the dataset scan names it) → text; only the images captioned."""
    kept: int
    """Images that already had a caption and were left alone."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, reason) for images that could not be captioned."""
    model: str = "template"
    """What produced the captions: "template", a Hub id, a model folder, or "tiny-random"."""
    random_weights: bool = False
    """True for tiny-random: the captions mean nothing."""
    written: list[Path] = field(default_factory=list)
    """Caption files written (empty with write=False)."""


def caption_dataset(
    folder: Path,
    captioner: str,
    options: CaptionOptions,
    *,
    write: bool = True,
    progress: Callable[[int, int], None] | None = None,
    models_dir: Path | None = None,
    existing: dict[Path, str] | None = None,
) -> CaptionResult:
    """Caption the images of `folder` (all with `options.overwrite`, else those without a caption).

    Model captioners run under `ACCELERATOR.hold("captioning")` (`AcceleratorBusy` while training
    runs). `progress(done, total)` follows the images to caption. `existing` gives the current
    caption per image (the Dataset tab passes its unsaved edits); None reads them from disk. With
    `write`, the new captions become `.txt` sidecars, all or nothing; `write=False` only returns them.
    Raises `CaptionerError` for anything the user can fix (the message says what).
    """
    _check_request(captioner, options)
    scan = _scan(folder)
    current = _current_captions(scan, existing)
    targets = [item for item in scan.items if options.overwrite or not current.get(item.path, "").strip()]
    result = CaptionResult(captions={}, kept=len(scan.items) - len(targets),
                           skipped=[(skip.rel, skip.reason) for skip in scan.skipped])
    if captioner == "template":
        text = template_caption(options)
        for done, item in enumerate(targets, start=1):
            result.captions[item.path] = text
            if progress is not None:
                progress(done, len(targets))
    else:
        source = resolve_model(captioner, options.model, models_dir or _default_models_dir())
        result.model, result.random_weights = source.location, source.random_weights
        if targets:
            result.captions = _caption_with_model(source, targets, options, result.skipped, progress)
    if write and result.captions:
        result.written = _save(scan.folder, result.captions)
    return result


def _check_request(captioner: str, options: CaptionOptions) -> None:
    if captioner not in CAPTIONERS:
        raise CaptionerError(f"unknown captioner {captioner!r}: choose one of {', '.join(CAPTIONERS)}")
    if captioner == "template":
        template_caption(options)  # raises when there is nothing to put in the caption
    elif not 1 <= options.max_length <= MAX_LENGTH_LIMIT:
        raise CaptionerError(f"max length must be between 1 and {MAX_LENGTH_LIMIT} tokens, not {options.max_length}")


def _scan(folder: Path) -> DatasetScan:
    from studio.data.dataset import BUILTIN_DEMO, DatasetError, scan_dataset

    if str(folder) == BUILTIN_DEMO:
        raise CaptionerError(f"{BUILTIN_DEMO} is a generated cache, not a dataset to edit: copy it into the "
                             "datasets folder first and caption the copy")
    try:
        return scan_dataset(folder, require_usable=False)
    except DatasetError as exc:
        raise CaptionerError(str(exc)) from exc


def _current_captions(scan: DatasetScan, existing: dict[Path, str] | None) -> dict[Path, str]:
    """Caption text per usable image: from the scan, or from `existing` matched by relative path."""
    if existing is None:
        return {item.path: item.caption or "" for item in scan.items}
    by_rel = {}
    for path, text in existing.items():
        rel = _relative(scan.folder, Path(path))
        if rel is not None:
            by_rel[rel] = text or ""
    return {item.path: by_rel.get(item.rel, "") for item in scan.items}


def _relative(folder: Path, path: Path) -> str | None:
    for base, target in ((folder, path), (folder.resolve(), path.resolve())):
        if target.is_relative_to(base):
            return target.relative_to(base).as_posix()
    return None


def _caption_with_model(
    source: ModelSource,
    targets: list[ImageItem],
    options: CaptionOptions,
    skipped: list[tuple[str, str]],
    progress: Callable[[int, int], None] | None,
) -> dict[Path, str]:
    """Caption `targets` in batches under the accelerator lock; unreadable images go to `skipped`."""
    import torch

    from studio.core.device import detect_device
    from studio.core.lock import ACCELERATOR

    device = detect_device().torch_device
    # fp16 halves memory and time on CUDA; MPS garbles half-precision output, and the CPU is slower in it
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    captions: dict[Path, str] = {}
    with ACCELERATOR.hold("captioning"):
        model = None
        try:
            model = _open_captioner(source, device, dtype)
            for start in range(0, len(targets), BATCH_SIZE):
                batch = targets[start:start + BATCH_SIZE]
                _caption_batch(model, batch, options, source.label, captions, skipped)
                for done in range(start + 1, start + len(batch) + 1):
                    if progress is not None:
                        progress(done, len(targets))
        except torch.OutOfMemoryError as exc:
            raise CaptionerError(
                f"the accelerator ran out of memory captioning with {source.location} ({BATCH_SIZE} images at a "
                "time): close other programs that use it, or choose a smaller model") from exc
        finally:
            model = None  # drop the weights first: empty_cache can only return memory nothing holds
            if device.type == "cuda":  # hand the memory back for training, not just to torch's cache
                torch.cuda.empty_cache()
    return captions


def _caption_batch(
    model: ModelCaptioner,
    batch: list[ImageItem],
    options: CaptionOptions,
    label: str,
    captions: dict[Path, str],
    skipped: list[tuple[str, str]],
) -> None:
    from studio.data.images import ImageSkip, load_image

    readable, images = [], []
    for item in batch:
        try:
            images.append(load_image(item.path))
            readable.append(item)
        except ImageSkip as skip:  # changed on disk since the scan
            skipped.append((item.rel, skip.reason))
    texts = model.caption(images, options.max_length) if images else []
    for item, text in zip(readable, texts):
        if not text:  # a caption of the trigger alone would hide that the model said nothing
            skipped.append((item.rel, f"{label} gave no caption for it"))
        else:
            captions[item.path] = with_trigger(text, options.trigger) if options.prefix_trigger else text


def _open_captioner(source: ModelSource, device: torch.device, dtype: torch.dtype) -> ModelCaptioner:
    if source.captioner == "blip":
        from studio.data.captioners.blip import BlipCaptioner

        return BlipCaptioner(source, device, dtype)
    from studio.data.captioners.florence2 import Florence2Captioner

    return Florence2Captioner(source, device, dtype)


def _save(folder: Path, captions: dict[Path, str]) -> list[Path]:
    from studio.data.captions import save_captions

    try:
        return save_captions(folder, captions)
    except OSError as exc:
        raise CaptionerError(f"could not write the captions into {folder} ({exc}); no caption file was changed") from exc


def _default_models_dir() -> Path:
    from studio.paths import default_models_dir

    return default_models_dir()

