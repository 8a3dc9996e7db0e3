"""The dry run (`check --dry-run`, the Train tab's Test setup): real steps, real figures, a projection of
the configured run, advice on out of memory, and nothing left behind."""

from __future__ import annotations

import json

import torch

from studio.config import load_config
from studio.core.lock import AcceleratorLock
from studio.engine.dryrun import dry_run, save_schedule
from studio.engine.train import Trainer

TINY = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention", "train.batch_size=2",
        "train.max_steps=400", "save.every_steps=100", "save.keep_last=2", "sample.every_steps=100",
        "sample.inference_steps=2"]


def test_check_dry_run_reports_speed_memory_and_the_projected_run(tmp_path, capsys):
    from studio.cli import main

    assert main(["--outputs", str(tmp_path), "check", "--preset", "tiny-demo", "--dry-run", "--json",
                 *[f"--set={s}" for s in TINY]]) == 0
    trial = json.loads(capsys.readouterr().out)["dry_run"]
    assert trial["steps"] == 4 and trial["images_used"] == 4 and trial["images_total"] == 16
    assert 0 < trial["s_per_step"] < 60 and trial["peak_memory"] > 10**7 and trial["memory_kind"]
    assert trial["max_steps"] == 400 and trial["checkpoints_saved"] == 4 and trial["checkpoints_kept"] == 2
    assert trial["projected_s"] > trial["s_per_step"] * 400
    assert trial["projected_disk_bytes"] == 2 * trial["checkpoint_bytes"] + trial["lora_bytes"] > 0
    assert trial["sample_images"] == 4 * 2 and trial["oom"] is None
    assert list(tmp_path.iterdir()) == [], "the trial's run folder is removed"
    assert main(["--outputs", str(tmp_path), "check", "--dry-run"]) == 1
    assert "--dry-run needs --preset" in capsys.readouterr().err


def test_out_of_memory_in_the_trial_says_what_to_change(tmp_path, monkeypatch):
    def no_memory(self, micro, seed=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setattr(Trainer, "_loss", no_memory)
    lock = AcceleratorLock(tmp_path / "lock")
    report = dry_run(load_config("tiny-demo", TINY), outputs_dir=tmp_path / "outputs", lock=lock)
    assert report.oom.startswith("out of memory on cpu in the test setup. Change, one at a time:")
    assert "train.gradient_checkpointing=true" in report.oom and "train.batch_size=1" in report.oom
    assert report.lines()[-1].strip() == report.oom
    assert lock.current() is None and list((tmp_path / "outputs").iterdir()) == []


def test_the_save_schedule_follows_steps_epochs_and_the_end():
    config = load_config(None, ["train.max_steps=10", "save.every_steps=4", "save.every_epochs=1"])
    saves = save_schedule(config, batches_per_epoch=3, micro_per_step=1)
    assert [(s.step, s.epoch_end) for s in saves] == [(3, True), (4, False), (6, True), (8, False), (9, True),
                                                      (10, False)]
