"""The columns of a comparison grid, planned once for the CLI and the Compare tab.

Prompt only first (no LoRA; with baseline prompts it renders each row's baseline prompt), then
each picked LoRA at each nonzero scale (checkpoints ascending, the final LoRA last), then the
external columns: another generator's images, one folder (or set of uploaded files) per column.

External images are matched to the grid's rows (prompt × seed, prompt-major) in one of two ways:

1. By prompt, when the folder says which prompt made each image: a `prompts.json` (a mapping
   `{"file name": "prompt"}` or a list of `{"file": …, "prompt": …}`), or the `manifest.json` of a
   `generate` batch. Each row takes the next image (in file-name order) of its prompt, compared
   without case and extra spaces, with `{trigger}` filled in; a row with none left is an error.
2. By file order otherwise: file names in natural order ("2.png" before "10.png"), image i in
   row i; the folder must hold exactly one image per row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from studio.data.images import IMAGE_EXTENSIONS
from studio.engine.runs import RunFolder
from studio.eval.manifest import BASELINE, MANIFEST_FILE, PROMPT_ONLY, Column
from studio.eval.parsing import ALL, FINAL

PROMPTS_FILE = "prompts.json"
UPLOADED = "uploaded files"


def lora_steps(run: RunFolder) -> list[int]:
    """Steps with a checkpoint LoRA file, ascending."""
    return [c.step for c in run.checkpoints() if c.lora_file.is_file()]


def final_step(run: RunFolder) -> int:
    """The step the final LoRA was saved at: run.json's last step, else train.max_steps."""
    last = run.read_status().get("last_step")
    return int(last) if isinstance(last, int) else run.config().train.max_steps


def lora_path(run: RunFolder, lora: str) -> Path:
    """The LoRA file a column names, which must lie inside the run folder."""
    path = (run.path / lora).resolve()
    if not path.is_relative_to(run.path.resolve()):
        raise ValueError(f"LoRA {lora!r} is outside the run folder {run.path}")
    if not path.is_file():
        raise FileNotFoundError(f"run {run.name} has no LoRA file {lora} (was the checkpoint pruned or deleted?)")
    return path


def _relative(run: RunFolder, path: Path) -> str:
    return path.relative_to(run.path).as_posix()


def _no_lora(run: RunFolder) -> ValueError:
    return ValueError(f"run {run.name} has no LoRA file yet (no {run.final_lora.name}, no checkpoint LoRA): "
                      "train it until it saves a checkpoint or finishes")


def _loras(run: RunFolder, steps: str | Sequence[int | str]) -> list[tuple[int, str, str]]:
    """(step, LoRA file relative to the run, name for labels) for each picked LoRA, in column order."""
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
    numbers = sorted({int(s) for s in steps if s != FINAL})
    unknown = [s for s in numbers if s not in checkpoints]
    if unknown:
        available = ", ".join(str(s) for s in checkpoints) or "none"
        raise ValueError(f"run {run.name} has no checkpoint LoRA at step {', '.join(map(str, unknown))} "
                         f"(available: {available})")
    picked = [(s, _relative(run, checkpoints[s].lora_file), f"step {s}") for s in numbers]
    if FINAL in steps:
        if not final:
            raise ValueError(f"run {run.name} has no final LoRA ({run.final_lora.name}) yet: pick a checkpoint")
        picked += final
    return picked


@dataclass(frozen=True)
class ExternalImages:
    """Another generator's images, to become one labelled column."""

    label: str
    files: tuple[Path, ...]
    """Image files in natural name order."""
    prompts: dict[str, str] | None
    """File name → the prompt that made it, when the folder says (prompts.json or a batch manifest)."""
    source: str
    """Where they came from, for the manifest: the folder, or "uploaded files"."""


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _read_prompts(path: Path) -> dict[str, str]:
    """prompts.json ({file: prompt} or [{file, prompt}]) or a batch manifest.json (images[].file/prompt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path} ({err}): it must be JSON mapping image files to prompts") from None
    if path.name == MANIFEST_FILE and isinstance(data, dict):
        data = data.get("images")
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {Path(str(k)).name: v for k, v in data.items()}
    if isinstance(data, list) and all(isinstance(e, dict) and "prompt" in e and ("file" in e or "file_name" in e)
                                      for e in data):
        return {Path(str(e.get("file") or e.get("file_name"))).name: str(e["prompt"]) for e in data}
    raise ValueError(f"{path} must map image files to prompts: {{\"00000.png\": \"a photo of …\"}} or "
                     "[{\"file\": \"00000.png\", \"prompt\": \"a photo of …\"}]")


def _check_label(label: str) -> str:
    label = " ".join((label or "").split())
    if not label:
        raise ValueError("an external column needs a label, e.g. Freepik")
    if len(label) > 60:
        raise ValueError(f"external column label {label[:20]!r}… is longer than 60 characters")
    return label


def external_from_folder(label: str, folder: Path) -> ExternalImages:
    """The images of `folder` (not its sub-folders) as the column `label`, with prompts.json or a batch
    manifest when there is one."""
    label, folder = _check_label(label), Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"external column {label}: folder {folder} does not exist")
    files = tuple(sorted((p for p in folder.iterdir() if _is_image(p)), key=_natural_key))
    if not files:
        raise ValueError(f"external column {label}: {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    index = next((folder / n for n in (PROMPTS_FILE, MANIFEST_FILE) if (folder / n).is_file()), None)
    return ExternalImages(label, files, _read_prompts(index) if index else None, str(folder))


def external_from_files(label: str, paths: Sequence[Path]) -> ExternalImages:
    """Uploaded files as the column `label`: the images, and a prompts.json among them if there is one."""
    label = _check_label(label)
    paths = [Path(p) for p in paths]
    files = tuple(sorted((p for p in paths if _is_image(p)), key=_natural_key))
    if not files:
        raise ValueError(f"external column {label}: no images among the files ({', '.join(IMAGE_EXTENSIONS)})")
    index = next((p for p in paths if p.name == PROMPTS_FILE), None)
    return ExternalImages(label, files, _read_prompts(index) if index else None, UPLOADED)


def _same_prompt(text: str) -> str:
    return " ".join(text.lower().split())


def match_rows(images: ExternalImages, rows: list[str], fill) -> list[Path]:
    """The image of each row (`rows`: the rows' prompts, trigger filled), by prompt or by file order
    (see the module docstring); `fill` fills `{trigger}` into a prompt the folder lists raw."""
    if images.prompts is None:
        if len(images.files) != len(rows):
            raise ValueError(f"external column {images.label}: {len(images.files)} images for {len(rows)} rows "
                             f"(prompts × seeds). Without a {PROMPTS_FILE} they are matched in file order, one per "
                             "row: give exactly one per row, or a prompts.json naming each image's prompt")
        return list(images.files)
    by_prompt: dict[str, list[Path]] = {}
    for file in images.files:
        prompt = images.prompts.get(file.name)
        if prompt is not None:
            by_prompt.setdefault(_same_prompt(fill(prompt)), []).append(file)
    picked = []
    for prompt in rows:
        left = by_prompt.get(_same_prompt(prompt), [])
        if not left:
            wanted = sum(1 for r in rows if _same_prompt(r) == _same_prompt(prompt))
            raise ValueError(f"external column {images.label}: no image left for the prompt {prompt!r} "
                             f"({wanted} rows use it, one per seed): list one image per row for it in "
                             f"{PROMPTS_FILE}")
        picked.append(left.pop(0))
    return picked


def plan_columns(run: RunFolder, steps: str | Sequence[int | str] = FINAL, scales: Sequence[float] = (1.0,),
                 prompt_only: bool = True, *, baseline: bool = False,
                 external: Sequence[ExternalImages] = ()) -> list[Column]:
    """Prompt only first ("baseline prompt" with `baseline`), then each picked LoRA × each nonzero scale,
    then one column per external image set.

    `steps`: "final" (the final LoRA, else the latest checkpoint), "all" (every checkpoint, then the
    final LoRA unless a checkpoint has its step) or checkpoint steps, "final" among them if wanted
    (ascending, the final LoRA last; an unknown step → ValueError naming the available ones). An
    empty list picks no LoRA.
    """
    lora_scales = [float(s) for s in dict.fromkeys(scales) if s != 0]
    columns = [Column("prompt_only", BASELINE if baseline else PROMPT_ONLY)] if prompt_only else []
    if isinstance(steps, str) or steps:
        for step, lora, name in _loras(run, steps):
            columns += [Column("lora", f"{name} · ×{scale:g}", step, scale, lora) for scale in lora_scales]
    labels = [c.label for c in columns]
    for images in external:
        if images.label in labels:
            raise ValueError(f"external column label {images.label!r} is taken: give each column its own label")
        labels.append(images.label)
        columns.append(Column("external", images.label, source=images.source))
    return columns
