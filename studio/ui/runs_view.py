"""Runs on disk as the Checkpoints tab shows them: the runs table, one run's summary, its checkpoints.

Everything is read from the run folders, so runs from the CLI, from before a restart, finished,
stopped or failed ones all show up the same way. Only the status of the run the studio is training
right now comes from the live runner snapshot.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any

import pandas as pd

from studio.engine.environment import human_bytes
from studio.engine.runner import Snapshot
from studio.engine.runs import RunFolder, list_runs
from studio.ui.live import badge_html

RUN_COLUMNS = ["Run", "Status", "Base model", "Steps", "Final loss", "Started"]
CHECKPOINT_COLUMNS = ["Step", "Size", "LoRA file", "Samples"]
STALE_AFTER_S = 15 * 60
"""A run.json that says running but is this old (and not ours) belongs to a process that died."""


def _parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _short_time(text: str | None) -> str:
    when = _parse_time(text)
    return when.strftime("%Y-%m-%d %H:%M") if when else "—"


def run_status(run: RunFolder, info: dict[str, Any], snap: Snapshot) -> str:
    """The live status for the studio's own job; else run.json's, with dead "running" runs called interrupted."""
    if snap.run == run.name and snap.active:
        return snap.status
    status = info.get("status") or "new"
    if status in ("running", "paused"):
        updated = _parse_time(info.get("updated"))
        age = (dt.datetime.now(dt.timezone.utc) - updated).total_seconds() if updated else None
        return "interrupted" if age is None or age > STALE_AFTER_S else f"{status} (other process)"
    return status


def _base_name(base: str | None) -> str:
    return Path(base).name if base and Path(base).is_absolute() else (base or "—")


def final_loss(run: RunFolder) -> float | None:
    rows = run.read_metrics()
    return rows[-1].get("loss_smoothed") if rows else None


def runs_table(outputs: Path, snap: Snapshot) -> pd.DataFrame:
    rows = []
    for run in list_runs(outputs):
        info = run.read_status()
        loss = final_loss(run)
        max_steps = info.get("max_steps")
        steps = f"{info.get('last_step', 0)} / {max_steps}" if max_steps else str(info.get("last_step", 0))
        if snap.run == run.name and snap.active:
            steps = f"{snap.step} / {snap.total}"
        rows.append([run.name, run_status(run, info, snap), _base_name(info.get("base_model")), steps,
                     f"{loss:.4f}" if loss is not None else "—", _short_time(info.get("started"))])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_summary_html(run: RunFolder, snap: Snapshot) -> str:
    info = run.read_status()
    status = run_status(run, info, snap)
    live = snap.run == run.name and snap.active
    facts = [
        ("Base model", _base_name(info.get("base_model"))),
        ("Family", info.get("family", "—")),
        ("Steps", f"{snap.step} / {snap.total}" if live
         else f"{info.get('last_step', 0)} / {info.get('max_steps', '—')}"),
        ("Device", f"{info.get('device', '—')} · {info.get('precision', '—')}"),
        ("Dataset images", str(info.get("dataset_images", "—"))),
        ("Started", _short_time(info.get("started"))),
        ("Finished", _short_time(info.get("finished"))),
        ("Final LoRA", run.final_lora.name if run.final_lora.is_file() else "— (written when training finishes)"),
    ]
    cells = "".join(f'<div class="stat"><span class="stat-label">{html.escape(k)}</span>'
                    f'<span class="stat-value">{html.escape(str(v))}</span></div>' for k, v in facts)
    error = info.get("error")
    callout = (f'<div class="error-callout" role="alert"><b>Error:</b> {html.escape(error)}</div>'
               if error and status == "failed" else "")
    return (f'<div class="job-panel">{badge_html(status.split(" ")[0], run.name)}{callout}'
            f'<div class="stats facts">{cells}</div></div>')


def checkpoints_table(run: RunFolder) -> pd.DataFrame:
    sample_steps = set(run.sample_steps())
    rows = []
    for ckpt in reversed(run.checkpoints()):
        samples = len(run.samples_at(ckpt.step)) if ckpt.step in sample_steps else 0
        rows.append([ckpt.step, human_bytes(ckpt.size_bytes), ckpt.lora_file.name,
                     f"{samples} images" if samples else "—"])
    return pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)


def empty_checkpoints_table() -> pd.DataFrame:
    return pd.DataFrame([], columns=CHECKPOINT_COLUMNS)
