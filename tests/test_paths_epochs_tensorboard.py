"""Paths resolved once (config.yaml reloads the same from any working directory), epochs in the CLI
and metrics, the warm-up clamp notice, and TensorBoard event files."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from PIL import Image

from studio.config import load_config
from studio.core.resolve import resolve_path, search_paths
from studio.engine.prepare import TensorBoardMissing, prepare_new_run
from studio.engine.runs import RunFolder
from studio.engine.train import run_training
from studio.paths import REPO_ROOT

TINY = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention", "train.batch_size=1",
        "sample.every_steps=0", "sample.prompts=[]"]


def dataset(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (64, 64), (60 * i, 90, 200)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a photo of ohwx robot {i}")
    return folder


def studio(cwd: Path, capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """The CLI, in this process, from working directory `cwd`: (exit code, stderr)."""
    from studio.cli import main

    monkeypatch.chdir(cwd)
    previous = signal.getsignal(signal.SIGINT)  # train / resume install their Ctrl-C handler
    try:
        code = main(list(args))
    finally:
        signal.signal(signal.SIGINT, previous)
    return code, capsys.readouterr().err


def test_one_search_order_for_every_path(tmp_path, monkeypatch):
    root, work = tmp_path / "datasets", tmp_path / "work"
    (root / "cats").mkdir(parents=True)
    (work / "cats").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert search_paths("cats", [root])[:2] == [work / "cats", root / "cats"]
    assert search_paths("cats", [root])[2] == REPO_ROOT / "cats"
    assert resolve_path("cats", [root]) == work / "cats"  # the working directory first
    assert resolve_path("cats", [root], within=root) == root / "cats"  # the studio: only inside its root
    assert resolve_path("dogs", [root]) == work / "dogs"  # found nowhere: absolute, in the working directory
    assert resolve_path("../outside", [root], within=root) is None


def test_a_cli_run_stores_absolute_paths_and_resumes_from_another_directory(tmp_path, capsys, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    dataset(work / "datasets" / "mini")
    elsewhere.mkdir()
    outputs = tmp_path / "outputs"
    args = [f"--set={s}" for s in TINY + ["train.max_steps=6", "save.every_steps=2", "log.epoch_loss=true"]]
    code, err = studio(work, capsys, monkeypatch, "--outputs", str(outputs), "train", "--preset", "tiny-demo",
                       "--name", "mini", "--data", "datasets/mini", *args)
    assert code == 0, err[-3000:]
    # the preset's 20-step warm-up on a 6-step run: clamped, with one notice line
    assert err.count("[notice] optim.warmup_steps 20 is not shorter than train.max_steps 6: clamped to 0") == 1
    assert "epoch 1/2: loss " in err and "ep=2/2" in err  # 3 images at batch 1: 3 steps an epoch
    run = RunFolder(outputs / "mini")
    config = run.config()
    assert config.data.dir == str((work / "datasets" / "mini").resolve())
    assert [(r["epoch"], r["epochs"]) for r in run.read_metrics()] == [(1, 2)] * 3 + [(2, 2)] * 3

    code, err = studio(elsewhere, capsys, monkeypatch, "--outputs", str(outputs), "resume", "mini", "--max-steps", "9")
    assert code == 0, err[-3000:]
    assert "extended to 9 steps, continuing from checkpoint step 6" in err and "epoch 3/3: loss " in err
    assert run.state().state == "finished" and run.latest_checkpoint().step == 9
    assert run.config().data.dir == config.data.dir


def test_tensorboard_event_files_hold_losses_rates_and_samples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config, _ = prepare_new_run(load_config("tiny-demo", TINY + [
        "train.max_steps=4", "log.tensorboard=true", 'sample.prompts=["a photo of {trigger} toy robot"]',
        "sample.every_steps=2", "sample.inference_steps=2", "optim.warmup_steps=0"]), outputs_dir=tmp_path)
    run = RunFolder.create(tmp_path, "tb", config)
    assert run_training(config, run) == "finished"
    events = EventAccumulator(str(run.tensorboard_dir), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/raw", "loss/smoothed", "learning_rate", "epoch"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/raw")] == [1, 2, 3, 4]
    losses = [r["loss"] for r in run.read_metrics()]
    assert [e.value for e in events.Scalars("loss/raw")] == pytest.approx(losses)
    (image_tag,) = tags["images"]
    assert image_tag.startswith("samples/00 seed ") and [e.step for e in events.Images(image_tag)] == [2, 4]


def test_tensorboard_missing_is_refused_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(TensorBoardMissing, match="`pip install tensorboard`, or set log.tensorboard=false"):
        prepare_new_run(load_config("tiny-demo", TINY + ["log.tensorboard=true"]), outputs_dir=tmp_path)
    assert not any(tmp_path.iterdir())
