"""`python studio.py bench --cache`: time to the first training step with a cold and a warm disk cache of
latents and caption embeddings (engine/caches.py), and of a resume, on a generated set of distinct images at
the preset's resolution. CPU seconds (process time, every thread) beside wall time: on a shared machine the
wall clock is mostly queueing. Figures are printed, never asserted."""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from studio.config import RunConfig
from studio.data.synthetic import write_image_set
from studio.engine.events import Event, Metrics
from studio.engine.runs import RunFolder



@dataclass
class FirstStep:
    label: str
    wall_s: float
    cpu_s: float
    """Process CPU time from the start to the end of the first optimizer step."""
    encoded: int
    reused: int
    """Latents encoded / read from the disk cache at this start."""


@contextmanager
def temporary_env(name: str, value: Path) -> Iterator[None]:
    """Environment variable `name` set to `value` for the bench only (e.g. `LORA_STUDIO_TENSOR_CACHE`, so the
    user's own cache stays untouched)."""
    before = os.environ.get(name)
    os.environ[name] = str(value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _first_step(label: str, config: RunConfig, run: RunFolder, models_dir: Path | None, resume: bool = False) -> FirstStep:
    from studio.engine.train import run_training

    first: list[tuple[float, float]] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Metrics) and not first:
            first.append((time.perf_counter(), time.process_time()))

    wall, cpu = time.perf_counter(), time.process_time()
    run_training(config, run, emit=on_event, models_dir=models_dir, resume=resume)
    cache = run.read_status().get("cache", {}).get("latents", {})
    return FirstStep(label, first[0][0] - wall, first[0][1] - cpu, cache.get("encoded", 0), cache.get("reused", 0))


def run_cache_bench(config: RunConfig, images: int = 200, models_dir: Path | None = None) -> tuple[list[FirstStep], int]:
    """Cold start, warm start (a second run on the same data and model) and a resume of the first run;
    returns them and the cache's size in bytes."""
    from studio.engine.caches import tensor_cache_usage
    from studio.engine.runstate import prepare_resume

    size = config.data.resolution
    with tempfile.TemporaryDirectory(prefix="lora-studio-cache-bench-") as tmp:
        root = Path(tmp)
        base = config.with_overrides({"train.max_steps": 1, "train.max_epochs": None, "sample.every_steps": 0,
                                      "sample.score_backbone": None, "save.every_steps": 1, "save.every_epochs": 0,
                                      "optim.warmup_steps": 0, "train.log_every_steps": 1})
        with temporary_env("LORA_STUDIO_TENSOR_CACHE", root / "tensors"):
            # untimed: imports, lazy module loading and the built-in model's first build, on other images
            warmup = base.with_overrides({"data.dir": str(write_image_set(root / "warm-up", 2, size, seed=1))})
            _first_step("warm-up", warmup, RunFolder.create(root / "runs", "warm-up", warmup), models_dir)
            bench = base.with_overrides({"data.dir": str(write_image_set(root / "data", images, size))})
            cold_run = RunFolder.create(root / "runs", "cold", bench)
            results = [_first_step("cold cache", bench, cold_run, models_dir),
                       _first_step("warm cache", bench, RunFolder.create(root / "runs", "warm", bench), models_dir)]
            extended, _ = prepare_resume(cold_run, 2)
            results.append(_first_step("resume", extended, cold_run, models_dir, resume=True))
            return results, tensor_cache_usage().bytes


def format_cache_bench(results: list[FirstStep], cache_bytes: int, config: RunConfig, images: int) -> str:
    from studio.engine.environment import human_bytes

    cold = results[0]
    lines = [f"bench --cache: time to the first step, {images} images at {config.data.resolution} px, "
             f"{config.model.base}, batch {config.train.batch_size}, flip {config.data.flip}",
             f"{'start':<11} {'CPU s':>8} {'wall s':>8} {'vs cold (CPU)':>14} {'latents encoded':>16} {'reused':>7}"]
    for r in results:
        lines.append(f"{r.label:<11} {r.cpu_s:>8.2f} {r.wall_s:>8.2f} {r.cpu_s / cold.cpu_s:>13.1%} "
                     f"{r.encoded:>16} {r.reused:>7}")
    lines.append(f"disk cache: {human_bytes(cache_bytes)}")
    return "\n".join(lines)
