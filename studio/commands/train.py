"""`python studio.py train` and `resume`: the engine, headless, with a progress bar and a summary."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from studio.config import ConfigError, load_config
from studio.engine import distributed
from studio.engine.control import Control, Event
from studio.engine.runs import RunFolder, find_run, suggest_run_name


class ProgressPrinter:
    """Turns engine events into a tqdm bar (step, loss, steps/s, ETA) and status lines."""

    def __init__(self, total: int, start: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr,
                        disable=distributed.rank() != 0)
        self.last = start
        self.rows: list[dict] = []

    def __call__(self, event: Event) -> None:
        if event.kind == "metrics":
            row = event.data["row"]
            self.rows.append(row)
            self.bar.update(row["step"] - self.last)
            self.last = row["step"]
            self.bar.set_postfix(loss=f"{row['loss_smoothed']:.4f}", lr=f"{row['lr']:.2e}",
                                 it_s=f"{row['steps_per_s']:.2f}", refresh=False)
        elif event.kind in ("status", "log", "checkpoint", "sample"):
            text = event.data.get("message") or (
                f"checkpoint step {event.data['step']}: {event.data.get('lora_file')}" if event.kind == "checkpoint"
                else f"samples step {event.data['step']}" if event.kind == "sample" else "")
            if text and event.data.get("status") != "training":
                self.bar.write(f"[{event.data.get('status', event.kind)}] {text}")

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


def _summary(run: RunFolder, status: str, printer: ProgressPrinter) -> None:
    info = run.read_status()
    rows = printer.rows
    lines = [f"\nrun {run.name}: {status} at step {info.get('last_step')} — {run.path}"]
    if rows:
        first, last = rows[0], rows[-1]
        lines.append(f"  loss (smoothed) {first['loss_smoothed']:.4f} → {last['loss_smoothed']:.4f}; "
                     f"{last['steps_per_s']:.2f} steps/s; {last['time']:.0f} s")
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
    start = run.latest_checkpoint().step if resume and run.latest_checkpoint() else 0
    printer = ProgressPrinter(config.train.max_steps, start)
    try:
        status = run_training(config, run, control, printer, models_dir=args.models, resume=resume)
    except Exception as err:  # the run folder already holds the error; the terminal gets it too
        printer.close()
        print(f"\nerror: {err}\n(run {run.name} marked failed; details in {run.status_path})", file=sys.stderr)
        return 1
    printer.close()
    if distributed.rank() == 0:  # the process group is closed by now: read the rank, don't rejoin
        _summary(run, status, printer)
    return 0


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"data.dir={args.data}"] if args.data else [])
    try:
        config = load_config(args.preset, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ctx = distributed.context()
    name = args.name or suggest_run_name(args.outputs, Path(args.preset).stem)
    if ctx.enabled:  # every rank must write into the run rank 0 created
        import torch.distributed as dist

        box = [name]
        dist.broadcast_object_list(box, src=0)
        name = box[0]
    try:
        run = RunFolder.create(args.outputs, name, config) if ctx.rank == 0 else RunFolder(args.outputs / name)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ctx.barrier()
    print(f"run {run.name} → {run.path}", file=sys.stderr)
    return _execute(run, args, resume=False)


def run_resume(args: argparse.Namespace) -> int:
    try:
        run = find_run(args.outputs, args.run)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if run.latest_checkpoint() is None:
        print(f"error: run {run.name} has no complete checkpoint to resume from", file=sys.stderr)
        return 1
    if run.read_status().get("status") == "finished":
        print(f"run {run.name} already finished; nothing to resume", file=sys.stderr)
        return 0
    return _execute(run, args, resume=True)
