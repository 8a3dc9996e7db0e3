"""The training loop: config in, events out, a Control for stop / pause / sample-now / save-now.

`run_training` is the one entry point for the CLI, the studio's runner and `accelerate launch`.
The loop in `Trainer.fit` reads top to bottom in numbered phases, like nanoGPT's train.py; one
optimizer step is `Trainer.train_step`, which the dry run (`dryrun.py`) also runs.
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
from studio.core.atomic import write_json_atomic
from studio.core.device import choose_precision, detect_device, memory_bytes
from studio.engine import distributed
from studio.engine.batches import (Augmentation, DataOrder, Example, augmentation, draw_variants, micro_rng,
                                   prepare_examples)
from studio.engine.caches import (CacheStats, TensorStore, cache_latents, cache_text, lookup_text,
                                  tensor_cache_dir)
from studio.engine.checkpoints import LoraWeights, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from studio.engine.conditioning import TextEmbedding, encode_images, encode_text, sdxl_time_ids
from studio.engine.control import Control
from studio.engine.environment import library_versions
from studio.engine.events import (CheckpointSaved, Emit, EpochEnded, Event, Finished, Log, Metrics, Plan, Progress,
                                  SampleRendered, Status, StatusChanged, run_json_status)
from studio.engine.export import UNET_CONFIG_FILE, save_webui_lora, write_sidecar
from studio.engine.failures import TrainingDiverged, as_failure, writing
from studio.engine.lora import TEXT_ENCODER, add_lora, lora_state_dict, load_lora_state_dict, unet_targets
from studio.engine.lora_metadata import tag_frequency, top_tags
from studio.engine.loss import diffusion_loss
from studio.engine.prepare import epochs_in, plan_length, steps_per_epoch
from studio.engine.prefetch import PixelFeed
from studio.engine.runs import RunFolder, now_iso, step_dir_name
from studio.engine.runstate import Heartbeat, NotResumable, this_process
from studio.engine.sampling import render_samples
from studio.engine.schedule import LRSchedule, make_optimizer

log = logging.getLogger(__name__)


class Trainer:
    """Everything one run holds in memory. Built by `setup`, driven by `fit`."""

    def __init__(self, config: RunConfig, run: RunFolder, control: Control, emit: Emit, models_dir: Path | None):
        self.config, self.run, self.control, self.emit_event = config, run, control, emit
        self.models_dir = models_dir
        self.dist = distributed.context()
        self.is_main = self.dist.rank == 0
        self.heartbeat: Heartbeat | None = None
        self.tensorboard = None
        self.start_step = self.step_done = 0
        self.last_checkpoint: int | None = None
        self.device = torch.device("cpu")
        self.validator = None  # studio.eval.validation.ValidationScorer with sample.score_backbone
        self.pixel_feed: PixelFeed | None = None  # with train.cache_latents off: pixels made on a thread
        self.stop_reason: str | None = None

    def emit(self, event: Event) -> None:
        if self.is_main:
            self.emit_event(event)

    def status(self, status: Status, message: str = "", **run_json: Any) -> None:
        """A new phase: the event, the heartbeat, and (with `run_json`) run.json's status and fields."""
        if self.heartbeat is not None:
            self.heartbeat.beat(status, self.step_done)
        if self.is_main and run_json:
            with self.writing("run.json", self.run.path):
                self.run.update_status(status=run_json_status(status), phase=status, **run_json)
        self.emit(StatusChanged(status, message))

    def notice(self, message: str) -> None:
        log.info("%s: %s", self.run.name, message)
        self.emit(Log(message, notice=True))

    # ------------------------------------------------------------------------------------------
    def setup(self, resume: bool, max_images: int | None = None) -> None:
        """Load everything a run needs. `max_images`: only the first N images (the dry run)."""
        from studio.data.dataset import dataset_fingerprint, resolve_data_dir, scan_dataset
        from studio.data.report import build_report, write_report
        from studio.engine.models import load_pipeline, load_vae, quiet_progress_bars

        cfg = self.config
        # 1. Device and precision: fp32 LoRA weights, base weights in the compute dtype on CUDA.
        info = detect_device()
        self.device = self.dist.device(info)
        self.precision = choose_precision(cfg.train.precision, info)
        self.autocast_dtype = None if self.precision.precision == "fp32" else self.precision.dtype
        weights_dtype = self.precision.dtype if self.device.type == "cuda" else torch.float32
        if cfg.log.tensorboard and self.is_main:
            from studio.engine.tensorboard import TensorBoardLog

            self.tensorboard = TensorBoardLog(self.run.tensorboard_dir)

        # 2. Dataset: a bad file is skipped and reported, never fatal; no usable image is. A run of
        #    train.max_epochs learns its length in steps here.
        self.status("loading", "scanning the dataset")
        with self.dist.main_process_first():
            scan = scan_dataset(resolve_data_dir(cfg.data.dir))
        report = build_report(scan, resolution=cfg.data.resolution, trigger_word=cfg.data.trigger_word,
                              bucket_step=cfg.data.bucket_step)
        if self.is_main:
            write_report(report, self.run.report_path)
        self.examples = prepare_examples(scan, cfg)
        self._notice_cut_captions(scan)
        self.fingerprint = dataset_fingerprint(scan)
        self.micro_per_step = cfg.train.grad_accumulation * self.dist.world_size
        self.full_order = DataOrder(self.examples, cfg.train.batch_size, cfg.data.repeats, cfg.train.seed)
        if max_images is not None:
            self.examples = self.examples[:max_images]
        self.order = DataOrder(self.examples, cfg.train.batch_size, cfg.data.repeats, cfg.train.seed)
        self.tag_frequency = top_tags(tag_frequency([ex.caption for ex in self.examples]))  # run.json stays small
        changes: list[str] = []
        if not resume:
            cfg, changes = plan_length(cfg, self.full_order.batches_per_epoch, self.micro_per_step)

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

        # 4. LoRA: seeded so the same seed gives the same initial adapter; `lora.init_from` replaces
        #    it with existing weights, whose shape the config adopts (config.yaml keeps what was used).
        init = None
        if cfg.lora.init_from and not resume:
            from studio.engine.lora_init import adopt, match_to_model, read_init_weights

            init = match_to_model(read_init_weights(cfg.lora.init_from), pipe, self.family)
            cfg, adopted = adopt(cfg, init)
            changes += adopted
        if changes:
            self.config = cfg
            if self.is_main:
                self.run.write_config(cfg)
            for change in changes:
                self.notice(change)
        torch.manual_seed(cfg.train.seed)
        self.unet_params = add_lora(pipe.unet, cfg.lora, unet_targets(cfg.lora.targets))
        self.te_params: list[torch.nn.Parameter] = []
        if cfg.lora.train_text_encoder:
            for te in self.text_encoders:
                self.te_params += add_lora(te, cfg.lora, TEXT_ENCODER)
        if init is not None:
            from studio.engine.lora_init import load_into

            load_into(pipe, self.family, init, text_encoders=bool(self.te_params))
            self.emit(Log(f"started from the LoRA weights of {init.source}"))
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
        if cfg.train.compile:
            # the forward used for training only: pipe.unet (sampling, state dicts, LoRA files) stays as it is
            self.unet_ddp = torch.compile(self.unet_ddp)

        # 7. Resume from the latest complete checkpoint.
        self.start_step, self.loss_ema = 0, None
        self.epoch_losses: list[float] = []
        if resume:
            self.restore()
        self.step_done = self.start_step
        latest = self.run.latest_checkpoint()
        self.last_checkpoint = latest.step if latest else None
        self.epochs = epochs_in(cfg.train.max_steps, self.full_order.batches_per_epoch, self.micro_per_step)

        # 8. Validation scoring (sample.score_backbone): the backbones load and the training images are
        #    encoded once per run, on the main process; a resumed run keeps its CLIP-I history.
        if cfg.sample.score_backbone and self.is_main:
            from studio.eval.validation import ValidationScorer

            self.status("loading", f"loading the scoring backbone {cfg.sample.score_backbone}")
            self.validator = ValidationScorer.load(cfg, [ex.path for ex in self.examples], self.run.read_metrics())
        self.emit(Plan(cfg.train.max_steps, self.start_step, self.epochs,
                       steps_per_epoch(self.full_order.batches_per_epoch, self.micro_per_step)))

    def _notice_cut_captions(self, scan) -> None:
        from studio.data.captions import CAPTION_MAX_CHARS

        cut = [item.rel for item in scan.items if item.caption and len(item.caption) > CAPTION_MAX_CHARS]
        if cut:
            more = f" and {len(cut) - 3} more" if len(cut) > 3 else ""
            self.notice(f"{len(cut)} caption{'s' if len(cut) > 1 else ''} longer than {CAPTION_MAX_CHARS:,} characters "
                        f"cut to that length for training: {', '.join(cut[:3])}{more}")

    def augmentations(self, ex: Example) -> list[Augmentation | None]:
        """The example's augmented copies (data.augment_variants of them with jitter or rotation), fixed by
        (train.seed, image): cached like the image itself, and the same on resume."""
        d = self.config.data
        if not (d.color_jitter or d.rotation):
            return [None]
        return [augmentation(self.config.train.seed, ex.file_hash, v, d.color_jitter, d.rotation)
                for v in range(d.augment_variants)]

    def fill_caches(self) -> None:
        """Latents and caption embeddings from the per-user disk cache (caches.py); what is missing is
        encoded and written there, then the VAE and frozen text encoders leave the device. Under DDP the
        main process fills the cache first and the others read it."""
        cfg, pipe = self.config, self.pipe
        self.pixels_each_step = not cfg.train.cache_latents
        self.copies = 1 if not (cfg.data.color_jitter or cfg.data.rotation) else cfg.data.augment_variants
        if self.pixels_each_step:
            self.pixel_feed = PixelFeed(self.examples, self.order, self.augmentations, seed=cfg.train.seed,
                                        flip=cfg.data.flip, copies=self.copies, stride=self.dist.world_size,
                                        micro_per_step=self.micro_per_step)
        self.cache_stats: dict[str, dict[str, int]] = {}
        self.text_cache = None
        root = tensor_cache_dir()
        with self.dist.main_process_first():
            if cfg.train.cache_latents:
                images = len(self.examples)
                entries = images * self.copies * (2 if cfg.data.flip else 1)
                self.status("caching", f"latents of {images} images ({entries} with flips and augmented copies)")
                store = TensorStore(root, "latents")
                self.latents, stats = cache_latents(
                    pipe.vae, self.examples, flip=cfg.data.flip, augmentations=self.augmentations, store=store,
                    progress=lambda done, total: self.emit(Progress("encoding latents", done, total)))
                self._cache_done("latents", stats, store)
                pipe.vae.to("cpu")  # the VAE leaves the device; it comes back only to decode samples
            if cfg.train.cache_text_embeddings and not cfg.lora.train_text_encoder:
                captions = sorted({ex.caption for ex in self.examples} | {""})
                self.status("caching", f"embeddings of {len(captions)} captions")
                store = TensorStore(root, "text")
                self.text_cache, stats = cache_text(pipe, self.family, captions, self.device, store=store)
                self._cache_done("caption embeddings", stats, store)
                for te in self.text_encoders:
                    te.to("cpu")

    def _cache_done(self, what: str, stats: CacheStats, store: TensorStore) -> None:
        self.cache_stats[what.split()[-1]] = {"reused": stats.reused, "encoded": stats.encoded}
        self.emit(Log(f"{what}: {stats.reused} of {stats.total} from the cache, {stats.encoded} encoded "
                      f"({store.folder})"))
        if stats.unsaved:
            self.notice(f"{stats.unsaved} {what} could not be written to the cache ({store.write_errors[0]}): this "
                        "run goes on, the next start encodes them again")

    # ------------------------------------------------------------------------------------------
    def train_step(self, step: int) -> float:
        """One optimizer step (0-based `step`): learning rate, forward / backward, clip, step. Returns
        the loss (averaged over processes); raises TrainingDiverged on NaN / inf."""
        cfg = self.config
        accum, world = cfg.train.grad_accumulation, self.dist.world_size
        # 1. Learning rate for this step (warm-up, then the schedule).
        factor = self.schedule.factor_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

        # 2. Forward / backward over grad_accumulation micro-batches (DDP syncs on the last).
        total = torch.zeros((), device=self.device)
        for a in range(accum):
            micro = (step * accum + a) * world + self.dist.rank
            with self.dist.no_sync(self.unet_ddp, last=a == accum - 1):
                loss = self._loss(micro) / accum
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach()

        # 3. Clip and step. With fp16 the scaler skips steps whose gradients overflowed.
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

        # 4. `.item()` is the one host sync per step; it also guards against NaN.
        loss_value = self.dist.mean(total).item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"the loss became {loss_value} at step {step + 1}: training stopped. {self.last_good()} Lower "
                "optim.learning_rate, or use train.precision fp32/bf16 if fp16 overflowed.")
        return loss_value

    def epoch_at(self, micro: int) -> int:
        """Epochs completed after `micro` micro-batches (of the whole dataset, also in a dry run)."""
        return micro // self.full_order.batches_per_epoch

    def fit(self) -> str:
        cfg, run = self.config, self.run
        mps = self.micro_per_step
        started = time.time()
        step_times: list[float] = []
        pending_rows: list[dict[str, Any]] = []
        self.status("training", f"step {self.start_step} of {cfg.train.max_steps}", error=None,
                    last_step=self.start_step)

        for step in range(self.start_step, cfg.train.max_steps):
            # 1. Commands from the UI: pause keeps everything loaded and runs nothing (the heartbeat
            #    goes on, so the run reads as paused, not interrupted).
            if self.control.paused:
                self._flush(pending_rows)
                self.status("paused", f"paused at step {step}", last_step=step)
                self.control.wait_while_paused()
                if not self.control.stop_requested:
                    self.status("training", f"resumed at step {step}", last_step=step)
            if self.control.stop_requested:
                return self._stop(step, pending_rows)

            # 2. One optimizer step.
            t0 = time.perf_counter()
            try:
                loss_value = self.train_step(step)
            except TrainingDiverged:
                self._flush(pending_rows)
                raise
            done = self.step_done = step + 1
            if self.heartbeat is not None:
                self.heartbeat.step = done

            # 3. Log: metrics.jsonl rows, the epoch (e of E), TensorBoard.
            self.loss_ema = loss_value if self.loss_ema is None else 0.95 * self.loss_ema + 0.05 * loss_value
            self.schedule.observe(step, self.loss_ema)
            step_times.append(time.perf_counter() - t0)
            recent = step_times[-20:]
            steps_per_s = len(recent) / sum(recent)
            epoch = self.epoch_at(done * mps - 1) + 1
            self.epoch_losses.append(loss_value)
            if done % cfg.train.log_every_steps == 0 or done == cfg.train.max_steps:
                row = {"step": done, "epoch": epoch, "epochs": self.epochs, "loss": loss_value,
                       "loss_smoothed": self.loss_ema, "lr": self.optimizer.param_groups[0]["lr"],
                       "steps_per_s": steps_per_s, "memory": memory_bytes(self.device),
                       "time": round(time.time() - started, 3)}
                pending_rows.append(row)
                self.emit(Metrics(row, cfg.train.max_steps))
                if self.tensorboard is not None:
                    self.tensorboard.metrics(row)
                if len(pending_rows) >= 10 or time.time() - pending_rows[0]["time"] - started > 2:
                    self._flush(pending_rows)
            epochs_done = self.epoch_at(done * mps)
            epoch_ended = epochs_done > self.epoch_at(step * mps)
            if epoch_ended:
                self.emit(EpochEnded(epochs_done, self.epochs, done, sum(self.epoch_losses) / len(self.epoch_losses)))
                self.epoch_losses = []

            # 4. Samples and checkpoints: on schedule, at epoch ends, or on request.
            final = done == cfg.train.max_steps
            want_sample = (cfg.sample.every_steps and done % cfg.sample.every_steps == 0) or final
            if (self.control.take_sample_request() or want_sample) and cfg.sample.prompts:
                self._flush(pending_rows)
                self.sample(done)
            want_save = (cfg.save.every_steps and done % cfg.save.every_steps == 0) or (
                cfg.save.every_epochs and epoch_ended and epochs_done % cfg.save.every_epochs == 0)
            manual = self.control.take_save_request()
            if manual or want_save or final:
                self._flush(pending_rows)
                self.save(done, manual=manual)
            if self.is_main and done % 25 == 0:
                with self.writing("run.json", run.path):
                    run.update_status(last_step=done)

        # 5. Done: the final LoRA next to the run, with its AUTOMATIC1111 sidecar.
        self._flush(pending_rows)
        if self.is_main:
            self.write_final()
        self.status("finished", f"finished {cfg.train.max_steps} steps", last_step=cfg.train.max_steps,
                    finished=now_iso())
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

        # latents: cached (a flip and each augmented copy are cached variants) or, with train.cache_latents off,
        # encoded now from the same flip and copy, whose pixels the prefetch thread made during the last step
        flips, copies = draw_variants(py, len(examples), cfg.data.flip, self.copies)
        if self.pixel_feed is not None:
            latents = encode_images(self.pipe.vae, self.pixel_feed.take(micro, ids, flips, copies)).to(device)
        else:
            latents = torch.stack([self.latents[(ex.index, flip, copy)]
                                   for ex, flip, copy in zip(examples, flips, copies)]).to(device)

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
            time_ids = torch.stack([sdxl_time_ids(ex.original_size, ex.crop, ex.bucket[::-1])
                                    for ex in examples]).to(device)
            extra["added_cond_kwargs"] = {"text_embeds": text.pooled, "time_ids": time_ids}

        dtype = self.autocast_dtype
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            pred = self.unet_ddp(noisy, timesteps, text.hidden, **extra).sample
        return diffusion_loss(self.noise_scheduler, pred, latents, noise, timesteps, cfg.train.min_snr_gamma)

    def _text(self, captions: list[str]) -> TextEmbedding:
        if self.text_cache is not None:
            return lookup_text(self.text_cache, captions, self.device)
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
        save_webui_lora(path, weights, self.config, self.run, step=step)

    def last_good(self) -> str:
        """The sentence every failure message ends with: where the work that is safe lies."""
        if self.last_checkpoint is None:
            return "There is no complete checkpoint yet."
        return f"The last good checkpoint is step {self.last_checkpoint} ({self.run.checkpoint_dir(self.last_checkpoint)})."

    def writing(self, what: str, folder: Path):
        """A failed write in this block names `folder` and the last good checkpoint (failures.writing)."""
        return writing(what, folder, self.last_good(), self.run.name)

    def save(self, step: int, manual: bool = False, stopping: bool = False) -> None:
        if not self.is_main:
            return
        if not stopping:
            self.status("saving", f"checkpoint at step {step}")
        weights = self.lora_weights()
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                 "schedule": self.schedule.state_dict(), "rng": rng_state(),
                 # float64: a float32 would round the smoothed loss the plateau schedule decides on
                 "loss_ema": torch.tensor(self.loss_ema if self.loss_ema is not None else float("nan"),
                                          dtype=torch.float64)}
        mps = self.micro_per_step
        info = {"epoch": self.epoch_at(step * mps), "epoch_end": self.epoch_at(step * mps) > self.epoch_at((step - 1) * mps),
                "manual": manual, "time": now_iso()}
        with self.writing(f"checkpoint step {step}", self.run.checkpoints_dir):
            ckpt = save_checkpoint(self.run, step, weights, state, info, lambda p: self._write_webui(p, weights, step),
                                   self.config.save)
            self.run.update_status(last_checkpoint=step, last_step=step)
        self.last_checkpoint = step
        self.emit(CheckpointSaved(step, str(ckpt.path), str(ckpt.lora_file), manual))
        if not stopping:
            self.status("training", f"saved step {step}")

    def sample(self, step: int) -> None:
        if not self.is_main:
            self._agree_to_stop(False)
            return
        cfg = self.config
        self.status("sampling", f"samples at step {step}")
        folder = self.run.samples_dir / step_dir_name(step)
        # its own RNG state: rendering (or Sample now) must not change what training draws next
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.writing(f"samples of step {step}", self.run.samples_dir):
            entries = render_samples(
                self.pipe, folder, cfg.sample.prompts, cfg.sample.seeds, trigger=cfg.data.trigger_word,
                steps=cfg.sample.inference_steps, guidance=cfg.sample.guidance_scale, size=cfg.data.resolution,
                negative_prompt=cfg.sample.negative_prompt, device=self.device, autocast_dtype=self.autocast_dtype)
        if self.tensorboard is not None:
            self.tensorboard.samples(step, entries, folder)
        self.emit(SampleRendered(step, tuple(str(folder / e["file"]) for e in entries)))
        self.score_samples(step, folder, entries)
        self.status("training", f"samples at step {step} done")

    def score_samples(self, step: int, folder: Path, entries: list[dict[str, Any]]) -> None:
        """With sample.score_backbone: the step's CLIP-I / CLIP-T / DINO as a metrics.jsonl row of its own, and
        a stop once train.stop_at_clip_i is reached (the loop then stops at its next step, with a checkpoint)."""
        if self.validator is None:
            return
        row = self.validator.score(step, folder, entries)
        self._flush([dict(row)])
        self.emit(Metrics(row, self.config.train.max_steps))
        target = self.config.train.stop_at_clip_i
        reason = (self.validator.target_reached(target)
                  if target is not None and step < self.config.train.max_steps else None)
        if self._agree_to_stop(reason is not None) and reason:
            self.stop_reason = reason
            self.notice(f"{reason}: stopping with a checkpoint")
            self.run.update_status(stop_reason=reason)

    def _agree_to_stop(self, stop: bool) -> bool:
        """Every process stops together: the main one decides, the others learn it (DDP)."""
        if self.config.train.stop_at_clip_i is None or self.config.sample.score_backbone is None:
            return False
        decided = self.dist.mean(torch.tensor(float(stop), device=self.device)).item() > 0
        if decided:
            self.control.stop()
        return decided

    def restore(self) -> None:
        ckpt = self.run.latest_checkpoint()
        if ckpt is None:
            raise NotResumable(f"run {self.run.name} cannot be resumed: it has no complete checkpoint")
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
        epoch = self.epoch_at(self.start_step * self.micro_per_step) + 1  # the epoch the next step is in
        self.epoch_losses = [r["loss"] for r in self.run.read_metrics() if r.get("epoch") == epoch]
        self.emit(Log(f"resumed from checkpoint step {self.start_step}"))

    def write_final(self) -> None:
        weights = self.lora_weights()
        with self.writing("the final LoRA", self.run.path):
            self._write_webui(self.run.final_lora, weights, self.config.train.max_steps)
            write_sidecar(self.run.final_lora, self.config, self.config.train.max_steps)

    def _stop(self, step: int, pending_rows: list) -> str:
        self.status("stopping", f"stopping at step {step}: saving a checkpoint", last_step=step)
        self._flush(pending_rows)
        if step > self.start_step and self.last_checkpoint != step:
            self.save(step, stopping=True)
        why = f" ({self.stop_reason})" if self.stop_reason else ""
        self.status("stopped", f"stopped at step {step}; checkpoint saved{why}", last_step=step, finished=now_iso())
        return "stopped"

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        if self.is_main and rows:
            with self.writing("metrics", self.run.path):
                self.run.append_metrics(rows)
        rows.clear()

    def close(self) -> None:
        if self.pixel_feed is not None:
            self.pixel_feed.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _training_scheduler(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def run_training(config: RunConfig, run: RunFolder, control: Control | None = None, emit: Emit | None = None, *,
                 models_dir: Path | None = None, resume: bool = False) -> str:
    """Train (or resume) `run`; returns the final status. Failures land in run.json (with the step the
    run really reached) and re-raise; out of memory re-raises as TrainingOutOfMemory with advice.

    The caller holds the accelerator lock (`studio.core.lock`): the CLI and the runner take it.
    """
    control = control or Control()
    emit = emit or (lambda event: None)
    trainer = Trainer(config, run, control, emit, models_dir)
    try:
        if trainer.is_main:
            # the heartbeat first: from the moment run.json says running, a reader finds a live process
            trainer.heartbeat = Heartbeat(run)
            trainer.heartbeat.start()
            run.update_status(status="running", phase="loading", started=run.read_status().get("started") or now_iso(),
                              base_model=config.model.base, family=config.model.family, error=None, traceback=None,
                              stop_reason=None, max_steps=config.train.max_steps, finished=None, **this_process(),
                              versions=library_versions("torch", "diffusers", "transformers", "peft"))
        trainer.setup(resume)
        if trainer.is_main:
            run.update_status(tag_frequency=trainer.tag_frequency, max_steps=trainer.config.train.max_steps,
                              device=str(trainer.device), precision=trainer.precision.precision,
                              precision_reason=trainer.precision.reason, dataset_fingerprint=trainer.fingerprint,
                              dataset_images=len(trainer.examples), epochs=trainer.epochs,
                              world_size=trainer.dist.world_size,
                              batches_per_epoch=trainer.full_order.batches_per_epoch,
                              prediction_type=trainer.noise_scheduler.config.prediction_type,
                              cache=trainer.cache_stats)
        status = trainer.fit()
        lora = str(run.final_lora) if status == "finished" else None
        trainer.emit(Finished(status, trainer.step_done, lora))  # type: ignore[arg-type]
        return status
    except BaseException as err:
        failure = as_failure(err, trainer.config, trainer.device.type, trainer.step_done + 1, trainer.last_good(),
                             run.name)
        if trainer.is_main:
            message = str(failure) or type(failure).__name__
            try:
                run.update_status(status="failed", phase="failed", error=message, traceback=traceback.format_exc(),
                                  finished=now_iso(), last_step=trainer.step_done)
            except OSError as write_err:  # a full disk may refuse run.json too; the message still goes out
                log.error("could not record the failure of %s in %s: %s", run.name, run.status_path, write_err)
            emit(StatusChanged("failed", message))
            emit(Finished("failed", trainer.step_done, None, message))
        if failure is not err:
            raise failure from err
        raise
    finally:
        trainer.close()
        if trainer.heartbeat is not None:
            trainer.heartbeat.stop()
        trainer.dist.close()
