"""A run is a folder (DESIGN.md "Run folder"): config, status, metrics, samples, checkpoints, LoRA.

Everything here reads and writes that folder, atomically, so the UI, the CLI and a restarted
process all see runs the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from studio.config import RunConfig, load_run_config
from studio.core.atomic import remove_temp_dirs, write_json_atomic, write_text_atomic
from studio.core.names import check_folder_name, slug

if TYPE_CHECKING:
    from studio.engine.runstate import RunState

CHECKPOINT_RE = re.compile(r"^step-(\d{6,})$")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def check_run_name(name: str) -> str:
    return check_folder_name(name, "run")


def suggest_run_name(outputs_dir: Path, stem: str) -> str:
    """`<stem>-YYYYMMDD-HHMM`, with a suffix if that folder exists."""
    stem = slug(stem)
    base = f"{stem}-{dt.datetime.now():%Y%m%d-%H%M}"
    name, n = base, 2
    while (outputs_dir / name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    lora_file: Path

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def info(self) -> dict[str, Any]:
        """state.json: step, epoch (epochs done), epoch_end, manual (a Save-now checkpoint), time."""
        try:
            return json.loads((self.path / "state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {"step": self.step}


class RunFolder:
    """Typed access to `outputs/<run>/`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.name

    # --- creation and files -------------------------------------------------------------
    @classmethod
    def create(cls, outputs_dir: Path, name: str, config: RunConfig) -> RunFolder:
        check_run_name(name)
        path = Path(outputs_dir) / name
        if path.exists():
            raise FileExistsError(f"run {name!r} already exists in {outputs_dir}: pick another name or resume it")
        path.mkdir(parents=True)
        run = cls(path)
        run.write_config(config)
        return run

    def write_config(self, config: RunConfig) -> None:
        """config.yaml, atomically (once at creation; again when the engine resolves or adopts a setting,
        or `resume --max-steps` extends the run)."""
        write_text_atomic(self.config_path, config.to_yaml())

    config_path = property(lambda self: self.path / "config.yaml")
    status_path = property(lambda self: self.path / "run.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    report_path = property(lambda self: self.path / "dataset_report.json")
    samples_dir = property(lambda self: self.path / "samples")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    grids_dir = property(lambda self: self.path / "grids")
    final_lora = property(lambda self: self.path / f"{self.name}.safetensors")
    heartbeat_path = property(lambda self: self.path / "heartbeat.json")
    tensorboard_dir = property(lambda self: self.path / "tensorboard")

    def exists(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> RunConfig:
        return load_run_config(self.config_path)

    def state(self, now: float | None = None) -> RunState:
        """What the run is doing, from run.json, its heartbeat and its process id (engine/runstate.py)."""
        from studio.engine.runstate import run_state

        return run_state(self, now)

    def remove_temp_dirs(self) -> list[Path]:
        """Temp folders a killed writer left (`.step-*.tmp-*` in checkpoints/ and samples/, `.*.old`);
        only for a run no process is writing to (its state is not live)."""
        removed = []
        for folder in (self.checkpoints_dir, self.samples_dir):
            removed += remove_temp_dirs(folder, ".step-*.tmp-*") + remove_temp_dirs(folder, ".step-*.old")
        return removed

    # --- run.json ------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def update_status(self, **fields: Any) -> dict[str, Any]:
        data = self.read_status() | fields | {"updated": now_iso()}
        write_json_atomic(self.status_path, data)
        return data

    # --- metrics.jsonl -------------------------------------------------------------------
    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Append whole lines; a reader ignores a torn last line (see read_metrics)."""
        if not rows:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))

    def read_metrics(self) -> list[dict[str, Any]]:
        rows = []
        try:
            with open(self.metrics_path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line being written right now, or cut by a kill
        except FileNotFoundError:
            pass
        return rows

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop rows logged after the checkpoint we continue from."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # --- checkpoints ---------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / step_dir_name(step)

    def lora_file_name(self, step: int) -> str:
        return f"{self.name}-step{step:06d}.safetensors"

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first (a complete one has its `state.json`, written last)."""
        out = []
        if self.checkpoints_dir.is_dir():
            for d in self.checkpoints_dir.iterdir():
                m = CHECKPOINT_RE.match(d.name)
                if m and (d / "state.json").is_file():
                    out.append(Checkpoint(int(m.group(1)), d, d / self.lora_file_name(int(m.group(1)))))
        return sorted(out, key=lambda c: c.step)

    def latest_checkpoint(self) -> Checkpoint | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def sample_steps(self) -> list[int]:
        if not self.samples_dir.is_dir():
            return []
        steps = [int(m.group(1)) for d in self.samples_dir.iterdir() if (m := CHECKPOINT_RE.match(d.name))]
        return sorted(steps)

    def samples_at(self, step: int) -> list[dict[str, Any]]:
        """[{file, prompt, seed, scale}] for one sample step (paths absolute)."""
        folder = self.samples_dir / step_dir_name(step)
        try:
            entries = json.loads((folder / "prompts.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return []
        return [e | {"file": str(folder / e["file"])} for e in entries]


def list_runs(outputs_dir: Path) -> Iterator[RunFolder]:
    """Every run folder (one with a config.yaml), newest first."""
    if not Path(outputs_dir).is_dir():
        return iter(())
    runs = [RunFolder(p) for p in Path(outputs_dir).iterdir() if p.is_dir() and not p.name.startswith(".")]
    runs = [r for r in runs if r.exists()]
    return iter(sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True))


def find_run(outputs_dir: Path, name_or_path: str) -> RunFolder:
    path = Path(name_or_path)
    run = RunFolder(path if path.is_dir() else Path(outputs_dir) / name_or_path)
    if not run.exists():
        known = ", ".join(r.name for r in list(list_runs(outputs_dir))[:10]) or "none yet"
        raise FileNotFoundError(f"no run {name_or_path!r} in {outputs_dir} (runs: {known})")
    return run


def delete_checkpoint(run: RunFolder, step: int) -> Path:
    """Delete one complete checkpoint folder of `run`; returns the path it had."""
    matches = [c for c in run.checkpoints() if c.step == step]
    if not matches:
        available = ", ".join(str(c.step) for c in run.checkpoints()) or "none"
        raise FileNotFoundError(f"run {run.name} has no checkpoint at step {step} (available: {available})")
    shutil.rmtree(matches[0].path)
    return matches[0].path
