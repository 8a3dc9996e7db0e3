"""The dry run behind `check --dry-run` and the Train tab's Test setup: does this config fit here, and
what will the whole run cost?

It does what the run would do, briefly: loads the models, caches a few images, runs a few real
optimizer steps (forward, backward, optimizer), renders one sample image and writes one checkpoint,
all in a hidden temp run folder that is deleted afterwards, under the accelerator lock. From those it
measures seconds per step, peak memory (CUDA peak allocated, MPS driver memory, or the process's peak
RSS) and the checkpoint size, and projects the configured run: its time (load + caching + steps +
samples + checkpoints) and the disk its checkpoints take once retention has pruned them.
On out of memory it says which settings to change (`advice.py`), as a real run does.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from studio.config import RunConfig
from studio.core.device import is_out_of_memory, peak_memory_bytes, reset_peak_memory
from studio.core.lock import ACCELERATOR, AcceleratorLock
from studio.engine.advice import out_of_memory_message
from studio.engine.checkpoints import Kept, retention
from studio.engine.control import Control
from studio.engine.environment import human_bytes
from studio.engine.events import Event, Log, StatusChanged
from studio.engine.prepare import prepare_new_run
from studio.engine.runs import RunFolder

TRIAL_STEPS = 4
TRIAL_IMAGES = 4


@dataclass
class DryRunReport:
    base: str
    device: str = "?"
    precision: str = "?"
    images_total: int = 0
    images_used: int = 0
    load_s: float = 0.0
    cache_s_per_image: float = 0.0
    steps: int = 0
    s_per_step: float = 0.0
    cpu_s_per_step: float = 0.0
    peak_memory: int = 0
    memory_kind: str = ""
    device_memory: int | None = None
    max_steps: int = 0
    epochs: int = 0
    sample_s_per_image: float = 0.0
    sample_images: int = 0
    save_s: float = 0.0
    checkpoint_bytes: int = 0
    checkpoints_saved: int = 0
    checkpoints_kept: int = 0
    lora_bytes: int = 0
    parts_s: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    oom: str | None = None

    @property
    def projected_s(self) -> float:
        return sum(self.parts_s.values())

    @property
    def projected_disk_bytes(self) -> int:
        return self.checkpoints_kept * self.checkpoint_bytes + self.lora_bytes

    def lines(self) -> list[str]:
        out = [f"Test setup: {self.base} on {self.device} ({self.precision}), {self.images_used} of "
               f"{self.images_total} images, {self.steps} training steps"]
        out += [f"  notice: {n}" for n in self.notices]
        if self.oom:
            return out + [f"  {self.oom}"]
        fits = f" of {human_bytes(self.device_memory)}" if self.device_memory else ""
        out += [f"  model load      {self.load_s:.1f} s",
                f"  caching         {self.cache_s_per_image:.2f} s per image",
                f"  training step   {self.s_per_step:.3f} s (CPU {self.cpu_s_per_step:.3f} s)",
                f"  peak memory     {human_bytes(self.peak_memory)}{fits} ({self.memory_kind})"]
        if self.sample_images:
            out.append(f"  sample image    {self.sample_s_per_image:.2f} s ({self.sample_images} in the run)")
        out.append(f"  checkpoint      {human_bytes(self.checkpoint_bytes)} each, {self.save_s:.2f} s to write; "
                   f"{self.checkpoints_saved} saved, {self.checkpoints_kept} kept after pruning")
        parts = ", ".join(f"{k} {_duration(v)}" for k, v in self.parts_s.items() if v >= 0.05)
        out += [f"Projected run: {self.max_steps} steps ({self.epochs} epochs) ≈ {_duration(self.projected_s)} ({parts})",
                f"Projected disk: ≈ {human_bytes(self.projected_disk_bytes)} of checkpoints and LoRA "
                f"({self.checkpoints_kept} × {human_bytes(self.checkpoint_bytes)} + the final LoRA)"]
        return out


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def save_schedule(config: RunConfig, batches_per_epoch: int, micro_per_step: int) -> list[Kept]:
    """Every checkpoint the configured run saves (step, epochs done, epoch end), in order."""
    s, out = config.save, []
    for done in range(1, config.train.max_steps + 1):
        epochs_done = done * micro_per_step // batches_per_epoch
        ended = epochs_done > (done - 1) * micro_per_step // batches_per_epoch
        if ((s.every_steps and done % s.every_steps == 0) or done == config.train.max_steps
                or (s.every_epochs and ended and epochs_done % s.every_epochs == 0)):
            out.append(Kept(done, epochs_done, ended))
    return out


def dry_run(config: RunConfig, *, outputs_dir: Path, models_dir: Path | None = None,
            datasets_dir: Path | None = None, steps: int = TRIAL_STEPS, images: int = TRIAL_IMAGES,
            lock: AcceleratorLock = ACCELERATOR) -> DryRunReport:
    """Try `config` for real on a few images and steps; raises what a run would raise at setup, except
    out of memory, which the report's `oom` describes."""
    from studio.engine.train import Trainer

    config, notices = prepare_new_run(config, outputs_dir=outputs_dir, models_dir=models_dir,
                                      datasets_dir=datasets_dir)
    report = DryRunReport(config.model.base, notices=notices)
    marks: dict[str, float] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, StatusChanged) and event.status == "caching":
            marks.setdefault("caching", time.perf_counter())
        elif isinstance(event, Log) and event.notice:
            report.notices.append(event.message)

    with lock.hold("test setup"):
        Path(outputs_dir).mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".dry-run-", dir=outputs_dir))
        try:
            run = RunFolder.create(scratch, "trial", config)
            trainer = Trainer(config, run, Control(), on_event, models_dir)
            try:
                _measure(trainer, report, marks, steps, images)
            except BaseException as err:
                if not is_out_of_memory(err):
                    raise
                report.oom = out_of_memory_message(trainer.config, trainer.device.type, "in the test setup")
            finally:
                trainer.close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return report


def _measure(trainer, report: DryRunReport, marks: dict[str, float], steps: int, images: int) -> None:
    from studio.core.device import detect_device
    from studio.engine.sampling import render_samples

    t0 = time.perf_counter()
    trainer.setup(resume=False, max_images=images)
    t_setup = time.perf_counter()
    cfg = trainer.config
    report.device, report.precision = str(trainer.device), trainer.precision.precision
    report.device_memory = detect_device().total_memory_bytes if trainer.device.type == "cuda" else None
    report.images_total, report.images_used = len(trainer.full_order.examples), len(trainer.examples)
    report.max_steps, report.epochs, report.steps = cfg.train.max_steps, trainer.epochs, steps
    cache_start = marks.get("caching", t_setup)
    report.load_s = cache_start - t0
    variants = 0 if trainer.pixels_each_step else trainer.copies * (2 if cfg.data.flip else 1)
    # per latent encoded: entries the disk cache already held cost next to nothing, in the trial and the run
    encoded = trainer.cache_stats.get("latents", {}).get("encoded", 0)
    report.cache_s_per_image = (t_setup - cache_start) / max(1, encoded) if encoded else 0.0

    # a few real optimizer steps; the first pays one-off costs (allocations, kernel choice)
    reset_peak_memory(trainer.device)
    walls, cpus = [], []
    for step in range(steps):
        w, c = time.perf_counter(), time.process_time()
        trainer.train_step(step)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    steady = slice(1, None) if steps > 1 else slice(None)
    report.s_per_step, report.cpu_s_per_step = statistics.median(walls[steady]), statistics.median(cpus[steady])
    trainer.step_done = steps
    report.peak_memory, report.memory_kind = peak_memory_bytes(trainer.device)

    # one sample image, and one checkpoint written for real
    if cfg.sample.prompts:
        w = time.perf_counter()
        render_samples(trainer.pipe, trainer.run.path / "sample-trial", cfg.sample.prompts[:1], cfg.sample.seeds[:1],
                       trigger=cfg.data.trigger_word, steps=cfg.sample.inference_steps,
                       guidance=cfg.sample.guidance_scale, size=cfg.data.resolution,
                       negative_prompt=cfg.sample.negative_prompt, device=trainer.device,
                       autocast_dtype=trainer.autocast_dtype)
        report.sample_s_per_image = time.perf_counter() - w
        every, steps_total = cfg.sample.every_steps, cfg.train.max_steps
        rounds = len({s for s in range(every, steps_total + 1, every)} | {steps_total}) if every else 1
        report.sample_images = rounds * len(cfg.sample.prompts) * len(cfg.sample.seeds)
    w = time.perf_counter()
    trainer.save(steps)
    report.save_s = time.perf_counter() - w
    ckpt = trainer.run.latest_checkpoint()
    report.checkpoint_bytes, report.lora_bytes = ckpt.size_bytes, ckpt.lora_file.stat().st_size

    # the configured run, projected
    saves = save_schedule(cfg, trainer.full_order.batches_per_epoch, trainer.micro_per_step)
    kept = retention(saves, cfg.save)
    report.checkpoints_saved, report.checkpoints_kept = len(saves), sum(1 for r in kept.values() if r)
    report.parts_s = {"load": report.load_s,
                      "caching": report.cache_s_per_image * report.images_total * variants,
                      "training": report.s_per_step * cfg.train.max_steps,
                      "samples": report.sample_s_per_image * report.sample_images,
                      "checkpoints": report.save_s * len(saves)}
