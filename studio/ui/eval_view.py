"""From grids and scores on disk to what the Compare and Score tabs draw.

Pure functions, no components: the gallery of a grid with captions, the before/after pair, the
per-column scorecard table with the backbones named in its headers, the fidelity-against-adherence
chart frame, the recommendation, the DreamBooth reference values and the random-weights banner.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from studio.engine.runs import RunFolder, list_runs
from studio.eval.backbones import CLIP_CHOICES, DINO_CHOICES
from studio.eval.grids import FINAL, PROMPT_ONLY, list_grids, lora_steps
from studio.eval.scorecard import DREAMBOOTH_REFERENCE

RANDOM_BANNER = "random weights — these numbers mean nothing"
FIDELITY = {"DINO": "dino", "CLIP-I": "clip_i"}
"""The chart's fidelity axis: the metric the recommendation uses (DINO) or the CLIP image cosine."""
CHART_X = "CLIP-T"
CHART_Y = "fidelity"
CHART_COLOR = "column"
IMAGE_COLUMNS = ["Image", "Column", "Seed", "Prompt as CLIP read it"]


def prompt_lines(text: str) -> list[str]:
    """Typed prompts, one per line; blank lines and lines starting with '#' are left out.

    Typed text is never taken as a file name (the engine's parse_prompts would read any path):
    files come through the upload box only.
    """
    return [line.strip() for line in (text or "").splitlines() if line.strip() and not line.strip().startswith("#")]


def number(value: float | str | None, kind: type, what: str) -> Any:
    """A number field's value as `kind`; an empty field is an error naming it."""
    if value is None or str(value).strip() == "":
        raise ValueError(f"{what} is empty: give a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not a number") from None
    if kind is int and not number.is_integer():
        raise ValueError(f"{what}: {value!r} must be a whole number")
    return kind(number)


# --- runs ----------------------------------------------------------------------------------------

def checkpoint_choices(run: RunFolder) -> list[str]:
    """Steps with a LoRA file, ascending, then "final" when the final LoRA exists."""
    return [str(step) for step in lora_steps(run)] + ([FINAL] if run.final_lora.is_file() else [])


def runs_with_lora(outputs: Path) -> list[str]:
    """Runs (newest first) with at least one LoRA file: a checkpoint's or the final one."""
    return [run.name for run in list_runs(outputs) if checkpoint_choices(run)]


def runs_with_grids(outputs: Path) -> list[str]:
    return [run.name for run in list_runs(outputs) if list_grids(run)]


# --- grids ---------------------------------------------------------------------------------------

def caption(image: dict[str, Any]) -> str:
    """`prompt · seed 1 · step 8 · ×1`: what a cell shows, in the words of the grid's column label."""
    return f"{image['prompt']} · seed {image['seed']} · {image.get('label') or PROMPT_ONLY}"


def gallery_items(folder: Path, images: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(file, caption) pairs in row order, so a gallery as wide as the grid shows it as a grid."""
    ordered = sorted(images, key=lambda im: (im["row"], im["column"]))
    return [(str(folder / im["file"]), caption(im)) for im in ordered]


def baseline_column(manifest: dict[str, Any]) -> int:
    """Index of the prompt-only column, or 0 (the slider's left side) when the grid has none."""
    return next((i for i, c in enumerate(manifest["columns"]) if c.get("step") is None and not c.get("lora")), 0)


def row_choices(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    rows = {im["row"]: f"{im['prompt']} · seed {im['seed']}" for im in manifest["images"]}
    return [(label, row) for row, label in sorted(rows.items())]


def column_choices(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """The columns the slider can set against the baseline: every other one."""
    left = baseline_column(manifest)
    return [(c["label"], i) for i, c in enumerate(manifest["columns"]) if i != left]


def slider_pair(folder: Path, manifest: dict[str, Any], row: Any, column: Any) -> tuple[tuple[str, str] | None, str]:
    """(baseline image, column image) of one row, and the slider's label; (None, label) when
    the grid has no such cell."""
    left = baseline_column(manifest)
    cells = {(im["row"], im["column"]): folder / im["file"] for im in manifest["images"]}
    try:
        pair = cells[(int(row), left)], cells[(int(row), int(column))]
    except (KeyError, TypeError, ValueError):
        return None, "Before / after"
    labels = manifest["columns"]
    return (str(pair[0]), str(pair[1])), f"{labels[left]['label']} ⟷ {labels[int(column)]['label']}"


def grid_summary(grid_folder: Path, outputs: Path, manifest: dict[str, Any]) -> str:
    rows = len({im["row"] for im in manifest["images"]})
    where = grid_folder.relative_to(outputs) if grid_folder.is_relative_to(outputs) else grid_folder
    settings = (f"{manifest.get('sampler', '?')}, {manifest.get('inference_steps')} steps, guidance "
                f"{manifest.get('guidance')}, {manifest.get('width')}×{manifest.get('height')} px")
    return (f"**{manifest['name']}** — {rows} rows (prompt × seed) × {len(manifest['columns'])} columns, "
            f"{len(manifest['images'])} images · {settings} · in `{where}`")


# --- scores --------------------------------------------------------------------------------------

def backbone_names(scores: dict[str, Any]) -> tuple[str, str]:
    backbones = scores["backbones"]
    return backbones["clip"]["name"], backbones["dino"]["name"]


def random_weights(scores: dict[str, Any]) -> bool:
    return any(b.get("random_weights") for b in scores["backbones"].values())


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)


def _is_baseline(column: dict[str, Any]) -> bool:
    return column.get("step") is None and not column.get("lora")


def column_headers(scores: dict[str, Any] | None) -> list[str]:
    clip, dino = backbone_names(scores) if scores else ("CLIP", "DINO")
    return ["Column", "Step", "Scale", f"CLIP-I ({clip})", f"DINO ({dino})", f"CLIP-T ({clip})",
            "CLIP-T vs baseline", "Images"]


def columns_table(scores: dict[str, Any] | None) -> pd.DataFrame:
    """One row per grid column: raw cosines, the prompt-only row marked as the baseline."""
    headers = column_headers(scores)
    if not scores:
        return pd.DataFrame(columns=headers)
    base = next((c for c in scores["columns"] if _is_baseline(c) and c.get("clip_t") is not None), None)
    rows = []
    for c in scores["columns"]:
        is_base = c is base
        delta = None if base is None or is_base or c.get("clip_t") is None else c["clip_t"] - base["clip_t"]
        rows.append([f"{c['label']} (baseline)" if is_base else c["label"],
                     "–" if c.get("step") is None else str(c["step"]),
                     "–" if c.get("step") is None else f"{c.get('scale', 0):g}",
                     _round(c.get("clip_i")), _round(c.get("dino")), _round(c.get("clip_t")),
                     "" if delta is None else f"{delta:+.3f}", c.get("n", 0)])
    return pd.DataFrame(rows, columns=headers)


def images_table(scores: dict[str, Any] | None) -> pd.DataFrame:
    clip, dino = backbone_names(scores) if scores else ("CLIP", "DINO")
    headers = IMAGE_COLUMNS + [f"CLIP-I ({clip})", f"DINO ({dino})", f"CLIP-T ({clip})"]
    if not scores:
        return pd.DataFrame(columns=headers)
    rows = [[im["file"], im.get("label") or PROMPT_ONLY, im.get("seed"), im.get("clip_prompt") or im["prompt"],
             _round(im.get("clip_i")), _round(im.get("dino")), _round(im.get("clip_t"))] for im in scores["images"]]
    return pd.DataFrame(rows, columns=headers)


def chart_frame(scores: dict[str, Any] | None, fidelity: str) -> pd.DataFrame | None:
    """One point per column: x = CLIP-T (prompt adherence), y = the fidelity metric; None when nothing is scored
    (an empty frame would fix the chart's axes as categorical)."""
    if not scores:
        return None
    key = FIDELITY.get(fidelity, "dino")
    points = [(c["clip_t"], c[key], f"{c['label']} (baseline)" if _is_baseline(c) else c["label"])
              for c in scores["columns"] if c.get("clip_t") is not None and c.get(key) is not None]
    if not points:
        return None
    frame = pd.DataFrame(points, columns=[CHART_X, CHART_Y, CHART_COLOR])
    return frame.astype({CHART_X: "float64", CHART_Y: "float64", CHART_COLOR: "str"})


def chart_titles(scores: dict[str, Any] | None, fidelity: str) -> tuple[str, str]:
    clip, dino = backbone_names(scores) if scores else ("CLIP", "DINO")
    backbone = dino if FIDELITY.get(fidelity, "dino") == "dino" else clip
    return f"prompt adherence: CLIP-T ({clip})", f"fidelity: {fidelity} ({backbone})"


def scores_summary(scores: dict[str, Any]) -> str:
    clip, dino = backbone_names(scores)
    refs = scores["references"]
    return (f"Grid **{scores['grid']}** of run **{scores['run']}**, scored {scores.get('created', '')}: raw cosines. "
            f"CLIP-I and CLIP-T by CLIP `{clip}`, DINO by `{dino}`; {refs['count']} reference images from "
            f"`{Path(refs['folder']).name}`.")


def recommendation_md(scores: dict[str, Any]) -> str:
    rec = scores.get("recommendation")
    if not rec:
        return "**Recommended:** none — the grid has no LoRA column (a checkpoint at a scale above 0) to choose from."
    return f"**Recommended: {rec['label']}** — {rec['reason']}"


def random_banner(scores: dict[str, Any] | None) -> str:
    """HTML warning naming the backbones with random weights; empty when both are real."""
    if not scores or not random_weights(scores):
        return ""
    which = " and ".join(f"{kind.upper()} {b['name']}" for kind, b in scores["backbones"].items()
                         if b.get("random_weights"))
    return (f'<div class="error-callout" role="alert"><b>⚠ {html.escape(which)}: {RANDOM_BANNER}.</b> '
            "Built-in tiny models for tests and offline trials; score with real backbones to judge a LoRA.</div>")


def dreambooth_reference_md() -> str:
    sd, real = DREAMBOOTH_REFERENCE["sd"], DREAMBOOTH_REFERENCE["real"]
    return (f"**For orientation**, the DreamBooth paper (Ruiz et al. 2023, Table 1) reports for Stable Diffusion "
            f"DINO {sd['dino']}, CLIP-I {sd['clip_i']}, CLIP-T {sd['clip_t']}, and for real images of the subject "
            f"DINO {real['dino']}, CLIP-I {real['clip_i']}. Its backbones, subjects and prompts differ from these, "
            "so compare the columns here with each other, not with the paper.")


def backbone_choices(choices: dict[str, str]) -> list[tuple[str, str]]:
    """Dropdown (label, value) pairs: the name and what it is, random weights said out loud."""
    return [(f"{name} — {description}", name) for name, description in choices.items()]


CLIP_OPTIONS = backbone_choices(CLIP_CHOICES)
DINO_OPTIONS = backbone_choices(DINO_CHOICES)
