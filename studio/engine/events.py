"""What a training loop reports: one small frozen dataclass per kind of event, and the one status type.

`Status` is shared by the events, the runner's snapshot and run.json (whose `status` field keeps the
coarse `run_json_status` of it, and `phase` the status itself). A listener (the CLI's progress bar,
the studio's runner, `bench`) matches on the class:

- `StatusChanged(status, message)` — a phase begins: loading, caching, training, sampling, saving,
  paused, stopping (a stop was asked for: the loop saves a checkpoint and ends), or an end state.
- `Progress(phase, done, total)` — a long phase moves on (caching latents: images done of total).
- `Plan(max_steps, start_step, epochs, steps_per_epoch)` — once the dataset is known: the run's
  length in steps and epochs (`train.max_epochs` turns into steps here).
- `Metrics(row, total)` — one row of metrics.jsonl (step, epoch, epochs, loss, loss_smoothed, lr,
  steps_per_s, memory, time).
- `EpochEnded(epoch, epochs, step, loss)` — an epoch ended; `loss` is the mean raw loss of its steps.
- `SampleRendered(step, images)` — validation images were written.
- `CheckpointSaved(step, path, lora_file, manual)` — a checkpoint is complete (`manual`: Save now).
- `Log(message, notice)` — a line for the user; `notice` marks a setting the engine changed or
  adopted (a clamped warm-up, a rank taken from `lora.init_from`), which the UI and CLI show.
- `Finished(status, step, lora_file, error)` — the run ended: finished, stopped or failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Status = Literal["idle", "loading", "caching", "training", "sampling", "saving", "paused", "stopping",
                 "finished", "stopped", "failed"]
ACTIVE: frozenset[str] = frozenset({"loading", "caching", "training", "sampling", "saving", "paused", "stopping"})
"""Statuses of a job that is still running (its process holds the accelerator)."""
ENDED: frozenset[str] = frozenset({"finished", "stopped", "failed"})


def run_json_status(status: Status) -> str:
    """run.json's `status`: the working phases (loading … saving) all read as `running` there."""
    return "running" if status in ("loading", "caching", "training", "sampling", "saving") else status


@dataclass(frozen=True)
class Event:
    time: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class StatusChanged(Event):
    status: Status
    message: str = ""


@dataclass(frozen=True)
class Progress(Event):
    phase: str
    done: int
    total: int


@dataclass(frozen=True)
class Plan(Event):
    max_steps: int
    start_step: int
    epochs: int
    steps_per_epoch: float


@dataclass(frozen=True)
class Metrics(Event):
    row: dict[str, Any]
    total: int


@dataclass(frozen=True)
class EpochEnded(Event):
    epoch: int
    epochs: int
    step: int
    loss: float


@dataclass(frozen=True)
class SampleRendered(Event):
    step: int
    images: tuple[str, ...]


@dataclass(frozen=True)
class CheckpointSaved(Event):
    step: int
    path: str
    lora_file: str
    manual: bool = False


@dataclass(frozen=True)
class Log(Event):
    message: str
    notice: bool = False


@dataclass(frozen=True)
class Finished(Event):
    status: Literal["finished", "stopped", "failed"]
    step: int
    lora_file: str | None = None
    error: str | None = None


Emit = Callable[[Event], None]
