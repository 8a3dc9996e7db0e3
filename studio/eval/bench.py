"""`python studio.py bench --grids`: what keeping the base pipeline loaded saves.

The same comparison grid (prompt only and each checkpoint of a short run) is rendered cold — in a new
`PipelineCache`, so the base model loads first, as a tool that loads the model per grid does — and
warm, in a cache that already holds the base model, as the Compare tab's second grid of a run is.
Both switch LoRAs as adapters. Figures are printed, never asserted.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from studio.config import RunConfig
from studio.engine.runs import RunFolder

PROMPT = "a photo of {trigger} toy robot"
SEEDS = (1, 2)


@dataclass
class GridBench:
    description: str
    cold_s: list[float]
    """Seconds per grid with a fresh pipeline cache (base model loaded, then rendered)."""
    warm_s: list[float]
    """Seconds per grid with the base model already loaded."""

    @property
    def speed_up(self) -> float:
        return statistics.median(self.cold_s) / statistics.median(self.warm_s)


def run_grid_bench(config: RunConfig, repeats: int = 3, inference_steps: int = 4,
                   models_dir: Path | None = None) -> GridBench:
    """Train `config` for 4 steps (checkpoints at 2 and 4), then time `repeats` cold and warm grids."""
    from studio.engine.train import run_training
    from studio.eval.columns import plan_columns
    from studio.eval.grids import grid_spec, make_grid
    from studio.eval.pipelines import PipelineCache

    if repeats < 1:
        raise ValueError(f"repeats {repeats} must be at least 1")
    short = config.with_overrides({"train.max_steps": 4, "save.every_steps": 2, "save.every_epochs": 0,
                                   "save.keep_last": 2, "sample.every_steps": 0, "optim.warmup_steps": 0})
    with tempfile.TemporaryDirectory(prefix="lora-studio-bench-grids-") as tmp:
        run = RunFolder.create(Path(tmp), "bench-run", short)
        run_training(short, run, models_dir=models_dir)
        spec = grid_spec(run, [PROMPT], list(SEEDS), plan_columns(run, "all"), inference_steps=inference_steps)

        def timed(cache: PipelineCache, name: str) -> float:
            t0 = time.perf_counter()
            make_grid(run, spec, cache=cache, name=name)
            return time.perf_counter() - t0

        timed(PipelineCache(models_dir), "warm-up")  # untimed: imports, lazy modules and file caches
        cold = [timed(PipelineCache(models_dir), f"cold-{i}") for i in range(repeats)]
        cache = PipelineCache(models_dir)
        timed(cache, "prime")
        warm = [timed(cache, f"warm-{i}") for i in range(repeats)]
    labels = ", ".join(c.label for c in spec.columns)
    description = (f"{config.model.base}, {spec.width}×{spec.height} px, {len(SEEDS)} rows × {len(spec.columns)} columns "
                   f"({labels}), {inference_steps} sampler steps, {repeats} repeats")
    return GridBench(description, cold, warm)


def format_grid_bench(result: GridBench) -> str:
    def row(label: str, values: list[float]) -> str:
        each = ", ".join(f"{v:.2f}" for v in values)
        return f"{label:<36} median {statistics.median(values):6.2f} s   ({each})"

    return "\n".join([f"grid bench: {result.description}",
                      row("cold (base model loaded per grid)", result.cold_s),
                      row("warm (base model kept loaded)", result.warm_s),
                      f"warm grids are {result.speed_up:.2f}× faster"])
