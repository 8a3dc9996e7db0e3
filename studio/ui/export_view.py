"""What the Checkpoints tab offers and says about exports: the four formats, the preview images to
choose from, and the notice beside the Export button (what will be written where, with size and
time estimates for the merged formats). Plain functions of the run folder; the engine does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from studio.engine.runs import RunFolder

FORMATS = {
    "webui": "webui: the LoRA for A1111, Forge, ComfyUI, kohya and diffusers (+ .json, .preview.png)",
    "diffusers": "diffusers: the LoRA in diffusers' PEFT layout",
    "pipeline": "pipeline: the base model with the LoRA merged in, as a diffusers folder",
    "checkpoint": "checkpoint: the base model with the LoRA merged in, as one .safetensors for A1111 / ComfyUI",
}
MERGED = ("pipeline", "checkpoint")
AUTO, NONE = "auto", "none"


def preview_choices(run: RunFolder | None) -> list[tuple[str, str]]:
    """(label, value) pairs: automatic, none, then every sample image of the run by step."""
    from studio.engine.previews import sample_images

    choices = [("automatic: a sample of the exported step, or the nearest", AUTO), ("no preview image", NONE)]
    return choices + ([(image.label, image.key) for image in sample_images(run)] if run else [])


def resolve_preview(run: RunFolder, choice: str | None):
    """The engine's `preview` for a choice; only the run's own sample images can be named."""
    from studio.engine.previews import find_sample

    if choice in (None, "", AUTO):
        return "auto"
    if choice == NONE:
        return "none"
    return find_sample(run, choice).path


def _shown(run: RunFolder, path: Path) -> str:
    """`<run>/exports/…`: where the file goes, without the server's absolute path."""
    try:
        return str(path.relative_to(run.path.parent))
    except ValueError:
        return path.name


def export_note(run: RunFolder | None, step: int | None, fmt: str, scale: float | None,
                models_dir: Path | None) -> str:
    """What Export will write for this checkpoint and format (size and time for the merged formats)."""
    if run is None or step is None:  # what the page is built with: no engine import (peft, transformers) yet
        return "Pick a checkpoint to export."
    if fmt not in FORMATS:
        return f"Pick a format: {', '.join(FORMATS)}."
    from studio.engine.export import DTYPES, default_out

    scale = 1.0 if scale is None else float(scale)
    target = f"`{_shown(run, default_out(run, fmt, step, scale))}`"  # type: ignore[arg-type]
    if fmt == "webui":
        return f"Writes {target} with its `.json` (A1111's activation text) and `.preview.png`: a few MB, seconds."
    if fmt == "diffusers":
        return f"Writes {target} (`load_lora_weights` reads it): a few MB, seconds."
    from studio.engine.merge import estimate_merged_export
    from studio.engine.models import ModelLoadError

    config = run.config()
    try:
        estimate = estimate_merged_export(config, DTYPES[config.save.dtype], models_dir).describe()
    except (ModelLoadError, OSError, ValueError) as err:
        estimate = f"the base model cannot be read here ({err})"
    what = "a diffusers folder" if fmt == "pipeline" else "one .safetensors checkpoint"
    return (f"Merges the LoRA at weight **{scale:g}** into **{Path(config.model.base).name}** and writes {what}, "
            f"{target}: {estimate} ({config.save.dtype}). It loads the whole base model and holds the "
            "accelerator until it is done; the result stays on this machine (too big to download here).")


def downloads(path: Path, fmt: str) -> list[str]:
    """The files the browser gets: the LoRA (with its A1111 sidecar and preview); none for merged models."""
    if fmt in MERGED:
        return []
    companions = [path.with_suffix(".json"), path.with_suffix(".preview.png")] if fmt == "webui" else []
    return [str(path)] + [str(p) for p in companions if p.is_file()]


def written_note(run: RunFolder, path: Path, fmt: str = "webui") -> str:
    """The success notice beside Export: what was written, how big, and where to get it."""
    from studio.engine.environment import human_bytes

    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    where = "it stays on this machine" if fmt in MERGED else "download it from Exported files, just below"
    return f"✓ Exported: wrote `{_shown(run, path)}` ({human_bytes(size)}); {where}."


def gradio_progress(progress: Any) -> Callable[[str, int, int], None]:
    """The engine's `progress(what, done, total)` shown on a `gr.Progress` (megabytes while writing)."""
    def report(what: str, done: int, total: int) -> None:
        if total:
            progress((done // 1_000_000, max(1, total // 1_000_000)), desc=what, unit="MB")
        else:
            progress(0, desc=what)

    return report
