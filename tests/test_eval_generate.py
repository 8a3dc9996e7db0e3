"""Batch generation on the tiny SD1.5 run: N images cycling the prompts at seed + i, resumable (a rerun
skips what is written, a stop keeps what is done), a manifest of every image, and refusals that say why."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.lock import ACCELERATOR, AcceleratorBusy
from studio.engine.runs import RunFolder
from studio.engine.sampling import generate
from studio.eval.generate import generate_batch, generated_dir
from studio.eval.pipelines import PipelineCache

PROMPTS = ["a photo of {trigger} toy robot", "a photo of {trigger} toy robot on the beach"]
FAST = {"inference_steps": 2}


@pytest.fixture(scope="module")
def run(finished_run, tmp_path_factory) -> RunFolder:
    """A copy of the shared run under its own name (its LoRA files are named after it)."""
    return RunFolder(shutil.copytree(finished_run.path, tmp_path_factory.mktemp("outputs") / finished_run.name))


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache()


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_a_batch_cycles_the_prompts_with_one_seed_per_image(run, cache, tmp_path):
    out = tmp_path / "batch"
    reports = []
    result = generate_batch(run, PROMPTS, 3, out, cache=cache, seed=10, progress=lambda d, t: reports.append((d, t)),
                            **FAST)
    assert (result.out_dir, result.written, result.skipped, result.manifest) == (out, 3, 0, out / "manifest.json")
    assert reports == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00000.txt", "00001.png", "00001.txt", "00002.png",
                                                     "00002.txt", "manifest.json", "metadata.jsonl"]
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    assert manifest["base_model"] == "tiny-sd15" and manifest["lora"] == run.final_lora.name
    assert (manifest["step"], manifest["scale"], manifest["seed"], manifest["count"]) == (8, 1.0, 10, 3)
    assert (manifest["inference_steps"], manifest["width"], manifest["height"]) == (2, 64, 64)
    assert manifest["sampler"] and manifest["versions"]["torch"]
    assert [(im["file"], im["prompt"], im["seed"]) for im in manifest["images"]] == [
        ("00000.png", "a photo of ohwx toy robot", 10),
        ("00001.png", "a photo of ohwx toy robot on the beach", 11),
        ("00002.png", "a photo of ohwx toy robot", 12)]

    # image 1 is the final LoRA's image of prompt 1 at seed 11
    pipe = cache.pipeline(run.config())
    cache.use_lora(pipe, run.final_lora, 1.0)
    expected = generate(pipe, "a photo of ohwx toy robot on the beach", 11, steps=2, guidance=manifest["guidance"],
                        width=64, height=64)
    assert np.abs(_pixels(out / "00001.png") - np.asarray(expected, dtype=np.int16)).max() <= 1


def test_a_batch_is_a_captioned_dataset_that_check_and_train_accept(run, cache, tmp_path):
    from studio.config import load_config
    from studio.data.dataset import scan_dataset
    from studio.data.report import build_report
    from studio.engine.train import run_training

    out = tmp_path / "synthetic"
    generate_batch(run, PROMPTS, 4, out, cache=cache, **FAST)
    assert (out / "00001.txt").read_text(encoding="utf-8") == "a photo of ohwx toy robot on the beach\n"
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["file_name"], r["text"]) for r in rows] == [
        ("00000.png", "a photo of ohwx toy robot"), ("00001.png", "a photo of ohwx toy robot on the beach"),
        ("00002.png", "a photo of ohwx toy robot"), ("00003.png", "a photo of ohwx toy robot on the beach")]
    scan = scan_dataset(out)
    report = build_report(scan, resolution=64, trigger_word="ohwx", bucket_step=32)
    assert report["counts"]["usable"] == report["counts"]["captioned"] == 4, "check would say: 4 of 4 captioned"
    assert not report["trigger_word"]["missing"], "the trigger word stays in every caption"
    config = load_config("tiny-demo", ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention",
                                       f"data.dir={out}", "train.max_steps=2", "train.batch_size=2",
                                       "sample.every_steps=0", "optim.warmup_steps=0", "save.every_steps=0"])
    trained = RunFolder.create(tmp_path / "outputs", "on-synthetic", config)
    assert run_training(config, trained) == "finished"
    assert trained.read_status()["dataset_images"] == 4


def test_a_batch_resumes_where_it_stopped(run, cache, tmp_path):
    out = tmp_path / "batch"
    asked = []
    stopped = generate_batch(run, PROMPTS, 4, out, cache=cache, step=4, scale=0.5,
                             should_stop=lambda: asked.append(1) or len(asked) > 2, **FAST)
    assert (stopped.written, stopped.skipped) == (2, 0)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [im["file"] for im in manifest["images"]] == ["00000.png", "00001.png"], "the manifest lists what is done"
    first = _pixels(out / "00001.png")

    (out / "00001.png").unlink()
    reports = []
    resumed = generate_batch(run, PROMPTS, 5, out, cache=cache, step=4, scale=0.5,
                             progress=lambda d, t: reports.append((d, t)), **FAST)
    assert (resumed.written, resumed.skipped) == (4, 1)
    assert reports == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert np.array_equal(_pixels(out / "00001.png"), first), "a re-rendered image must be the same image"
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [im["seed"] for im in manifest["images"]] == [0, 1, 2, 3, 4] and manifest["count"] == 5
    assert manifest["lora"].endswith(run.lora_file_name(4)) and manifest["step"] == 4
    assert sorted(p.name for p in out.glob("*.txt")) == [f"0000{i}.txt" for i in range(5)], "every image captioned"

    done = generate_batch(run, PROMPTS, 5, out, cache=cache, step=4, scale=0.5, **FAST)
    assert (done.written, done.skipped) == (0, 5)

    with pytest.raises(ValueError, match=r"other settings \(scale: 0\.5 → 1\.0\)"):
        generate_batch(run, PROMPTS, 5, out, cache=cache, step=4, scale=1.0, **FAST)
    with pytest.raises(ValueError, match="prompts:"):
        generate_batch(run, PROMPTS[:1], 5, out, cache=cache, step=4, scale=0.5, **FAST)


def test_scale_zero_is_the_base_model_and_refusals_name_the_problem(run, cache, tmp_path):
    base = generate_batch(run, PROMPTS, 1, tmp_path / "base", cache=cache, scale=0.0, **FAST)
    manifest = json.loads(base.manifest.read_text(encoding="utf-8"))
    assert (manifest["lora"], manifest["step"], manifest["scale"]) == (None, None, 0.0)

    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="not empty and has no manifest.json"):
        generate_batch(run, PROMPTS, 1, crowded, cache=cache, **FAST)
    with pytest.raises(ValueError, match=r"no checkpoint LoRA at step 3 \(available: 4, 8\)"):
        generate_batch(run, PROMPTS, 1, tmp_path / "x", cache=cache, step=3, **FAST)
    with pytest.raises(ValueError, match="count 0"):
        generate_batch(run, PROMPTS, 0, tmp_path / "x", cache=cache, **FAST)
    with ACCELERATOR.hold("training"):
        with pytest.raises(AcceleratorBusy, match="busy with training"):
            generate_batch(run, PROMPTS, 1, tmp_path / "x", cache=cache, **FAST)
    assert not (tmp_path / "x").exists()


def test_generated_dir_is_under_the_run():
    run = RunFolder(Path("/outputs/my-run"))
    assert generated_dir(run, "synthetic") == run.path / "generated" / "synthetic"
    assert re.fullmatch(r"batch-\d{8}-\d{6}", generated_dir(run, "  ").name)
    with pytest.raises(ValueError, match="batch name"):
        generated_dir(run, "../elsewhere")
