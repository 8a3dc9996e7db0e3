"""From grids, batches and scores on disk to what the Compare and Score tabs draw.

Pure functions, no components: the gallery of a grid with captions, the before/after pair, the
per-column scorecard table (consistency beside the raw cosines) with the backbones named in its
headers, the fidelity-against-adherence chart frame, the recommendation, a batch's metrics with
their sample sizes and caveats, the DreamBooth reference values and the random-weights banner;
and the backbone names a user may type, confined to the models folder.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from studio.engine.builtin import noise_note
from studio.engine.runs import RunFolder, list_runs
from studio.eval.backbones import CLIP_CHOICES, CLIP_DEFAULT, DINO_CHOICES, DINO_DEFAULT, DINO_NONE
from studio.eval.columns import lora_steps
from studio.eval.generate import list_batches
from studio.eval.grids import list_grids
from studio.eval.inception import INCEPTION_CHOICES, INCEPTION_DEFAULT
from studio.eval.manifest import GridImage, GridManifest
from studio.eval.parsing import FINAL
from studio.eval.scorecard import (DREAMBOOTH_REFERENCE, baseline_column, column_kind, consistency_line,
                                   display_label, percent)
from studio.ui.security import Roots

RANDOM_BANNER = "random weights — these numbers mean nothing"
FIDELITY = {"DINO": "dino", "CLIP-I": "clip_i"}
"""The chart's fidelity axis: the metric the recommendation uses (DINO) or the CLIP image cosine."""
CHART_X = "CLIP-T"
CHART_Y = "fidelity"
CHART_COLOR = "column"
IMAGE_COLUMNS = ["Image", "Column", "Seed", "Prompt as CLIP read it"]


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


def runs_with_batches(outputs: Path) -> list[str]:
    return [run.name for run in list_runs(outputs) if list_batches(run)]


# --- grids ---------------------------------------------------------------------------------------

def caption(image: GridImage) -> str:
    """`step 8 · ×1 · seed 1 · prompt`: what a cell shows, column first (the grid's column label), so
    a caption cut short still says which column it is."""
    seed = f" · seed {image.seed}" if image.seed is not None else ""
    return f"{image.label}{seed} · {image.prompt}"


def gallery_items(folder: Path, images: list[GridImage]) -> list[tuple[str, str]]:
    """(file, caption) pairs in row order, so a gallery as wide as the grid shows it as a grid."""
    ordered = sorted(images, key=lambda im: (im.row, im.column))
    return [(str(folder / im.file), caption(im)) for im in ordered]


def baseline_index(manifest: GridManifest) -> int:
    """Index of the prompt-only column, or 0 (the slider's left side) when the grid has none."""
    return next((i for i, c in enumerate(manifest.columns) if c.kind == "prompt_only"), 0)


def row_choices(manifest: GridManifest) -> list[tuple[str, int]]:
    seeds = {im.row: im.seed for im in manifest.images if im.seed is not None}
    rows = {im.row: f"{im.row_prompt} · seed {seeds.get(im.row, '–')}" for im in manifest.images}
    return [(label, row) for row, label in sorted(rows.items())]


def column_choices(manifest: GridManifest) -> list[tuple[str, int]]:
    """The columns the slider can set against the baseline: every other one."""
    left = baseline_index(manifest)
    return [(c.label, i) for i, c in enumerate(manifest.columns) if i != left]


def slider_pair(folder: Path, manifest: GridManifest, row: Any, column: Any) -> tuple[tuple[str, str] | None, str]:
    """(baseline image, column image) of one row, and the slider's label; (None, label) when
    the grid has no such cell."""
    left = baseline_index(manifest)
    cells = {(im.row, im.column): folder / im.file for im in manifest.images}
    try:
        pair = cells[(int(row), left)], cells[(int(row), int(column))]
    except (KeyError, TypeError, ValueError):
        return None, "Before / after"
    labels = manifest.columns
    return (str(pair[0]), str(pair[1])), f"{labels[left].label} ⟷ {labels[int(column)].label}"


def grid_summary(grid_folder: Path, outputs: Path, manifest: GridManifest) -> str:
    where = grid_folder.relative_to(outputs) if grid_folder.is_relative_to(outputs) else grid_folder
    settings = (f"{manifest.sampler or 'no sampler'}, {manifest.inference_steps} steps, guidance "
                f"{manifest.guidance}, {manifest.width}×{manifest.height} px")
    external = [c.label for c in manifest.columns if c.kind == "external"]
    extras = ""
    if manifest.baseline_prompts:
        extras += f" · the baseline column renders: {'; '.join(dict.fromkeys(manifest.baseline_prompts))}"
    if external:
        extras += f" · other generators: {', '.join(external)}"
    return (f"**{manifest.name}** — {manifest.rows} rows (prompt × seed) × {len(manifest.columns)} columns, "
            f"{len(manifest.images)} images · {settings} · in `{where}`{extras}")


# --- scores --------------------------------------------------------------------------------------

def backbone_names(scores: dict[str, Any]) -> tuple[str, str]:
    backbones = scores["backbones"]
    return backbones["clip"]["name"], backbones["dino"]["name"]


def random_weights(scores: dict[str, Any]) -> bool:
    return any(b.get("random_weights") for b in scores["backbones"].values())


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)


def column_headers(scores: dict[str, Any] | None) -> list[str]:
    clip, dino = backbone_names(scores) if scores else ("CLIP", "DINO")
    return ["Column", "Step", "Scale", f"CLIP-I ({clip})", f"DINO ({dino})", f"CLIP-T ({clip})",
            "CLIP-T vs baseline", "Consistent", "Images"]


def columns_table(scores: dict[str, Any] | None) -> pd.DataFrame:
    """One row per grid column: raw cosines and consistency, the baseline and external columns marked."""
    headers = column_headers(scores)
    if not scores:
        return pd.DataFrame(columns=headers)
    base = baseline_column(scores["columns"])
    rows = []
    for c in scores["columns"]:
        delta = None if base is None or c is base or c.get("clip_t") is None else c["clip_t"] - base["clip_t"]
        lora = column_kind(c) == "lora"
        rows.append([display_label(c, base), str(c["step"]) if lora else "–", f"{c.get('scale', 0):g}" if lora else "–",
                     _round(c.get("clip_i")), _round(c.get("dino")), _round(c.get("clip_t")),
                     "" if delta is None else f"{delta:+.3f}", percent(c.get("consistency")), c.get("n", 0)])
    return pd.DataFrame(rows, columns=headers)


def images_table(scores: dict[str, Any] | None) -> pd.DataFrame:
    clip, dino = backbone_names(scores) if scores else ("CLIP", "DINO")
    headers = IMAGE_COLUMNS + [f"CLIP-I ({clip})", f"DINO ({dino})", f"CLIP-T ({clip})", "Consistent"]
    if not scores:
        return pd.DataFrame(columns=headers)
    rows = [[im["file"], im.get("label") or "prompt only", im.get("seed"), im.get("clip_prompt") or im["prompt"],
             _round(im.get("clip_i")), _round(im.get("dino")), _round(im.get("clip_t")),
             {True: "yes", False: "no"}.get(im.get("consistent"), "–")] for im in scores["images"]]
    return pd.DataFrame(rows, columns=headers)


def chart_frame(scores: dict[str, Any] | None, fidelity: str) -> pd.DataFrame | None:
    """One point per column (external ones too): x = CLIP-T (prompt adherence), y = the fidelity metric; None
    when nothing is scored (an empty frame would fix the chart's axes as categorical)."""
    if not scores:
        return None
    key = FIDELITY[drawn_fidelity(scores, fidelity)]
    base = baseline_column(scores["columns"])
    points = [(c["clip_t"], c[key], display_label(c, base))
              for c in scores["columns"] if c.get("clip_t") is not None and c.get(key) is not None]
    if not points:
        return None
    frame = pd.DataFrame(points, columns=[CHART_X, CHART_Y, CHART_COLOR])
    return frame.astype({CHART_X: "float64", CHART_Y: "float64", CHART_COLOR: "str"})


CHART_AXES = {CHART_X: (0.0, 0.5), CHART_Y: (0.0, 1.0)}
"""Fixed axis ranges, so a 0.004 difference looks as small as it is: CLIP-T (a raw image-text cosine)
rarely passes 0.4 with real CLIP weights (DreamBooth reports 0.305), image-image cosines (CLIP-I, DINO)
lie within 0..1. A range widens in steps of 0.1 only to keep a point that falls outside on the chart
(random-weight backbones give negative cosines)."""
CHART_COLORS = ("#4f46e5", "#16a34a", "#dc2626", "#d97706", "#0891b2", "#db2777", "#65a30d", "#7c3aed", "#0f766e")
BASELINE_COLOR = "#64748b"


def chart_limits(frame: pd.DataFrame | None) -> dict[str, list[float]]:
    """`x_lim` and `y_lim` of the fidelity chart: CHART_AXES, widened to the points where they fall outside."""
    limits = {}
    for column, key in ((CHART_X, "x_lim"), (CHART_Y, "y_lim")):
        low, high = CHART_AXES[column]
        if frame is not None and len(frame):
            low = min(low, math.floor(frame[column].min() * 10) / 10)
            high = max(high, math.ceil(frame[column].max() * 10) / 10)
        limits[key] = [low, high]
    return limits


def chart_colors(scores: dict[str, Any] | None, frame: pd.DataFrame | None) -> dict[str, str]:
    """The chart's column label → colour: slate for the baseline column, then a palette in column order."""
    if not scores or frame is None:
        return {}
    base = baseline_column(scores["columns"])
    baseline = display_label(base, base) if base is not None else None
    palette = iter(CHART_COLORS * len(frame))
    return {label: BASELINE_COLOR if label == baseline else next(palette)
            for label in dict.fromkeys(frame[CHART_COLOR])}


def drawn_fidelity(scores: dict[str, Any] | None, fidelity: str) -> str:
    """The fidelity axis the chart draws: the one picked, or CLIP-I when the grid has no score of it (scored
    without a DINO backbone), so a scored grid never shows an empty chart."""
    picked = fidelity if fidelity in FIDELITY else "DINO"
    if scores and not any(c.get(FIDELITY[picked]) is not None for c in scores["columns"]):
        return "CLIP-I"
    return picked


def chart_titles(scores: dict[str, Any] | None, fidelity: str) -> tuple[str, str]:
    clip, dino = backbone_names(scores) if scores else ("CLIP", "DINO")
    drawn = drawn_fidelity(scores, fidelity)
    backbone = dino if FIDELITY[drawn] == "dino" else clip
    instead = f", no {fidelity} score" if drawn != fidelity and fidelity in FIDELITY else ""
    return f"prompt adherence: CLIP-T ({clip})", f"fidelity: {drawn} ({backbone}{instead})"


def scores_summary(scores: dict[str, Any], base_model: str | None = None) -> str:
    clip, dino = backbone_names(scores)
    refs = scores["references"]
    dino_part = "no DINO (it needs the real dino-vits16 backbone)" if dino == DINO_NONE else f"DINO by `{dino}`"
    note = noise_note(base_model)
    return (f"Grid **{scores['grid']}** of run **{scores['run']}**, scored {scores.get('created', '')}: raw cosines. "
            f"CLIP-I and CLIP-T by CLIP `{clip}`, {dino_part}; {refs['count']} reference images from "
            f"`{Path(refs['folder']).name}`." + (f" The grid's images come from a {note}." if note else "")
            + f"\n\n{consistency_line(scores)}")


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


# --- batches ---------------------------------------------------------------------------------------

BATCH_HEADERS = ["Metric", "Value", "Sample sizes · backbone", "Caveat, or why it is missing"]


def batch_table(scores: dict[str, Any] | None) -> pd.DataFrame:
    """One row per batch metric: its value, sample sizes and backbone, and its caveat (or why it is null)."""
    from studio.eval.batch_scores import metric_rows

    return pd.DataFrame(metric_rows(scores) if scores else [], columns=BATCH_HEADERS)


def batch_summary(scores: dict[str, Any] | None, base_model: str | None = None) -> str:
    if not scores:
        return ""
    refs, backbones = scores["references"], scores["backbones"]
    names = ", ".join(f"{kind} `{b['name']}`" for kind, b in backbones.items())
    note = noise_note(base_model)
    return (f"Batch **{scores['batch']}** of run **{scores['run']}**, scored {scores.get('created', '')}: "
            f"{len(scores['images'])} images against {refs['count']} reference images from "
            f"`{Path(refs['folder']).name}`; backbones {names}. `scores.json` is in the batch folder."
            + (f" The images come from a {note}." if note else ""))


# --- backbones a user types ----------------------------------------------------------------------------

def clip_backbone(roots: Roots, text: str) -> str:
    """A listed CLIP backbone as is; `MODEL/TAG` with an open_clip pretrained tag; a weights file or
    `local-dir:` folder only inside the models root; `hf-hub:ORG/REPO` as a Hub id."""
    value = (text or "").strip() or CLIP_DEFAULT
    if value in CLIP_CHOICES or value.startswith("hf-hub:"):
        return value
    if value.startswith("local-dir:"):
        return "local-dir:" + roots.model(value.removeprefix("local-dir:"), "CLIP backbone", hub=False)
    model, sep, weights = value.partition("/")
    if not sep:
        raise ValueError(f"CLIP backbone {value!r}: give MODEL/TAG (e.g. {CLIP_DEFAULT}), MODEL/FILE with a "
                         f"weights file in {roots.models}, or one of {', '.join(CLIP_CHOICES)}")
    import open_clip  # only for a typed backbone: importing it takes seconds

    if weights in open_clip.list_pretrained_tags_by_model(model):
        return value
    return f"{model}/{roots.model(weights, 'CLIP backbone weights', hub=False)}"


def dino_backbone(roots: Roots, text: str) -> str:
    """A listed DINO backbone as is; anything else is a weights file or folder inside the models root."""
    value = (text or "").strip() or DINO_DEFAULT
    if value in DINO_CHOICES:
        return value
    return roots.model(value, "DINO backbone", hub=False)


def inception_backbone(roots: Roots, text: str) -> str:
    """A listed Inception backbone as is; anything else is the pt_inception weights file inside the models root."""
    value = (text or "").strip() or INCEPTION_DEFAULT
    if value in INCEPTION_CHOICES:
        return value
    return roots.model(value, "Inception backbone", hub=False)


INCEPTION_OPTIONS = backbone_choices(INCEPTION_CHOICES)
