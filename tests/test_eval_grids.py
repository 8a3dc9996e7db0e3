"""Comparison grids on the tiny SD1.5 run: adapters switch without leaking (each column equals a fresh
pipeline with that LoRA file), the base pipeline loads once, the grid folder holds what a user opens
(images, labelled grid.png, manifest), and the manifest renders the same pixels again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import studio.eval.pipelines as pipelines
from studio.core.lock import ACCELERATOR, AcceleratorBusy
from studio.engine.models import load_pipeline
from studio.engine.runs import RunFolder
from studio.engine.sampling import generate
from studio.eval.columns import external_from_folder, lora_steps, plan_columns
from studio.eval.grids import grid_spec, list_grids, load_grid, make_grid, spec_from_manifest
from studio.eval.manifest import Column, read_grid_manifest
from studio.eval.parsing import parse_prompts, parse_scales, parse_seeds, parse_steps
from studio.eval.pipelines import PipelineCache

PROMPT = "a photo of ohwx toy robot"
STEPS = 3


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _image(pipe, prompt: str = PROMPT, seed: int = 1) -> np.ndarray:
    return _pixels(generate(pipe, prompt, seed, steps=STEPS, guidance=7.0, width=64, height=64))


def _amplify(path: Path, factor: float) -> None:
    """Scale a LoRA file's strength (every `.alpha`): the 8-step tiny LoRA changes pixels by only 1–2
    levels, too little to tell scales apart; the cache's job is the same at any strength."""
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    tensors = {k: v * factor if k.endswith(".alpha") else v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)


def _with_text_encoder_lora(src: Path, dst: Path) -> None:
    """`src` plus a LoRA on the first text-encoder layer's attention projections (kohya names)."""
    with safe_open(str(src), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    gen = torch.Generator().manual_seed(0)
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        name = f"lora_te_text_model_encoder_layers_0_self_attn_{proj}"
        tensors |= {f"{name}.lora_down.weight": torch.randn(4, 32, generator=gen).half(),
                    f"{name}.lora_up.weight": torch.randn(32, 4, generator=gen).half(),
                    f"{name}.alpha": torch.tensor(4.0).half()}
    save_file(tensors, str(dst), metadata=metadata)


@pytest.fixture(scope="module")
def run(finished_run, tmp_path_factory) -> RunFolder:
    """A copy of the shared finished run (same name: its LoRA files are named after it), with stronger LoRAs."""
    copy = RunFolder(shutil.copytree(finished_run.path, tmp_path_factory.mktemp("outputs") / finished_run.name))
    for lora in [copy.final_lora, copy.checkpoint_dir(4) / copy.lora_file_name(4)]:
        _amplify(lora, 64.0)
    return copy


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache()


@pytest.fixture(scope="module")
def fresh(run):
    """Images of fresh pipelines: the base model alone, and + load_lora_weights of each file."""
    images = {"base": _image(load_pipeline("tiny-sd15"))}
    for key, lora in [("final", run.final_lora), ("step4", run.checkpoint_dir(4) / run.lora_file_name(4))]:
        pipe = load_pipeline("tiny-sd15")
        pipe.load_lora_weights(str(lora))
        images[key] = _image(pipe)
    return images


def test_parsing_what_the_user_typed(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my prompts\na photo of {trigger} toy robot\n\n  on the beach  \n", encoding="utf-8")
    assert parse_prompts(str(prompts)) == ["a photo of {trigger} toy robot", "on the beach"]
    assert parse_prompts("one prompt\nanother") == ["one prompt", "another"]
    assert parse_prompts("x" * 5000) == ["x" * 5000]  # too long for a file name: a prompt
    with pytest.raises(ValueError, match="holds no prompt"):
        parse_prompts("# only a comment")
    assert parse_seeds("1, 2,2") == [1, 2]
    assert parse_scales("0,0.5,1") == [0.0, 0.5, 1.0]
    assert parse_steps("ALL") == "all" and parse_steps("final") == "final" and parse_steps("8,4") == [8, 4]
    assert parse_steps("4,final") == [4, "final"] and parse_steps(["8", "final"]) == [8, "final"]
    for bad, call in [("1,a", parse_seeds), ("-1", parse_seeds), ("half", parse_scales), ("inf", parse_scales),
                      ("latest", parse_steps), ("", parse_seeds)]:
        with pytest.raises(ValueError):
            call(bad)


def test_columns_are_prompt_only_then_each_lora_at_each_scale(run):
    assert lora_steps(run) == [4, 8]
    labels = [c.label for c in plan_columns(run)]
    assert labels == ["prompt only", "final · ×1"]
    final = plan_columns(run)[1]
    assert final.step == 8 and final.lora == run.final_lora.name and (run.path / final.lora).is_file()

    every = plan_columns(run, parse_steps("all"), parse_scales("0,0.5,1"))
    # scale 0 is the prompt-only column; the final LoRA is step 8's checkpoint, so "all" lists it once
    assert [c.label for c in every] == ["prompt only", "step 4 · ×0.5", "step 4 · ×1", "step 8 · ×0.5",
                                        "step 8 · ×1"]
    assert every[1].lora == f"checkpoints/step-000004/{run.name}-step000004.safetensors"
    assert [c.label for c in plan_columns(run, [8], [1.0], prompt_only=False)] == ["step 8 · ×1"]
    # the Compare tab's picks: steps ascending whatever their order, the final LoRA last
    assert [c.label for c in plan_columns(run, [8, "final", 4], [1.0])] == ["prompt only", "step 4 · ×1",
                                                                           "step 8 · ×1", "final · ×1"]
    assert [c.kind for c in plan_columns(run, [4], [1.0], baseline=True)] == ["prompt_only", "lora"]
    assert plan_columns(run, [4], [1.0], baseline=True)[0].label == "baseline prompt"
    with pytest.raises(ValueError, match=r"no checkpoint LoRA at step 5 \(available: 4, 8\)"):
        plan_columns(run, [5])


def test_adapters_switch_without_leaking(run, cache, fresh):
    pipe = cache.pipeline(run.config())
    step4 = run.checkpoint_dir(4) / run.lora_file_name(4)
    order = [("prompt only", None, 0.0), ("final ×1", run.final_lora, 1.0), ("step4 ×1", step4, 1.0),
             ("final ×0.5", run.final_lora, 0.5), ("prompt only", None, 0.0), ("final ×1", run.final_lora, 1.0),
             ("final ×0 is prompt only", run.final_lora, 0.0), ("step4 ×1", step4, 1.0)]
    seen: dict[str, np.ndarray] = {}
    for label, lora, scale in order:
        cache.use_lora(pipe, lora, scale)
        image = _image(pipe)
        key = "prompt only" if scale == 0 else label
        if key in seen:
            assert np.array_equal(image, seen[key]), f"{label} changed after switching adapters"
        seen[key] = image

    assert np.abs(seen["prompt only"] - fresh["base"]).max() <= 1.0
    assert np.abs(seen["final ×1"] - fresh["final"]).max() <= 1.0
    assert np.abs(seen["step4 ×1"] - fresh["step4"]).max() <= 1.0
    assert np.abs(fresh["final"] - fresh["base"]).mean() > 5, "the LoRA changes too little for this test to mean much"
    assert np.abs(seen["final ×0.5"] - seen["final ×1"]).mean() > 2
    assert np.abs(seen["final ×0.5"] - seen["prompt only"]).mean() > 2


def test_a_text_encoder_lora_does_not_leak_into_the_next_one(run, cache, fresh, tmp_path):
    with_te = tmp_path / "with-te.safetensors"
    _with_text_encoder_lora(run.final_lora, with_te)
    pipe = cache.pipeline(run.config())
    cache.use_lora(pipe, with_te, 1.0)
    assert np.abs(_image(pipe) - fresh["final"]).mean() > 2, "the text-encoder LoRA changed nothing"
    cache.use_lora(pipe, run.final_lora, 1.0)  # UNet only: the text encoder must be the base one again
    assert np.abs(_image(pipe) - fresh["final"]).max() <= 1.0
    cache.use_lora(pipe, None, 0.0)
    assert np.abs(_image(pipe) - fresh["base"]).max() <= 1.0


def _spec(run, columns, seeds=(1,)):
    # the guidance _image renders with, so that cells compare with fresh pipelines' images
    return grid_spec(run, ["a photo of {trigger} toy robot"], list(seeds), columns, inference_steps=STEPS,
                     guidance=7.0)


def test_grid_folder_holds_images_labelled_png_and_manifest_and_the_pipeline_stays_loaded(run, cache, fresh,
                                                                                         monkeypatch):
    loads = []
    real_load = pipelines.load_pipeline
    monkeypatch.setattr(pipelines, "load_pipeline", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    columns = plan_columns(run, "all", [0.5, 1.0])
    reports = []
    grid = make_grid(run, _spec(run, columns, seeds=(1, 2)), cache=cache, name="first",
                     progress=lambda done, total: reports.append((done, total)))
    loaded = len(loads)
    pipe = cache.pipeline(run.config())
    second = make_grid(run, _spec(run, columns[:2]), cache=cache)
    assert len(loads) == loaded <= 1, "the second grid loaded the base model again"
    assert cache.pipeline(run.config()) is pipe

    assert grid.folder == run.grids_dir / "first"
    assert reports == [(n, 10) for n in range(1, 11)]
    names = sorted(p.name for p in grid.folder.iterdir())
    cells = [f"r{r:02d}-c{c:02d}.png" for r in range(2) for c in range(5)]
    assert names == sorted(["grid.png", "manifest.json", *cells])
    manifest = json.loads((grid.folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == grid.manifest.to_dict() and manifest["version"] == 2
    assert manifest["run"] == run.name and manifest["base_model"] == "tiny-sd15" and manifest["family"] == "sd15"
    assert manifest["sampler"] == type(pipe.scheduler).__name__
    assert (manifest["inference_steps"], manifest["width"], manifest["height"]) == (STEPS, 64, 64)
    assert manifest["trigger_word"] == "ohwx" and manifest["class_phrase"] == "toy robot"
    assert manifest["prompts"] == ["a photo of {trigger} toy robot"] and manifest["seeds"] == [1, 2]
    assert [c["label"] for c in manifest["columns"]] == [c.label for c in columns]
    assert manifest["versions"]["diffusers"]
    first = manifest["images"][0]
    assert first == {"file": "r00-c00.png", "row": 0, "column": 0, "prompt": PROMPT, "row_prompt": PROMPT, "seed": 1,
                     "step": None, "scale": 0.0, "lora": None, "label": "prompt only"}
    assert manifest["columns"][0] == {"kind": "prompt_only", "label": "prompt only", "step": None, "scale": 0.0,
                                      "lora": None}
    assert manifest["images"][-1]["file"] == "r01-c04.png"
    assert {(im["row"], im["seed"]) for im in manifest["images"]} == {(0, 1), (1, 2)}
    # a row keeps its seed across columns: prompt only is the base model's image, the final LoRA's the fresh one
    assert np.abs(_pixels(Image.open(grid.folder / "r00-c00.png")) - fresh["base"]).max() <= 1.0
    final = next(im for im in manifest["images"] if im["row"] == 0 and im["label"] == "step 8 · ×1")
    assert final["lora"].endswith(run.lora_file_name(8)) and final["step"] == 8

    picture = Image.open(grid.grid_png)
    assert picture.width >= 5 * 128 + 100 and picture.height >= 2 * 128 + 20, "cells are enlarged to be readable"
    header = np.asarray(picture.convert("L"))[:20, 220:]
    assert (header < 128).any(), "no column labels drawn"
    assert list_grids(run)[:2] == [second.name, "first"]
    assert second.name.startswith("grid-") and len(second.images) == 2


def test_a_grid_renders_the_same_pixels_again_from_its_manifest(run, cache):
    grid = make_grid(run, _spec(run, plan_columns(run, [4], [0.5])), cache=cache, name="original")
    original = load_grid(run, "original")
    again = make_grid(run, spec_from_manifest(original.manifest, original.folder), cache=cache, name="again")
    assert [im.file for im in again.images] == [im.file for im in grid.images]
    for image in grid.images:
        assert np.array_equal(_pixels(Image.open(grid.folder / image.file)),
                              _pixels(Image.open(again.folder / image.file))), image.file
    assert np.array_equal(_pixels(Image.open(grid.grid_png)), _pixels(Image.open(again.grid_png)))
    assert again.manifest.columns == grid.manifest.columns


def test_refusals_leave_no_folder_behind(run, cache, monkeypatch):
    spec = _spec(run, plan_columns(run, [4]))
    make_grid(run, spec, cache=cache, name="taken")
    with pytest.raises(ValueError, match="already has a grid named 'taken'"):
        make_grid(run, spec, cache=cache, name="taken")
    with pytest.raises(ValueError, match="grid name"):
        make_grid(run, spec, cache=cache, name="../escape")
    with pytest.raises(ValueError, match="multiples of 8"):
        grid_spec(run, ["x"], [1], spec.columns, size=(60, 64))
    missing = Column("lora", "step 12 · ×1", step=12, scale=1.0, lora="checkpoints/step-000012/gone.safetensors")
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        make_grid(run, _spec(run, [missing]), cache=cache, name="missing")
    with ACCELERATOR.hold("training"):
        with pytest.raises(AcceleratorBusy, match="training"):
            make_grid(run, spec, cache=cache, name="busy")

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return generate(*args, **kwargs)

    monkeypatch.setattr("studio.engine.sampling.generate", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        make_grid(run, _spec(run, plan_columns(run, [4])), cache=cache, name="crashed")
    left = sorted(p.name for p in run.grids_dir.iterdir())
    assert not [n for n in left if n.startswith(".") or n in ("missing", "busy", "crashed")], left

    with pytest.raises(FileNotFoundError, match="has no grid 'nope'"):
        load_grid(run, "nope")
    with pytest.raises(ValueError, match="grid name"):
        load_grid(run, "../..")


BASELINE = "a storybook drawing of a small silver toy robot with round eyes"


def test_the_prompt_only_column_renders_the_baseline_prompt_and_both_are_recorded(run, cache):
    columns = plan_columns(run, [4], [1.0], baseline=True)
    spec = grid_spec(run, ["a photo of {trigger} toy robot"], [1, 2], columns, baseline_prompts=[BASELINE],
                     inference_steps=STEPS)
    grid = make_grid(run, spec, cache=cache, name="with-baseline")
    manifest = read_grid_manifest(grid.folder)
    assert manifest.baseline_prompts == [BASELINE] and manifest.prompts == ["a photo of {trigger} toy robot"]
    cells = {(im.row, im.column): im for im in manifest.images}
    assert (cells[(1, 0)].prompt, cells[(1, 0)].row_prompt, cells[(1, 0)].seed) == (BASELINE, PROMPT, 2)
    assert (cells[(1, 1)].prompt, cells[(1, 1)].label) == (PROMPT, "step 4 · ×1")
    # the baseline cell is the base model's image of the baseline prompt at the row's seed
    pipe = cache.pipeline(run.config())
    cache.use_lora(pipe, None, 0.0)
    expected = _pixels(generate(pipe, BASELINE, 2, steps=STEPS, guidance=spec.guidance, width=64, height=64))
    assert np.abs(_pixels(Image.open(grid.folder / cells[(1, 0)].file)) - expected).max() <= 1.0
    assert np.abs(_pixels(Image.open(grid.folder / cells[(1, 0)].file)) - _image(pipe, PROMPT, 2)).mean() > 1, \
        "the baseline prompt should draw something else than the row's prompt"
    with pytest.raises(ValueError, match="2 prompts but 3 baseline prompts"):
        grid_spec(run, ["a", "b"], [1], columns, baseline_prompts=["x", "y", "z"])


def _external_folder(folder: Path, colours, prompts: dict | None = None) -> Path:
    folder.mkdir()
    for name, colour in colours.items():
        Image.new("RGB", (96, 80), colour).save(folder / name)
    if prompts is not None:
        (folder / "prompts.json").write_text(json.dumps(prompts), encoding="utf-8")
    return folder


def test_another_generators_images_become_a_labelled_column(run, cache, tmp_path):
    # file order (natural: 2 before 10), one image per row
    by_order = _external_folder(tmp_path / "freepik", {"img-10.png": (0, 0, 250), "img-2.png": (250, 0, 0)})
    external = [external_from_folder("Freepik", by_order)]
    columns = plan_columns(run, [4], [1.0], external=external)
    assert [(c.kind, c.label) for c in columns] == [("prompt_only", "prompt only"), ("lora", "step 4 · ×1"),
                                                    ("external", "Freepik")]
    grid = make_grid(run, grid_spec(run, [PROMPT], [1, 2], columns, external=external, inference_steps=STEPS),
                     cache=cache, name="with-external")
    cells = {(im.row, im.column): im for im in grid.manifest.images}
    assert cells[(0, 2)].source == str(by_order / "img-2.png") and cells[(1, 2)].source == str(by_order / "img-10.png")
    assert cells[(0, 2)].seed is None and cells[(0, 2)].row_prompt == PROMPT and cells[(0, 2)].label == "Freepik"
    assert _pixels(Image.open(grid.folder / cells[(0, 2)].file))[0, 0].tolist() == [250, 0, 0]
    assert read_grid_manifest(grid.folder).columns[2].source == str(by_order)

    # by prompt: prompts.json names each image's prompt ({trigger} filled in); rows of one prompt take its images
    by_prompt = _external_folder(tmp_path / "deepai", {"a.png": (10, 200, 10), "b.png": (200, 200, 10),
                                                       "c.png": (10, 10, 10)},
                                 {"a.png": "a photo of {trigger} toy robot", "b.png": "on the beach",
                                  "c.png": "A photo of ohwx  toy robot"})
    external = [external_from_folder("DeepAI", by_prompt)]
    columns = plan_columns(run, [], prompt_only=False, external=external)
    one_seed = grid_spec(run, [PROMPT, "on the beach"], [1], columns, external=external, inference_steps=STEPS)
    assert [p.name for p in one_seed.external["DeepAI"]] == ["a.png", "b.png"]
    two_seeds = grid_spec(run, [PROMPT], [1, 2], columns, external=external, inference_steps=STEPS)
    assert [p.name for p in two_seeds.external["DeepAI"]] == ["a.png", "c.png"], "same prompt, any case and spacing"
    with pytest.raises(ValueError, match="no image left for the prompt 'on the beach' \\(2 rows use it"):
        grid_spec(run, [PROMPT, "on the beach"], [1, 2], columns, external=external)


def test_external_images_that_do_not_fit_the_rows_are_refused_with_the_counts(run, tmp_path):
    three = _external_folder(tmp_path / "three", {f"{i}.png": (i * 50, 0, 0) for i in range(3)})
    external = [external_from_folder("Gemini", three)]
    columns = plan_columns(run, [4], [1.0], external=external)
    with pytest.raises(ValueError, match=r"external column Gemini: 3 images for 2 rows"):
        grid_spec(run, [PROMPT], [1, 2], columns, external=external)
    with pytest.raises(ValueError, match="label 'step 4 · ×1' is taken"):
        plan_columns(run, [4], [1.0], external=[external_from_folder("step 4 · ×1", three)])
    with pytest.raises(FileNotFoundError, match="folder .*nowhere does not exist"):
        external_from_folder("X", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        external_from_folder("X", tmp_path / "empty")


def test_a_version_1_manifest_still_loads_and_renders_again(run, cache):
    grid = make_grid(run, _spec(run, plan_columns(run, [4])), cache=cache, name="to-age")
    data = json.loads((grid.folder / "manifest.json").read_text(encoding="utf-8"))
    for key in ("version", "baseline_prompts"):
        del data[key]
    for column in data["columns"]:
        del column["kind"]
    for image in data["images"]:
        del image["row_prompt"]
    (grid.folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    old = load_grid(run, "to-age").manifest
    assert old.version == 1 and [c.kind for c in old.columns] == ["prompt_only", "lora"]
    assert old.images[0].row_prompt == old.images[0].prompt == PROMPT
    again = make_grid(run, spec_from_manifest(old, grid.folder), cache=cache, name="from-v1")
    assert np.array_equal(_pixels(Image.open(again.folder / "r00-c01.png")),
                          _pixels(Image.open(grid.folder / "r00-c01.png")))


@pytest.mark.parametrize("labels", [
    ["prompt only", "step 200 · ×0.5", "final · ×1"],
    ["prompt only", "step 1000 · ×0.75", "Freepik (external)", "a-generator-name-without-any-space-in-it"],
])
def test_every_column_label_is_drawn_inside_its_own_column(labels):
    """The labelled grid's headers wrap inside their cell, and the last one keeps off the right edge."""
    from studio.eval.grid_image import MARGIN, PAD, ROW_LABEL_WIDTH, draw_grid, fit_cell

    cells = [[Image.new("RGB", (64, 64), (255, 255, 255)) for _ in labels]]
    picture = np.asarray(draw_grid(cells, labels, [("a photo", "seed 1")]).convert("L"))
    cell_w = fit_cell(cells[0][0]).width
    header = picture[:PAD * 2 + 3 * 20, ROW_LABEL_WIDTH:]  # the header band above the cells
    ink = np.nonzero(header.min(axis=0) < 200)[0]
    assert picture.shape[1] - (ROW_LABEL_WIDTH + ink.max()) > MARGIN, "the last label keeps off the right edge"
    gap = picture.shape[1] - ROW_LABEL_WIDTH - MARGIN - len(labels) * cell_w
    pitch = cell_w + gap / max(1, len(labels) - 1)
    for column in range(len(labels)):  # no label runs into the next column
        inside = ink[(ink >= column * pitch) & (ink < column * pitch + pitch)]
        assert len(inside) and inside.max() < column * pitch + cell_w, labels[column]
