"""Scoring toy-sd15 runs offline: toy-clip by default, no DINO, and the noise label on random models."""

from studio.cli import main
from studio.config import load_config
from studio.engine.builtin import NOISE_NOTE
from studio.engine.runs import RunFolder
from studio.eval.backbones import DINO_NONE, TOY_CLIP
from studio.eval.scoring import score_grid
from studio.ui import eval_view, live
from test_eval_scoring import write_grid


def test_a_grid_scores_without_dino(tmp_path):
    run = RunFolder.create(tmp_path, "r", load_config("tiny-demo", []))
    write_grid(run, "g")
    scores = score_grid(run, "g", clip=TOY_CLIP, dino=DINO_NONE)
    assert scores["backbones"]["dino"] == {"name": DINO_NONE, "random_weights": False}
    assert all(c["dino"] is None and c["clip_i"] is not None for c in scores["columns"])
    assert scores["recommendation"]["reason"].startswith("highest CLIP-I") or "CLIP-I" in scores["recommendation"]["reason"]
    assert "no DINO" in eval_view.scores_summary(scores, "toy-sd15")


def test_toy_runs_score_with_toy_clip_by_default(tmp_path, capsys):
    run = RunFolder.create(tmp_path, "toy", load_config("tiny-demo", []))
    write_grid(run, "g")
    assert main(["--outputs", str(tmp_path), "score", "toy", "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"name": "{TOY_CLIP}"' in out and f'"name": "{DINO_NONE}"' in out


def test_random_weight_models_are_labelled_as_noise():
    assert live.images_label("Latest samples", "tiny-sd15") == f"Latest samples — {NOISE_NOTE}"
    assert live.images_label("Grid images", "tiny-sdxl").endswith(NOISE_NOTE)
    assert live.images_label("Latest samples", "toy-sd15") == "Latest samples"
    assert live.images_label("Samples", "models/my-sd15") == "Samples"
    scores = {"grid": "g", "run": "r", "backbones": {"clip": {"name": "tiny-random"}, "dino": {"name": "tiny-random"}},
              "references": {"count": 3, "folder": "/x/demo"}}
    assert NOISE_NOTE in eval_view.scores_summary(scores, "tiny-sd15")
