"""The scorecard: fidelity (CLIP-I, DINO) against prompt adherence (CLIP-T) per checkpoint and scale,
a recommended checkpoint with the reason, and the DreamBooth paper's values for orientation.
"""

from __future__ import annotations

from typing import Any

DREAMBOOTH_REFERENCE = {"sd": {"dino": 0.668, "clip_i": 0.803, "clip_t": 0.305},
                        "real": {"dino": 0.774, "clip_i": 0.885}}
"""DreamBooth (Ruiz et al. 2023), Table 1: Stable Diffusion DreamBooth, and real images of the subject."""

CLIP_T_TOLERANCE = 0.01
"""How far a LoRA column's CLIP-T may fall below prompt only and still count as following the prompt:
a column of a few images moves by about this much from seed to seed alone."""

RANDOM_WARNING = "random weights — numbers mean nothing"
METRIC_NAMES = {"clip_i": "CLIP-I", "dino": "DINO", "clip_t": "CLIP-T"}
_EPS = 1e-9


def recommend(columns: list[dict[str, Any]], *, random_weights: bool = False,
              reference_clip_t: float | None = None) -> dict[str, Any] | None:
    """The LoRA column (step set, scale > 0) with the best fidelity whose CLIP-T stays within
    `CLIP_T_TOLERANCE` of the prompt floor; if none does, the one that follows the prompt best.

    The prompt floor is prompt only's CLIP-T, or the references' own CLIP-T against their captions
    (`reference_clip_t`) where that is lower: a picture of the subject itself can score below a
    picture without it (a scorer that has never seen the subject matches the rest of the prompt
    better without it), and a LoRA that draws the subject as well as its training images do follows
    the prompt as well as the subject allows.

    Fidelity is DINO (CLIP-I where a column has no DINO score). Returns {"label", "step", "scale",
    "column", "reason"} (the reason reads after the label: "step 1500 · ×1 — highest DINO …"), or None
    when there is no scored LoRA column. With `random_weights` the reason starts with that warning.
    """
    candidates = [c for c in columns if c.get("step") is not None and (c.get("scale") or 0) > 0
                  and c.get("clip_t") is not None]
    metric = "dino" if all(c.get("dino") is not None for c in candidates) else "clip_i"
    candidates = [c for c in candidates if c.get(metric) is not None]
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c["step"], c["scale"]))  # ties go to the earlier, cheaper checkpoint
    name = METRIC_NAMES[metric]
    baseline = baseline_column(columns)
    anchor, anchor_name = prompt_floor(baseline, reference_clip_t)
    floor = anchor - CLIP_T_TOLERANCE if anchor is not None else None

    def keeps_prompt(c: dict[str, Any]) -> bool:
        return floor is None or c["clip_t"] >= floor - _EPS

    qualified = [c for c in candidates if keeps_prompt(c)]
    if not qualified:
        best = max(candidates, key=lambda c: c["clip_t"])
        reason = (f"no LoRA column keeps CLIP-T within {CLIP_T_TOLERANCE} of {anchor_name} ({anchor:.3f}), "
                  f"so this is the one that follows the prompt best (CLIP-T {best['clip_t']:.3f}, {name} "
                  f"{best[metric]:.3f}): "
                  "the LoRA overrides the prompt — try a lower scale, an earlier checkpoint or a lower learning rate")
    else:
        best = max(qualified, key=lambda c: (c[metric], c.get("clip_i") or 0.0))
        if floor is None:
            reason = (f"highest {name} ({best[metric]:.3f}); no prompt-only column, so prompt "
                      f"adherence (CLIP-T {best['clip_t']:.3f}) is not compared")
        else:
            reason = (f"highest {name} ({best[metric]:.3f}) while CLIP-T ({best['clip_t']:.3f}) stays "
                      f"within {CLIP_T_TOLERANCE} of {anchor_name} ({anchor:.3f})")
        reason += _trend(best, candidates, metric, keeps_prompt)
    if baseline and baseline.get(metric) is not None and best[metric] <= baseline[metric]:
        reason += (f"; {name} is no higher than {baseline['label']} ({baseline[metric]:.3f}): the LoRA has not "
                   "learned the subject yet")
    if random_weights:
        reason = f"[{RANDOM_WARNING}] {reason}"
    return {"label": best["label"], "step": best["step"], "scale": best["scale"], "column": best.get("column"),
            "reason": reason}


def prompt_floor(baseline: dict[str, Any] | None, reference_clip_t: float | None) -> tuple[float | None, str]:
    """(CLIP-T a LoRA column must keep, within the tolerance, and what it is, in scorecard words)."""
    if baseline is None:
        return None, ""
    if reference_clip_t is not None and reference_clip_t < baseline["clip_t"]:
        return reference_clip_t, "the training images' own CLIP-T against their captions"
    return baseline["clip_t"], str(baseline.get("label") or "prompt only")  # "prompt only" or "baseline prompt"


def format_scorecard(scores: dict[str, Any]) -> str:
    """The scorecard as text: one row per column, the baseline marked, the recommendation, the
    DreamBooth reference values."""
    clip, dino = scores["backbones"]["clip"], scores["backbones"]["dino"]
    refs = scores["references"]
    lines = [f"Scores for grid {scores['grid']} of run {scores['run']} — raw cosines, "
             f"{refs['count']} reference images from {refs['folder']}",
             f"CLIP-I and CLIP-T: CLIP {_backbone(clip)}",
             f"DINO: {_backbone(dino)}",
             ""]
    baseline = baseline_column(scores["columns"])
    header = ["column", "step", "scale", "CLIP-I", "DINO", "CLIP-T", "ΔCLIP-T", "consistent", "images"]
    table = [header]
    for c in scores["columns"]:
        step = "–" if c["step"] is None else str(c["step"])
        scale = "–" if c.get("scale") is None or column_kind(c) == "external" else f"{c['scale']:g}"
        delta = ""
        if baseline and c is not baseline and c["clip_t"] is not None:
            delta = f"{c['clip_t'] - baseline['clip_t']:+.3f}"
        table.append([display_label(c, baseline), step, scale, _num(c["clip_i"]), _num(c["dino"]), _num(c["clip_t"]),
                      delta, percent(c.get("consistency")), str(c["n"])])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines += ["", consistency_line(scores)]
    if refs.get("clip_t") is not None:
        lines.append(f"The references' own CLIP-T against their captions: {refs['clip_t']:.3f} "
                     f"({refs.get('captioned', refs['count'])} captioned); a LoRA column that reaches it follows the "
                     "prompt as well as pictures of the subject can.")
    lines.append("")
    if scores.get("baseline_prompts"):
        lines += ["Baseline prompts (rendered by the baseline column without the LoRA; CLIP-T of every column is "
                  "scored against the row's own prompt):", *(f"  {p}" for p in scores["baseline_prompts"]), ""]
    rec = scores.get("recommendation")
    lines.append(f"Recommended: {rec['label']} — {rec['reason']}" if rec else
                 "Recommended: none — the grid has no LoRA column (step and scale > 0) to choose from")
    sd, real = DREAMBOOTH_REFERENCE["sd"], DREAMBOOTH_REFERENCE["real"]
    lines += ["",
              f"For orientation, the DreamBooth paper (Stable Diffusion): DINO {sd['dino']}, CLIP-I {sd['clip_i']}, "
              f"CLIP-T {sd['clip_t']}; real images of the subject: DINO {real['dino']}, CLIP-I {real['clip_i']}. "
              "Its backbones, subjects and prompts differ from these, so compare columns with each other, not with "
              "the paper."]
    return "\n".join(lines)


def column_kind(column: dict[str, Any]) -> str:
    """prompt_only, lora or external; scores.json from before the kinds: no LoRA is prompt only."""
    return column.get("kind") or ("prompt_only" if column.get("step") is None and not column.get("lora") else "lora")


def baseline_column(columns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The column the others' CLIP-T is compared with: prompt only (or its baseline prompt; else a LoRA at
    scale 0), with a CLIP-T score."""
    scored = [c for c in columns if c.get("clip_t") is not None and column_kind(c) != "external"]
    return (next((c for c in scored if column_kind(c) == "prompt_only"), None)
            or next((c for c in scored if not c.get("scale")), None))


def display_label(column: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """A column's label as the scorecard shows it: the baseline and the external columns marked."""
    label = str(column["label"])
    if column is baseline and "baseline" not in label:
        return f"{label} (baseline)"
    if column_kind(column) == "external":
        return f"{label} (external)"
    return label


def percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:.0f} %"


def consistency_line(scores: dict[str, Any]) -> str:
    """What the consistency column means for these scores, with the threshold and its references."""
    entry = scores.get("consistency")
    if not entry:
        return "Consistent: not measured (scored before consistency existed: score the grid again)."
    if entry.get("threshold") is None:
        return f"Consistent: not measured — {entry.get('note', 'needs at least 2 reference images')}."
    name = METRIC_NAMES[entry["metric"]]
    return (f"Consistent: the share of a column's images whose {name} to the references is at least "
            f"{entry['threshold']:.3f}, the lowest leave-one-out {name} among the {entry['references']} references "
            f"(each against the others; their mean {entry['reference_mean']:.3f}), so every reference would count.")


def _trend(best: dict[str, Any], candidates: list[dict[str, Any]], metric: str, keeps_prompt) -> str:
    """What the other steps at the chosen scale say: overfitting after it, or still learning at the end."""
    same_scale = [c for c in candidates if c["scale"] == best["scale"]]
    later_losing = [c for c in same_scale if c["step"] > best["step"] and not keeps_prompt(c)]
    if later_losing:
        first = later_losing[0]
        return (f"; later steps lose prompt adherence (step {first['step']}: CLIP-T {first['clip_t']:.3f}) — "
                "overfitting")
    earlier = [c for c in same_scale if c["step"] < best["step"]]
    if earlier and best["step"] == max(c["step"] for c in same_scale) and earlier[-1][metric] < best[metric]:
        return (f"; {METRIC_NAMES[metric]} still rises at the last step ({earlier[-1][metric]:.3f} at step "
                f"{earlier[-1]['step']} → {best[metric]:.3f}): undertrained, train longer")
    return ""


def _backbone(entry: dict[str, Any]) -> str:
    return f"{entry['name']} ({RANDOM_WARNING})" if entry.get("random_weights") else entry["name"]


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
