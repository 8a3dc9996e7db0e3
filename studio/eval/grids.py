"""Comparison grids: rows are prompt × seed; columns prompt only, each checkpoint at each LoRA scale,
and other generators' images.

A row uses the same seed, sampler, steps and guidance in every rendered column, so a LoRA column
differs from the prompt-only one by its LoRA alone. With baseline prompts the prompt-only column
renders each row's baseline prompt instead (the long descriptive prompt a user would write without a
LoRA). External columns copy another generator's images in (matched to rows as `columns` says).
A grid is a folder `outputs/<run>/grids/<name>/` with the images (`r00-c00.png`, row then column), a
labelled `grid.png` and a `manifest.json` (`manifest.py`) that holds everything needed to render it
again (`spec_from_manifest`); on the CPU the same manifest gives the same pixels. The folder is built
under a temporary name and renamed into place when complete.

Scale 0 is the prompt-only image, so it is not repeated as a column per checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from studio.config import field_bounds
from studio.core.atomic import new_temp_dir, publish_dir
from studio.core.lock import ACCELERATOR
from studio.core.names import check_folder_name
from studio.data.images import ImageSkip, load_image
from studio.engine.environment import library_versions
from studio.engine.runs import RunFolder, now_iso
from studio.eval.columns import ExternalImages, lora_path, match_rows
from studio.eval.columns import plan_columns  # noqa: F401  the grid API's planner (studio.world.report imports it here)
from studio.eval.manifest import (MANIFEST_FILE, Column, GridImage, GridManifest, read_grid_manifest,
                                  write_manifest)
from studio.eval.parsing import check_seed, match_baselines

if TYPE_CHECKING:
    from PIL import Image

    from studio.eval.pipelines import PipelineCache

GRID_PNG = "grid.png"


# ---------------------------------------------------------------- the grid's settings


@dataclass(frozen=True)
class GridSpec:
    prompts: list[str]
    """Raw, may contain {trigger}."""
    seeds: list[int]
    columns: list[Column]
    inference_steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str = ""
    baseline_prompts: list[str] = field(default_factory=list)
    """One per prompt (raw), rendered by the prompt-only column; empty: it renders the prompt."""
    external: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    """External column label → its image file for each row, in row order."""


def _check_range(key: str, value: float, what: str) -> None:
    """`value` within the bounds the config schema gives `key` (one home for the limits)."""
    low, high = field_bounds(key)
    if not (math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)):
        raise ValueError(f"{what} {value:g} must be between {low:g} and {high:g}")


def _check_size(width: int, height: int) -> None:
    low, high = field_bounds("data.resolution")
    if not (low <= width <= high and low <= height <= high and width % 8 == 0 and height % 8 == 0):
        raise ValueError(f"image size {width}×{height}: width and height must be multiples of 8 (the VAE "
                         f"downscales 8×) between {low} and {high}")


def row_prompts(prompts: Sequence[str], seeds: Sequence[int], trigger: str) -> list[tuple[str, int]]:
    """(prompt with the trigger filled in, seed) per row, prompt-major: the grid's rows."""
    from studio.engine.sampling import fill_trigger

    return [(fill_trigger(raw, trigger), seed) for raw in prompts for seed in seeds]


def grid_spec(run: RunFolder, prompts: Sequence[str], seeds: Sequence[int], columns: Sequence[Column], *,
              baseline_prompts: Sequence[str] = (), external: Sequence[ExternalImages] = (),
              inference_steps: int | None = None, guidance: float | None = None,
              size: int | tuple[int, int] | None = None, negative_prompt: str | None = None) -> GridSpec:
    """The grid's settings, checked; what is not given comes from the run config (sample.inference_steps,
    sample.guidance_scale, data.resolution, sample.negative_prompt). `size` is one side or (width, height).
    `baseline_prompts`: one per prompt (or one for all); `external`: the image sets of the external
    columns, matched to the rows here."""
    from studio.engine.sampling import fill_trigger

    config = run.config()
    sample = config.sample
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise ValueError("no prompts: give at least one ({trigger} is the trigger word)")
    if not seeds:
        raise ValueError("no seeds: give at least one, e.g. 1")
    if not columns:
        raise ValueError("the grid has no columns: keep prompt only or pick at least one checkpoint")
    baselines = match_baselines(prompts, [p.strip() for p in baseline_prompts if p.strip()])
    steps = sample.inference_steps if inference_steps is None else int(inference_steps)
    _check_range("sample.inference_steps", steps, "inference steps")
    scale = sample.guidance_scale if guidance is None else float(guidance)
    _check_range("sample.guidance_scale", scale, "guidance")
    size = config.data.resolution if size is None else size
    width, height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    _check_size(width, height)
    seeds = [check_seed(int(s)) for s in seeds]

    trigger = config.data.trigger_word
    rows = [prompt for prompt, _ in row_prompts(prompts, seeds, trigger)]
    given = {images.label: images for images in external}
    wanted = [c.label for c in columns if c.kind == "external"]
    if sorted(given) != sorted(wanted):
        raise ValueError(f"external columns {wanted} do not match the image sets given ({list(given)})")
    matched = {label: tuple(match_rows(given[label], rows, lambda p: fill_trigger(p, trigger))) for label in wanted}
    return GridSpec(prompts=prompts, seeds=seeds, columns=list(columns), inference_steps=steps, guidance=scale,
                    width=width, height=height,
                    negative_prompt=sample.negative_prompt if negative_prompt is None else negative_prompt,
                    baseline_prompts=baselines, external=matched)


def spec_from_manifest(manifest: GridManifest, folder: Path) -> GridSpec:
    """The settings a grid was made with, to render it again; external columns take their images from
    the grid folder `folder`."""
    external = {c.label: tuple(folder / im.file for im in sorted(manifest.images, key=lambda im: im.row)
                               if im.column == index)
                for index, c in enumerate(manifest.columns) if c.kind == "external"}
    return GridSpec(prompts=list(manifest.prompts), seeds=list(manifest.seeds), columns=list(manifest.columns),
                    inference_steps=manifest.inference_steps, guidance=manifest.guidance, width=manifest.width,
                    height=manifest.height, negative_prompt=manifest.negative_prompt,
                    baseline_prompts=list(manifest.baseline_prompts), external=external)


# ---------------------------------------------------------------- grids on disk


@dataclass
class Grid:
    run: RunFolder
    name: str
    folder: Path
    """outputs/<run>/grids/<name>"""
    manifest: GridManifest

    @property
    def images(self) -> list[GridImage]:
        return self.manifest.images

    @property
    def grid_png(self) -> Path:
        return self.folder / GRID_PNG


def check_grid_name(name: str) -> str:
    return check_folder_name(name, "grid")


def _created(manifest: Path) -> tuple[float, float]:
    """Newest-first sort key: the manifest's creation time, then its file time."""
    mtime = manifest.stat().st_mtime
    try:
        created = dt.datetime.fromisoformat(json.loads(manifest.read_text(encoding="utf-8"))["created"]).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        created = mtime  # a manifest without a readable time still counts, by its file time
    return created, mtime


def list_grids(run: RunFolder) -> list[str]:
    """Complete grids (manifest present), newest first; folders starting with '.' are grids being written."""
    if not run.grids_dir.is_dir():
        return []
    manifests = [d / MANIFEST_FILE for d in run.grids_dir.iterdir()
                 if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_FILE).is_file()]
    return [m.parent.name for m in sorted(manifests, key=_created, reverse=True)]


def load_grid(run: RunFolder, name: str) -> Grid:
    """A grid of `run` from disk; FileNotFoundError / ValueError (ManifestError) with a clear message."""
    folder = run.grids_dir / check_grid_name(name)
    if not (folder / MANIFEST_FILE).is_file():
        known = ", ".join(list_grids(run)) or "none yet"
        raise FileNotFoundError(f"run {run.name} has no grid {name!r} (grids: {known})")
    return Grid(run, name, folder, read_grid_manifest(folder))


def _new_name(run: RunFolder, name: str | None) -> str:
    if name is not None:
        if (run.grids_dir / check_grid_name(name)).exists():
            raise ValueError(f"run {run.name} already has a grid named {name!r}: choose another name")
        return name
    stem = f"grid-{dt.datetime.now():%Y%m%d-%H%M%S}"
    name, n = stem, 2
    while (run.grids_dir / name).exists():
        name, n = f"{stem}-{n}", n + 1
    return name


def _external_image(label: str, path: Path) -> Image.Image:
    try:
        return load_image(path)
    except ImageSkip as skip:
        raise ValueError(f"external column {label}: cannot use {path}: {skip.reason}") from None


def row_label(prompt: str, baseline: str | None) -> str:
    """A row's label: its prompt, and its baseline prompt when the grid has them."""
    return f"{prompt} — baseline: {baseline}" if baseline else prompt


# ---------------------------------------------------------------- rendering


def make_grid(run: RunFolder, spec: GridSpec, *, cache: PipelineCache, name: str | None = None,
              progress: Callable[[int, int], None] | None = None) -> Grid:
    """Render `spec` into outputs/<run>/grids/<name>/ (images, grid.png, manifest.json), atomically.

    Holds the accelerator while rendering (AcceleratorBusy if training has it). `name` defaults to
    "grid-YYYYMMDD-HHMMSS"; an existing name is refused. `progress(done, total)` after each image.
    """
    from studio.engine.sampling import fill_trigger, generate
    from studio.eval.grid_image import draw_grid, fit_cell

    # 1. Check everything a user can get wrong before the model loads: names, LoRA files, external images.
    name = _new_name(run, name)
    config = run.config()
    loras = {c.lora: lora_path(run, c.lora) for c in spec.columns if c.lora}
    trigger = config.data.trigger_word
    rows = row_prompts(spec.prompts, spec.seeds, trigger)
    baselines = [fill_trigger(b, trigger) for b in spec.baseline_prompts for _ in spec.seeds]
    external = {label: [_external_image(label, p) for p in files] for label, files in spec.external.items()}
    total = len(rows) * len(spec.columns)
    rendered = [c for c in spec.columns if c.kind != "external"]

    with ACCELERATOR.hold("comparison grid"):
        pipe = cache.pipeline(config) if rendered else None
        tmp = new_temp_dir(run.grids_dir, name)
        try:
            # 2. Column by column, so each LoRA is switched on once; every image has its own seeded generator,
            # so the order changes nothing in the pixels.
            cells: list[list[Any]] = [[None] * len(spec.columns) for _ in rows]
            images: list[GridImage] = []
            for c, column in enumerate(spec.columns):
                if column.kind != "external":
                    cache.use_lora(pipe, loras.get(column.lora), column.scale if column.lora else 0.0)
                for r, (prompt, seed) in enumerate(rows):
                    file, source = f"r{r:02d}-c{c:02d}.png", None
                    if column.kind == "external":
                        image, shown, seed_used = external[column.label][r], prompt, None
                        source = str(spec.external[column.label][r])
                    else:
                        shown = baselines[r] if column.kind == "prompt_only" and baselines else prompt
                        image = generate(pipe, shown, seed, steps=spec.inference_steps, guidance=spec.guidance,
                                         width=spec.width, height=spec.height, negative_prompt=spec.negative_prompt)
                        seed_used = seed
                    image.save(tmp / file)
                    cells[r][c] = fit_cell(image)
                    images.append(GridImage(file=file, row=r, column=c, prompt=shown, row_prompt=prompt,
                                            seed=seed_used, label=column.label, step=column.step, scale=column.scale,
                                            lora=column.lora, source=source))
                    if progress:
                        progress(len(images), total)

            # 3. The labelled picture and the manifest, then the folder goes into place.
            labels = [(row_label(prompt, baselines[r] if baselines else None), f"seed {seed}")
                      for r, (prompt, seed) in enumerate(rows)]
            draw_grid(cells, [c.label for c in spec.columns], labels).save(tmp / GRID_PNG)
            manifest = GridManifest(
                name=name, run=run.name, created=now_iso(), base_model=config.model.base,
                family=config.model.family, vae=config.model.vae,
                sampler=type(pipe.scheduler).__name__ if pipe is not None else None,
                inference_steps=spec.inference_steps, guidance=spec.guidance, width=spec.width, height=spec.height,
                negative_prompt=spec.negative_prompt, trigger_word=trigger, class_phrase=config.data.class_phrase,
                prompts=spec.prompts, baseline_prompts=spec.baseline_prompts, seeds=spec.seeds,
                columns=spec.columns, images=sorted(images, key=lambda im: (im.row, im.column)),
                device=pipe.unet.device.type if pipe is not None else None,
                dtype=str(pipe.unet.dtype).removeprefix("torch.") if pipe is not None else None,
                versions=library_versions("diffusers", "torch", "transformers", "peft"))
            write_manifest(tmp, manifest)
            folder = run.grids_dir / name
            publish_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Grid(run, name, folder, manifest)
