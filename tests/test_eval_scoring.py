"""CLIP-I / CLIP-T / DINO / consistency scoring checked against a direct computation with the same tiny
backbones.

Grids are built by hand here (manifest.json + PNGs in the documented format), so these tests do not
depend on the grid generator. `write_grid` writes the version-1 manifest (no column kinds, no row
prompts): old grids keep scoring.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.config import load_config
from studio.core.lock import ACCELERATOR, AcceleratorBusy
from studio.data.demo import demo_dataset_dir
from studio.data.images import load_image
from studio.engine.runs import RunFolder
from studio.eval.backbones import (
    CLIP_DEFAULT,
    DINO_DEFAULT,
    TINY_CLIP_CONFIG,
    TINY_RANDOM,
    BackboneError,
    load_clip,
    load_dino,
)
from studio.eval.metrics import consistency_threshold
from studio.eval.scoring import clip_t_prompt, load_scores, reference_images, score_grid

TINY = {"clip": TINY_RANDOM, "dino": TINY_RANDOM}
COLUMNS = [{"label": "prompt only", "step": None, "scale": 0.0, "lora": None},
           {"label": "step 4 · ×1", "step": 4, "scale": 1.0, "lora": "checkpoints/step-000004/r-step000004.safetensors"},
           {"label": "final · ×0.5", "step": 8, "scale": 0.5, "lora": "r.safetensors"}]
PROMPTS = ["a photo of {trigger} toy robot", "{trigger} on the beach"]


def write_grid(run: RunFolder, name: str, *, seeds=(1, 2), created="2025-01-01T12:00:00+01:00") -> Path:
    """A grid folder as grids.py writes it: noise images (different per cell) and manifest.json."""
    folder = run.grids_dir / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    images, row = [], 0
    for prompt in PROMPTS:
        for seed in seeds:
            for index, col in enumerate(COLUMNS):
                file = f"r{row:02d}-c{index:02d}.png"
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / file)
                images.append({"file": file, "row": row, "column": index, "prompt": prompt.format(trigger="ohwx"),
                               "seed": seed} | {k: col[k] for k in ("step", "scale", "lora", "label")})
            row += 1
    manifest = {"name": name, "run": run.name, "created": created, "base_model": "tiny-sd15", "family": "sd15",
                "sampler": "DDIMScheduler", "inference_steps": 2, "guidance": 7.5, "width": 64, "height": 64,
                "negative_prompt": "", "trigger_word": "ohwx", "class_phrase": "toy robot", "prompts": PROMPTS,
                "seeds": list(seeds), "columns": COLUMNS, "images": images,
                "versions": {"diffusers": "0", "torch": "0"}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = RunFolder.create(tmp_path_factory.mktemp("outputs"), "r", load_config("tiny-demo", []))
    write_grid(run, "grid-a")
    return run


@pytest.fixture(scope="module")
def scored(run):
    return score_grid(run, "grid-a", **TINY)


# --- by hand: the model's own forward on each preprocessed image, normalise, dot ----------------

@torch.no_grad()
def clip_image(path: Path) -> torch.Tensor:
    clip = load_clip(TINY_RANDOM)
    feature = clip.model.encode_image(clip.preprocess(load_image(path)).unsqueeze(0).to(clip.device))[0].cpu()
    return feature / feature.norm()


@torch.no_grad()
def clip_text(text: str) -> torch.Tensor:
    import open_clip

    clip = load_clip(TINY_RANDOM)
    feature = clip.model.encode_text(open_clip.get_tokenizer(TINY_CLIP_CONFIG)([text]).to(clip.device))[0].cpu()
    return feature / feature.norm()


@torch.no_grad()
def dino_image(path: Path) -> torch.Tensor:
    dino = load_dino(TINY_RANDOM)
    pixels = dino.preprocess(load_image(path)).unsqueeze(0).to(dino.device)
    feature = dino.model.forward_head(dino.model.forward_features(pixels), pre_logits=True)[0].cpu()
    return feature / feature.norm()


def test_default_references_are_the_runs_training_images(run):
    demo = sorted(demo_dataset_dir().glob("*.png"))
    assert len(demo) == 16 and sorted(reference_images(run)) == demo


def test_scores_equal_a_direct_computation(run, scored):
    refs = reference_images(run)
    ref_clip = [clip_image(p) for p in refs]
    ref_dino = [dino_image(p) for p in refs]
    folder = run.grids_dir / "grid-a"
    assert len(scored["images"]) == 12 and scored["references"]["count"] == 16
    for entry in scored["images"]:
        path = folder / entry["file"]
        gen_clip, gen_dino = clip_image(path), dino_image(path)
        clip_i = sum(float(gen_clip @ r) for r in ref_clip) / len(refs)
        dino = sum(float(gen_dino @ r) for r in ref_dino) / len(refs)
        clip_t = float(gen_clip @ clip_text(entry["clip_prompt"]))
        assert entry["clip_i"] == pytest.approx(clip_i, abs=1e-6)
        assert entry["dino"] == pytest.approx(dino, abs=1e-6)
        assert entry["clip_t"] == pytest.approx(clip_t, abs=1e-6)
    assert len({round(e["clip_i"], 5) for e in scored["images"]}) == 12, "every image scores differently"
    for col in scored["columns"]:
        members = [e for e in scored["images"] if e["column"] == col["column"]]
        assert col["n"] == 4
        for key in ("clip_i", "clip_t", "dino"):
            assert col[key] == pytest.approx(sum(e[key] for e in members) / 4, abs=1e-12)


def test_clip_t_scores_the_prompt_with_the_class_phrase_in_place_of_the_trigger(run, scored):
    entry = scored["images"][0]
    assert (entry["prompt"], entry["clip_prompt"]) == ("a photo of ohwx toy robot", "a photo of toy robot")
    image = clip_image(run.grids_dir / "grid-a" / entry["file"])
    assert entry["clip_t"] == pytest.approx(float(image @ clip_text("a photo of toy robot")), abs=1e-6)
    assert entry["clip_t"] != pytest.approx(float(image @ clip_text("a photo of ohwx toy robot")), abs=1e-4)
    beach = next(e for e in scored["images"] if e["prompt"] == "ohwx on the beach")
    assert beach["clip_prompt"] == "toy robot on the beach"


def test_scores_json_is_written_beside_the_grid_in_the_documented_format(run, scored):
    on_disk = json.loads((run.grids_dir / "grid-a" / "scores.json").read_text(encoding="utf-8"))
    assert on_disk == scored == load_scores(run, "grid-a")
    assert scored["grid"] == "grid-a" and scored["run"] == "r"
    assert scored["backbones"] == {"clip": {"name": "tiny-random", "random_weights": True},
                                   "dino": {"name": "tiny-random", "random_weights": True}}
    assert scored["references"]["folder"] == str(demo_dataset_dir())
    assert [(c["column"], c["label"], c["step"], c["scale"]) for c in scored["columns"]] == \
        [(0, "prompt only", None, 0.0), (1, "step 4 · ×1", 4, 1.0), (2, "final · ×0.5", 8, 0.5)]
    first = scored["images"][0]
    assert set(first) >= {"file", "column", "label", "kind", "step", "scale", "prompt", "row_prompt", "clip_prompt",
                          "seed", "clip_i", "clip_t", "dino", "consistent"}
    assert [c["kind"] for c in scored["columns"]] == ["prompt_only", "lora", "lora"]
    assert all(0 <= c["consistency"] <= 1 for c in scored["columns"])
    assert scored["consistency"]["metric"] == "dino" and scored["consistency"]["references"] == 16
    assert (first["file"], first["column"], first["seed"]) == ("r00-c00.png", 0, 1)
    rec = scored["recommendation"]
    assert rec["step"] in (4, 8) and rec["reason"].startswith("[random weights — numbers mean nothing]")
    assert not list((run.grids_dir / "grid-a").glob(".*.tmp")), "no temp file left behind"


def test_the_same_grid_scored_twice_gives_identical_numbers(run, scored):
    again = score_grid(run, "grid-a", **TINY)
    for key in ("images", "columns", "recommendation", "backbones", "references"):
        assert again[key] == scored[key]


def test_the_references_own_clip_t_equals_a_direct_computation(run, scored):
    """The recommendation's prompt floor: each training image against its own caption (trigger replaced)."""
    config = run.config()
    pairs = [(image, image.with_suffix(".txt").read_text(encoding="utf-8").strip())
             for image in sorted(demo_dataset_dir().glob("*.png"))]
    by_hand = sum(float(clip_image(image) @ clip_text(clip_t_prompt(caption, config.data.trigger_word,
                                                                   config.data.class_phrase)))
                  for image, caption in pairs) / len(pairs)
    assert scored["references"]["captioned"] == len(pairs) == 16
    assert scored["references"]["clip_t"] == pytest.approx(by_hand, abs=1e-6)


def test_reference_folder_replaces_the_training_images(run, scored, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.new("RGB", (48, 48), colour).save(refs / f"ref{i}.png")
    result = score_grid(run, "grid-a", refs=refs, **TINY)
    assert result["references"] == {"folder": str(refs), "count": 2, "clip_t": None, "captioned": 0}  # no captions
    entry = result["images"][0]
    by_hand = sum(float(clip_image(run.grids_dir / "grid-a" / entry["file"]) @ clip_image(p))
                  for p in sorted(refs.glob("*.png"))) / 2
    assert entry["clip_i"] == pytest.approx(by_hand, abs=1e-6)
    assert entry["clip_i"] != pytest.approx(scored["images"][0]["clip_i"], abs=1e-4)
    assert entry["clip_t"] == scored["images"][0]["clip_t"], "CLIP-T does not depend on the references"
    score_grid(run, "grid-a", **TINY)  # leave the module's scores.json as the other tests expect


def test_progress_counts_every_image_encoded(run):
    seen = []
    score_grid(run, "grid-a", progress=lambda done, total: seen.append((done, total)), **TINY)
    assert seen[0] == (0, 28) and seen[-1] == (28, 28)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("prompt, trigger, phrase, expected", [
    ("a photo of ohwx toy robot", "ohwx", "toy robot", "a photo of toy robot"),
    ("a photo of OHWX  Toy Robot, studio light", "ohwx", "toy robot", "a photo of Toy Robot, studio light"),
    ("ohwx on the beach", "ohwx", "toy robot", "toy robot on the beach"),
    ("ohwx's hat, ohwxy and sohwx", "ohwx", "dog", "dog's hat, ohwxy and sohwx"),
    ("a photo of ohwx, on a table", "ohwx", "", "a photo of, on a table"),
    ("ohwx standing in snow", "ohwx", "", "standing in snow"),
    ("a photo of a cat", "", "toy robot", "a photo of a cat"),
])
def test_clip_t_prompt(prompt, trigger, phrase, expected):
    assert clip_t_prompt(prompt, trigger, phrase) == expected


def test_missing_or_broken_grids_are_named(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no grid 'nope'.*grids: grid-a"):
        score_grid(run, "nope", **TINY)
    with pytest.raises(ValueError, match="grid name '../r' must be"):
        score_grid(run, "../r", **TINY)
    broken = write_grid(run, "broken")
    (broken / "r00-c01.png").unlink()
    with pytest.raises(FileNotFoundError, match="r00-c01.png is missing"):
        score_grid(run, "broken", **TINY)
    with pytest.raises(ValueError, match="cannot read the reference images: .*empty.*--refs"):
        (tmp_path / "empty").mkdir()
        score_grid(run, "grid-a", refs=tmp_path / "empty", **TINY)
    assert not (broken / "scores.json").exists()
    assert load_scores(run, "broken") is None


def test_scoring_refuses_while_the_accelerator_is_busy(run):
    before = (run.grids_dir / "grid-a" / "scores.json").stat().st_mtime_ns
    with ACCELERATOR.hold("training run x"):
        with pytest.raises(AcceleratorBusy, match="training run x"):
            score_grid(run, "grid-a", **TINY)
    assert (run.grids_dir / "grid-a" / "scores.json").stat().st_mtime_ns == before


def test_offline_default_backbones_fail_with_the_model_named(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(BackboneError) as clip_err:
        load_clip(CLIP_DEFAULT)
    message = str(clip_err.value)
    assert "ViT-B-32-quickgelu/openai" in message and "HF_HOME" in message and "--clip MODEL/PATH" in message
    with pytest.raises(BackboneError) as dino_err:
        load_dino(DINO_DEFAULT)
    message = str(dino_err.value)
    assert "dino-vits16" in message and "vit_small_patch16_224.dino" in message and "--dino PATH" in message


def test_unknown_backbones_say_what_is_accepted(tmp_path):
    with pytest.raises(BackboneError, match="open_clip has no model 'ViT-Q-99'"):
        load_clip("ViT-Q-99/openai")
    with pytest.raises(BackboneError, match="trained with QuickGELU; use ViT-B-32-quickgelu/openai"):
        load_clip("ViT-B-32/openai")
    with pytest.raises(BackboneError, match="give MODEL/TAG"):
        load_clip("clip")
    with pytest.raises(BackboneError, match="weights file .*missing.bin does not exist"):
        load_clip(f"ViT-B-32-quickgelu/{tmp_path / 'missing.bin'}")
    with pytest.raises(BackboneError, match="not one of dino-vits16, none, tiny-random and no such file"):
        load_dino(str(tmp_path / "nothing-here"))


def test_weights_from_local_files(tmp_path):
    import open_clip
    import timm
    from safetensors.torch import save_file

    tiny = load_clip(TINY_RANDOM)
    torch.save(tiny.model.state_dict(), tmp_path / "tiny-clip.bin")
    from_file = load_clip(f"{TINY_CLIP_CONFIG}/{tmp_path / 'tiny-clip.bin'}")
    image = [Image.new("RGB", (40, 40), (10, 200, 90))]
    assert not from_file.random_weights
    assert torch.equal(from_file.encode_images(image), tiny.encode_images(image))
    assert torch.equal(from_file.encode_texts(["a toy robot"]), tiny.encode_texts(["a toy robot"]))
    folder = tmp_path / "clip-folder"  # open_clip's own local layout: config + weights side by side
    folder.mkdir()
    (tmp_path / "tiny-clip.bin").rename(folder / "open_clip_pytorch_model.bin")
    config = {"model_cfg": open_clip.get_model_config(TINY_CLIP_CONFIG)}
    (folder / "open_clip_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert torch.equal(load_clip(f"local-dir:{folder}").encode_images(image), tiny.encode_images(image))

    vits16 = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    (tmp_path / "dino").mkdir()
    save_file(vits16.state_dict(), tmp_path / "dino" / "model.safetensors")
    dino = load_dino(str(tmp_path / "dino"))
    loaded = dino.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in vits16.state_dict().items())
    assert dino.encode_images(image).shape == (1, 384) and not dino.random_weights


def test_a_manifest_without_what_scoring_needs_is_refused(run):
    folder = write_grid(run, "no-prompts")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    del manifest["images"][3]["prompt"]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match="no-prompts/manifest.json: image entry .* lacks prompt"):
        score_grid(run, "no-prompts", **TINY)


def test_consistency_is_the_share_above_the_references_leave_one_out_threshold(run, scored):
    refs = reference_images(run)
    ref_dino = torch.stack([dino_image(p) for p in refs]).double()
    sims = ref_dino @ ref_dino.T
    loo = [(float(sims[j].sum()) - float(sims[j, j])) / (len(refs) - 1) for j in range(len(refs))]
    threshold = min(loo)
    assert scored["consistency"]["threshold"] == pytest.approx(threshold, abs=1e-9)
    assert scored["consistency"]["reference_mean"] == pytest.approx(sum(loo) / len(loo), abs=1e-9)
    # every reference clears it, by construction: the references themselves would be 100 % consistent
    assert all(value >= threshold for value in loo)
    for entry in scored["images"]:
        assert entry["consistent"] == (entry["dino"] >= threshold)
    for col in scored["columns"]:
        members = [e for e in scored["images"] if e["column"] == col["column"]]
        assert col["consistency"] == pytest.approx(sum(e["consistent"] for e in members) / len(members))
    assert consistency_threshold(ref_dino.float()).value == pytest.approx(threshold, abs=1e-6)


def test_without_dino_consistency_uses_clip_i_and_one_reference_gives_none(run, tmp_path):
    clip_only = score_grid(run, "grid-a", clip=TINY_RANDOM, dino="none")
    assert clip_only["consistency"]["metric"] == "clip_i"
    assert all(e["consistent"] == (e["clip_i"] >= clip_only["consistency"]["threshold"]) for e in clip_only["images"])
    one = tmp_path / "one"
    one.mkdir()
    Image.new("RGB", (48, 48), (200, 30, 30)).save(one / "ref.png")
    lonely = score_grid(run, "grid-a", refs=one, **TINY)
    assert lonely["consistency"]["threshold"] is None and "at least 2 reference images" in lonely["consistency"]["note"]
    assert all(c["consistency"] is None for c in lonely["columns"])
    score_grid(run, "grid-a", **TINY)  # leave the module's scores.json as the other tests expect


def test_baseline_and_external_cells_are_scored_against_the_rows_prompt(run):
    folder = write_grid(run, "v2-grid")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["version"], manifest["baseline_prompts"] = 2, ["a long storybook description of a robot"] * 2
    manifest["columns"] = [{"kind": "prompt_only", "label": "baseline prompt", "step": None, "scale": 0.0, "lora": None},
                           COLUMNS[1] | {"kind": "lora"},
                           {"kind": "external", "label": "Freepik", "step": None, "scale": 0.0, "lora": None,
                            "source": "/somewhere"}]
    for image in manifest["images"]:
        image["row_prompt"] = image["prompt"]
        if image["column"] == 0:
            image["prompt"] = "a long storybook description of a robot"
        if image["column"] == 2:
            image |= {"seed": None, "step": None, "scale": 0.0, "lora": None, "label": "Freepik", "source": "/x.png"}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    scores = score_grid(run, "v2-grid", **TINY)
    for entry in scores["images"]:
        assert entry["clip_prompt"] == clip_t_prompt(entry["row_prompt"], "ohwx", "toy robot")
        image = clip_image(folder / entry["file"])
        assert entry["clip_t"] == pytest.approx(float(image @ clip_text(entry["clip_prompt"])), abs=1e-6)
    baseline_cell = next(e for e in scores["images"] if e["column"] == 0)
    assert baseline_cell["prompt"] != baseline_cell["row_prompt"]
    assert [(c["kind"], c["label"]) for c in scores["columns"]] == [("prompt_only", "baseline prompt"),
                                                                    ("lora", "step 4 · ×1"), ("external", "Freepik")]
    assert scores["columns"][2]["consistency"] is not None and scores["columns"][2]["source"] == "/somewhere"
    assert scores["baseline_prompts"] == manifest["baseline_prompts"]
    assert scores["recommendation"]["label"] == "step 4 · ×1", "an external column is never recommended"
