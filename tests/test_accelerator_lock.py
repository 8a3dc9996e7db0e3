"""One accelerator job per machine, across processes: the CLI and the studio refuse each other at once,
naming the holder (run, process id, since when); a lock left by a killed process is taken over."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.config import load_config
from studio.core.lock import ACCELERATOR, AcceleratorBusy, AcceleratorLock, lock_path
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.engine.runstate import NotResumable

REPO = Path(__file__).resolve().parent.parent
TINY = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention", "train.batch_size=2",
        "sample.every_steps=0", "sample.prompts=[]", "optim.warmup_steps=0"]
HOLD = """
import sys, time
from studio.core.lock import ACCELERATOR
ACCELERATOR.acquire("captioning", run=None)
print("held", flush=True)
time.sleep(600)
"""


def wait_for(predicate, timeout: float = 240.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cli(outputs: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "studio.py"), "--outputs", str(outputs), *args], cwd=REPO,
                            env=os.environ | {"OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_the_lock_is_machine_wide_and_a_killed_holders_lock_is_taken_over(tmp_path, caplog):
    lock = AcceleratorLock(tmp_path / "accelerator.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"LORA_STUDIO_LOCK_DIR": str(tmp_path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AcceleratorBusy, match=rf"busy with captioning \(process {holder.pid}, since \d\d:\d\d:\d\d\)"):
            lock.acquire("training mine", run="mine")
        assert lock.current().pid == holder.pid and lock.current().who == "captioning"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.current() is None  # the kernel freed it; the file still names the dead process
    with caplog.at_level(logging.INFO, logger="studio.core.lock"):
        with lock.hold("training mine", run="mine") as me:
            assert me.pid == os.getpid() and lock.current() == me
    assert f"left by captioning (process {holder.pid}" in caplog.text and "no longer running" in caplog.text
    assert lock.current() is None and lock.holder is None


def test_the_cli_cannot_train_while_the_studio_trains(tmp_path):
    runner = Runner(tmp_path)  # the process's lock: the same machine-wide file the CLI takes
    assert runner.lock is ACCELERATOR and lock_path().parent == Path(os.environ["LORA_STUDIO_LOCK_DIR"])
    runner.start(load_config("tiny-demo", TINY + ["train.max_steps=100000"]), "studio-run")
    try:
        proc = cli(tmp_path, "train", "--preset", "tiny-demo", "--name", "cli-run", *[f"--set={s}" for s in TINY])
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 1, out
        assert "error: the accelerator is busy with training studio-run (process " + str(os.getpid()) in out
        assert not (tmp_path / "cli-run").exists(), "a refused run leaves no folder"
    finally:
        runner.stop()
        assert runner.join(120)


def test_the_studio_cannot_train_while_the_cli_trains(tmp_path):
    proc = cli(tmp_path, "train", "--preset", "tiny-demo", "--name", "cli-run",
               *[f"--set={s}" for s in TINY + ["train.max_steps=100000", "save.every_steps=0"]])
    run = RunFolder(tmp_path / "cli-run")
    runner = Runner(tmp_path)
    try:
        wait_for(lambda: proc.poll() is not None or run.read_status().get("phase") == "training", what="the CLI run")
        assert proc.poll() is None, proc.stdout.read()
        with pytest.raises(AcceleratorBusy, match=f"busy with training cli-run \\(process {proc.pid}, since"):
            runner.start(load_config("tiny-demo", TINY), "studio-run")
        with pytest.raises(NotResumable, match=f"it is running in process {proc.pid} right now: stop it first"):
            runner.resume("cli-run", max_steps=200000)
        assert not (tmp_path / "studio-run").exists() and not runner.snapshot().active
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop with a checkpoint
        out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert run.state().state == "stopped" and run.state().resumable
    runner.resume("cli-run")  # free again, and resumable: the studio continues the CLI's run
    runner.stop()
    assert runner.join(120) and runner.snapshot().status == "stopped"
