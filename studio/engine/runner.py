"""The studio's one training job: a background thread, and an immutable snapshot for the UI.

Every browser tab polls the same `Runner.snapshot()`, so all tabs show the same job and a reloaded
page picks it up again. Errors are caught once, at the thread boundary, and land in the snapshot
(with the traceback) and in run.json.
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
from studio.engine.control import Control, Event
from studio.engine.gpu_lock import ACCELERATOR, AcceleratorLock
from studio.engine.runs import RunFolder, find_run

log = logging.getLogger(__name__)

ACTIVE = ("loading", "caching", "training", "paused", "sampling", "saving", "stopping")


@dataclass(frozen=True)
class Snapshot:
    status: str = "idle"
    """idle · loading · caching · training · paused · sampling · saving · stopping · finished · stopped · failed"""
    message: str = ""
    run: str | None = None
    step: int = 0
    total: int = 0
    metrics: tuple[dict[str, Any], ...] = ()
    samples: tuple[str, ...] = ()
    sample_step: int | None = None
    checkpoints: tuple[int, ...] = ()
    error: str | None = None
    traceback: str | None = None
    started: float | None = None
    version: int = 0
    """Bumped on every change: a poller that saw this version has nothing new to draw."""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def last(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def eta_s(self) -> float | None:
        rate = self.last.get("steps_per_s")
        return (self.total - self.step) / rate if rate and self.status in ("training", "sampling", "saving") else None


class Runner:
    def __init__(self, outputs_dir: Path, models_dir: Path | None = None, lock: AcceleratorLock = ACCELERATOR):
        self.outputs_dir, self.models_dir, self.lock = Path(outputs_dir), models_dir, lock
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
        """Create run `name` and train it in the background; raises if a job is running."""
        self._claim()
        try:
            run = RunFolder.create(self.outputs_dir, name, config)
        except BaseException:
            self.lock.release()
            raise
        self._launch(run, config, resume=False)
        return run

    def resume(self, run_name: str) -> RunFolder:
        """Continue a run from its latest complete checkpoint."""
        self._claim()
        try:
            run = find_run(self.outputs_dir, run_name)
            if run.latest_checkpoint() is None:
                raise FileNotFoundError(f"run {run.name} has no complete checkpoint to resume from")
            config = run.config()
        except BaseException:
            self.lock.release()
            raise
        self._launch(run, config, resume=True)
        return run

    def _claim(self) -> None:
        if self._thread and self._thread.is_alive():
            snap = self.snapshot()
            raise RuntimeError(f"run {snap.run} is {snap.status} (step {snap.step}/{snap.total}): stop it first")
        self.lock.acquire("training")

    def _launch(self, run: RunFolder, config: RunConfig, resume: bool) -> None:
        start_step = run.latest_checkpoint().step if resume and run.latest_checkpoint() else 0
        metrics = tuple(r for r in run.read_metrics() if r.get("step", 0) <= start_step) if resume else ()
        self._control = Control()
        with self._mutex:
            self._snap = Snapshot(status="loading", message="starting", run=run.name, step=start_step,
                                  total=config.train.max_steps, metrics=metrics,
                                  checkpoints=tuple(c.step for c in run.checkpoints()), started=time.time(),
                                  version=self._snap.version + 1)
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
        d = event.data
        if event.kind == "status":
            self._update(status=d["status"], message=d.get("message", ""))
        elif event.kind == "metrics":
            snap = self.snapshot()
            self._update(step=d["row"]["step"], metrics=snap.metrics + (d["row"],))
        elif event.kind == "sample":
            self._update(samples=tuple(d["images"]), sample_step=d["step"])
        elif event.kind == "checkpoint":
            snap = self.snapshot()
            self._update(checkpoints=tuple(sorted(set(snap.checkpoints) | {d["step"]})))
        elif event.kind in ("log", "progress"):
            self._update(message=d.get("message") or f"{d.get('phase')} {d.get('done')}/{d.get('total')}")

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
        self._update(message="stopping after this step; a checkpoint will be saved")

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
