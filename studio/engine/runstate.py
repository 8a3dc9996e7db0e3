"""Run state, decided in one place: what a run folder's run is doing, and whether it can go on.

States: `new` (created, never started) · `running` · `paused` · `stopping` · `finished` · `stopped` ·
`failed` · `interrupted` (its process is gone without saying how it ended: killed, crashed, lost).

run.json says what the training process last wrote; only a live process can keep `running`,
`paused` or `stopping` true. While it lives it rewrites `heartbeat.json` every `HEARTBEAT_S`
seconds — paused too — with its process id, the process's start time and its machine. Then:

- on the same machine, the process id decides at once: no such process (or one that started at
  another time, a reused id) → `interrupted`;
- from another machine (a shared outputs folder), the heartbeat does: older than `STALE_AFTER_S`
  → `interrupted`.

`resumable` says whether `resume RUN` can continue it (a complete checkpoint, not live, not
finished) and `why`; `extendable` whether `resume RUN --max-steps N` can (finished runs too).
The CLI (`runs`, `resume`), the studio's runner and every tab read this; nothing else decides.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from studio.config import RunConfig
from studio.core.atomic import write_json_atomic
from studio.core.lock import pid_alive

if TYPE_CHECKING:
    from studio.engine.runs import RunFolder

log = logging.getLogger(__name__)

StateName = Literal["new", "running", "paused", "stopping", "finished", "stopped", "failed", "interrupted"]
LIVE = frozenset({"running", "paused", "stopping"})
HEARTBEAT_S = 10.0
"""How often a training process rewrites heartbeat.json (also while paused)."""
STALE_AFTER_S = 120.0
"""A heartbeat from another machine older than this belongs to a process that is gone."""
REUSED_PID_AFTER_S = 600.0
"""Where a process's start time can't be read (not Linux): a live id whose heartbeat is this old
belongs to another process now."""


def clock() -> float:
    """Now, in seconds since the epoch: what heartbeats are written with and judged against (tests fake it)."""
    return time.time()


def process_start(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot, /proc/PID/stat field 22), to tell a
    reused process id from the original; None where it can't be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "pid_start": process_start(pid), "host": socket.gethostname()}


@dataclass(frozen=True)
class RunState:
    name: str
    state: StateName
    last_step: int
    max_steps: int | None
    last_checkpoint: int | None
    resumable: bool
    extendable: bool
    why: str
    """Why the run can or can't be resumed, in words a user can act on."""
    phase: str | None = None
    """The live process's own status (training, sampling, saving …) while it runs."""
    pid: int | None = None
    host: str | None = None
    heartbeat_age_s: float | None = None
    error: str | None = None
    in_this_process: bool = False
    """The run's process is the one asking (the studio's own job, say)."""

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _age(source: dict[str, Any], now: float) -> float | None:
    if isinstance(source.get("unix"), (int, float)):
        return now - float(source["unix"])
    try:
        return now - dt.datetime.fromisoformat(source["updated"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def _process_gone(source: dict[str, Any], age: float | None) -> str | None:
    """Why the process that wrote `source` is gone, or None while it (probably) lives."""
    pid, host = source.get("pid"), source.get("host")
    if pid and host == socket.gethostname():
        if not pid_alive(int(pid)):
            return f"its process {pid} is no longer running"
        started, now_started = source.get("pid_start"), process_start(int(pid))
        if started and now_started and started != now_started:
            return f"its process {pid} is no longer running (that id belongs to another process now)"
        if not (started and now_started) and age is not None and age > REUSED_PID_AFTER_S:
            return f"process {pid} has not written a heartbeat for {age / 60:.0f} minutes"
        return None
    if age is None or age > STALE_AFTER_S:
        where = f" on {host}" if host else ""
        return f"its process{where} has not written a heartbeat for {age / 60:.0f} minutes" if age is not None \
            else "it left no heartbeat"
    return None


def run_state(run: RunFolder, now: float | None = None) -> RunState:
    import json

    now = clock() if now is None else now
    info = run.read_status()
    try:
        beat = json.loads(run.heartbeat_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        beat = {}
    status = info.get("status")
    latest = run.latest_checkpoint()
    last_checkpoint = latest.step if latest else None
    source = beat if beat.get("pid") else info
    age = _age(source, now)
    last_step = max(int(info.get("last_step") or 0), int(beat.get("step") or 0) if status in LIVE else 0)
    max_steps = info.get("max_steps")
    here = source.get("pid") == os.getpid() and source.get("host") == socket.gethostname()
    common = dict(name=run.name, last_step=last_step, max_steps=max_steps, last_checkpoint=last_checkpoint,
                  pid=source.get("pid"), host=source.get("host"), heartbeat_age_s=age, error=info.get("error"),
                  in_this_process=here)

    if not status:
        return RunState(state="new", resumable=False, extendable=False,
                        why="it never started: nothing to resume; train it again under a new name", **common)
    if status in LIVE:
        gone = _process_gone(source, age)
        if gone is None:
            where = "this process" if here else f"process {source.get('pid')}"
            return RunState(state=status, phase=beat.get("status"), resumable=False, extendable=False,
                            why=f"it is {status} in {where} right now: stop it first", **common)
        state: StateName = "interrupted"
        ended = f"it was interrupted at step {last_step} ({gone})"
    else:
        state = status if status in ("finished", "stopped", "failed") else "interrupted"
        ended = {"finished": f"it finished all {max_steps} steps",
                 "stopped": f"it was stopped at step {last_step}",
                 "failed": f"it failed at step {last_step}"}.get(state, f"its run.json says {status!r}")
    if last_checkpoint is None:
        return RunState(state=state, resumable=False, extendable=False,
                        why=f"{ended}, before its first complete checkpoint: nothing to resume", **common)
    if state == "finished":
        return RunState(state=state, resumable=False, extendable=True,
                        why=f"{ended}: to train more, extend it (`resume {run.name} --max-steps N`, or Train N more "
                            "steps)", **common)
    return RunState(state=state, resumable=True, extendable=True,
                    why=f"{ended}; resume continues from checkpoint step {last_checkpoint}", **common)


class NotResumable(ValueError):
    """`resume` can't continue this run; the message says why and what to do."""


def check_resumable(run: RunFolder, max_steps: int | None = None) -> RunState:
    """The run's state if `resume` (with `max_steps`: an extension) may continue it, else NotResumable."""
    state = run.state()
    if state.live or state.last_checkpoint is None:
        raise NotResumable(f"run {run.name} cannot be resumed: {state.why}")
    if max_steps is None:
        if not state.resumable:
            raise NotResumable(f"run {run.name} has nothing to resume: {state.why}")
    elif max_steps <= state.last_checkpoint:
        raise NotResumable(f"run {run.name}: --max-steps {max_steps} must be more than the step of its latest "
                           f"checkpoint ({state.last_checkpoint})")
    return state


def prepare_resume(run: RunFolder, max_steps: int | None = None) -> tuple[RunConfig, list[str]]:
    """What `resume` (CLI or studio) does before training: check the run can continue, clean its temp
    folders, and with `max_steps` write the extended config.yaml. Returns the config and notices."""
    state = check_resumable(run, max_steps)
    run.remove_temp_dirs()
    config = run.config()
    if max_steps is None or max_steps == config.train.max_steps:
        return config, []
    config = extend_config(config, max_steps, state.last_checkpoint)
    run.write_config(config)
    return config, [f"extended to {max_steps} steps, continuing from checkpoint step {state.last_checkpoint}"]


def extend_config(config: RunConfig, max_steps: int, from_step: int) -> RunConfig:
    """The config of `config`'s run continued from checkpoint `from_step` up to `max_steps` in all.

    The steps before `from_step` keep the learning rates they were trained with: for a decaying
    schedule (cosine, linear), `optim.horizons` records the max_steps they had (schedule.py).
    `train.max_epochs` gives way to the new step count.
    """
    overrides: dict[str, Any] = {"train.max_steps": max_steps, "train.max_epochs": None}
    old = config.train.max_steps
    if config.optim.scheduler in ("cosine", "linear") and max_steps != old:
        horizons = sorted(tuple(h) for h in config.optim.horizons)
        before = next((h for u, h in horizons if from_step - 1 < u), old)  # the horizon of step from_step - 1
        kept = [(u, h) for u, h in horizons if u <= from_step]
        if from_step > 0 and before != max_steps and not any(u == from_step for u, _ in kept):
            kept.append((from_step, before))
        overrides["optim.horizons"] = [list(h) for h in kept]
    return config.with_overrides(overrides)


def clean_outputs(outputs_dir: Path) -> list[Path]:
    """Remove the temp folders killed runs left behind, in every run of `outputs_dir` that is not live."""
    from studio.engine.runs import list_runs

    removed = []
    for run in list_runs(outputs_dir):
        if not run.state().live:
            removed += run.remove_temp_dirs()
    if removed:
        log.info("removed %d temp folders left by interrupted writes: %s", len(removed),
                 ", ".join(str(p) for p in removed[:5]))
    return removed


class Heartbeat:
    """Rewrites `heartbeat.json` every HEARTBEAT_S seconds on a thread of its own, whatever the loop
    is doing (a long step, a pause, a sample), until `stop`."""

    def __init__(self, run: RunFolder):
        self.run = run
        self.status = "loading"
        self.step = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = this_process()
        self._failed = False

    def beat(self, status: str | None = None, step: int | None = None) -> None:
        if status is not None:
            self.status = status
        if step is not None:
            self.step = step
        now = clock()
        try:
            write_json_atomic(self.run.heartbeat_path, self._process | {
                "unix": now, "time": dt.datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
                "status": self.status, "step": self.step})
            self._failed = False
        except OSError as err:  # a full disk must not stop training by itself; the next write says where
            if not self._failed:
                log.warning("could not write %s: %s", self.run.heartbeat_path, err)
            self._failed = True

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.run.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
