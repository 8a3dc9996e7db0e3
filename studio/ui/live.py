"""From a runner snapshot (or a run's metrics on disk) to what the page draws.

Pure functions, no components: the loss frame for the chart (downsampled, so a long run still
sends at most ~1000 points when the chart is redrawn), the legend chips under the charts, the job
panel and header badge HTML (both drawn from the same snapshot, so they always show the same step),
the sample gallery and which control buttons make sense in the current state.
"""

from __future__ import annotations

import html
import math
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from studio.engine.builtin import noise_note
from studio.engine.runner import Snapshot
from studio.engine.runs import RunFolder

MAX_CHART_STEPS = 500
"""Points per series; raw and smoothed loss together stay within ~1000 points. Every redraw rebuilds the
whole chart in the browser, which on a busy 2-core machine costs the page (and the job) more than the
points are worth."""
LOSS_COLORS = {"raw": "#94a3b8", "smoothed": "#4f46e5"}
SCORE_COLORS = {"CLIP-I": "#0891b2", "CLIP-T": "#d97706", "DINO": "#16a34a"}
CHART_SECONDS = 3.0
"""While a job runs, the charts are redrawn at most this often (new points wait; an ended job's come at once)."""

STATUS_LABELS = {
    "idle": "Idle", "loading": "Loading", "caching": "Caching", "training": "Training", "paused": "Paused",
    "sampling": "Sampling", "saving": "Saving", "stopping": "Stopping", "finished": "Finished",
    "stopped": "Stopped", "failed": "Failed", "interrupted": "Interrupted",
}
RUNNING = ("training", "sampling", "saving")
_STEP_MESSAGE = re.compile(r"^step \d+ of \d+$")


def loss_frame(rows: list[dict[str, Any]] | tuple[dict[str, Any], ...],
               max_steps: int = MAX_CHART_STEPS) -> pd.DataFrame | None:
    """Long-format frame (step, loss, series ∈ {raw, smoothed}) for a LinePlot; None before the
    first step (an empty frame would fix the chart's axes as categorical for good).

    Over `max_steps` rows, consecutive rows are averaged into buckets (raw loss: bucket mean;
    smoothed: the bucket's last value) so the curve keeps its shape instead of aliasing.
    """
    rows = [r for r in rows if r.get("loss") is not None and math.isfinite(r["loss"])]
    if not rows:
        return None
    if len(rows) > max_steps:
        size = math.ceil(len(rows) / max_steps)
        buckets = [rows[i:i + size] for i in range(0, len(rows), size)]
        rows = [{"step": b[-1]["step"], "loss": sum(r["loss"] for r in b) / len(b),
                 "loss_smoothed": b[-1].get("loss_smoothed")} for b in buckets]
    raw = [(r["step"], r["loss"], "raw") for r in rows]
    smooth = [(r["step"], r["loss_smoothed"], "smoothed") for r in rows if r.get("loss_smoothed") is not None]
    frame = pd.DataFrame(raw + smooth, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "str"})


SCORE_SERIES = {"clip_i": "CLIP-I", "clip_t": "CLIP-T", "dino": "DINO"}


class LossChart:
    """The loss chart's editions, one for every page: a new edition for new rows at most every
    `every` seconds while a job runs, at once for a new run or a job that ended. Its key (run, rows)
    goes out with every live-feed message; a page asks for the frame when the key changes, and all
    the pages that ask share one build. `scored` counts the edition's validation-score rows."""

    def __init__(self, every: float = CHART_SECONDS) -> None:
        self.every = every
        self._key: tuple[str | None, int] = (None, -1)
        self._at = float("-inf")
        self.scored = 0
        self._frame: tuple[tuple[str | None, int], pd.DataFrame | None] = ((None, -1), None)

    def key(self, snap: Snapshot, now: float) -> tuple[str | None, int]:
        fresh = (snap.run, len(snap.metrics))
        if fresh != self._key and (not snap.active or snap.run != self._key[0] or now - self._at >= self.every):
            self._key, self._at = fresh, now
            self.scored = sum(1 for row in snap.metrics if "clip_i" in row)
        return self._key

    def frame(self, snap: Snapshot, now: float) -> tuple[tuple[str | None, int], pd.DataFrame | None]:
        """The current edition's key and frame (the snapshot's first `rows` rows)."""
        key = self.key(snap, now)
        if self._frame[0] != key:
            self._frame = (key, loss_frame(snap.metrics[:key[1]]) if snap.metrics else None)
        return self._frame


def scores_frame(rows: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> pd.DataFrame | None:
    """Long-format frame (step, score, metric ∈ CLIP-I / CLIP-T / DINO) of the validation scores that
    sample.score_backbone writes at sample steps; None when the run scores none."""
    points = [(r["step"], r[key], name) for r in rows if "clip_i" in r
              for key, name in SCORE_SERIES.items() if r.get(key) is not None]
    if not points:
        return None
    frame = pd.DataFrame(points, columns=["step", "score", "metric"])
    return frame.astype({"step": "int64", "score": "float64", "metric": "str"})


def scores_label(rows: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> str:
    """The validation chart's label: the backbones that scored, random weights said out loud."""
    last = next((r.get("validation") or {} for r in reversed(rows) if "clip_i" in r), {})
    if not last:
        return "Validation scores"
    names = last.get("clip", "?") + (f" + DINO {last['dino']}" if last.get("dino") not in (None, "none") else "")
    warning = " — random weights, the numbers mean nothing" if last.get("random_weights") else ""
    return f"Validation scores ({names}, {last.get('images', '?')} images vs {last.get('references', '?')} references){warning}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def badge_html(status: str, extra: str = "") -> str:
    label = STATUS_LABELS.get(status, status.title())
    tail = f'<span class="job-extra">{html.escape(extra)}</span>' if extra else ""
    return f'<span class="status-badge status-{html.escape(status)}">{html.escape(label)}</span>{tail}'


def legend_html(colors: dict[str, str], label: str, marker: str = "line") -> str:
    """A chart's legend as chips that wrap: a swatch in the series colour (`marker` "line" for a line
    chart, "dot" for a scatter plot's points) and its name. The plots' own legends are off: their hollow
    circles read as radio buttons, and long labels were cut."""
    if not colors:
        return ""
    chips = "".join(f'<span class="legend-chip" role="listitem"><i class="legend-{marker}" '
                    f'style="background:{html.escape(color)}"></i>{html.escape(name)}</span>'
                    for name, color in colors.items())
    return f'<div class="chart-legend" role="list" aria-label="{html.escape(label)}">{chips}</div>'


def version_mark(snap: Snapshot) -> str:
    """The snapshot's version as an HTML comment that leads the header and the job panel: the page keeps
    whichever of the live feed's and the poll's values is newer (studio/ui/live_feed.py)."""
    return f"<!--v{snap.version}-->"


def header_job_html(snap: Snapshot) -> str:
    """The header's badge: status, run and step of the same snapshot the job panel draws."""
    if snap.run is None:
        return version_mark(snap) + badge_html("idle", "no job")
    extra = f"{snap.run} · {snap.step}/{snap.total}" if snap.total else snap.run
    return version_mark(snap) + badge_html(snap.status, extra)


def compact_bytes(n: float) -> str:
    """Memory in at most 6 characters, so it fits its tile: 812 MB, 1.0 GB, 23.4 GB."""
    mb = n / 2**20
    if mb < 999.5:
        return f"{mb:.0f} MB"
    return f"{n / 2**30:.1f} GB"


def _stat(label: str, value: str, of: str = "") -> str:
    """One tile; `of` is a quieter tail that may wrap under the value (the step's total). Hovering a tile
    shows it whole ("Step 1400/3000")."""
    tail = f'<wbr><span class="stat-of">/{html.escape(of)}</span>' if of else ""
    whole = html.escape(f"{label} {value}/{of}" if of else f"{label} {value}")
    return (f'<div class="stat" title="{whole}"><span class="stat-label">{html.escape(label)}</span>'
            f'<span class="stat-value">{html.escape(value)}{tail}</span></div>')


def _message(snap: Snapshot) -> str:
    """The runner's last message; its "step N of M" is written once per phase, so show the live step."""
    if _STEP_MESSAGE.match(snap.message):
        return f"step {snap.step} of {snap.total}"
    return snap.message


def job_html(snap: Snapshot) -> str:
    """Status line, progress bar and the live numbers of the current (or last) job."""
    if snap.run is None:
        return (version_mark(snap) + '<div class="job-panel">' + badge_html("idle") +
                '<p class="job-message">No job yet. The defaults train the tiny demo: press <b>Start</b>.</p></div>')
    last = snap.last
    fraction = min(1.0, snap.step / snap.total) if snap.total else 0.0
    loss = last.get("loss")
    stats = [
        _stat("Step", str(snap.step), str(snap.total)),
        _stat("Epoch", str(snap.epoch), str(snap.epochs)) if snap.epochs else _stat("Epoch", "—"),
        _stat("Loss", f"{loss:.4f}" if loss is not None else "—"),
        _stat("Smoothed", f"{last['loss_smoothed']:.4f}" if last.get("loss_smoothed") is not None else "—"),
        _stat("LR", f"{last['lr']:.1e}" if last.get("lr") is not None else "—"),
        _stat("Steps/s", f"{last['steps_per_s']:.2f}" if last.get("steps_per_s") else "—"),
        _stat("ETA", format_duration(snap.eta_s)),
        _stat("Memory", compact_bytes(last["memory"]) if last.get("memory") else "—"),
    ]
    return (
        f'{version_mark(snap)}<div class="job-panel">{badge_html(snap.status, snap.run)}'
        f'<p class="job-message">{html.escape(_message(snap))}</p>'
        f'<div class="progress" role="progressbar" aria-label="Training progress" aria-valuemin="0" '
        f'aria-valuemax="{snap.total}" aria-valuenow="{snap.step}"><div class="progress-fill status-{snap.status}" '
        f'style="width:{fraction * 100:.1f}%"></div></div>'
        f'<div class="stats">{"".join(stats)}</div>{notices_html(snap.notices)}</div>'
    )


def notices_html(notices: tuple[str, ...] | list[str]) -> str:
    """Settings the engine changed for this run (a clamped warm-up, a rank adopted from init_from)."""
    if not notices:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notices)
    return f'<ul class="job-notices" aria-label="Notices">{items}</ul>'


def images_label(label: str, base_model: str | None) -> str:
    """A gallery label that says so when the images come from a random-weight built-in model."""
    note = noise_note(base_model)
    return f"{label} — {note}" if note else label


def run_base_model(run: RunFolder | None) -> str | None:
    """The base model a run trains on, from its config.yaml (None when unreadable)."""
    try:
        return run.config().model.base if run else None
    except (OSError, ValueError):
        return None


def gallery_items(run: RunFolder, step: int | None, paths: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(image, caption) pairs of one sample step: `prompt · seed N`."""
    if step is None:
        return []
    entries = {Path(e["file"]).name: e for e in run.samples_at(step)}
    files = [Path(p) for p in paths] if paths else [Path(e["file"]) for e in entries.values()]
    out = []
    for file in files:
        if file.is_file():
            entry = entries.get(file.name, {})
            caption = f"{entry['prompt']} · seed {entry['seed']}" if entry else file.name
            out.append((str(file), caption))
    return out


def button_states(snap: Snapshot, can_sample: bool) -> dict[str, bool]:
    """Which controls make sense now: name → interactive."""
    return {
        "start": not snap.active,
        "pause": snap.status in RUNNING,
        "resume": snap.status == "paused",
        "stop": snap.active and snap.status != "stopping",
        "sample": snap.status == "training" and can_sample,
        "save": snap.status == "training",
    }


def notice(text: str) -> str:
    """A reply to a user's action for the header, stamped with the time so an old one reads as old."""
    return f"{time.strftime('%H:%M:%S')} · {text}"


def error_html(error: str | None) -> str:
    """The failure's message, in the page (the traceback goes in a collapsed box beside it)."""
    if not error:
        return ""
    return f'<div class="error-callout" role="alert"><b>Training failed:</b> {html.escape(error)}</div>'
