"""A generated batch scored as a distribution, on the tiny run with the tiny random backbones: every
top-level number equals a direct computation from the same features, each is labelled with its sample
sizes and caveat, missing backbones give null with the reason, and `score --batch` prints it."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest

from studio.cli import main
from studio.data.images import load_image
from studio.engine.runs import RunFolder
from studio.eval.backbones import TINY_RANDOM, load_clip, load_dino
from studio.eval.batch_scores import format_batch_scores, load_batch_scores, score_batch
from studio.eval.generate import batch_folder, generate_batch, generated_dir, list_batches
from studio.eval.inception import load_inception
from studio.eval.metrics import (cmmd, consistency_threshold, diversity, frechet_distance, kernel_inception_distance,
                                 mean_cosine)
from studio.eval.pipelines import PipelineCache
from studio.eval.scoring import clip_t_prompt, reference_images

TINY = {"clip": TINY_RANDOM, "dino": TINY_RANDOM, "inception": TINY_RANDOM}
PROMPTS = ["a photo of {trigger} toy robot", "a photo of {trigger} toy robot on the beach"]
COUNT = 6


@pytest.fixture(scope="module")
def run(finished_run, tmp_path_factory) -> RunFolder:
    """A copy of the shared run with a 6-image batch `synthetic` under generated/."""
    outputs = tmp_path_factory.mktemp("outputs")
    run = RunFolder(shutil.copytree(finished_run.path, outputs / finished_run.name))
    generate_batch(run, PROMPTS, COUNT, generated_dir(run, "synthetic"), cache=PipelineCache(), inference_steps=2)
    return run


@pytest.fixture(scope="module")
def scored(run) -> dict:
    return score_batch(run, "synthetic", **TINY)


def _features(paths):
    images = [load_image(p) for p in paths]
    return (load_clip(TINY_RANDOM).encode_images(images), load_dino(TINY_RANDOM).encode_images(images),
            load_inception(TINY_RANDOM).encode_images(images))


def test_every_batch_number_equals_a_direct_computation(run, scored):
    folder = generated_dir(run, "synthetic")
    gen_clip, gen_dino, gen_inc = _features(sorted(folder.glob("*.png")))
    ref_clip, ref_dino, ref_inc = _features(reference_images(run))
    prompts = [clip_t_prompt(p.format(trigger="ohwx"), "ohwx", "toy robot") for p in PROMPTS] * (COUNT // 2)
    texts = load_clip(TINY_RANDOM).encode_texts(prompts)
    assert scored["clip_t"] == pytest.approx(float((gen_clip.double() * texts.double()).sum(1).mean()), abs=1e-6)
    assert scored["clip_i"] == pytest.approx(float(mean_cosine(gen_clip, ref_clip).mean()), abs=1e-6)
    assert scored["dino"] == pytest.approx(float(mean_cosine(gen_dino, ref_dino).mean()), abs=1e-6)
    threshold = consistency_threshold(ref_dino).value
    hits = [s >= threshold for s in mean_cosine(gen_dino, ref_dino)]
    assert scored["consistency"] == pytest.approx(sum(hits) / COUNT)
    assert scored["diversity"] == pytest.approx(diversity(gen_dino), abs=1e-6)
    assert scored["fid"] == pytest.approx(frechet_distance(gen_inc, ref_inc), rel=1e-4)
    assert scored["kid"] == pytest.approx(kernel_inception_distance(gen_inc, ref_inc).mean, rel=1e-4, abs=1e-9)
    assert scored["cmmd"] == pytest.approx(cmmd(gen_clip, ref_clip), rel=1e-5, abs=1e-9)
    assert len({round(im["clip_i"], 6) for im in scored["images"]}) == COUNT, "every image scores differently"


def test_scores_json_has_the_numbers_their_sample_sizes_and_caveats(run, scored):
    folder = generated_dir(run, "synthetic")
    on_disk = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
    assert on_disk == scored == load_batch_scores(folder)
    for key in ("clip_t", "clip_i", "dino", "diversity", "fid", "kid", "cmmd", "consistency"):
        assert isinstance(scored[key], float) and scored[key] == scored[key], key
    assert scored["notes"] == {}
    details = scored["details"]
    assert (details["fid"]["n"], details["fid"]["n_reference"]) == (COUNT, 16)
    assert "biased" in details["fid"]["caveat"] and "6 generated against 16 reference images" in details["fid"]["caveat"]
    assert details["kid"]["subset_size"] == COUNT and details["kid"]["subsets"] == 100
    assert "noisy at small N" in details["kid"]["caveat"]
    assert "σ = 10" in details["cmmd"]["caveat"] and details["diversity"]["backbone"] == TINY_RANDOM
    assert details["consistency"]["metric"] == "dino" and details["consistency"]["references"] == 16
    assert scored["backbones"]["inception"] == {"name": TINY_RANDOM, "random_weights": True}
    assert [im["file"] for im in scored["images"]] == [f"{i:05d}.png" for i in range(COUNT)]
    assert scored["images"][1]["prompt"] == "a photo of ohwx toy robot on the beach"


def test_missing_backbones_give_null_with_the_reason(run, tmp_path):
    no_inception = score_batch(run, "synthetic", clip=TINY_RANDOM, dino="none", inception="none")
    assert no_inception["fid"] is None and no_inception["kid"] is None and no_inception["dino"] is None
    assert "--inception none" in no_inception["notes"]["fid"] and "--dino none" in no_inception["notes"]["dino"]
    assert no_inception["details"]["consistency"]["metric"] == "clip_i"
    gen_clip = _features(sorted(generated_dir(run, "synthetic").glob("*.png")))[0]
    assert no_inception["diversity"] == pytest.approx(diversity(gen_clip), abs=1e-6), "CLIP features without DINO"
    broken = score_batch(run, "synthetic", clip=TINY_RANDOM, dino="none", inception=str(tmp_path / "nope.pth"))
    assert broken["fid"] is None and "no such file" in broken["notes"]["kid"]
    one = tmp_path / "one-ref"
    one.mkdir()
    shutil.copy(reference_images(run)[0], one / "ref.png")
    lonely = score_batch(run, "synthetic", refs=one, **TINY)
    assert lonely["fid"] is None and "at least 2 images in each set" in lonely["notes"]["fid"]
    assert lonely["consistency"] is None and "at least 2 reference images" in lonely["notes"]["consistency"]
    assert lonely["cmmd"] is not None
    score_batch(run, "synthetic", **TINY)  # leave the module's scores.json as the other tests expect


def test_a_batch_is_found_by_name_or_folder(run, tmp_path):
    folder = generated_dir(run, "synthetic")
    assert list_batches(run) == ["synthetic"]
    assert batch_folder(run, "synthetic") == folder and batch_folder(run, str(folder)) == folder
    with pytest.raises(FileNotFoundError, match="no batch 'nope'.*batches: synthetic"):
        batch_folder(run, "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no batch .*written by generate"):
        score_batch(run, tmp_path / "plain", **TINY)


def test_score_batch_from_the_command_line(run, scored, capsys):
    outputs = str(run.path.parent)
    argv = ["--outputs", outputs, "score", run.name, "--batch", "synthetic", "--clip", TINY_RANDOM, "--dino",
            TINY_RANDOM, "--inception", TINY_RANDOM]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith(f"Scores for batch synthetic of run {run.name}: 6 images against 16 reference images")
    assert "[random weights — numbers mean nothing" in out
    fid_line = next(line for line in out.splitlines() if line.startswith("FID"))
    assert f"{scored['fid']:.3f}" in fid_line and "N = 6 vs 16 refs" in fid_line
    kid_line = next(line for line in out.splitlines() if line.startswith("KID"))
    assert f"{scored['kid']:.4f} ± " in kid_line
    assert "- FID: FID is biased upward at small N" in out
    assert "scores.json written in" in captured.err
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"clip_t", "clip_i", "dino", "diversity", "fid", "kid", "cmmd", "notes"} <= set(data)
    assert main(["--outputs", outputs, "score", run.name, "--batch", "synthetic", "--grid", "g"]) == 1
    assert "not both" in capsys.readouterr().err
    assert format_batch_scores(scored).count("\n- ") >= 7
    assert statistics.fmean(im["clip_t"] for im in scored["images"]) == pytest.approx(scored["clip_t"])
