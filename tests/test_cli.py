"""The command line as a user meets it: help, check, and the subcommands later issues build."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ["train", "resume", "runs", "export", "caption", "compare", "score", "generate", "check", "bench"]


def studio(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "studio.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_help_lists_every_subcommand():
    result = studio("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"    {command} " in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command):
    result = studio(command, "--help")
    assert result.returncode == 0 and "usage: studio.py " + command in result.stdout


def test_train_help_documents_the_config_keys():
    out = " ".join(studio("train", "--help").stdout.split())
    assert "lora.rank" in out and "LoRA rank (dimension)" in out and "one of: auto, fp32, fp16, bf16" in out


@pytest.mark.parametrize("args, message", [
    (["caption", "no-such-folder", "--captioner", "template"], "no-such-folder"),
    (["compare", "no-such-run", "--prompts", "x"], "no-such-run"),
    (["score", "no-such-run"], "no-such-run"),
    (["generate", "no-such-run", "--prompts", "p", "--count", "1", "--out", "o"], "no-such-run"),
])
def test_evaluation_and_caption_commands_name_what_is_missing(tmp_path, args, message):
    result = studio("--outputs", str(tmp_path), *args)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_train_rejects_a_bad_override_with_the_key_path(tmp_path):
    result = studio("--outputs", str(tmp_path), "train", "--preset", "tiny-demo", "--set", "lora.rnak=4")
    assert result.returncode == 1 and "Did you mean `lora.rank`" in result.stderr
    assert not any(tmp_path.iterdir()), "no run folder for a config that never validated"


def _mixed_folder(root: Path) -> Path:
    data = root / "mixed"
    (data / "__MACOSX").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (96, 64), (40 * i, 90, 200)).save(data / f"good{i}.png")
        (data / f"good{i}.txt").write_text(f"a photo of ohwx robot number {i}")
    good = (data / "good0.png").read_bytes()
    Image.new("RGB", (128, 128), (10, 200, 30)).save(data / "cut.jpg", quality=95)
    (data / "cut.jpg").write_bytes((data / "cut.jpg").read_bytes()[:300])
    (data / "empty.png").write_bytes(b"")
    (data / "notes.jpg").write_text("this is not an image")
    (data / "__MACOSX" / "._good0.png").write_bytes(good[:50])
    return data


def test_check_names_every_skipped_file_and_counts_the_usable_ones(tmp_path):
    data = _mixed_folder(tmp_path)
    result = studio("--outputs", str(tmp_path / "out"), "--models", str(tmp_path / "models"), "check", "--data",
                    str(data))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for name in ("cut.jpg", "empty.png", "notes.jpg", "._good0.png"):
        assert name in out, f"{name} missing from the report"
    assert "Ready to train." in out
    assert "torch" in out and "Precision:" in out and "auto → fp32" in out

    as_json = json.loads(studio("--outputs", str(tmp_path / "out"), "check", "--data", str(data), "--json").stdout)
    assert as_json["dataset"]["counts"]["usable"] == 3
    assert as_json["dataset"]["counts"]["skipped"] == 4


def test_check_fails_with_the_reason_when_training_cannot_start(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    for i in range(7):
        (bad / f"junk{i}.jpg").write_text("not an image")
    result = studio("--outputs", str(tmp_path / "out"), "check", "--data", str(bad))
    assert result.returncode == 1 and "Training cannot start" in result.stdout
    assert all(name in result.stdout for name in ["empty.png"] + [f"junk{i}.jpg" for i in range(7)])
    missing = studio("--outputs", str(tmp_path / "out"), "check", "--preset", "tiny-demo", "--set",
                     "model.base=nowhere/nothing-here", "--set", "data.dir=" + str(tmp_path / "nope"))
    assert missing.returncode == 1 and str(tmp_path / "nope") in missing.stdout


def test_check_with_the_demo_preset_is_ready(tmp_path):
    result = studio("--outputs", str(tmp_path / "out"), "check", "--preset", "tiny-demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "toy-sd15 (builtin, sd15)" in result.stdout and "Ready to train." in result.stdout
    assert result.stdout.count("eady to train") == 1, result.stdout  # one verdict, at the end
    assert result.stdout.rstrip().endswith("Ready to train.")


def test_bench_prints_figures_for_both_loops(tmp_path):
    result = studio("bench", "--steps", "4", "--set", "train.batch_size=2")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("cached ") for line in lines) and any(line.startswith("uncached ") for line in lines)
    assert "speed-up: steady" in result.stdout


def test_grid_bench_prints_cold_and_warm_figures():
    result = studio("bench", "--grids", "--repeats", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("grid bench: toy-sd15, 64×64 px, 2 rows × 3 columns (prompt only, step 2 · ×1, step 4")
    assert any(line.startswith("cold ") for line in lines) and any(line.startswith("warm ") for line in lines)
    assert re.search(r"warm grids are \d+\.\d\d× faster", result.stdout)
