"""Batch generation: N images from a prompt list with one LoRA (the product's synthetic-dataset step).

Image i uses prompt i mod len(prompts) and seed + i, and is saved as `{i:05d}.png` (atomically), so
a batch is resumable: running it again with the same settings skips the images already written and
fills in the rest, and a larger count extends it. A folder holding a batch made with other settings
(prompts, LoRA, scale, seed, sampler settings, base model) is refused, naming what differs, rather
than mixing two batches in one manifest. `manifest.json` lists every image in the folder with its
prompt and seed, next to the settings and base model that made them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from studio.data.atomic import write_json_atomic
from studio.engine.environment import library_versions
from studio.engine.gpu_lock import ACCELERATOR
from studio.engine.runs import RunFolder, now_iso
from studio.eval.grids import FINAL, MAX_SEED, PROMPT_ONLY, Column, grid_spec, lora_path, plan_columns

if TYPE_CHECKING:
    from PIL import Image

    from studio.eval.pipelines import PipelineCache

MANIFEST = "manifest.json"
GENERATED = "generated"
_IMAGE_RE = re.compile(r"^(\d{5,})\.png$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SETTINGS = ("run", "base_model", "family", "vae", "lora", "step", "scale", "seed", "prompts", "inference_steps",
            "guidance", "width", "height", "negative_prompt", "trigger_word")
"""What must match for a batch to continue in a folder (the count may grow or shrink)."""


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
    if not _NAME_RE.match(name):
        raise ValueError(f"batch name {name!r} must be 1–100 letters, digits, '.', '_' or '-' and start with "
                         "a letter or digit")
    return run.path / GENERATED / name


def image_name(index: int) -> str:
    return f"{index:05d}.png"


def _column(run: RunFolder, step: int | None, scale: float) -> Column:
    if scale == 0:
        return Column(None, 0.0, None, PROMPT_ONLY)
    [column] = plan_columns(run, FINAL if step is None else [step], [scale], prompt_only=False)
    return column


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): move the folder away or choose another one") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a batch manifest: choose another folder")
    return manifest


def _check_folder(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The folder's manifest when it holds a batch with these settings; None for a new or empty folder."""
    path = out_dir / MANIFEST
    if path.is_file():
        old = _read_manifest(path)
        changed = [f"{key}: {old.get(key)!r} → {settings[key]!r}"
                   for key in SETTINGS if old.get(key) != settings[key]]
        if changed:
            raise ValueError(f"{out_dir} holds a batch made with other settings ({'; '.join(changed)}): continue it "
                             "with the same settings, or choose another output folder")
        return old
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty and has no {MANIFEST}, so it is not a batch folder: "
                         "choose a new or empty folder")
    return None


def _save_png(image: Image.Image, path: Path) -> None:
    """Write then rename, so a stop or crash never leaves a half-written image that a rerun would skip."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            image.save(out, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _images(out_dir: Path, settings: dict[str, Any], fill: Callable[[str], str]) -> list[dict[str, Any]]:
    """Every image of the batch in the folder, by index."""
    indices = sorted(int(m.group(1)) for p in out_dir.iterdir() if (m := _IMAGE_RE.match(p.name)))
    prompts = settings["prompts"]
    return [{"file": image_name(i), "index": i,
             "prompt": fill(prompts[i % len(prompts)]), "seed": settings["seed"] + i, "step": settings["step"],
             "scale": settings["scale"], "lora": settings["lora"]} for i in indices]


def generate_batch(run: RunFolder, prompts: list[str], count: int, out_dir: Path, *, cache: PipelineCache,
                   step: int | None = None, scale: float = 1.0, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   inference_steps: int | None = None, guidance: float | None = None,
                   size: int | tuple[int, int] | None = None, negative_prompt: str | None = None) -> BatchResult:
    """`count` images into `out_dir`: image i is prompt i % len(prompts) at seed + i, file "{i:05d}.png".

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
    settings = {"run": run.name, "base_model": config.model.base, "family": config.model.family,
                "vae": config.model.vae, "lora": column.lora, "step": column.step, "scale": column.scale,
                "seed": seed, "prompts": spec.prompts, "inference_steps": spec.inference_steps,
                "guidance": spec.guidance, "width": spec.width, "height": spec.height,
                "negative_prompt": spec.negative_prompt, "trigger_word": trigger}
    old = _check_folder(out_dir, settings)
    lora = lora_path(run, column.lora) if column.lora else None
    missing = [i for i in range(count) if not (out_dir / image_name(i)).is_file()]
    skipped = count - len(missing)
    manifest = (old or {}) | settings | {"created": (old or {}).get("created") or now_iso(),
                                         "count": max(count, (old or {}).get("count", 0))}

    def write_manifest() -> Path:
        manifest.update(updated=now_iso(), images=_images(out_dir, settings, lambda p: fill_trigger(p, trigger)))
        return write_json_atomic(out_dir / MANIFEST, manifest)

    if not missing:
        write_manifest()
        return BatchResult(out_dir, 0, skipped, out_dir / MANIFEST)

    # 2. Render what is missing, one image at a time.
    written = 0
    with ACCELERATOR.hold("batch generation"):
        pipe = cache.pipeline(config)
        cache.use_lora(pipe, lora, column.scale)
        manifest.update(sampler=type(pipe.scheduler).__name__, device=pipe.unet.device.type,
                        dtype=str(pipe.unet.dtype).removeprefix("torch."),
                        versions=library_versions("diffusers", "torch", "transformers", "peft"))
        out_dir.mkdir(parents=True, exist_ok=True)
        write_manifest()  # before the first image, so a killed batch is still recognised as one when run again
        if progress and skipped:
            progress(skipped, count)
        try:
            for i in missing:
                if should_stop and should_stop():
                    break
                prompt = fill_trigger(spec.prompts[i % len(spec.prompts)], trigger)
                image = generate(pipe, prompt, seed + i, steps=spec.inference_steps, guidance=spec.guidance,
                                 width=spec.width, height=spec.height, negative_prompt=spec.negative_prompt)
                _save_png(image, out_dir / image_name(i))
                written += 1
                if progress:
                    progress(skipped + written, count)
        finally:
            write_manifest()
    return BatchResult(out_dir, written, skipped, out_dir / MANIFEST)
