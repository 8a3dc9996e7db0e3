"""The training engine on the built-in tiny models: learning, run folder, controls, failures."""

import json
import math
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from studio.config import load_config
from studio.engine import checkpoints as checkpoints_module
from studio.engine.checkpoints import load_checkpoint
from studio.engine.control import Control
from studio.engine.events import Finished, StatusChanged
from studio.engine.loss import min_snr_weights
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.engine.train import Trainer, TrainingDiverged, run_training


def tiny(*overrides: str, sdxl: bool = False):
    base = ["sample.every_steps=0", "save.every_steps=0", "optim.warmup_steps=0", "train.batch_size=2"]
    if sdxl:
        base += ["model.family=sdxl", "model.base=tiny-sdxl"]
    return load_config("tiny-demo", base + list(overrides))


def test_loss_falls_on_the_demo_dataset(tmp_path):
    config = tiny("train.max_steps=150", "train.batch_size=4")
    run = RunFolder.create(tmp_path, "learn", config)
    trainer = Trainer(config, run, Control(), lambda e: None, None)
    trainer.setup(resume=False)
    before = trainer.eval_loss()
    assert trainer.fit() == "finished"
    after = trainer.eval_loss()
    assert after < 0.9 * before, f"eval loss {before:.4f} → {after:.4f}"


def test_sdxl_run_leaves_the_full_run_folder(tmp_path):
    config = tiny("train.max_steps=6", "sample.every_steps=3", "save.every_steps=3", "lora.targets=attention+ff",
                  sdxl=True)
    run = RunFolder.create(tmp_path, "xl", config)
    events = []
    assert run_training(config, run, emit=events.append) == "finished"

    for name in ("config.yaml", "run.json", "metrics.jsonl", "dataset_report.json", "xl.safetensors", "xl.json"):
        assert (run.path / name).is_file(), name
    status = run.read_status()
    assert status["status"] == "finished" and status["last_step"] == 6 and status["device"] == "cpu"
    assert status["dataset_fingerprint"] and status["versions"]["torch"]
    rows = run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss_smoothed", "lr", "steps_per_s", "memory", "time"} <= set(rows[0])
    assert [c.step for c in run.checkpoints()] == [3, 6]
    assert run.sample_steps() == [3, 6]
    samples = run.samples_at(6)
    assert len(samples) == 2 and all(s["seed"] == 1 and "{trigger}" not in s["prompt"] for s in samples)
    assert all(Path(s["file"]).is_file() for s in samples)
    assert {s["prompt"] for s in samples} == {p.replace("{trigger}", config.data.trigger_word)
                                              for p in config.sample.prompts}
    with safe_open(str(run.final_lora), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert any(k.startswith("lora_unet_output_blocks_") for k in keys)
    assert any(k.startswith("lora_unet_middle_block_1_") for k in keys)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["modelspec.architecture"].startswith("stable-diffusion-xl")
    sidecar = json.loads((run.path / "xl.json").read_text())
    assert sidecar["activation text"] == config.data.trigger_word and sidecar["sd version"] == "SDXL"
    assert [e.status for e in events if isinstance(e, StatusChanged)][-1] == "finished"
    assert isinstance(events[-1], Finished) and events[-1].status == "finished" and events[-1].step == 6
    assert events[-1].lora_file == str(run.final_lora)


def test_retention_keeps_the_newest_checkpoints(tmp_path):
    config = tiny("train.max_steps=12", "save.every_steps=3", "save.keep_last=2")
    run = RunFolder.create(tmp_path, "keep", config)
    run_training(config, run)
    assert [c.step for c in run.checkpoints()] == [9, 12]
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["step-000009", "step-000012"]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    config = tiny("train.max_steps=10", "save.every_steps=4")
    run = RunFolder.create(tmp_path, "crash", config)
    real_save = checkpoints_module.save_file
    calls = []

    def dying_save(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint dies half-way
            with open(path, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError("disk full")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints_module, "save_file", dying_save)
    with pytest.raises(OSError, match="disk full"):
        run_training(config, run)
    assert run.read_status()["status"] == "failed" and "disk full" in run.read_status()["error"]
    assert [c.step for c in run.checkpoints()] == [4]
    weights, state, info = load_checkpoint(run.latest_checkpoint())
    assert info["step"] == 4 and weights.parts["unet"]
    assert not [p for p in run.checkpoints_dir.iterdir() if p.name.startswith(".")], "temp folder left behind"


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny("train.max_steps=20", "save.every_steps=5")
    run = RunFolder.create(tmp_path, "nan", config)
    real_loss = Trainer._loss

    def loss_going_nan(self, micro, seed=None):
        loss = real_loss(self, micro, seed)
        return loss * float("nan") if micro >= 12 else loss

    monkeypatch.setattr(Trainer, "_loss", loss_going_nan)
    with pytest.raises(TrainingDiverged) as err:
        run_training(config, run)
    assert "the loss became nan at step 13" in str(err.value)
    assert "last good checkpoint is step 10" in str(err.value)
    status = run.read_status()
    assert status["status"] == "failed" and "nan" in status["error"]
    weights, _, _ = load_checkpoint(run.latest_checkpoint())
    assert run.latest_checkpoint().step == 10
    assert all(torch.isfinite(v).all() for v in weights.parts["unet"].values())


def _wait(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_runner_pause_resume_stop(tmp_path):
    runner = Runner(tmp_path)
    config = tiny("train.max_steps=100000")
    run = runner.start(config, "live")
    _wait(lambda: runner.snapshot().step >= 3)
    with pytest.raises(RuntimeError, match="stop it first"):
        runner.start(config, "second")

    runner.pause()
    _wait(lambda: runner.snapshot().status == "paused")
    paused_at = runner.snapshot().step
    time.sleep(0.5)
    assert runner.snapshot().step == paused_at
    assert run.read_status()["status"] == "paused"

    runner.resume_job()
    _wait(lambda: runner.snapshot().step >= paused_at + 3)
    runner.stop()
    assert runner.join(60)
    snap = runner.snapshot()
    assert snap.status == "stopped" and snap.error is None
    assert run.read_status()["status"] == "stopped"
    assert run.latest_checkpoint().step == snap.step == run.read_status()["last_step"]
    assert len(snap.metrics) == snap.step


def test_runner_reports_a_failure_in_the_snapshot(tmp_path):
    runner = Runner(tmp_path)
    runner.start(tiny("data.dir=/nonexistent/photos"), "broken")
    assert runner.join(60)
    snap = runner.snapshot()
    assert snap.status == "failed" and "/nonexistent/photos" in snap.error and "Traceback" in snap.traceback
    assert RunFolder(tmp_path / "broken").read_status()["status"] == "failed"
    # the lock was released: a new job can start
    runner.start(tiny("train.max_steps=2"), "after")
    assert runner.join(60) and runner.snapshot().status == "finished"


def test_min_snr_weights_match_the_paper(tmp_path):
    config = tiny("train.max_steps=1")
    trainer = Trainer(config, RunFolder.create(tmp_path, "snr", config), Control(), lambda e: None, None)
    trainer.setup(resume=False)
    t = torch.tensor([10, 500, 990])
    alpha = trainer.noise_scheduler.alphas_cumprod[t]
    snr = alpha / (1 - alpha)
    expected = torch.minimum(snr, torch.full_like(snr, 5.0)) / snr
    assert torch.allclose(min_snr_weights(trainer.noise_scheduler, t, 5.0), expected)
    assert math.isclose(min_snr_weights(trainer.noise_scheduler, torch.tensor([999]), 5.0).item(), 1.0)


def _weights_after(tmp_path, name, *overrides):
    config = tiny("train.max_steps=3", *overrides)
    trainer = Trainer(config, RunFolder.create(tmp_path, name, config), Control(), lambda e: None, None)
    try:
        trainer.setup(resume=False)
        trainer.fit()
        return trainer.lora_weights().flat()
    finally:
        trainer.close()  # the uncached run's prefetch thread


def test_gradient_checkpointing_and_uncached_inputs_train_the_same_weights(tmp_path):
    plain = _weights_after(tmp_path, "plain")
    checkpointed = _weights_after(tmp_path, "ckpt", "train.gradient_checkpointing=true")
    uncached = _weights_after(tmp_path, "uncached", "train.cache_latents=false", "train.cache_text_embeddings=false")
    moved = max(v.abs().max().item() for k, v in plain.items() if "lora_B" in k)
    # the same maths in another order: float rounding differs a little; Adam's first steps move
    # each weight by about the learning rate (1e-3), so 1e-4 still catches any real difference
    for name, other in (("checkpointed", checkpointed), ("uncached", uncached)):
        diff = max((plain[k] - other[k]).abs().max().item() for k in plain)
        assert diff < 1e-4 < moved, f"{name}: differs by {diff} (LoRA moved {moved})"


def test_v_prediction_trains_against_the_velocity(tmp_path):
    from diffusers import DDPMScheduler

    config = tiny("train.max_steps=1", "train.min_snr_gamma=null")
    trainer = Trainer(config, RunFolder.create(tmp_path, "v", config), Control(), lambda e: None, None)
    trainer.setup(resume=False)
    eps = trainer._loss(0).item()
    trainer.noise_scheduler = DDPMScheduler.from_config(trainer.noise_scheduler.config, prediction_type="v_prediction")
    seen = {}
    real_velocity = trainer.noise_scheduler.get_velocity

    def spy(latents, noise, timesteps):
        seen["called"] = True
        return real_velocity(latents, noise, timesteps)

    trainer.noise_scheduler.get_velocity = spy
    v = trainer._loss(0).item()
    assert seen.get("called") and math.isfinite(v) and v != eps


def test_a_replacement_vae_is_loaded_and_used(tmp_path):
    from studio.engine.models import ModelLoadError, load_pipeline

    vae_dir = tmp_path / "my-vae"
    load_pipeline("tiny-sd15").vae.save_pretrained(vae_dir, safe_serialization=True)
    config = tiny("train.max_steps=1", f"model.vae={vae_dir}")
    trainer = Trainer(config, RunFolder.create(tmp_path, "vae", config), Control(), lambda e: None, None)
    trainer.setup(resume=False)
    assert str(trainer.pipe.vae.config._name_or_path) == str(vae_dir)
    with pytest.raises(ModelLoadError, match="neither a VAE folder nor a Hub id"):
        run_training(tiny("train.max_steps=1", "model.vae=no-such-vae"), RunFolder.create(tmp_path, "bad", config))
