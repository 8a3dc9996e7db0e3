"""The studio's one training job: a background thread, and an immutable snapshot for the UI.

Every browser tab polls the same `Runner.snapshot()`, so all tabs show the same job and a reloaded
page picks it up again. Errors are caught once, at the thread boundary, and land in the snapshot
(with the traceback) and in run.json. The job holds the machine-wide accelerator lock from the
moment it is accepted until its thread ends, so a CLI run and the studio never train at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.config import RunConfig
from studio.core.lock import ACCELERATOR, AcceleratorLock
from studio.engine.control import Control
from studio.engine.events import (ACTIVE, CheckpointSaved, Event, Finished, Log, Metrics, Plan, Progress,
                                  SampleRendered, Status, StatusChanged)
from studio.engine.prepare import prepare_new_run
from studio.engine.runs import RunFolder, find_run
from studio.engine.runstate import check_resumable, clean_outputs, prepare_resume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    status: Status = "idle"
    """idle · loading · caching · training · paused · sampling · saving · stopping · finished · stopped · failed"""
    message: str = ""
    run: str | None = None
    step: int = 0
    total: int = 0
    epochs: int = 0
    """Epochs the run makes in all (0 until the dataset is known)."""
    metrics: tuple[dict[str, Any], ...] = ()
    samples: tuple[str, ...] = ()
    sample_step: int | None = None
    checkpoints: tuple[int, ...] = ()
    notices: tuple[str, ...] = ()
    """Settings the engine changed or adopted for this run (a clamped warm-up, a rank from init_from)."""
    error: str | None = None
    traceback: str | None = None
    started: float | None = None
    config: RunConfig | None = None
    """The config the job runs with (paths resolved, warm-up clamped): what a page opened during it shows."""
    version: int = 0
    """Bumped on every change: a poller that saw this version has nothing new to draw."""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def last(self) -> dict[str, Any]:
        """The latest training row (validation-score rows of sample.score_backbone carry no loss)."""
        return next((row for row in reversed(self.metrics) if "loss" in row), {})

    @property
    def epoch(self) -> int:
        return int(self.last.get("epoch") or 0)

    @property
    def eta_s(self) -> float | None:
        rate = self.last.get("steps_per_s")
        return (self.total - self.step) / rate if rate and self.status in ("training", "sampling", "saving") else None


class Runner:
    def __init__(self, outputs_dir: Path, models_dir: Path | None = None, lock: AcceleratorLock = ACCELERATOR,
                 datasets_dir: Path | None = None):
        self.outputs_dir, self.models_dir, self.datasets_dir, self.lock = \
            Path(outputs_dir), models_dir, datasets_dir, lock
        self._snap = Snapshot()
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None
        self._control: Control | None = None

    # --- reading ---------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._mutex:
            return self._snap

    def _update(self, **changes: Any) -> None:
        with self._mutex:
            self._snap = dataclasses.replace(self._snap, **changes, version=self._snap.version + 1)

    # --- starting --------------------------------------------------------------------------
    def start(self, config: RunConfig, name: str) -> RunFolder:
        """Create run `name` and train it in the background; raises if a job is running (here or in
        another process: AcceleratorBusy) or the config can't be prepared."""
        self._claim(name)
        try:
            clean_outputs(self.outputs_dir)
            config, notices = prepare_new_run(config, outputs_dir=self.outputs_dir, models_dir=self.models_dir,
                                              datasets_dir=self.datasets_dir)
            run = RunFolder.create(self.outputs_dir, name, config)
        except BaseException:
            self.lock.release()
            raise
        self._launch(run, config, resume=False, notices=tuple(notices))
        return run

    def resume(self, run_name: str, max_steps: int | None = None) -> RunFolder:
        """Continue a run from its latest complete checkpoint; with `max_steps`, extend it to that many
        steps in all (a finished run too). Refused, with the reason, when the run can't continue."""
        run = find_run(self.outputs_dir, run_name)
        check_resumable(run, max_steps)  # a run another process trains is refused before the lock is tried
        self._claim(run.name)
        try:
            config, notices = prepare_resume(run, max_steps)
        except BaseException:
            self.lock.release()
            raise
        self._launch(run, config, resume=True, notices=tuple(notices))
        return run

    def _claim(self, name: str) -> None:
        if self._thread and self._thread.is_alive():
            snap = self.snapshot()
            raise RuntimeError(f"run {snap.run} is {snap.status} (step {snap.step}/{snap.total}): stop it first")
        self.lock.acquire(f"training {name}", run=name)

    def _launch(self, run: RunFolder, config: RunConfig, resume: bool, notices: tuple[str, ...]) -> None:
        latest = run.latest_checkpoint()
        start_step = latest.step if resume and latest else 0
        metrics = tuple(r for r in run.read_metrics() if r.get("step", 0) <= start_step) if resume else ()
        self._control = Control()
        with self._mutex:
            self._snap = Snapshot(status="loading", message="starting", run=run.name, step=start_step,
                                  total=config.train.max_steps, metrics=metrics, notices=notices,
                                  checkpoints=tuple(c.step for c in run.checkpoints()), started=time.time(),
                                  config=config, version=self._snap.version + 1)
        self._thread = threading.Thread(target=self._work, args=(run, config, resume, self._control),
                                        name=f"train-{run.name}", daemon=True)
        self._thread.start()

    def _work(self, run: RunFolder, config: RunConfig, resume: bool, control: Control) -> None:
        from studio.engine.train import run_training

        try:
            run_training(config, run, control, self._on_event, models_dir=self.models_dir, resume=resume)
        except BaseException as err:  # the thread boundary: everything lands in the snapshot
            log.exception("training run %s failed", run.name)
            self._update(status="failed", error=str(err) or type(err).__name__, traceback=traceback.format_exc(),
                         message=f"failed: {err}")
        finally:
            self.lock.release()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StatusChanged):
            self._update(status=event.status, message=event.message)
        elif isinstance(event, Metrics):
            snap = self.snapshot()
            self._update(step=event.row["step"], metrics=snap.metrics + (event.row,))
        elif isinstance(event, Plan):
            self._update(total=event.max_steps, epochs=event.epochs)
        elif isinstance(event, SampleRendered):
            self._update(samples=event.images, sample_step=event.step)
        elif isinstance(event, CheckpointSaved):
            snap = self.snapshot()
            self._update(checkpoints=tuple(sorted(set(snap.checkpoints) | {event.step})))
        elif isinstance(event, Log):
            notices = self.snapshot().notices + ((event.message,) if event.notice else ())
            self._update(message=event.message, notices=notices)
        elif isinstance(event, Progress):
            self._update(message=f"{event.phase} {event.done}/{event.total}")
        elif isinstance(event, Finished) and event.status != "failed":
            self._update(status=event.status, step=event.step)

    # --- commands --------------------------------------------------------------------------
    def _require(self, *allowed: str) -> Control:
        snap = self.snapshot()
        if self._control is None or not snap.active:
            raise RuntimeError("no training job is running")
        if allowed and snap.status not in allowed:
            raise RuntimeError(f"the job is {snap.status}; this needs it to be {' or '.join(allowed)}")
        return self._control

    def pause(self) -> None:
        self._require("training", "sampling", "saving").pause()
        self._update(message="pausing after this step")

    def resume_job(self) -> None:
        self._require("paused").resume()

    def stop(self) -> None:
        self._require().stop()
        self._update(status="stopping", message="stopping after this step; a checkpoint will be saved")

    def sample_now(self) -> None:
        self._require("training").sample_now()

    def save_now(self) -> None:
        self._require("training").save_now()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job's thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
