"""Batch generation: N images from a prompt list with one LoRA (the product's synthetic-dataset step).

Image i uses prompt i mod len(prompts) and seed + i, and is saved as `{i:05d}.png` (atomically), so
a batch is resumable: running it again with the same settings skips the images already written and
fills in the rest, and a larger count extends it. A folder holding a batch made with other settings
(prompts, LoRA, scale, seed, sampler settings, base model) is refused, naming what differs, rather
than mixing two batches in one manifest. `manifest.json` (`manifest.py`) lists every image in the
folder with its prompt and seed, next to the settings and base model that made them.

Each image's prompt, trigger word kept, is also its caption: a `.txt` sidecar beside it and a line
of `metadata.jsonl`, so `check` and `train` take the folder as a dataset (the synthetic set goes
back into training), and `score --batch` scores it as a distribution.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from studio.core.atomic import write_png_atomic
from studio.core.lock import ACCELERATOR
from studio.core.names import check_folder_name
from studio.data.captions import sidecar_path, write_metadata_jsonl, write_sidecars
from studio.engine.environment import library_versions
from studio.engine.runs import RunFolder, now_iso
from studio.eval.columns import lora_path, plan_columns
from studio.eval.grids import grid_spec
from studio.eval.manifest import (MANIFEST_FILE, PROMPT_ONLY, BatchImage, BatchManifest, Column, read_batch_manifest,
                                  write_manifest)
from studio.eval.parsing import FINAL, MAX_SEED

if TYPE_CHECKING:
    from studio.eval.pipelines import PipelineCache

GENERATED = "generated"
_IMAGE_RE = re.compile(r"^(\d{5,})\.png$")


@dataclass
class BatchResult:
    out_dir: Path
    written: int
    """Images rendered by this call."""
    skipped: int
    """Images of the first `count` that were already in the folder."""
    manifest: Path


def generated_dir(run: RunFolder, name: str) -> Path:
    """outputs/<run>/generated/<name>, where the UI writes batches; an empty name gets a dated one."""
    name = name.strip() or f"batch-{dt.datetime.now():%Y%m%d-%H%M%S}"
    return run.path / GENERATED / check_folder_name(name, "batch")


def list_batches(run: RunFolder) -> list[str]:
    """Batches under outputs/<run>/generated/ (a manifest present), newest first."""
    folder = run.path / GENERATED
    if not folder.is_dir():
        return []
    found = [d for d in folder.iterdir() if d.is_dir() and (d / MANIFEST_FILE).is_file()]
    return [d.name for d in sorted(found, key=lambda d: (d / MANIFEST_FILE).stat().st_mtime, reverse=True)]


def batch_folder(run: RunFolder, value: str | Path) -> Path:
    """`--batch NAME|DIR`: a batch of the run by name, else a folder written by generate."""
    text = str(value).strip()
    if text and Path(text).name == text and (run.path / GENERATED / text / MANIFEST_FILE).is_file():
        return run.path / GENERATED / text
    path = Path(text).expanduser()
    if text and path.is_dir():
        return path
    known = ", ".join(list_batches(run)) or "none yet"
    raise FileNotFoundError(f"no batch {text!r}: neither a batch of run {run.name} (batches: {known}) nor a folder")


def image_name(index: int) -> str:
    return f"{index:05d}.png"


def _column(run: RunFolder, step: int | None, scale: float) -> Column:
    if scale == 0:
        return Column("prompt_only", PROMPT_ONLY)
    [column] = plan_columns(run, FINAL if step is None else [step], [scale], prompt_only=False)
    return column


def _check_folder(out_dir: Path, wanted: BatchManifest) -> BatchManifest | None:
    """The folder's manifest when it holds a batch with these settings; None for a new or empty folder."""
    if (out_dir / MANIFEST_FILE).is_file():
        old = read_batch_manifest(out_dir)
        mine, theirs = wanted.settings(), old.settings()
        changed = [f"{key}: {theirs[key]!r} → {mine[key]!r}" for key in BatchManifest.SETTINGS
                   if theirs[key] != mine[key]]
        if changed:
            raise ValueError(f"{out_dir} holds a batch made with other settings ({'; '.join(changed)}): continue it "
                             "with the same settings, or choose another output folder")
        return old
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty and has no {MANIFEST_FILE}, so it is not a batch folder: "
                         "choose a new or empty folder")
    return None


def _images(out_dir: Path, manifest: BatchManifest, fill: Callable[[str], str]) -> list[BatchImage]:
    """Every image of the batch in the folder, by index."""
    indices = sorted(int(m.group(1)) for p in out_dir.iterdir() if (m := _IMAGE_RE.match(p.name)))
    prompts = manifest.prompts
    return [BatchImage(file=image_name(i), index=i, prompt=fill(prompts[i % len(prompts)]), seed=manifest.seed + i,
                       step=manifest.step, scale=manifest.scale, lora=manifest.lora) for i in indices]


def _write_captions(out_dir: Path, images: list[BatchImage]) -> None:
    """Each image's prompt as its caption: the sidecars it lacks, and metadata.jsonl for all of them."""
    captions = {out_dir / im.file: im.prompt for im in images}
    write_sidecars({image: text for image, text in captions.items() if not sidecar_path(image).is_file()})
    write_metadata_jsonl(out_dir, captions)


def generate_batch(run: RunFolder, prompts: list[str], count: int, out_dir: Path, *, cache: PipelineCache,
                   step: int | None = None, scale: float = 1.0, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   inference_steps: int | None = None, guidance: float | None = None,
                   size: int | tuple[int, int] | None = None, negative_prompt: str | None = None) -> BatchResult:
    """`count` images into `out_dir`: image i is prompt i % len(prompts) at seed + i, file "{i:05d}.png",
    with its prompt as caption ("{i:05d}.txt" and a metadata.jsonl line).

    `step` None is the final LoRA (else the latest checkpoint); `scale` 0 is no LoRA. Sampler settings
    default to the run's sample section and data.resolution. Images already written are skipped;
    `should_stop()` is asked before each image; `progress(done, count)` follows each one. Holds the
    accelerator only when there is something to render.
    """
    from studio.engine.sampling import fill_trigger, generate

    # 1. Check the request and the folder before anything loads.
    if count < 1:
        raise ValueError(f"count {count} must be at least 1")
    if seed < 0 or seed + count - 1 > MAX_SEED:
        raise ValueError(f"seed {seed} must be between 0 and {MAX_SEED - count + 1} for {count} images")
    out_dir = Path(out_dir)
    config = run.config()
    column = _column(run, step, scale)
    spec = grid_spec(run, prompts, [seed], [column], inference_steps=inference_steps, guidance=guidance, size=size,
                     negative_prompt=negative_prompt)
    trigger = config.data.trigger_word
    manifest = BatchManifest(run=run.name, base_model=config.model.base, family=config.model.family,
                             vae=config.model.vae, lora=column.lora, step=column.step, scale=column.scale, seed=seed,
                             prompts=spec.prompts, inference_steps=spec.inference_steps, guidance=spec.guidance,
                             width=spec.width, height=spec.height, negative_prompt=spec.negative_prompt,
                             trigger_word=trigger, class_phrase=config.data.class_phrase)
    old = _check_folder(out_dir, manifest)
    lora = lora_path(run, column.lora) if column.lora else None
    missing = [i for i in range(count) if not (out_dir / image_name(i)).is_file()]
    skipped = count - len(missing)
    if old is not None:
        manifest.created, manifest.sampler, manifest.device = old.created, old.sampler, old.device
        manifest.dtype, manifest.versions = old.dtype, old.versions
    manifest.created = manifest.created or now_iso()
    manifest.count = max(count, old.count if old else 0)

    def save_manifest() -> Path:
        manifest.updated = now_iso()
        manifest.images = _images(out_dir, manifest, lambda p: fill_trigger(p, trigger))
        _write_captions(out_dir, manifest.images)
        return write_manifest(out_dir, manifest)

    if not missing:
        save_manifest()
        return BatchResult(out_dir, 0, skipped, out_dir / MANIFEST_FILE)

    # 2. Render what is missing, one image at a time; its caption goes beside it.
    written = 0
    with ACCELERATOR.hold("batch generation"):
        pipe = cache.pipeline(config)
        cache.use_lora(pipe, lora, column.scale)
        manifest.sampler, manifest.device = type(pipe.scheduler).__name__, pipe.unet.device.type
        manifest.dtype = str(pipe.unet.dtype).removeprefix("torch.")
        manifest.versions = library_versions("diffusers", "torch", "transformers", "peft")
        out_dir.mkdir(parents=True, exist_ok=True)
        save_manifest()  # before the first image, so a killed batch is still recognised as one when run again
        if progress and skipped:
            progress(skipped, count)
        try:
            for i in missing:
                if should_stop and should_stop():
                    break
                prompt = fill_trigger(spec.prompts[i % len(spec.prompts)], trigger)
                image = generate(pipe, prompt, seed + i, steps=spec.inference_steps, guidance=spec.guidance,
                                 width=spec.width, height=spec.height, negative_prompt=spec.negative_prompt)
                write_png_atomic(out_dir / image_name(i), image)
                write_sidecars({out_dir / image_name(i): prompt})
                written += 1
                if progress:
                    progress(skipped + written, count)
        finally:
            save_manifest()
    return BatchResult(out_dir, written, skipped, out_dir / MANIFEST_FILE)
