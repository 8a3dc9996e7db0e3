"""`python studio.py score` as a user meets it: the scorecard, --json, the default grid, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import main
from studio.config import load_config
from studio.engine.runs import RunFolder
from studio.eval.scoring import score_grid
from test_eval_scoring import write_grid  # a hand-made grid in the documented format

REPO = Path(__file__).resolve().parent.parent
TINY = ["--clip", "tiny-random", "--dino", "tiny-random"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Run `r` with two grids: `grid-new` made later by its manifest, though its files are older."""
    outputs = tmp_path_factory.mktemp("outputs")
    run = RunFolder.create(outputs, "r", load_config("tiny-demo", []))
    new = write_grid(run, "grid-new", seeds=(1,), created="2025-03-01T10:00:00+00:00")
    old = write_grid(run, "grid-old", seeds=(1,), created="2025-02-01T10:00:00+00:00")
    os.utime(new / "manifest.json", (1, 1))
    assert (old / "manifest.json").stat().st_mtime > (new / "manifest.json").stat().st_mtime
    RunFolder.create(outputs, "no-grids", load_config("tiny-demo", []))
    return outputs


def test_score_prints_the_scorecard_of_the_newest_grid_and_writes_scores_json(outputs):
    result = subprocess.run([sys.executable, str(REPO / "studio.py"), "--outputs", str(outputs), "score", "r", *TINY],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("Scores for grid grid-new of run r")
    assert "CLIP-I and CLIP-T: CLIP tiny-random (random weights — numbers mean nothing)" in out
    assert "prompt only (baseline)" in out and "step 4 · ×1" in out and "final · ×0.5" in out
    assert "Recommended: " in out and "DINO 0.668, CLIP-I 0.803, CLIP-T 0.305" in out
    assert "scoring grid grid-new (the newest of run r; 1 older, pick one with --grid NAME)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "consistent" in out.splitlines()[4] and "Consistent: the share of a column's images whose DINO" in out
    grids = outputs / "r" / "grids"
    assert not (grids / "grid-old" / "scores.json").exists()
    written = json.loads((grids / "grid-new" / "scores.json").read_text(encoding="utf-8"))
    # another process, same tiny-random backbones (seeded): the very same numbers
    here = score_grid(RunFolder(outputs / "r"), "grid-new", clip="tiny-random", dino="tiny-random")
    assert written["images"] == here["images"] and written["columns"] == here["columns"]
    column_line = next(line for line in out.splitlines() if line.startswith("step 4"))
    step4 = here["columns"][1]
    assert f"{step4['clip_i']:.3f}" in column_line and f"{step4['clip_t']:.3f}" in column_line
    assert f"{step4['consistency'] * 100:.0f} %" in column_line


def test_json_with_a_named_grid_and_reference_folder(outputs, tmp_path, capsys):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(refs / f"{i}.png")
    assert main(["--outputs", str(outputs), "score", "r", "--grid", "grid-old", "--refs", str(refs), "--json", *TINY]) == 0
    scores = json.loads(capsys.readouterr().out)
    # uncaptioned references: no CLIP-T of their own for the recommendation's prompt floor
    assert scores["grid"] == "grid-old"
    assert scores["references"] == {"folder": str(refs), "count": 3, "clip_t": None, "captioned": 0}
    assert len(scores["images"]) == 6 and [c["n"] for c in scores["columns"]] == [2, 2, 2]
    assert scores == json.loads((outputs / "r" / "grids" / "grid-old" / "scores.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("args, message", [
    (["score", "no-such-run"], "no run 'no-such-run'"),
    (["score", "no-grids"], "run no-grids has no comparison grid yet: make one first with "
                            "python studio.py compare no-grids"),
    (["score", "no-grids", "--batch", "nope"], "no batch 'nope': neither a batch of run no-grids"),
    (["score", "r", "--inception", "tiny-random", *TINY], "--inception is for FID / KID of a batch"),
    (["score", "r", "--grid", "grid-x", *TINY], "no grid 'grid-x'"),
    (["score", "r", "--clip", "ViT-Q-99/openai"], "CLIP backbone 'ViT-Q-99/openai': open_clip has no model"),
    (["score", "r", "--refs", "/no/such/refs", *TINY], "dataset folder /no/such/refs does not exist"),
])
def test_errors_name_what_is_wrong(outputs, capsys, args, message):
    assert main(["--outputs", str(outputs), *args]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and message in err
