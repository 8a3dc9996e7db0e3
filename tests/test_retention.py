"""Retention keeps what users compare: the newest checkpoints, evenly spaced ones by step or epoch, and
every Save-now checkpoint; the presets keep a spread over a full run; the Checkpoints tab says which
checkpoints the next one prunes."""

from __future__ import annotations

import time

from PIL import Image

from studio.config import load_config
from studio.core.lock import AcceleratorLock
from studio.engine.checkpoints import Kept, retention
from studio.engine.dryrun import save_schedule
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.engine.train import run_training
from studio.ui import runs_view

TINY = ["model.base=tiny-sd15", "model.family=sd15", "data.resolution=64", "data.bucket_step=32",
        "lora.rank=4", "lora.alpha=4", "sample.every_steps=0", "sample.prompts=[]", "train.batch_size=1",
        "train.gradient_checkpointing=false", "data.rotation=0", "data.color_jitter=0", "data.flip=false"]


def two_images(folder):
    """A dataset of two images: one optimizer step per image, two steps per epoch at batch 1."""
    folder.mkdir()
    for i, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        Image.new("RGB", (64, 64), colour).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"ohwx thing {i}")
    return folder


def test_the_character_preset_keeps_epoch_20_of_a_90_epoch_run(tmp_path):
    # the preset's own retention (a checkpoint per epoch, the newest 5, every 20th epoch), on a tiny model
    config = load_config("sdxl-character", TINY + [f"data.dir={two_images(tmp_path / 'data')}", "train.max_epochs=90",
                                                  "optim.warmup_steps=0"])
    run = RunFolder.create(tmp_path / "outputs", "character", config)
    assert run_training(config, run) == "finished"
    assert run.config().train.max_steps == 180  # 90 epochs × 2 steps, written back to config.yaml
    kept = {c.info()["epoch"]: c.step for c in run.checkpoints()}
    assert sorted(kept) == [20, 40, 60, 80, 86, 87, 88, 89, 90]
    assert all(run.checkpoints()[i].info()["epoch_end"] for i in range(len(kept)))
    rows = run.read_metrics()
    assert rows[-1]["epoch"] == rows[-1]["epochs"] == 90 and rows[0]["epoch"] == 1 and rows[2]["epoch"] == 2


def test_full_preset_runs_keep_a_spread():
    # sdxl-character: 2000 steps on a 5-image set at batch 1 = 400 epochs, one checkpoint each
    character = load_config("sdxl-character")
    saves = save_schedule(character, batches_per_epoch=5, micro_per_step=1)
    kept = {s.epoch for s in saves if retention(saves, character.save)[s.step]}
    assert kept == set(range(20, 401, 20)) | {396, 397, 398, 399, 400}
    # sd15-product-photo: 3000 steps, a checkpoint every 500
    product = load_config("sd15-product-photo")
    saves = save_schedule(product, batches_per_epoch=1000, micro_per_step=8)
    assert [s.step for s in saves if retention(saves, product.save)[s.step]] == [1000, 2000, 2500, 3000]


def test_rules_and_save_now_checkpoints_are_never_pruned():
    save = load_config(None, ["save.keep_last=1", "save.keep_every_steps=100"]).save
    points = [Kept(50), Kept(100), Kept(150, manual=True), Kept(200), Kept(250), Kept(300)]
    reasons = retention(points, save)
    assert {step for step, why in reasons.items() if not why} == {50, 250}
    assert reasons[150] == ["Save now"] and reasons[300] == ["newest 1", "every 100 steps"]


def _wait(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_save_now_survives_keep_last_and_the_tab_says_what_the_next_checkpoint_prunes(tmp_path):
    runner = Runner(tmp_path, lock=AcceleratorLock(tmp_path / "lock"))
    config = load_config("tiny-demo", TINY + ["train.max_steps=100000", "save.every_steps=5", "save.keep_last=2",
                                              "optim.warmup_steps=0"])
    run = runner.start(config, "manual")
    try:
        _wait(lambda: runner.snapshot().status == "training" and runner.snapshot().step >= 2)
        runner.save_now()
        _wait(lambda: any(c.info().get("manual") for c in run.checkpoints()))
        manual = next(c.step for c in run.checkpoints() if c.info().get("manual"))
        _wait(lambda: len([c for c in run.checkpoints() if not c.info().get("manual")]) >= 3)
    finally:
        runner.stop()
        assert runner.join(120)
    steps = [c.step for c in run.checkpoints()]
    assert manual in steps, f"the Save-now checkpoint {manual} was pruned: {steps}"
    scheduled = [s for s in steps if s != manual]
    assert len(scheduled) == 2 and all(s % 5 == 0 for s in scheduled), steps  # keep_last 2 pruned the older ones
    # older than both checkpoints keep_last keeps, so only Save now keeps it (on a busy machine the request
    # may be taken at a scheduled step, 5 or 10: that checkpoint is then a Save-now one, and kept as one)
    assert manual < min(scheduled), steps

    table = runs_view.checkpoints_table(run).set_index("Step")
    assert table.loc[manual, "Kept"] == "kept: Save now"
    assert table.loc[max(scheduled), "Kept"] == "kept: newest 2"
    assert table.loc[min(scheduled), "Kept"] == "pruned at the next checkpoint"  # stopped: it can go on
