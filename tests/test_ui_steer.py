"""The studio side of steering runs: the warm-up notice, Test setup, epochs on the tiles, Train N more
steps, and the run state the Checkpoints tab shows (all from the engine)."""

from __future__ import annotations

import time

import gradio as gr
import pytest

from studio.config import load_config
from studio.core.lock import AcceleratorLock
from studio.engine.environment import human_bytes
from studio.engine.runner import Runner, Snapshot
from studio.engine.runs import RunFolder
from studio.engine.train import run_training
from studio.ui import live, runs_view
from studio.ui.app import Studio
from studio.ui.checkpoints_tab import CheckpointHandlers
from studio.ui.form import form_values
from studio.ui.notices import Refusal
from studio.ui.security import Roots
from studio.ui.train_tab import TrainHandlers

FAST = {"model.base": "tiny-sd15", "lora.rank": 4, "lora.alpha": 4, "lora.targets": "attention",
        "train.batch_size": 2, "sample.every_steps": 0, "sample.prompts": "", "save.every_steps": 4}


@pytest.fixture
def studio(tmp_path):
    roots = Roots.create(tmp_path / "datasets", tmp_path / "models", tmp_path / "outputs")
    return Studio(runner=Runner(roots.outputs, roots.models, lock=AcceleratorLock(tmp_path / "lock"),
                                datasets_dir=roots.datasets), roots=roots)


def form(**changes):
    return form_values(load_config("tiny-demo")) | FAST | changes


def wait_for(predicate, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_warmup_longer_than_the_run_is_one_notice_in_the_check_line_and_the_job(studio):
    train = TrainHandlers(studio)
    *_, check = train.resolve_config("tiny-demo", "x", **form(**{"train.max_steps": 10}))
    assert check == ("✓ Valid config · optim.warmup_steps 20 is not shorter than train.max_steps 10: clamped to 1 "
                     "(a tenth of the run)")
    notice = train.start("clamped", **form(**{"train.max_steps": 10}))
    assert "Started run **clamped**: 10 steps" in notice and "Notice: optim.warmup_steps 20" in notice
    assert studio.runner.join(180)
    snap = studio.runner.snapshot()
    assert snap.status == "finished" and len(snap.notices) == 1
    assert RunFolder(studio.roots.outputs / "clamped").config().optim.warmup_steps == 1
    page = live.job_html(snap)
    assert "clamped to 1" in page and "Epoch" in page and f"{snap.epoch}/{snap.epochs}" in page and snap.epochs >= 1


def test_test_setup_reports_the_trial_in_the_page(studio):
    report = TrainHandlers(studio).test_setup(**form(**{"train.max_steps": 40}))
    assert report.startswith("**Test setup: tiny-sd15 on cpu (fp32), 4 of 16 images, 4 training steps**")
    assert "training step" in report and "Projected run: 40 steps" in report and "Projected disk" in report
    assert not list(studio.roots.outputs.iterdir())
    studio.runner.lock.acquire("training someone", run="someone")
    try:
        with pytest.raises(Refusal, match="busy with training someone"):
            TrainHandlers(studio).test_setup(**form())
    finally:
        studio.runner.lock.release()


def test_train_n_more_steps_extends_a_finished_run(studio):
    config = load_config("tiny-demo", [f"{k}={v}" for k, v in FAST.items() if k != "sample.prompts"] +
                         ["sample.prompts=[]", "train.max_steps=4", "optim.warmup_steps=0"])
    run = RunFolder.create(studio.roots.outputs, "done", config)
    assert run_training(config, run) == "finished"
    handlers = CheckpointHandlers(studio)
    *_, note = handlers.show_run("done")[:9]
    assert "It finished all 4 steps: to train more, extend it" in note
    table = runs_view.checkpoints_table(run).set_index("Step")
    assert table.loc[4, "Kept"].startswith("kept: newest")
    # sizes say what they count: the LoRA file (what Export copies) beside its folder with the resume state
    ckpt = next(c for c in run.checkpoints() if c.step == 4)
    assert table.loc[4, "LoRA file"] == ckpt.lora_file.name
    assert table.loc[4, "LoRA size"] == human_bytes(ckpt.lora_file.stat().st_size)
    assert table.loc[4, "Folder size (LoRA + resume state)"] == human_bytes(ckpt.size_bytes)
    assert ckpt.size_bytes > ckpt.lora_file.stat().st_size

    with pytest.raises(gr.Error, match="nothing to resume"):
        handlers.resume_run("done", 4)
    with pytest.raises(gr.Error, match="at least 1"):
        handlers.extend_run("done", 0)
    notice, tabs = handlers.extend_run("done", 3)
    assert "Resuming **done** from step 4 up to step 7" in notice and tabs.selected == "train"
    assert studio.runner.join(180) and studio.runner.snapshot().status == "finished"
    assert run.state().last_step == 7 and run.config().train.max_steps == 7 and run.latest_checkpoint().step == 7
    assert "extended to 7 steps" in studio.runner.snapshot().notices[0]


def test_the_runs_table_takes_liveness_from_the_engine(studio):
    import datetime as dt
    import socket

    from studio.core.atomic import write_json_atomic

    config = load_config("tiny-demo", ["model.base=tiny-sd15"])
    run = RunFolder.create(studio.roots.outputs, "ghost", config)

    def status() -> str:
        table = runs_view.runs_table(studio.roots.outputs, Snapshot())
        return dict(zip(table.Run, table.Status))["ghost"]

    now = dt.datetime.now(dt.timezone.utc)
    # this machine, a process id no process has (above Linux's pid_max): gone at once, however fresh
    write_json_atomic(run.status_path, {"status": "running", "pid": 2**22 + 12345, "host": socket.gethostname(),
                                        "last_step": 3, "updated": now.isoformat()})
    assert status() == "interrupted"
    assert "nothing to resume" in runs_view.run_summary_html(run, Snapshot())
    # another machine: its heartbeat decides
    write_json_atomic(run.status_path, {"status": "running", "pid": 77, "host": "elsewhere", "last_step": 3,
                                        "updated": now.isoformat()})
    assert status() == "running (other process)"
    write_json_atomic(run.status_path, {"status": "running", "pid": 77, "host": "elsewhere", "last_step": 3,
                                        "updated": (now - dt.timedelta(minutes=10)).isoformat()})
    assert status() == "interrupted"
