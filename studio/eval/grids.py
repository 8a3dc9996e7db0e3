"""Comparison grids: rows are prompt × seed, columns prompt only, then each checkpoint at each LoRA scale.

A row uses the same seed, sampler, steps and guidance in every column, so a column differs from
the prompt-only one by its LoRA alone. A grid is a folder `outputs/<run>/grids/<name>/` with the
images (`r00-c00.png`, row then column), a labelled `grid.png` and a `manifest.json` that holds
everything needed to render it again (`spec_from_manifest`); on the CPU the same manifest gives
the same pixels. The folder is built under a temporary name and renamed into place when complete.

Scale 0 is the prompt-only image, so it is not repeated as a column per checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from studio.data.atomic import write_json_atomic
from studio.engine.environment import library_versions
from studio.engine.gpu_lock import ACCELERATOR
from studio.engine.runs import RunFolder, new_temp_dir, now_iso, publish_dir

if TYPE_CHECKING:
    from studio.eval.pipelines import PipelineCache

MANIFEST = "manifest.json"
GRID_PNG = "grid.png"
PROMPT_ONLY = "prompt only"
FINAL = "final"
ALL = "all"
MAX_SEED = 2**63 - 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ---------------------------------------------------------------- parsing what a user typed


def _is_file(value: str) -> bool:
    try:
        return Path(value).expanduser().is_file()
    except OSError:  # e.g. a prompt longer than a file name may be: it is a prompt
        return False


def parse_prompts(value: str) -> list[str]:
    """An existing file → its non-blank lines (not starting with '#'); else the text, one prompt per line."""
    if _is_file(value):
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"prompt file {path} is not UTF-8 text: save it as plain text, "
                             "one prompt per line") from None
        where = f"prompt file {path}"
    else:
        text, where = value, "the prompt text"
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not prompts:
        raise ValueError(f"{where} holds no prompt: give one prompt per line ({{trigger}} is the trigger word)")
    return prompts


def _numbers(text: str, kind: type, what: str, example: str) -> list:
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what} {text!r} must be numbers separated by commas, e.g. {example}") from None
    if not values:
        raise ValueError(f"{what} is empty: give at least one, e.g. {example}")
    return list(dict.fromkeys(values))


def _check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} must be between 0 and {MAX_SEED}")
    return seed


def parse_seeds(text: str) -> list[int]:
    """"1,2" → [1, 2] (duplicates dropped); a clear ValueError otherwise."""
    return [_check_seed(s) for s in _numbers(text, int, "seeds", "1,2")]


def parse_scales(text: str) -> list[float]:
    """"0,0.5,1" → [0.0, 0.5, 1.0] (duplicates dropped)."""
    scales = _numbers(text, float, "LoRA scales", "0,0.5,1")
    bad = [s for s in scales if not math.isfinite(s)]
    if bad:
        raise ValueError(f"LoRA scales must be finite numbers, got {bad}")
    return scales


def parse_steps(text: str) -> str | list[int]:
    """"final", "all" or "4,8" (checkpoint steps), as plan_columns takes them."""
    value = str(text).strip().lower()
    if value in (FINAL, ALL):
        return value
    steps = _numbers(value, int, "checkpoint steps", "'final', 'all' or 500,1000")
    if any(s < 0 for s in steps):
        raise ValueError(f"checkpoint steps must not be negative, got {text!r}")
    return steps


# ---------------------------------------------------------------- columns


def lora_steps(run: RunFolder) -> list[int]:
    """Steps with a checkpoint LoRA file, ascending."""
    return [c.step for c in run.checkpoints() if c.lora_file.is_file()]


def final_step(run: RunFolder) -> int:
    """The step the final LoRA was saved at: run.json's last step, else train.max_steps."""
    last = run.read_status().get("last_step")
    return int(last) if isinstance(last, int) else run.config().train.max_steps


@dataclass(frozen=True)
class Column:
    step: int | None
    """None = prompt only (no LoRA)."""
    scale: float
    """0.0 for prompt only."""
    lora: str | None
    """LoRA file relative to the run folder ("<run>.safetensors" for the final LoRA)."""
    label: str
    """"prompt only", "step 4 · ×1", "final · ×0.5"."""


def _relative(run: RunFolder, path: Path) -> str:
    return path.relative_to(run.path).as_posix()


def _no_lora(run: RunFolder) -> ValueError:
    return ValueError(f"run {run.name} has no LoRA file yet (no {run.final_lora.name}, no checkpoint LoRA): "
                      "train it until it saves a checkpoint or finishes")


def _loras(run: RunFolder, steps: str | Sequence[int]) -> list[tuple[int, str, str]]:
    """(step, LoRA file relative to the run, name for labels) for each picked LoRA."""
    checkpoints = {c.step: c for c in run.checkpoints() if c.lora_file.is_file()}
    final = [(final_step(run), run.final_lora.name, FINAL)] if run.final_lora.is_file() else []
    as_checkpoint = [(s, _relative(run, c.lora_file), f"step {s}") for s, c in sorted(checkpoints.items())]
    if isinstance(steps, str):
        if steps == FINAL:
            picked = final or as_checkpoint[-1:]
        elif steps == ALL:
            # the final LoRA is the last checkpoint's weights when a checkpoint was saved at the last step
            picked = as_checkpoint + [f for f in final if f[0] not in checkpoints]
        else:
            raise ValueError(f"checkpoints {steps!r} must be {FINAL!r}, {ALL!r} or a list of steps")
        if not picked:
            raise _no_lora(run)
        return picked
    unknown = [s for s in steps if s not in checkpoints]
    if unknown:
        available = ", ".join(str(s) for s in checkpoints) or "none"
        raise ValueError(f"run {run.name} has no checkpoint LoRA at step {', '.join(map(str, unknown))} "
                         f"(available: {available})")
    return [(s, _relative(run, checkpoints[s].lora_file), f"step {s}") for s in dict.fromkeys(steps)]


def plan_columns(run: RunFolder, steps: str | list[int] = FINAL, scales: Sequence[float] = (1.0,),
                 prompt_only: bool = True) -> list[Column]:
    """Prompt only first, then each picked LoRA × each nonzero scale.

    `steps`: "final" (the final LoRA, else the latest checkpoint), "all" (every checkpoint, then the
    final LoRA unless a checkpoint has its step) or checkpoint steps (an unknown step → ValueError
    naming the available ones).
    """
    lora_scales = [float(s) for s in dict.fromkeys(scales) if s != 0]
    columns = [Column(None, 0.0, None, PROMPT_ONLY)] if prompt_only else []
    for step, lora, name in _loras(run, steps):
        columns += [Column(step, scale, lora, f"{name} · ×{scale:g}") for scale in lora_scales]
    return columns


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


def _check_size(width: int, height: int) -> None:
    if not (64 <= width <= 4096 and 64 <= height <= 4096 and width % 8 == 0 and height % 8 == 0):
        raise ValueError(f"image size {width}×{height}: width and height must be multiples of 8 (the VAE "
                         "downscales 8×) between 64 and 4096")


def grid_spec(run: RunFolder, prompts: Sequence[str], seeds: Sequence[int], columns: Sequence[Column], *,
              inference_steps: int | None = None, guidance: float | None = None,
              size: int | tuple[int, int] | None = None, negative_prompt: str | None = None) -> GridSpec:
    """The grid's settings, checked; what is not given comes from the run config (sample.inference_steps,
    sample.guidance_scale, data.resolution, sample.negative_prompt). `size` is one side or (width, height)."""
    sample = run.config().sample
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise ValueError("no prompts: give at least one ({trigger} is the trigger word)")
    if not seeds:
        raise ValueError("no seeds: give at least one, e.g. 1")
    if not columns:
        raise ValueError("the grid has no columns: keep prompt only or pick at least one checkpoint")
    steps = sample.inference_steps if inference_steps is None else int(inference_steps)
    if not 1 <= steps <= 200:
        raise ValueError(f"inference steps {steps} must be between 1 and 200")
    scale = sample.guidance_scale if guidance is None else float(guidance)
    if not (math.isfinite(scale) and 0 <= scale <= 30):
        raise ValueError(f"guidance {scale} must be between 0 and 30")
    size = run.config().data.resolution if size is None else size
    width, height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    _check_size(width, height)
    return GridSpec(prompts=prompts, seeds=[_check_seed(int(s)) for s in seeds], columns=list(columns),
                    inference_steps=steps, guidance=scale, width=width, height=height,
                    negative_prompt=sample.negative_prompt if negative_prompt is None else negative_prompt)


def spec_from_manifest(manifest: dict) -> GridSpec:
    """The settings a grid was made with, to render it again."""
    try:
        columns = [Column(step=c["step"], scale=float(c["scale"]), lora=c["lora"], label=c["label"])
                   for c in manifest["columns"]]
        return GridSpec(prompts=list(manifest["prompts"]), seeds=[int(s) for s in manifest["seeds"]],
                        columns=columns, inference_steps=int(manifest["inference_steps"]),
                        guidance=float(manifest["guidance"]), width=int(manifest["width"]),
                        height=int(manifest["height"]), negative_prompt=manifest.get("negative_prompt") or "")
    except KeyError as err:
        raise ValueError(f"the grid manifest has no {err.args[0]!r}, so the grid cannot be made again") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"the grid manifest is malformed ({err}), so the grid cannot be made again") from None


# ---------------------------------------------------------------- grids on disk


@dataclass
class Grid:
    run: RunFolder
    name: str
    folder: Path
    """outputs/<run>/grids/<name>"""
    manifest: dict

    @property
    def images(self) -> list[dict]:
        return self.manifest["images"]

    @property
    def grid_png(self) -> Path:
        return self.folder / GRID_PNG


def check_grid_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"grid name {name!r} must be 1–100 letters, digits, '.', '_' or '-' and start with "
                         "a letter or digit")
    return name


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
    manifests = [d / MANIFEST for d in run.grids_dir.iterdir()
                 if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).is_file()]
    return [m.parent.name for m in sorted(manifests, key=_created, reverse=True)]


def load_grid(run: RunFolder, name: str) -> Grid:
    """A grid of `run` from disk; FileNotFoundError / ValueError with a clear message."""
    folder = run.grids_dir / check_grid_name(name)
    path = folder / MANIFEST
    if not path.is_file():
        known = ", ".join(list_grids(run)) or "none yet"
        raise FileNotFoundError(f"run {run.name} has no grid {name!r} (grids: {known})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): make the grid again") from None
    if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), list) for k in ("images", "columns")):
        raise ValueError(f"{path} has no images/columns lists: make the grid again")
    return Grid(run, name, folder, manifest)


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


def lora_path(run: RunFolder, lora: str) -> Path:
    """The LoRA file a column names, which must lie inside the run folder."""
    path = (run.path / lora).resolve()
    if not path.is_relative_to(run.path.resolve()):
        raise ValueError(f"LoRA {lora!r} is outside the run folder {run.path}")
    if not path.is_file():
        raise FileNotFoundError(f"run {run.name} has no LoRA file {lora} (was the checkpoint pruned or deleted?)")
    return path


# ---------------------------------------------------------------- rendering


def make_grid(run: RunFolder, spec: GridSpec, *, cache: PipelineCache, name: str | None = None,
              progress: Callable[[int, int], None] | None = None) -> Grid:
    """Render `spec` into outputs/<run>/grids/<name>/ (images, grid.png, manifest.json), atomically.

    Holds the accelerator while rendering (AcceleratorBusy if training has it). `name` defaults to
    "grid-YYYYMMDD-HHMMSS"; an existing name is refused. `progress(done, total)` after each image.
    """
    from studio.engine.sampling import fill_trigger, generate
    from studio.eval.grid_image import draw_grid, fit_cell

    # 1. Check everything a user can get wrong before the model loads.
    name = _new_name(run, name)
    config = run.config()
    loras = {c.lora: lora_path(run, c.lora) for c in spec.columns if c.lora}
    trigger = config.data.trigger_word
    rows = [(fill_trigger(raw, trigger), seed) for raw in spec.prompts for seed in spec.seeds]
    total = len(rows) * len(spec.columns)

    with ACCELERATOR.hold("comparison grid"):
        pipe = cache.pipeline(config)
        tmp = new_temp_dir(run.grids_dir, name)
        try:
            # 2. Column by column, so each LoRA is switched on once; every image has its own seeded generator,
            # so the order changes nothing in the pixels.
            cells: list[list[Any]] = [[None] * len(spec.columns) for _ in rows]
            images = []
            for c, column in enumerate(spec.columns):
                cache.use_lora(pipe, loras.get(column.lora), column.scale if column.lora else 0.0)
                for r, (prompt, seed) in enumerate(rows):
                    image = generate(pipe, prompt, seed, steps=spec.inference_steps, guidance=spec.guidance,
                                     width=spec.width, height=spec.height, negative_prompt=spec.negative_prompt)
                    file = f"r{r:02d}-c{c:02d}.png"
                    image.save(tmp / file)
                    cells[r][c] = fit_cell(image)
                    images.append({"file": file, "row": r, "column": c, "prompt": prompt, "seed": seed,
                                   "step": column.step, "scale": column.scale, "lora": column.lora,
                                   "label": column.label})
                    if progress:
                        progress(len(images), total)

            # 3. The labelled picture and the manifest, then the folder goes into place.
            labels = [(prompt, f"seed {seed}") for prompt, seed in rows]
            draw_grid(cells, [c.label for c in spec.columns], labels).save(tmp / GRID_PNG)
            manifest = {
                "name": name, "run": run.name, "created": now_iso(),
                "base_model": config.model.base, "family": config.model.family, "vae": config.model.vae,
                "sampler": type(pipe.scheduler).__name__, "inference_steps": spec.inference_steps,
                "guidance": spec.guidance, "width": spec.width, "height": spec.height,
                "negative_prompt": spec.negative_prompt, "trigger_word": trigger,
                "class_phrase": config.data.class_phrase,
                "prompts": spec.prompts, "seeds": spec.seeds,
                "columns": [{"label": c.label, "step": c.step, "scale": c.scale, "lora": c.lora} for c in spec.columns],
                "images": sorted(images, key=lambda im: (im["row"], im["column"])),
                "device": pipe.unet.device.type, "dtype": str(pipe.unet.dtype).removeprefix("torch."),
                "versions": library_versions("diffusers", "torch", "transformers", "peft"),
            }
            write_json_atomic(tmp / MANIFEST, manifest)
            folder = run.grids_dir / name
            publish_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Grid(run, name, folder, manifest)
