"""`python studio.py bench`: our loop (cached latents and text embeddings) against an uncached loop
that runs the VAE and the text encoder(s) every step, as diffusers' `train_text_to_image_lora.py`
does, at the same settings on the same machine. Figures are printed, never asserted."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from studio.config import RunConfig
from studio.engine.events import Event, Metrics
from studio.engine.runs import RunFolder


@dataclass
class BenchResult:
    label: str
    first_step_s: float
    """From the call to the end of the first optimizer step: loading, caching, first step."""
    steady_steps_per_s: float
    """1 / median step time, after the first few steps."""
    total_s: float
    peak_memory: int


def _measure(label: str, config: RunConfig, models_dir: Path | None, workdir: Path) -> BenchResult:
    from studio.engine.train import run_training

    stamps: list[float] = []
    memory = [0]

    def on_event(event: Event) -> None:
        if isinstance(event, Metrics):
            stamps.append(time.perf_counter())
            memory[0] = max(memory[0], event.row["memory"])

    run = RunFolder.create(workdir, label, config)
    t0 = time.perf_counter()
    run_training(config, run, emit=on_event, models_dir=models_dir)
    total = time.perf_counter() - t0
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    steady = durations[min(5, len(durations) - 1):] or durations or [stamps[0] - t0]
    return BenchResult(label, stamps[0] - t0, 1.0 / statistics.median(steady), total, memory[0])


def run_bench(config: RunConfig, steps: int, models_dir: Path | None = None) -> list[BenchResult]:
    """Train `steps` steps twice: cached (ours) and uncached (the reference script's way)."""
    base = config.with_overrides({"train.max_steps": steps, "sample.every_steps": 0, "save.every_steps": 0,
                                  "save.every_epochs": 0, "optim.warmup_steps": 0, "train.log_every_steps": 1})
    uncached = base.with_overrides({"train.cache_latents": False, "train.cache_text_embeddings": False})
    with tempfile.TemporaryDirectory(prefix="lora-studio-bench-") as tmp:
        # an untimed 2-step run first: imports, lazy module loading and file caches warm up for both
        _measure("warm-up", base.with_overrides({"train.max_steps": 2}), models_dir, Path(tmp))
        return [_measure("cached", base, models_dir, Path(tmp)), _measure("uncached", uncached, models_dir, Path(tmp))]


def format_bench(results: list[BenchResult], config: RunConfig, steps: int) -> str:
    from studio.engine.environment import human_bytes

    ours, ref = results
    lines = [f"bench: {config.model.base}, {config.data.resolution} px, batch {config.train.batch_size}, "
             f"rank {config.lora.rank}, {steps} steps",
             f"{'loop':<10} {'first step':>11} {'steady steps/s':>15} {'end to end':>11} {'peak memory':>12}"]
    for r in results:
        lines.append(f"{r.label:<10} {r.first_step_s:>10.2f}s {r.steady_steps_per_s:>15.2f} {r.total_s:>10.2f}s "
                     f"{human_bytes(r.peak_memory):>12}")
    lines.append(f"speed-up: steady {ours.steady_steps_per_s / ref.steady_steps_per_s:.2f}×, "
                 f"end to end {ref.total_s / ours.total_s:.2f}×")
    return "\n".join(lines)
