"""Exact resume: a run killed with SIGKILL and resumed ends with the uninterrupted run's weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from studio.engine.checkpoints import load_checkpoint
from studio.engine.runs import RunFolder

REPO = Path(__file__).resolve().parent.parent
SETTINGS = ["--set", "train.max_steps=24", "--set", "save.every_steps=4", "--set", "sample.every_steps=0",
            "--set", "lora.dropout=0.1", "--set", "data.flip=true", "--set", "data.caption_dropout=0.2",
            "--set", "train.batch_size=2", "--set", "train.grad_accumulation=2", "--set", "optim.warmup_steps=3"]


def _cli(outputs: Path, *args: str, lock_dir: Path | None = None) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"} | ({"LORA_STUDIO_LOCK_DIR": str(lock_dir)} if lock_dir else {})
    return subprocess.Popen([sys.executable, str(REPO / "studio.py"), "--outputs", str(outputs), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_weights(run: RunFolder) -> dict[str, torch.Tensor]:
    weights, _, info = load_checkpoint(run.latest_checkpoint())
    assert info["step"] == 24
    return weights.flat()


def test_sigkill_then_resume_reproduces_the_uninterrupted_weights(tmp_path):
    # the reference trains beside it as if on another machine: a lock of its own
    reference = _cli(tmp_path, "train", "--preset", "tiny-demo", "--name", "straight", *SETTINGS,
                     lock_dir=tmp_path / "other-machine")
    killed = _cli(tmp_path, "train", "--preset", "tiny-demo", "--name", "killed", *SETTINGS)

    # kill -9 as soon as a checkpoint past the first exists: mid-training, possibly mid-write
    run = RunFolder(tmp_path / "killed")
    deadline = time.time() + 240
    while time.time() < deadline and killed.poll() is None:
        if run.checkpoints_dir.is_dir() and any(c.step >= 8 for c in run.checkpoints()):
            break
        time.sleep(0.02)
    assert killed.poll() is None, f"the run ended before it could be killed:\n{killed.stdout.read()}"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    killed_at = run.latest_checkpoint().step
    assert 8 <= killed_at < 24
    assert run.read_status()["status"] == "running"  # a killed process could not say anything else
    state = run.state()  # but its process is gone, which the engine sees at once
    assert state.state == "interrupted" and state.resumable and state.last_checkpoint == killed_at

    resumed = _cli(tmp_path, "resume", "killed")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out

    assert run.read_status()["status"] == "finished"
    a, b = _final_weights(RunFolder(tmp_path / "straight")), _final_weights(run)
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-6, f"resumed weights differ by {diff}"
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k), "the LoRA never trained"
    # metrics continue without duplicates or gaps
    steps = [r["step"] for r in run.read_metrics()]
    assert steps == list(range(1, 25))
