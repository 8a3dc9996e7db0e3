"""`python studio.py train`, `resume` and `runs`: the engine, headless, with a progress bar and a summary.

`train` and `resume` take the machine-wide accelerator lock first (a studio or another terminal
training at the same time is refused, naming it), then clean up temp folders killed runs left in
the outputs folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from studio.config import ConfigError, load_config
from studio.core.lock import ACCELERATOR, AcceleratorBusy
from studio.engine import distributed
from studio.engine.control import Control
from studio.engine.events import (CheckpointSaved, EpochEnded, Event, Log, Metrics, Plan, Progress, SampleRendered,
                                  StatusChanged)
from studio.engine.runs import RunFolder, find_run, list_runs, suggest_run_name


class ProgressPrinter:
    """Turns engine events into a tqdm bar (step, epoch, loss, steps/s, ETA) and status lines."""

    def __init__(self, total: int, start: int = 0, epoch_lines: bool = False):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr,
                        disable=distributed.rank() != 0)
        self.last = start
        self.epoch_lines = epoch_lines
        self.rows: list[dict] = []
        self.progress_tenth: dict[str, int] = {}
        self.scores: list[dict] = []
        """Validation-score rows (sample.score_backbone): no loss, a line of their own."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, Metrics) and "loss" not in event.row:
            self.scores.append(event.row)
            self._line(f"[scores] step {event.row['step']}: {score_text(event.row)}")
        elif isinstance(event, Metrics):
            row = event.row
            self.rows.append(row)
            self.bar.update(row["step"] - self.last)
            self.last = row["step"]
            self.bar.set_postfix(ep=f"{row['epoch']}/{row['epochs']}", loss=f"{row['loss_smoothed']:.4f}",
                                 lr=f"{row['lr']:.2e}", it_s=f"{row['steps_per_s']:.2f}", refresh=False)
        elif isinstance(event, Plan):
            if event.max_steps != self.bar.total:
                self.bar.total = event.max_steps
                self.bar.refresh()
        elif isinstance(event, EpochEnded):
            if self.epoch_lines:
                lr = f", lr {self.rows[-1]['lr']:.1e}" if self.rows else ""
                self._line(f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f} (step {event.step}{lr})")
        elif isinstance(event, StatusChanged):
            if event.message and event.status != "training":
                self._line(f"[{event.status}] {event.message}")
        elif isinstance(event, Log):
            self._line(f"[{'notice' if event.notice else 'log'}] {event.message}")
        elif isinstance(event, CheckpointSaved):
            self._line(f"[checkpoint] step {event.step}: {event.lora_file}" + (" (Save now)" if event.manual else ""))
        elif isinstance(event, SampleRendered):
            self._line(f"[sample] samples step {event.step}")
        elif isinstance(event, Progress):  # the cache phase: a line per tenth done, however many images
            tenth = event.done * 10 // max(1, event.total)
            if tenth > self.progress_tenth.get(event.phase, -1):
                self.progress_tenth[event.phase] = tenth
                self._line(f"[caching] {event.phase} {event.done}/{event.total}")

    def _line(self, text: str) -> None:
        """A line above the bar, on stderr with it (stdout keeps the summary)."""
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _install_interrupt(control: Control) -> None:
    """First Ctrl-C stops gracefully (the step finishes, a checkpoint is saved); a second one aborts."""
    def handler(signum, frame):
        if control.stop_requested:
            raise KeyboardInterrupt
        print("\nstopping after this step (Ctrl-C again to abort without saving)…", file=sys.stderr)
        control.stop()

    signal.signal(signal.SIGINT, handler)


def score_text(row: dict) -> str:
    """A validation-score row in words: its numbers and the backbone that gave them."""
    parts = [f"{name} {row[key]:.3f}" for key, name in (("clip_i", "CLIP-I"), ("clip_t", "CLIP-T"), ("dino", "DINO"))
             if row.get(key) is not None]
    about = row.get("validation") or {}
    random = ", random weights" if about.get("random_weights") else ""
    return ", ".join(parts) + (f" ({about['clip']}{random})" if about.get("clip") else "")


def _summary(run: RunFolder, status: str, printer: ProgressPrinter) -> None:
    state = run.state()
    rows = printer.rows
    lines = [f"\nrun {run.name}: {status} at step {state.last_step} — {run.path}"]
    if rows:
        first, last = rows[0], rows[-1]
        lines.append(f"  loss (smoothed) {first['loss_smoothed']:.4f} → {last['loss_smoothed']:.4f}; "
                     f"epoch {last['epoch']}/{last['epochs']}; {last['steps_per_s']:.2f} steps/s; {last['time']:.0f} s")
    if printer.scores:
        first, last = printer.scores[0], printer.scores[-1]
        lines.append(f"  validation CLIP-I {first['clip_i']:.3f} (step {first['step']}) → {last['clip_i']:.3f} "
                     f"(step {last['step']}); {score_text(last)}")
    if run.final_lora.exists():
        lines.append(f"  LoRA: {run.final_lora}")
    ckpt = run.latest_checkpoint()
    if ckpt:
        lines.append(f"  latest checkpoint: step {ckpt.step} ({ckpt.path})")
    print("\n".join(lines))


def _execute(run: RunFolder, args: argparse.Namespace, resume: bool) -> int:
    from studio.engine.train import run_training

    config = run.config()
    control = Control()
    _install_interrupt(control)
    latest = run.latest_checkpoint()
    start = latest.step if resume and latest else 0
    printer = ProgressPrinter(config.train.max_steps, start, epoch_lines=config.log.epoch_loss)
    try:
        status = run_training(config, run, control, printer, models_dir=args.models, resume=resume)
    except Exception as err:  # the run folder already holds the error; the terminal gets it too
        printer.close()
        print(f"\nerror: {err}\n(run {run.name} marked failed; details in {run.status_path})", file=sys.stderr)
        return 1
    finally:
        if distributed.rank() == 0:
            ACCELERATOR.release()
    printer.close()
    if distributed.rank() == 0:  # the process group is closed by now: read the rank, don't rejoin
        _summary(run, status, printer)
    return 0


def _take_accelerator(name: str) -> str | None:
    """None when this process now holds the accelerator (rank 0 only takes it), else why not."""
    if distributed.rank() != 0:
        return None
    try:
        ACCELERATOR.acquire(f"training {name}", run=name)
    except AcceleratorBusy as err:
        return str(err)
    return None


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"data.dir={args.data}"] if args.data else [])
    try:
        config = load_config(args.preset, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ctx = distributed.context()
    name = args.name or suggest_run_name(args.outputs, Path(args.preset).stem)
    busy = _take_accelerator(name)
    if ctx.enabled:  # every rank must write into the run rank 0 created (or stop with it)
        import torch.distributed as dist

        box = [None if busy else name]
        dist.broadcast_object_list(box, src=0)
        name = box[0]
        if name is None:
            return 1
    if busy:
        print(f"error: {busy}", file=sys.stderr)
        return 1
    from studio.engine.prepare import TensorBoardMissing, prepare_new_run  # the heavy imports, once the lock is ours
    from studio.engine.runstate import clean_outputs

    try:
        if ctx.rank == 0:
            clean_outputs(args.outputs)
            config, notices = prepare_new_run(config, outputs_dir=args.outputs, models_dir=args.models,
                                              datasets_dir=args.datasets)
            run = RunFolder.create(args.outputs, name, config)
            for notice in notices:
                print(f"[notice] {notice}", file=sys.stderr)
        else:
            run = RunFolder(args.outputs / name)
    except (FileExistsError, ValueError, TensorBoardMissing) as err:  # ValueError: ConfigError, InitFromError
        print(f"error: {err}", file=sys.stderr)
        ACCELERATOR.release()
        return 1
    ctx.barrier()
    print(f"run {run.name} → {run.path}", file=sys.stderr)
    return _execute(run, args, resume=False)


def run_resume(args: argparse.Namespace) -> int:
    from studio.engine.runstate import NotResumable, check_resumable, clean_outputs, prepare_resume

    try:
        run = find_run(args.outputs, args.run)
        check_resumable(run, args.max_steps)  # a run another process trains is refused before the lock
    except (FileNotFoundError, NotResumable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    busy = _take_accelerator(run.name)
    if busy:
        print(f"error: {busy}", file=sys.stderr)
        return 1
    try:
        _, notices = prepare_resume(run, args.max_steps)  # checked again, now that no other job can start it
    except NotResumable as err:
        print(f"error: {err}", file=sys.stderr)
        ACCELERATOR.release()
        return 1
    clean_outputs(args.outputs)
    for notice in notices:
        print(f"[notice] run {run.name}: {notice}", file=sys.stderr)
    return _execute(run, args, resume=True)


def run_runs(args: argparse.Namespace) -> int:
    """`runs [--json]`: every run with its state, steps, last checkpoint and whether it can resume."""
    from studio.engine.runstate import clean_outputs

    clean_outputs(args.outputs)
    states = [run.state() for run in list_runs(args.outputs)]
    if args.json:
        print(json.dumps([s.as_dict() for s in states], indent=2))
        return 0
    if not states:
        print(f"no runs in {args.outputs}")
        return 0
    width = max(len(s.name) for s in states)
    print(f"{'run':<{width}}  {'state':<11}  {'steps':>13}  {'checkpoint':>10}  resumable")
    for s in states:
        steps = f"{s.last_step}/{s.max_steps}" if s.max_steps else str(s.last_step)
        resumable = "yes" if s.resumable else ("extend" if s.extendable else "no")
        print(f"{s.name:<{width}}  {s.state:<11}  {steps:>13}  {s.last_checkpoint or '—':>10}  {resumable}: {s.why}")
    return 0
