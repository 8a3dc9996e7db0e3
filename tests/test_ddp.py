"""Data parallel: `accelerate launch` with 2 CPU processes (gloo) trains one run, written by rank 0."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from studio.engine.checkpoints import load_checkpoint
from studio.engine.runs import RunFolder

REPO = Path(__file__).resolve().parent.parent
SETTINGS = ["--set", "train.max_steps=6", "--set", "save.every_steps=3", "--set", "sample.every_steps=0",
            "--set", "optim.warmup_steps=0", "--set", "train.batch_size=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate's launcher is not installed")
def test_two_process_ddp_equals_gradient_accumulation(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    # --multi_gpu selects accelerate's torchrun launcher; with no GPU the processes use gloo on the CPU
    ddp = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()),
         str(REPO / "studio.py"), "--outputs", str(tmp_path), "train", "--preset", "tiny-demo", "--name", "ddp",
         *SETTINGS], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    # the same images per optimizer step in one process: 2 micro-batches accumulated
    single = subprocess.run(
        [sys.executable, str(REPO / "studio.py"), "--outputs", str(tmp_path), "train", "--preset", "tiny-demo",
         "--name", "single", *SETTINGS, "--set", "train.grad_accumulation=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    run = RunFolder(tmp_path / "ddp")
    assert run.read_status()["status"] == "finished"
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3, 4, 5, 6], "only rank 0 writes metrics"
    assert [c.step for c in run.checkpoints()] == [3, 6] and run.final_lora.is_file()
    a, _, _ = load_checkpoint(run.latest_checkpoint())
    b, _, _ = load_checkpoint(RunFolder(tmp_path / "single").latest_checkpoint())
    a, b = a.flat(), b.flat()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-5, f"DDP and accumulation disagree by {diff}"
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k)
