"""`python studio.py compare` and `generate` as a user meets them: the folder printed at the end, the
files in it, a rerun that continues a batch, and one-line errors (exit 1, no traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from studio.cli import main


@pytest.fixture(scope="module")
def outputs(finished_run, tmp_path_factory) -> Path:
    """An outputs folder holding a copy of the shared finished run."""
    outputs = tmp_path_factory.mktemp("outputs")
    shutil.copytree(finished_run.path, outputs / finished_run.name)
    return outputs


def test_compare_writes_a_grid_and_prints_its_folder(outputs, finished_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\na photo of {trigger} toy robot\n", encoding="utf-8")
    code = main(["--outputs", str(outputs), "compare", finished_run.name, "--prompts", str(prompts), "--seeds", "1,2",
                 "--scales", "0,1", "--steps", "4,8", "--inference-steps", "2", "--name", "cli-grid"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    folder = outputs / finished_run.name / "grids" / "cli-grid"
    assert captured.out.strip() == str(folder)
    assert "grid cli-grid: 2 rows × 3 columns (prompt only, step 4 · ×1, step 8 · ×1)" in captured.err
    assert "6/6" in captured.err and "Traceback" not in captured.err
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert [c["label"] for c in manifest["columns"]] == ["prompt only", "step 4 · ×1", "step 8 · ×1"]
    assert manifest["seeds"] == [1, 2] and manifest["inference_steps"] == 2
    assert {im["prompt"] for im in manifest["images"]} == {"a photo of ohwx toy robot"}
    assert (folder / "grid.png").is_file() and len(list(folder.glob("r*-c*.png"))) == 6


@pytest.mark.parametrize("argv", [
    ["compare", "no-such-run", "--prompts", "x"],
    ["generate", "no-such-run", "--prompts", "x", "--count", "1", "--out", "unused"],
])
def test_an_unknown_run_is_named(outputs, argv, capsys):
    assert main(["--outputs", str(outputs), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-run" in err and "Traceback" not in err


def test_compare_errors_name_what_to_change(outputs, finished_run, capsys):
    run = finished_run.name
    cases = [
        (["--steps", "5"], "no checkpoint LoRA at step 5 (available: 4, 8)"),
        (["--seeds", "one"], "seeds 'one' must be numbers"),
        (["--size", "60"], "multiples of 8"),
    ]
    for extra, message in cases:
        assert main(["--outputs", str(outputs), "compare", run, "--prompts", "x", *extra]) == 1, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (outputs / run / "grids").exists() or not list((outputs / run / "grids").glob("grid-*"))


def test_generate_writes_a_batch_and_a_rerun_continues_it(outputs, finished_run, tmp_path, capsys):
    out = tmp_path / "synthetic"
    def argv(count: int, *extra: str) -> list[str]:
        return ["--outputs", str(outputs), "generate", finished_run.name, "--prompts", "a photo of {trigger} toy robot",
                "--count", str(count), "--out", str(out), "--step", "4", "--seed", "7", "--inference-steps", "2",
                "--guidance", "3.5", *extra]

    assert main(argv(2)) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "2 images written, 0 already there (2 of 2)" in captured.err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [(im["file"], im["seed"]) for im in manifest["images"]] == [("00000.png", 7), ("00001.png", 8)]
    assert manifest["inference_steps"] == 2 and manifest["guidance"] == 3.5
    assert manifest["step"] == 4 and manifest["lora"].endswith(f"{finished_run.name}-step000004.safetensors")

    (out / "00001.png").unlink()
    assert main(argv(3)) == 0
    assert "2 images written, 1 already there (3 of 3)" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]

    assert main(argv(3, "--scale", "0.5")) == 1
    err = capsys.readouterr().err
    assert "other settings (scale: 1.0 → 0.5)" in err and "Traceback" not in err


def test_compare_without_prompts_uses_the_runs_sample_prompts(outputs, finished_run, capsys):
    code = main(["--outputs", str(outputs), "compare", finished_run.name, "--inference-steps", "2", "--name", "defaults"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    manifest = json.loads((outputs / finished_run.name / "grids" / "defaults" / "manifest.json").read_text("utf-8"))
    assert manifest["prompts"] == finished_run.config().sample.prompts and len(manifest["prompts"]) == 2
    assert "prompts: the run's sample prompts (2; --prompts for others)" in captured.err


def test_compare_with_a_baseline_prompt_and_another_generators_images(outputs, finished_run, tmp_path, capsys):
    from PIL import Image

    freepik = tmp_path / "freepik"
    freepik.mkdir()
    for i in range(2):
        Image.new("RGB", (128, 128), (40 * i, 120, 200)).save(freepik / f"{i}.jpg")
    code = main(["--outputs", str(outputs), "compare", finished_run.name, "--prompts", "{trigger} in the steppe",
                 "--baseline-prompts", "a small silver toy robot with round eyes in the steppe", "--seeds", "1,2",
                 "--external", f"Freepik={freepik}", "--steps", "4,final", "--inference-steps", "2",
                 "--name", "seed-question"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert ("2 rows × 4 columns (baseline prompt, step 4 · ×1, final · ×1, Freepik)" in captured.err)
    manifest = json.loads((outputs / finished_run.name / "grids" / "seed-question" / "manifest.json").read_text("utf-8"))
    assert manifest["baseline_prompts"] == ["a small silver toy robot with round eyes in the steppe"]
    cells = {(im["row"], im["column"]): im for im in manifest["images"]}
    assert cells[(0, 0)]["prompt"] == "a small silver toy robot with round eyes in the steppe"
    assert cells[(0, 0)]["row_prompt"] == cells[(0, 1)]["prompt"] == "ohwx in the steppe"
    assert cells[(1, 3)]["source"] == str(freepik / "1.jpg") and cells[(1, 3)]["seed"] is None
    assert main(["--outputs", str(outputs), "compare", finished_run.name, "--prompts", "x", "--external",
                 "Freepik"]) == 1
    assert "must be LABEL=DIR" in capsys.readouterr().err
