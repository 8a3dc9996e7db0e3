"""Augmentation without losing exact resume, and the pixel prefetch thread (engine/prefetch.py) of runs with
train.cache_latents off: it trains the same losses as pixels made in place, a file that breaks mid-run fails
the run naming it, and a paused, stopped or failed run leaves no thread behind."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch

from studio.config import load_config
from studio.data.demo import demo_dataset_dir
from studio.engine.checkpoints import load_checkpoint
from studio.engine.control import Control
from studio.engine.events import Metrics, StatusChanged
from studio.engine.batches import ImageUnreadable
from studio.engine.prefetch import PixelFeed
from studio.engine.runs import RunFolder
from studio.engine.train import Trainer, run_training

BASE = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention", "lora.dropout=0.1",
        "train.batch_size=2", "sample.every_steps=0", "save.every_steps=0", "optim.warmup_steps=0",
        "data.flip=true", "data.color_jitter=0.1", "data.rotation=5", "data.augment_variants=2",
        "data.caption_dropout=0.2", "train.cache_text_embeddings=true"]
UNCACHED = "train.cache_latents=false"


@pytest.fixture(autouse=True)
def tensor_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "tensors"
    monkeypatch.setenv("LORA_STUDIO_TENSOR_CACHE", str(root))
    return root


@pytest.fixture
def data(tmp_path) -> Path:
    """Four demo images: each appears in every second micro-batch (batch 2)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(4):
        for suffix in (".png", ".txt"):
            shutil.copy(demo_dataset_dir() / f"robot_{i:02d}{suffix}", folder)
    return folder


def _config(data: Path, *overrides: str):
    return load_config("tiny-demo", BASE + [f"data.dir={data}", *overrides])


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pixel-prefetch"]


def _weights(run: RunFolder) -> dict[str, torch.Tensor]:
    return load_checkpoint(run.latest_checkpoint())[0].flat()


@pytest.mark.parametrize("cached", [True, False], ids=["cached-variants", "prefetched-pixels"])
def test_a_stopped_and_resumed_augmented_run_ends_with_the_uninterrupted_weights(tmp_path, data, cached):
    settings = ["train.max_steps=6", "train.grad_accumulation=2"] + ([] if cached else [UNCACHED])
    config = _config(data, *settings)
    straight = RunFolder.create(tmp_path / "outputs", "straight", config)
    assert run_training(config, straight) == "finished"

    control = Control()

    def stop_after_step_3(event) -> None:
        if isinstance(event, Metrics) and event.row["step"] == 3:
            control.stop()

    stopped = RunFolder.create(tmp_path / "outputs", "stopped", config)
    assert run_training(config, stopped, control, stop_after_step_3) == "stopped"
    assert stopped.latest_checkpoint().step == 3
    assert run_training(config, stopped, resume=True) == "finished"

    a, b = _weights(straight), _weights(stopped)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run trained other weights"
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k), "the LoRA never trained"
    if cached:  # 4 images × 2 augmented copies × 2 flips, encoded by the first run, read by the others
        assert straight.read_status()["cache"]["latents"] == {"reused": 0, "encoded": 16}
        assert stopped.read_status()["cache"]["latents"] == {"reused": 16, "encoded": 0}
    assert not _prefetch_threads()


def test_prefetched_pixels_train_the_same_losses_as_pixels_made_in_place(tmp_path, data, monkeypatch):
    config = _config(data, UNCACHED, "train.max_steps=4", "train.grad_accumulation=2")

    def losses(name: str) -> tuple[list[float], int, int]:
        trainer = Trainer(config, RunFolder.create(tmp_path, name, config), Control(), lambda e: None, None)
        try:
            trainer.setup(resume=False)
            values = [trainer.train_step(step) for step in range(4)]
            feed = trainer.pixel_feed
            return values, feed.prefetched, feed.made_in_place
        finally:
            trainer.close()

    prefetched, taken, in_place = losses("prefetched")
    assert (taken, in_place) == (8, 0)  # 4 steps × 2 micro-batches, every one from the thread
    # every request off the planned sequence: each micro-batch is made on the training thread
    monkeypatch.setattr(PixelFeed, "_plan", lambda self, micro: None)
    synchronous, taken, in_place = losses("synchronous")
    assert (taken, in_place) == (0, 8)
    assert prefetched == synchronous
    assert not _prefetch_threads()


def test_an_image_that_breaks_mid_run_fails_the_run_naming_the_file(tmp_path, data):
    broken = data / "robot_02.png"
    config = _config(data, UNCACHED, "train.max_steps=8")
    events: list = []

    def break_after_step_1(event) -> None:
        events.append(event)
        if isinstance(event, Metrics) and event.row["step"] == 1:
            broken.write_bytes(b"<html>this download failed</html>")

    run = RunFolder.create(tmp_path / "outputs", "broken", config)
    with pytest.raises(ImageUnreadable, match="robot_02.png") as failure:
        run_training(config, run, emit=break_after_step_1)
    assert "changed on disk" in str(failure.value) and "resume" in str(failure.value)
    status = run.read_status()
    assert status["status"] == "failed" and str(broken) in status["error"]
    # the step named is one the run reached: the image is in every second micro-batch, prefetched ≤ 3 ahead
    failed_at = int(str(failure.value).split("at step ")[1].split(":")[0])
    assert 2 <= failed_at <= 6 and status["last_step"] == failed_at - 1
    assert any(isinstance(e, StatusChanged) and e.status == "failed" and "robot_02.png" in e.message for e in events)
    assert not _prefetch_threads()


def test_pausing_then_stopping_a_run_leaves_no_prefetch_thread(tmp_path, data):
    config = _config(data, UNCACHED, "train.max_steps=100000")
    control = Control()
    paused = threading.Event()

    def pause_after_step_2(event) -> None:
        if isinstance(event, Metrics) and event.row["step"] == 2:
            control.pause()
        if isinstance(event, StatusChanged) and event.status == "paused":
            paused.set()

    result: list[str] = []
    run = RunFolder.create(tmp_path / "outputs", "paused", config)
    worker = threading.Thread(target=lambda: result.append(run_training(config, run, control, pause_after_step_2)))
    worker.start()
    try:
        assert paused.wait(120), "the run never paused"
        assert len(_prefetch_threads()) == 1  # kept while paused: resuming goes on at once
    finally:
        control.stop()
        worker.join(120)
    assert result == ["stopped"] and run.latest_checkpoint().step == 2
    assert not _prefetch_threads()
