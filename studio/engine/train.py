"""The training loop: config in, events out, a Control for stop / pause / sample-now / save-now.

`run_training` is the one entry point for the CLI, the studio's runner and `accelerate launch`.
The loop in `Trainer.fit` reads top to bottom in numbered phases, like nanoGPT's train.py.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from studio.config import RunConfig
from studio.data.atomic import write_json_atomic
from studio.engine import distributed
from studio.engine.batches import DataOrder, augment, load_training_image, micro_rng, prepare_examples, to_tensor
from studio.engine.caches import FLIP, cache_latents, cache_text, lookup_text
from studio.engine.checkpoints import LoraWeights, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from studio.engine.conditioning import TextEmbedding, encode_images, encode_text, sdxl_time_ids
from studio.engine.control import Control, Emit, Event
from studio.engine.device import choose_precision, detect_device, memory_bytes
from studio.engine.environment import library_versions
from studio.engine.export import UNET_CONFIG_FILE, save_webui_lora, tag_frequency, write_sidecar
from studio.engine.loss import diffusion_loss
from studio.engine.lora import TEXT_ENCODER, add_lora, lora_state_dict, load_lora_state_dict, unet_targets
from studio.engine.runs import RunFolder, now_iso, step_dir_name
from studio.engine.sampling import render_samples
from studio.engine.schedule import LRSchedule, make_optimizer

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Trainer:
    """Everything one run holds in memory. Built by `setup`, driven by `fit`."""

    def __init__(self, config: RunConfig, run: RunFolder, control: Control, emit: Emit, models_dir: Path | None):
        self.config, self.run, self.control, self.emit_event = config, run, control, emit
        self.models_dir = models_dir
        self.dist = distributed.context()
        self.is_main = self.dist.rank == 0

    def emit(self, kind: str, **data: Any) -> None:
        if self.is_main:
            self.emit_event(Event(kind, data))

    def status(self, status: str, message: str = "") -> None:
        self.emit("status", status=status, message=message)

    # ------------------------------------------------------------------------------------------
    def setup(self, resume: bool) -> None:
        from studio.data.dataset import resolve_data_dir, scan_dataset, dataset_fingerprint
        from studio.data.report import build_report, write_report
        from studio.engine.models import load_pipeline, load_vae, quiet_progress_bars

        cfg = self.config
        # 1. Device and precision: fp32 LoRA weights, base weights in the compute dtype on CUDA.
        info = detect_device()
        self.device = self.dist.device(info)
        self.precision = choose_precision(cfg.train.precision, info)
        self.autocast_dtype = None if self.precision.precision == "fp32" else self.precision.dtype
        weights_dtype = self.precision.dtype if self.device.type == "cuda" else torch.float32

        # 2. Dataset: a bad file is skipped and reported, never fatal; no usable image is.
        self.status("loading", "scanning the dataset")
        with self.dist.main_process_first():
            scan = scan_dataset(resolve_data_dir(cfg.data.dir))
        report = build_report(scan, resolution=cfg.data.resolution, trigger_word=cfg.data.trigger_word,
                              bucket_step=cfg.data.bucket_step)
        if self.is_main:
            write_report(report, self.run.report_path)
        self.examples = prepare_examples(scan, cfg)
        self.fingerprint = dataset_fingerprint(scan)
        self.order = DataOrder(self.examples, cfg.train.batch_size, cfg.data.repeats, cfg.train.seed)
        self.tag_frequency = tag_frequency([ex.caption for ex in self.examples])

        # 3. Base model. Library progress bars would only clutter the CLI's bar and the server log.
        self.status("loading", f"loading {cfg.model.base}")
        quiet_progress_bars()
        with self.dist.main_process_first():
            pipe = load_pipeline(cfg.model.base, family=cfg.model.family, dtype=weights_dtype,
                                 models_dir=self.models_dir, single_file_config=cfg.model.single_file_config)
            if cfg.model.vae:
                pipe.vae = load_vae(cfg.model.vae, self.models_dir)
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.family = pipe, cfg.model.family
        if self.is_main:
            write_json_atomic(self.run.path / UNET_CONFIG_FILE, dict(pipe.unet.config))
        self.text_encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if self.family == "sdxl" else [])
        # the SDXL VAE overflows in fp16; the VAE only encodes once here, so fp32 costs little
        pipe.vae.to(self.device)
        if pipe.vae.dtype != torch.float32:
            pipe.vae.to(dtype=torch.float32)
        pipe.unet.to(self.device)
        for te in self.text_encoders:
            te.to(self.device)

        # 4. LoRA: seeded so the same seed gives the same initial adapter.
        torch.manual_seed(cfg.train.seed)
        self.unet_params = add_lora(pipe.unet, cfg.lora, unet_targets(cfg.lora.targets))
        self.te_params: list[torch.nn.Parameter] = []
        if cfg.lora.train_text_encoder:
            for te in self.text_encoders:
                self.te_params += add_lora(te, cfg.lora, TEXT_ENCODER)
        if cfg.train.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            if cfg.lora.train_text_encoder:
                for te in self.text_encoders:
                    te.gradient_checkpointing_enable()
        pipe.unet.train()

        # 5. Caches: latents once per image (and flip), caption embeddings once when encoders are frozen.
        self.noise_scheduler = _training_scheduler(pipe)
        self.fill_caches()

        # 6. Optimizer, LR schedule, loss scaler.
        groups = [{"params": self.unet_params, "lr": cfg.optim.learning_rate, "base_lr": cfg.optim.learning_rate}]
        if self.te_params:
            te_lr = cfg.optim.text_encoder_lr or cfg.optim.learning_rate / 2
            groups.append({"params": self.te_params, "lr": te_lr, "base_lr": te_lr})
        self.optimizer = make_optimizer(cfg, groups, self.device)
        self.schedule = LRSchedule(cfg.optim, cfg.train.max_steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.use_grad_scaler else None
        self.unet_ddp = self.dist.wrap(pipe.unet, self.device)

        # 7. Resume from the latest complete checkpoint.
        self.start_step, self.loss_ema = 0, None
        if resume:
            self.restore()

    def fill_caches(self) -> None:
        cfg, pipe = self.config, self.pipe
        self.pixels_each_step = not cfg.train.cache_latents or cfg.data.color_jitter > 0 or cfg.data.rotation > 0
        if self.pixels_each_step and cfg.train.cache_latents:
            log.info("colour jitter / rotation change pixels every step: latents are not cached")
        if not self.pixels_each_step:
            self.status("caching", f"encoding {len(self.examples) * (2 if cfg.data.flip else 1)} latents")
        self.latents, self.crops = cache_latents(
            pipe.vae, self.examples, cfg.data.flip, encode=not self.pixels_each_step,
            progress=lambda done, total: self.emit("progress", phase="caching latents", done=done, total=total))
        if not self.pixels_each_step:
            pipe.vae.to("cpu")  # the VAE leaves the device; it comes back only to decode samples

        self.text_cache = None
        if cfg.train.cache_text_embeddings and not cfg.lora.train_text_encoder:
            captions = sorted({ex.caption for ex in self.examples} | {""})
            self.status("caching", f"encoding {len(captions)} captions")
            self.text_cache = cache_text(pipe, self.family, captions, self.device)
            for te in self.text_encoders:
                te.to("cpu")

    # ------------------------------------------------------------------------------------------
    def fit(self) -> str:
        cfg, run = self.config, self.run
        accum, world = cfg.train.grad_accumulation, self.dist.world_size
        micro_per_step = accum * world
        started = time.time()
        step_times: list[float] = []
        pending_rows: list[dict[str, Any]] = []
        latest = run.latest_checkpoint()
        last_checkpoint = latest.step if latest else None
        if self.is_main:
            run.update_status(status="running", error=None, last_step=self.start_step)
        self.status("training", f"step {self.start_step} of {cfg.train.max_steps}")

        for step in range(self.start_step, cfg.train.max_steps):
            # 1. Commands from the UI: pause keeps everything loaded and runs nothing.
            if self.control.paused:
                self._flush(pending_rows)
                if self.is_main:
                    run.update_status(status="paused", last_step=step)
                self.status("paused", f"paused at step {step}")
                self.control.wait_while_paused()
                if self.is_main:
                    run.update_status(status="running")
                self.status("training", f"resumed at step {step}")
            if self.control.stop_requested:
                return self._stop(step, pending_rows)

            # 2. Learning rate for this step (warm-up, then the schedule).
            factor = self.schedule.factor_at(step)
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor

            # 3. Forward / backward over grad_accumulation micro-batches (DDP syncs on the last).
            t0 = time.perf_counter()
            total = torch.zeros((), device=self.device)
            for a in range(accum):
                micro = (step * accum + a) * world + self.dist.rank
                with self.dist.no_sync(self.unet_ddp, last=a == accum - 1):
                    loss = self._loss(micro) / accum
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
                total += loss.detach()

            # 4. Clip and step. With fp16 the scaler skips steps whose gradients overflowed.
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if cfg.optim.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.unet_params + self.te_params, cfg.optim.max_grad_norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

            # 5. Log. `.item()` is the one host sync per step; it also guards against NaN.
            loss_value = self.dist.mean(total).item()
            done = step + 1
            if not math.isfinite(loss_value):
                self._flush(pending_rows)
                raise TrainingDiverged(
                    f"the loss became {loss_value} at step {done}: training stopped. The last good checkpoint is "
                    f"{'step ' + str(last_checkpoint) if last_checkpoint else 'none'}. Lower optim.learning_rate, "
                    "or use train.precision fp32/bf16 if fp16 overflowed.")
            self.loss_ema = loss_value if self.loss_ema is None else 0.95 * self.loss_ema + 0.05 * loss_value
            self.schedule.observe(step, self.loss_ema)
            step_times.append(time.perf_counter() - t0)
            recent = step_times[-20:]
            steps_per_s = len(recent) / sum(recent)
            if done % cfg.train.log_every_steps == 0 or done == cfg.train.max_steps:
                row = {"step": done, "loss": loss_value, "loss_smoothed": self.loss_ema,
                       "lr": self.optimizer.param_groups[0]["lr"], "steps_per_s": steps_per_s,
                       "memory": memory_bytes(self.device), "time": round(time.time() - started, 3),
                       "epoch": self.order.epoch_of(done * micro_per_step - 1)}
                pending_rows.append(row)
                self.emit("metrics", row=row, total=cfg.train.max_steps)
                if len(pending_rows) >= 10 or time.time() - pending_rows[0]["time"] - started > 2:
                    self._flush(pending_rows)

            # 6. Samples and checkpoints: on schedule, at epoch ends, or on request.
            epoch_ended = self.order.epoch_of(done * micro_per_step) > self.order.epoch_of(step * micro_per_step)
            epochs_done = self.order.epoch_of(done * micro_per_step)
            final = done == cfg.train.max_steps
            want_sample = (cfg.sample.every_steps and done % cfg.sample.every_steps == 0) or final
            if (self.control.take_sample_request() or want_sample) and cfg.sample.prompts:
                self._flush(pending_rows)
                self.sample(done)
            want_save = (cfg.save.every_steps and done % cfg.save.every_steps == 0) or (
                cfg.save.every_epochs and epoch_ended and epochs_done % cfg.save.every_epochs == 0)
            if self.control.take_save_request() or want_save or final:
                self._flush(pending_rows)
                self.save(done)
                last_checkpoint = done
            if self.is_main and done % 25 == 0:
                run.update_status(last_step=done)

        # 7. Done: the final LoRA next to the run, with its AUTOMATIC1111 sidecar.
        self._flush(pending_rows)
        if self.is_main:
            self.write_final()
            run.update_status(status="finished", last_step=cfg.train.max_steps, finished=now_iso())
        self.status("finished", f"finished {cfg.train.max_steps} steps")
        return "finished"

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def eval_loss(self, batches: int = 8, seed: int = 1234) -> float:
        """Mean loss over fixed batches, noise and timesteps (a seed of its own): comparable
        before and after training, unlike the noisy training loss."""
        was_training = self.pipe.unet.training
        self.pipe.unet.eval()
        try:
            return sum(self._loss(m, seed).item() for m in range(batches)) / batches
        finally:
            self.pipe.unet.train(was_training)

    def _loss(self, micro: int, seed: int | None = None) -> torch.Tensor:
        cfg, device = self.config, self.device
        ids = self.order.batch(micro)
        py, gen = micro_rng(cfg.train.seed if seed is None else seed, micro)
        examples = [self.examples[i] for i in ids]

        # latents: cached (a flip is a cached variant) or encoded now after augmentation
        flips = [cfg.data.flip and py.random() < 0.5 for _ in examples]
        if self.pixels_each_step:
            pixels = []
            for ex, flip in zip(examples, flips):
                image, _ = load_training_image(ex)
                image = augment(image.transpose(FLIP) if flip else image, py, cfg.data.color_jitter, cfg.data.rotation)
                pixels.append(to_tensor(image))
            latents = encode_images(self.pipe.vae, torch.stack(pixels)).to(device)
        else:
            latents = torch.stack([self.latents[(ex.index, flip)] for ex, flip in zip(examples, flips)]).to(device)

        # captions, with caption dropout
        captions = ["" if py.random() < cfg.data.caption_dropout else ex.caption for ex in examples]
        text = self._text(captions)

        # noise, timesteps (seeded per micro-batch: resumable and identical across devices)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen)
        if cfg.train.noise_offset:
            noise += cfg.train.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=gen)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (b,), generator=gen)
        noise, timesteps = noise.to(device), timesteps.to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)

        extra = {}
        if self.family == "sdxl":
            time_ids = torch.stack([sdxl_time_ids(ex.original_size, self.crops[ex.index], ex.bucket[::-1])
                                    for ex in examples]).to(device)
            extra["added_cond_kwargs"] = {"text_embeds": text.pooled, "time_ids": time_ids}

        dtype = self.autocast_dtype
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            pred = self.unet_ddp(noisy, timesteps, text.hidden, **extra).sample
        return diffusion_loss(self.noise_scheduler, pred, latents, noise, timesteps, cfg.train.min_snr_gamma)

    def _text(self, captions: list[str]) -> TextEmbedding:
        if self.text_cache is not None:
            return lookup_text(self.text_cache, captions)
        with torch.set_grad_enabled(bool(self.te_params)):
            dtype = self.autocast_dtype
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                return encode_text(self.pipe, self.family, captions, self.device)

    # ------------------------------------------------------------------------------------------
    def lora_weights(self) -> LoraWeights:
        parts = {"unet": lora_state_dict(self.pipe.unet)}
        if self.te_params:
            parts["text_encoder"] = lora_state_dict(self.pipe.text_encoder)
            if self.family == "sdxl":
                parts["text_encoder_2"] = lora_state_dict(self.pipe.text_encoder_2)
        return LoraWeights(parts)

    def _write_webui(self, path: Path, weights: LoraWeights, step: int) -> None:
        save_webui_lora(path, weights, self.config, self.pipe.unet.config, name=self.run.name, step=step,
                        tag_frequency=self.tag_frequency)

    def save(self, step: int) -> None:
        if not self.is_main:
            return
        self.status("saving", f"checkpoint at step {step}")
        weights = self.lora_weights()
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                 "schedule": self.schedule.state_dict(), "rng": rng_state(),
                 "loss_ema": torch.tensor(self.loss_ema if self.loss_ema is not None else float("nan"))}
        ckpt = save_checkpoint(self.run, step, weights, state, {"epoch": self.order.epoch_of(
            step * self.config.train.grad_accumulation * self.dist.world_size), "time": now_iso()},
            lambda p: self._write_webui(p, weights, step), self.config.save.keep_last)
        self.run.update_status(last_checkpoint=step)
        self.emit("checkpoint", step=step, path=str(ckpt.path), lora_file=str(ckpt.lora_file))
        self.status("training", f"saved step {step}")

    def sample(self, step: int) -> None:
        if not self.is_main:
            return
        cfg = self.config
        self.status("sampling", f"samples at step {step}")
        entries = render_samples(
            self.pipe, self.run.samples_dir / step_dir_name(step), cfg.sample.prompts, cfg.sample.seeds,
            trigger=cfg.data.trigger_word, steps=cfg.sample.inference_steps, guidance=cfg.sample.guidance_scale,
            size=cfg.data.resolution, negative_prompt=cfg.sample.negative_prompt, device=self.device,
            autocast_dtype=self.autocast_dtype)
        self.emit("sample", step=step, images=[str(self.run.samples_dir / step_dir_name(step) / e["file"])
                                               for e in entries])
        self.status("training", f"samples at step {step} done")

    def restore(self) -> None:
        ckpt = self.run.latest_checkpoint()
        if ckpt is None:
            raise FileNotFoundError(f"run {self.run.name} has no complete checkpoint to resume from")
        weights, state, info = load_checkpoint(ckpt)
        load_lora_state_dict(self.pipe.unet, weights.parts["unet"])
        if self.te_params:
            load_lora_state_dict(self.pipe.text_encoder, weights.parts["text_encoder"])
            if self.family == "sdxl":
                load_lora_state_dict(self.pipe.text_encoder_2, weights.parts["text_encoder_2"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        restore_rng_state(state["rng"])
        ema = float(state["loss_ema"])
        self.loss_ema = None if math.isnan(ema) else ema
        self.start_step = info["step"]
        if self.is_main:
            self.run.truncate_metrics(self.start_step)
        self.emit("log", message=f"resumed from checkpoint step {self.start_step}")

    def write_final(self) -> None:
        weights = self.lora_weights()
        self._write_webui(self.run.final_lora, weights, self.config.train.max_steps)
        write_sidecar(self.run.final_lora, self.config)

    def _stop(self, step: int, pending_rows: list) -> str:
        self._flush(pending_rows)
        latest = self.run.latest_checkpoint()
        if step > self.start_step and (latest is None or latest.step != step):
            self.save(step)
        if self.is_main:
            self.run.update_status(status="stopped", last_step=step, finished=now_iso())
        self.status("stopped", f"stopped at step {step}; checkpoint saved")
        return "stopped"

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        if self.is_main and rows:
            self.run.append_metrics(rows)
        rows.clear()


def _training_scheduler(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def run_training(config: RunConfig, run: RunFolder, control: Control | None = None, emit: Emit | None = None, *,
                 models_dir: Path | None = None, resume: bool = False) -> str:
    """Train (or resume) `run`; returns the final status. Failures land in run.json and re-raise."""
    control = control or Control()
    emit = emit or (lambda event: None)
    trainer = Trainer(config, run, control, emit, models_dir)
    try:
        if trainer.is_main:
            run.update_status(status="running", started=run.read_status().get("started") or now_iso(),
                              base_model=config.model.base, family=config.model.family, error=None,
                              max_steps=config.train.max_steps,
                              versions=library_versions("torch", "diffusers", "transformers", "peft"))
        trainer.setup(resume)
        if trainer.is_main:
            run.update_status(tag_frequency=trainer.tag_frequency,
                              device=str(trainer.device), precision=trainer.precision.precision,
                              precision_reason=trainer.precision.reason, dataset_fingerprint=trainer.fingerprint,
                              dataset_images=len(trainer.examples))
        return trainer.fit()
    except BaseException as err:
        if trainer.is_main:
            message = str(err) or type(err).__name__
            run.update_status(status="failed", error=message, traceback=traceback.format_exc(), finished=now_iso())
            emit(Event("status", {"status": "failed", "message": message}))
        raise
    finally:
        trainer.dist.close()
