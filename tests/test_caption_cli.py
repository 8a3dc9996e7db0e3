"""`python studio.py caption` as a user meets it: files written, a summary, clear errors, no tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import main

REPO = Path(__file__).resolve().parent.parent


def studio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "studio.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three generated PNGs, one of them captioned by hand."""
    data = tmp_path / "robots"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (200, 80 + 50 * i, 40)).save(data / f"robot_{i}.png")
    (data / "robot_0.txt").write_text("ohwx, a hand-written caption\n", encoding="utf-8")
    return data


def test_template_writes_captions_and_a_summary(folder):
    result = studio("caption", str(folder), "--captioner", "template", "--trigger", "ohwx", "--class-phrase", "toy robot")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "robot_1.txt").read_text(encoding="utf-8") == "ohwx, toy robot\n"
    assert (folder / "robot_2.txt").read_text(encoding="utf-8") == "ohwx, toy robot\n"
    assert (folder / "robot_0.txt").read_text(encoding="utf-8") == "ohwx, a hand-written caption\n"
    assert "captioned 2 images with template; kept 1 existing caption; skipped 0" in result.stdout
    assert f"wrote 2 caption files in {folder}" in result.stdout
    assert "captioning (template)" in result.stderr and "2/2" in result.stderr  # the progress bar


def test_missing_folder_is_an_error_naming_it():
    result = studio("caption", "no-such-folder", "--captioner", "template", "--trigger", "ohwx")
    assert result.returncode == 1
    assert "error: dataset folder no-such-folder not found" in result.stderr and "Traceback" not in result.stderr


def test_blip_tiny_random_runs(folder):
    result = studio("caption", str(folder), "--captioner", "blip", "--model", "tiny-random", "--trigger", "ohwx",
                    "--max-length", "6", "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    for i in range(3):
        caption = (folder / f"robot_{i}.txt").read_text(encoding="utf-8")
        assert caption.startswith("ohwx, ") and len(caption.strip()) > len("ohwx,")
    assert "captioned 3 images with blip (tiny-random); skipped 0" in result.stdout
    assert "these captions are meaningless" in result.stdout


def test_offline_default_model_fails_cleanly_and_writes_nothing(folder, tmp_path):
    before = sorted(p.name for p in folder.iterdir())
    result = studio("--models", str(tmp_path / "models"), "caption", str(folder), "--captioner", "florence2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: Florence-2 weights 'florence-community/Florence-2-base' are not on this machine" in result.stderr
    assert "--model florence2-base" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_dir_is_looked_up_in_the_datasets_folder(folder, capsys):
    code = main(["--datasets", str(folder.parent), "caption", "robots", "--captioner", "template",
                 "--class-phrase", "toy robot", "--description", "orange body", "--overwrite"])
    assert code == 0
    assert (folder / "robot_0.txt").read_text(encoding="utf-8") == "toy robot, orange body\n"
    out = capsys.readouterr().out
    assert "captioned 3 images with template; skipped 0" in out and "e.g. robot_0.png: toy robot, orange body" in out


def test_nothing_to_caption_says_so(folder, capsys):
    for i in (1, 2):
        (folder / f"robot_{i}.txt").write_text("done\n", encoding="utf-8")
    assert main(["caption", str(folder), "--captioner", "template", "--trigger", "ohwx"]) == 0
    out = capsys.readouterr().out
    assert f"nothing to caption in {folder}: all 3 images already have a caption (--overwrite replaces them)" in out
    assert (folder / "robot_1.txt").read_text(encoding="utf-8") == "done\n"


@pytest.mark.parametrize("args, message", [
    (["caption", "builtin:demo", "--captioner", "template", "--trigger", "ohwx"], "copy it into the datasets folder"),
    (["caption", "{folder}", "--captioner", "template"], "needs a trigger word or a class phrase"),
    (["caption", "{folder}", "--captioner", "blip", "--model", "nope"], "BLIP model 'nope' was not found"),
    (["caption", "{folder}/robot_1.png", "--captioner", "template", "--trigger", "x"], "is a file, not a dataset"),
])
def test_user_errors(folder, capsys, args, message):
    before = sorted(p.name for p in folder.iterdir())
    code = main([arg.format(folder=folder) for arg in args])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and message in err
    assert sorted(p.name for p in folder.iterdir()) == before
