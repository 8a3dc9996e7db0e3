"""Run state that never lies: one owner in the engine (RunFolder.state()), a heartbeat kept while paused,
`interrupted` as soon as a process is gone, leftover temp folders cleaned, `runs --json`, and failures
(disk full, out of memory) that name the folder, the last good checkpoint and the real step."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from studio.config import load_config
from studio.core.atomic import write_json_atomic
from studio.core.lock import AcceleratorLock
from studio.engine import checkpoints as checkpoints_module
from studio.engine import runstate
from studio.engine.checkpoints import load_checkpoint
from studio.engine.control import Control
from studio.engine.events import Finished, StatusChanged
from studio.engine.failures import RunWriteError, TrainingOutOfMemory
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.engine.train import Trainer, run_training

REPO = Path(__file__).resolve().parent.parent
TINY = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention", "train.batch_size=2",
        "sample.every_steps=0", "sample.prompts=[]", "optim.warmup_steps=0"]


def tiny(*overrides: str):
    return load_config("tiny-demo", TINY + list(overrides))


def studio(outputs: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "studio.py"), "--outputs", str(outputs), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def wait_for(predicate, timeout: float = 240.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_run_killed_before_its_first_checkpoint_reads_interrupted_and_runs_cleans_up(tmp_path, capsys):
    from studio.cli import main

    args = [f"--set={s}" for s in TINY + ["train.max_steps=100000", "save.every_steps=0"]]
    proc = studio(tmp_path, "train", "--preset", "tiny-demo", "--name", "killed", *args)
    run = RunFolder(tmp_path / "killed")
    try:
        wait_for(lambda: proc.poll() is not None or (run.state().state == "running" and
                                                     (run.read_status().get("phase") == "training")),
                 what="the run to train")
        assert proc.poll() is None, proc.stdout.read()
        assert run.state().pid == proc.pid and not run.state().resumable
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # a checkpoint write the kill cut short leaves its temp folder behind
    (run.checkpoints_dir / ".step-000010.tmp-abcd").mkdir(parents=True)

    state = run.state()
    assert run.read_status()["status"] == "running"  # what the killed process last wrote
    assert state.state == "interrupted" and not state.resumable and state.last_checkpoint is None
    assert f"its process {proc.pid} is no longer running" in state.why and "before its first complete" in state.why

    assert main(["--outputs", str(tmp_path), "runs", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert {k: entry[k] for k in ("name", "state", "last_checkpoint", "resumable")} == {
        "name": "killed", "state": "interrupted", "last_checkpoint": None, "resumable": False}
    assert isinstance(entry["last_step"], int)
    assert not [p for p in run.checkpoints_dir.iterdir() if p.name.startswith(".")], "temp folder left behind"
    assert main(["--outputs", str(tmp_path), "runs"]) == 0
    text = capsys.readouterr().out
    assert "killed" in text and "interrupted" in text and "nothing to resume" in text


def test_a_paused_run_stays_paused_after_20_minutes(tmp_path, monkeypatch):
    offset = [0.0]
    monkeypatch.setattr(runstate, "clock", lambda: time.time() + offset[0])  # writers and readers alike
    monkeypatch.setattr(runstate, "HEARTBEAT_S", 0.05)
    runner = Runner(tmp_path, lock=AcceleratorLock(tmp_path / "lock"))
    run = runner.start(tiny("train.max_steps=100000"), "paused")
    try:
        wait_for(lambda: runner.snapshot().step >= 2, what="training")
        runner.pause()
        wait_for(lambda: runner.snapshot().status == "paused", what="the pause")
        offset[0] = 20 * 60  # twenty minutes pass, paused

        def beat_time() -> float:
            return json.loads(run.heartbeat_path.read_text())["unix"]

        wait_for(lambda: beat_time() > time.time() + 19 * 60, what="a heartbeat written after 20 minutes")
        state = run.state()
        assert (state.state, state.phase, state.heartbeat_age_s < 60) == ("paused", "paused", True)
        assert "paused in this process right now" in state.why and not state.resumable
    finally:
        runner.stop()
        assert runner.join(120)
    assert run.state().state == "stopped"

    # the same heartbeat, 20 minutes old and from another machine, is a process that is gone
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "config.yaml").write_text(run.config_path.read_text())
    write_json_atomic(other / "run.json", {"status": "paused", "last_step": 3})
    write_json_atomic(other / "heartbeat.json", {"pid": 12345, "host": "another-machine",
                                                 "unix": runstate.clock() - 20 * 60, "status": "paused"})
    assert RunFolder(other).state().state == "interrupted"
    write_json_atomic(other / "heartbeat.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                                 "pid_start": "not-our-start", "unix": runstate.clock()})
    assert RunFolder(other).state().state == "interrupted", "a reused process id is not the run's process"


def test_stopping_and_finished_are_emitted(tmp_path):
    events = []
    control = Control()
    config = tiny("train.max_steps=100000")
    run = RunFolder.create(tmp_path, "stop", config)
    worker = threading.Thread(target=run_training, args=(config, run, control, events.append))
    worker.start()
    wait_for(lambda: any(isinstance(e, StatusChanged) and e.status == "training" for e in events), what="training")
    control.stop()
    worker.join(120)
    statuses = [e.status for e in events if isinstance(e, StatusChanged)]
    assert statuses[-2:] == ["stopping", "stopped"]
    assert isinstance(events[-1], Finished) and events[-1].status == "stopped" and events[-1].step >= 1


def test_a_full_disk_names_the_folder_and_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny("train.max_steps=10", "save.every_steps=4")
    run = RunFolder.create(tmp_path, "full", config)
    real_save = checkpoints_module.save_file
    calls = []

    def full_disk(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the checkpoint of step 8
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints_module, "save_file", full_disk)
    with pytest.raises(RunWriteError) as err:
        run_training(config, run)
    message = str(err.value)
    assert f"could not write checkpoint step 8 in {run.checkpoints_dir}" in message
    assert "No space left on device" in message
    assert f"The last good checkpoint is step 4 ({run.checkpoint_dir(4)})" in message
    status = run.read_status()
    assert status["status"] == "failed" and status["error"] == message and status["last_step"] == 8
    state = run.state()
    assert (state.state, state.last_step, state.last_checkpoint, state.resumable) == ("failed", 8, 4, True)


def test_out_of_memory_stops_with_advice_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    config = tiny("train.max_steps=20", "save.every_steps=4")
    run = RunFolder.create(tmp_path, "oom", config)
    real_loss = Trainer._loss

    def loss_out_of_memory(self, micro, seed=None):
        if micro >= 6:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(self, micro, seed)

    monkeypatch.setattr(Trainer, "_loss", loss_out_of_memory)
    with pytest.raises(TrainingOutOfMemory) as err:
        run_training(config, run)
    message = str(err.value)
    assert message.startswith("out of memory on cpu at step 7. Change, one at a time:")
    assert "train.gradient_checkpointing=true" in message and "train.batch_size=1 and train.grad_accumulation=2" in message
    assert "data.resolution" not in message  # 64 px is as low as it goes
    assert "adamw8bit" not in message  # 8-bit Adam only on CUDA
    assert "The last good checkpoint is step 4" in message and "--set lora.init_from=oom" in message
    assert run.read_status()["error"] == message and run.read_status()["last_step"] == 6
    weights, _, info = load_checkpoint(run.latest_checkpoint())
    assert info["step"] == 4 and weights.parts["unet"]


def test_the_advice_fits_the_config_and_the_device():
    from studio.engine.advice import memory_advice

    sdxl = load_config("sdxl-character")  # gradient checkpointing on, batch 1 already
    tips = " | ".join(memory_advice(sdxl, "cuda"))
    assert "data.resolution=768" in tips and "optim.optimizer=adamw8bit" in tips
    assert "gradient_checkpointing" not in tips and "batch_size" not in tips
    assert "adamw8bit" not in " | ".join(memory_advice(sdxl, "mps"))
