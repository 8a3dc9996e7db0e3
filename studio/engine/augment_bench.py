"""`python studio.py bench --augment`: what colour jitter + rotation cost a run, side by side in one process.

The same short run three ways, on a generated set of distinct images: without jitter and rotation; with them
(`data.augment_variants` cached augmented copies per image, each step picks one); and with them and
`train.cache_latents` off (pixels made on the prefetch thread and VAE-encoded every step, for scale). Twice:
the `--preset` (tiny-demo by default) and `sdxl-character`, each on the built-in tiny model of its family at
most 128 px; jitter and rotation are the preset's own, or sdxl-character's (0.1, 5°) where it has none.

Per run: steady CPU seconds per step (process time, every thread, so the prefetch thread counts too) and wall
seconds, from step `steady_from` to the last, which leaves out loading and the cache build; and the latent
cache build itself, cold, in a cache folder of its own. Figures are printed, never asserted.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from studio.config import RunConfig, load_config
from studio.data.synthetic import write_image_set
from studio.engine.cache_bench import temporary_env
from studio.engine.events import Event, Metrics, StatusChanged
from studio.engine.runs import RunFolder

TARGET = 1.2
"""Issue 13's target: a jitter + rotation run costs at most 1.2× the CPU time per step of one without."""
MAX_RESOLUTION = 128
SDXL_PRESET = "sdxl-character"


@dataclass
class AugmentRun:
    setting: str
    label: str
    steady_from: int
    steps: int
    """Steady steps measured: those after the first `steady_from`."""
    cpu_s_per_step: float
    thread_cpu_s_per_step: float
    """CPU of the training thread alone (time.thread_time): what is left on it once the prefetch thread
    took the pixel work."""
    wall_s_per_step: float
    build_cpu_s: float
    build_wall_s: float
    latents_encoded: int
    """The cold latent cache build: CPU and wall seconds, latents encoded (0 with train.cache_latents off)."""


def bench_settings(config: RunConfig, overrides: list[str]) -> list[tuple[str, RunConfig, RunConfig]]:
    """(name, without, with jitter + rotation) for `config` and for sdxl-character with `overrides` (--set),
    on tiny models."""
    presets = [config]
    if config.model.family != "sdxl":
        presets.append(load_config(SDXL_PRESET, overrides))
    reference = load_config(SDXL_PRESET).data
    settings = []
    for preset in presets:
        d = preset.data
        jitter, rotation = (d.color_jitter, d.rotation) if (d.color_jitter or d.rotation) else (
            reference.color_jitter, reference.rotation)
        base = preset.with_overrides({
            "model.base": f"tiny-{preset.model.family}", "model.vae": None,
            "data.resolution": min(d.resolution, MAX_RESOLUTION), "data.bucket_step": 32,
            "lora.init_from": None, "train.max_epochs": None, "train.log_every_steps": 1,
            "sample.prompts": [], "sample.every_steps": 0, "sample.score_backbone": None, "save.every_steps": 0,
            "save.every_epochs": 0, "save.keep_every_epochs": 0, "log.tensorboard": False})
        plain = base.with_overrides({"data.color_jitter": 0.0, "data.rotation": 0.0})
        augmented = base.with_overrides({"data.color_jitter": jitter, "data.rotation": rotation})
        settings.append((f"{base.model.base} ({preset.data.resolution} px preset at "
                         f"{base.data.resolution} px, batch {base.train.batch_size}, flip {base.data.flip})",
                         plain, augmented))
    return settings


def _timed_run(setting: str, label: str, config: RunConfig, root: Path, name: str, models_dir: Path | None,
               steady_from: int) -> AugmentRun:
    from studio.engine.train import run_training

    marks: dict[int, tuple[float, float, float]] = {}
    build: list[tuple[float, float]] = []

    def on_event(event: Event) -> None:
        now = (time.perf_counter(), time.process_time())
        if isinstance(event, Metrics):  # emitted on the training thread, between steps
            marks[event.row["step"]] = (*now, time.thread_time())
        elif isinstance(event, StatusChanged) and (build or event.message.startswith("latents of")):
            build.append(now)  # the latent phase starts; the next phase ends it

    with temporary_env("LORA_STUDIO_TENSOR_CACHE", root / f"tensors-{name}"):
        run_training(config, RunFolder.create(root / "runs", name, config), emit=on_event, models_dir=models_dir)
        encoded = RunFolder(root / "runs" / name).read_status().get("cache", {}).get("latents", {}).get("encoded", 0)
    last = max(marks)
    steps = last - steady_from
    (w0, c0, t0), (w1, c1, t1) = marks[steady_from], marks[last]
    (bw0, bc0), (bw1, bc1) = (build[0], build[1]) if len(build) >= 2 else ((0.0, 0.0), (0.0, 0.0))
    return AugmentRun(setting, label, steady_from, steps, (c1 - c0) / steps, (t1 - t0) / steps, (w1 - w0) / steps,
                      bc1 - bc0, bw1 - bw0, encoded)


def run_augment_bench(config: RunConfig, steps: int = 100, images: int = 200, models_dir: Path | None = None,
                      overrides: list[str] | None = None) -> list[AugmentRun]:
    """Every setting's three runs of `steps` steps on `images` generated images."""
    steady_from = min(10, max(1, steps // 4))
    if steps <= steady_from:
        raise ValueError(f"--steps {steps} leaves no steady steps: give at least {steady_from + 1}")
    results = []
    with tempfile.TemporaryDirectory(prefix="lora-studio-augment-bench-") as tmp:
        root = Path(tmp)
        for n, (setting, plain, augmented) in enumerate(bench_settings(config, overrides or [])):
            size = plain.data.resolution
            data = str(write_image_set(root / f"data-{size}", images, size))
            # untimed: imports, the tiny model's first build and first calls, on two other images
            warm = augmented.with_overrides({"data.dir": str(write_image_set(root / f"warm-{size}", 2, size, seed=1)),
                                             "train.max_steps": 2})
            _timed_run(setting, "warm-up", warm, root, f"warm-up-{n}", models_dir, 1)
            runs = [("plain", plain), ("jitter+rotation", augmented),
                    ("jitter+rotation, uncached", augmented.with_overrides({"train.cache_latents": False}))]
            for i, (label, cfg) in enumerate(runs):
                cfg = cfg.with_overrides({"data.dir": data, "train.max_steps": steps})
                results.append(_timed_run(setting, label, cfg, root, f"run-{n}-{i}", models_dir, steady_from))
    return results


def format_augment_bench(results: list[AugmentRun], config: RunConfig, images: int) -> str:
    d = load_config(SDXL_PRESET).data
    lines = [f"bench --augment: colour jitter + rotation against none, {images} generated images; steady CPU s per "
             f"step (process time, all threads) and wall over {results[0].steps} steps, the first "
             f"{results[0].steady_from} left out; target: with ≤ {TARGET}× without (CPU)",
             f"(jitter / rotation: the preset's, else {SDXL_PRESET}'s {d.color_jitter} / {d.rotation}°; "
             f"data.augment_variants {config.data.augment_variants})"]
    by_setting: dict[str, list[AugmentRun]] = {}
    for r in results:
        by_setting.setdefault(r.setting, []).append(r)
    for setting, runs in by_setting.items():
        plain = runs[0]
        lines += ["", setting,
                  f"  {'run':<27} {'CPU ms/step':>11} {'of it training thread':>21} {'wall ms/step':>12} "
                  f"{'vs plain':>9}   "
                  f"{'cache build CPU s':>17} {'wall s':>7} {'latents':>8}"]
        for r in runs:
            build = (f"{r.build_cpu_s:>17.2f} {r.build_wall_s:>7.2f} {r.latents_encoded:>8}" if r.latents_encoded
                     else f"{'(none: pixels each step)':>34}")
            lines.append(f"  {r.label:<27} {r.cpu_s_per_step * 1e3:>11.1f} {r.thread_cpu_s_per_step * 1e3:>21.1f} "
                         f"{r.wall_s_per_step * 1e3:>12.1f} "
                         f"{r.cpu_s_per_step / plain.cpu_s_per_step:>8.2f}×   {build}")
        augmented = runs[1]
        ratio = augmented.cpu_s_per_step / plain.cpu_s_per_step
        lines.append(f"  jitter + rotation, cached copies: {ratio:.2f}× the CPU per step of none "
                     f"({'meets' if ratio <= TARGET else 'misses'} the ≤ {TARGET}× target); its cache build "
                     f"{augmented.build_cpu_s / plain.build_cpu_s:.1f}× the CPU of none's "
                     f"({augmented.latents_encoded} latents against {plain.latents_encoded})")
    return "\n".join(lines)
