"""Runs on disk as the Checkpoints tab shows them: the runs table, one run's summary, its checkpoints.

Everything is read from the run folders, so runs from the CLI, from before a restart, finished,
stopped or failed ones all show up the same way. Whether a run is alive is the engine's call
(`RunFolder.state()`); the live runner snapshot only adds the phase (training, sampling …) and step
of the job this studio runs.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import pandas as pd

from studio.engine.checkpoints import Kept, next_save_prunes, retention
from studio.engine.environment import human_bytes
from studio.engine.runner import Snapshot
from studio.engine.runs import RunFolder, list_runs
from studio.engine.runstate import RunState
from studio.ui.live import badge_html

RUN_COLUMNS = ["Run", "Status", "Base model", "Steps", "Final loss", "Started"]
CHECKPOINT_COLUMNS = ["Step", "LoRA file", "LoRA size", "Folder size (LoRA + resume state)", "Samples", "Kept"]
"""The LoRA file is what Export copies; the folder also holds the optimizer state that Resume needs."""


def _parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _short_time(text: str | None) -> str:
    when = _parse_time(text)
    return when.strftime("%Y-%m-%d %H:%M") if when else "—"


def run_status(state: RunState, snap: Snapshot) -> str:
    """The engine's state of the run; for this studio's own job, its live phase (training, saving …)."""
    if snap.run == state.name and snap.active:
        return snap.status
    if state.live and not state.in_this_process:
        return f"{state.state} (other process)"
    return state.state


def _base_name(base: str | None) -> str:
    return Path(base).name if base and Path(base).is_absolute() else (base or "—")


def last_training_row(run: RunFolder) -> dict:
    """The latest metrics row with a loss (validation-score rows of sample.score_backbone carry none)."""
    return next((row for row in reversed(run.read_metrics()) if "loss" in row), {})


def final_loss(run: RunFolder) -> float | None:
    return last_training_row(run).get("loss_smoothed")


def runs_table(outputs: Path, snap: Snapshot) -> pd.DataFrame:
    rows = []
    for run in list_runs(outputs):
        info, state = run.read_status(), run.state()
        loss = final_loss(run)
        steps = f"{state.last_step} / {state.max_steps}" if state.max_steps else str(state.last_step)
        if snap.run == run.name and snap.active:
            steps = f"{snap.step} / {snap.total}"
        rows.append([run.name, run_status(state, snap), _base_name(info.get("base_model")), steps,
                     f"{loss:.4f}" if loss is not None else "—", _short_time(info.get("started"))])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_summary_html(run: RunFolder, snap: Snapshot) -> str:
    info, state = run.read_status(), run.state()
    status = run_status(state, snap)
    live = snap.run == run.name and snap.active
    last = last_training_row(run)
    epoch = f"{last['epoch']} / {last['epochs']}" if "epochs" in last else "—"
    facts = [
        ("Base model", _base_name(info.get("base_model"))),
        ("Family", info.get("family", "—")),
        ("Steps", f"{snap.step} / {snap.total}" if live else f"{state.last_step} / {state.max_steps or '—'}"),
        ("Epoch", f"{snap.epoch} / {snap.epochs}" if live and snap.epochs else epoch),
        ("Device", f"{info.get('device', '—')} · {info.get('precision', '—')}"),
        ("Dataset images", str(info.get("dataset_images", "—"))),
        ("Started", _short_time(info.get("started"))),
        ("Finished", _short_time(info.get("finished"))),
        ("Final LoRA", run.final_lora.name if run.final_lora.is_file() else "— (written when training finishes)"),
        ("Resume", ("yes" if state.resumable else "extend only" if state.extendable else "no") + f": {state.why}"),
    ]
    if info.get("stop_reason"):  # e.g. train.stop_at_clip_i reached
        facts.append(("Stopped because", info["stop_reason"]))
    cells = "".join(f'<div class="stat"><span class="stat-label">{html.escape(k)}</span>'
                    f'<span class="stat-value">{html.escape(str(v))}</span></div>' for k, v in facts)
    error = info.get("error")
    callout = (f'<div class="error-callout" role="alert"><b>Error:</b> {html.escape(error)}</div>'
               if error and status == "failed" else "")
    return (f'<div class="job-panel">{badge_html(status.split(" ")[0], run.name)}{callout}'
            f'<div class="stats facts">{cells}</div></div>')


def retention_notes(run: RunFolder) -> dict[int, str]:
    """Step → why retention keeps the checkpoint, or that the run's next checkpoint will prune it."""
    try:
        save = run.config().save
    except ValueError:
        return {}
    checkpoints = run.checkpoints()
    reasons = retention([Kept.of(c) for c in checkpoints], save)
    doomed = next_save_prunes(run, save)
    state = run.state()
    going_on = state.live or state.resumable or state.extendable
    notes = {}
    for ckpt in checkpoints:
        if ckpt.step in doomed:
            notes[ckpt.step] = "pruned at the next checkpoint" if going_on else "pruned if the run continues"
        else:
            notes[ckpt.step] = "kept: " + ", ".join(r for r in reasons[ckpt.step] if r) if reasons[ckpt.step] \
                else "pruned at the next checkpoint"
    return notes


def checkpoints_table(run: RunFolder) -> pd.DataFrame:
    sample_steps = set(run.sample_steps())
    notes = retention_notes(run)
    rows = []
    for ckpt in reversed(run.checkpoints()):
        samples = len(run.samples_at(ckpt.step)) if ckpt.step in sample_steps else 0
        lora_size = human_bytes(ckpt.lora_file.stat().st_size) if ckpt.lora_file.is_file() else "—"
        rows.append([ckpt.step, ckpt.lora_file.name, lora_size, human_bytes(ckpt.size_bytes),
                     f"{samples} images" if samples else "—", notes.get(ckpt.step, "—")])
    return pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)


def empty_runs_table() -> pd.DataFrame:
    return pd.DataFrame([], columns=RUN_COLUMNS)


def empty_checkpoints_table() -> pd.DataFrame:
    return pd.DataFrame([], columns=CHECKPOINT_COLUMNS)
