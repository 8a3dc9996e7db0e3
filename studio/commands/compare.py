"""`python studio.py compare RUN [--prompts FILE|TEXT] ...` and `generate RUN --prompts ... --count N --out DIR`.

Both render with the run's base model and LoRA files through the same engine the Compare tab uses,
show a progress bar on stderr, and print the folder they wrote on stdout. `compare` without
--prompts uses the run's own sample prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Iterator

from studio.commands.progress import ProgressBar
from studio.core.lock import AcceleratorBusy
from studio.engine.runs import find_run


def _user_errors() -> tuple[type[Exception], ...]:
    from studio.engine.models import ModelLoadError

    return FileNotFoundError, ValueError, ModelLoadError, AcceleratorBusy


def run_compare(args: argparse.Namespace) -> int:
    from studio.eval.columns import external_from_folder, plan_columns
    from studio.eval.grids import grid_spec, make_grid
    from studio.eval.parsing import parse_external, parse_prompts, parse_scales, parse_seeds, parse_steps
    from studio.eval.pipelines import PipelineCache

    bar = ProgressBar("grid")
    try:
        run = find_run(args.outputs, args.run)
        prompts = parse_prompts(args.prompts) if args.prompts else _sample_prompts(run)
        baselines = parse_prompts(args.baseline_prompts, "baseline prompt") if args.baseline_prompts else []
        external = [external_from_folder(*parse_external(text)) for text in args.external]
        columns = plan_columns(run, parse_steps(args.steps), parse_scales(args.scales), baseline=bool(baselines),
                               external=external)
        spec = grid_spec(run, prompts, parse_seeds(args.seeds), columns, baseline_prompts=baselines,
                         external=external, inference_steps=args.inference_steps, guidance=args.guidance,
                         size=args.size)
        grid = make_grid(run, spec, cache=PipelineCache(args.models), name=args.name, progress=bar)
    except _user_errors() as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    bar.close()
    rows = len(spec.prompts) * len(spec.seeds)
    if not args.prompts:
        print(f"prompts: the run's sample prompts ({len(prompts)}; --prompts for others)", file=sys.stderr)
    print(f"grid {grid.name}: {rows} rows × {len(spec.columns)} columns ({', '.join(c.label for c in spec.columns)}); "
          f"labelled picture {grid.grid_png.name}", file=sys.stderr)
    print(grid.folder)
    return 0


def _sample_prompts(run) -> list[str]:
    prompts = run.config().sample.prompts
    if not prompts:
        raise ValueError(f"run {run.name} has no sample prompts (sample.prompts is empty): give --prompts FILE|TEXT")
    return list(prompts)


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """First Ctrl-C stops after the image being rendered (the batch can be continued); a second aborts."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this image (Ctrl-C again to abort)…", file=sys.stderr)
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run_generate(args: argparse.Namespace) -> int:
    from studio.eval.generate import generate_batch
    from studio.eval.parsing import parse_prompts
    from studio.eval.pipelines import PipelineCache

    bar = ProgressBar("generate")
    try:
        run = find_run(args.outputs, args.run)
        prompts = parse_prompts(args.prompts)
        with _stop_on_interrupt() as stop:
            result = generate_batch(run, prompts, args.count, args.out, cache=PipelineCache(args.models),
                                    step=args.step, scale=args.scale, seed=args.seed, progress=bar,
                                    should_stop=stop.is_set, inference_steps=args.inference_steps,
                                    guidance=args.guidance, size=args.size)
    except _user_errors() as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    bar.close()
    done = result.written + result.skipped
    print(f"{result.written} images written, {result.skipped} already there ({done} of {args.count}), each with "
          f"its prompt as caption (.txt and metadata.jsonl); manifest {result.manifest}", file=sys.stderr)
    print(f"score it: python studio.py score {run.name} --batch {result.out_dir}", file=sys.stderr)
    if done < args.count:
        print("stopped early: run the same command again to continue", file=sys.stderr)
    print(result.out_dir)
    return 0 if done == args.count else 130  # stopped by Ctrl-C
