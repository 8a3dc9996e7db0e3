"""The shipped toy world: toy-sd15 and toy-clip are the files pretrain-world made, and they work."""

import pytest
import torch

from studio.engine.builtin import BUILTIN_MODELS, noise_note
from studio.engine.models import load_pipeline, resolve_base
from studio.eval.backbones import DINO_NONE, TOY_CLIP, default_backbones, load_clip
from studio.world.builtin import changed_files, provenance
from studio.world.judge import read_picture
from studio.world.report import adherence_scenes
from studio.world.scene import COLOURS, SHAPES, draw_scene, phrase, sample_scene, scene_rng


def test_shipped_weights_are_the_ones_provenance_lists():
    assert changed_files() == []


def test_provenance_says_how_they_were_made():
    record = provenance()
    assert record["script"].startswith("studio/world/pretrain.py")
    assert set(record["phases"]) == {"vae", "clip", "unet"}
    for phase in record["phases"].values():
        assert phase["steps"] > 0 and phase["cpu_s"] > 0 and "loss" in phase["final"]
    assert record["cpu_s_total"] == pytest.approx(sum(p["cpu_s"] for p in record["phases"].values()), abs=1)
    assert all(len(digest) == 64 for digest in record["files"].values())


def test_toy_models_are_built_in_and_pretrained():
    assert resolve_base("toy-sd15").kind == "builtin" and BUILTIN_MODELS["toy-sd15"].pretrained
    assert noise_note("toy-sd15") is None and noise_note("tiny-sd15") and noise_note("tiny-sdxl")
    assert default_backbones("toy-sd15") == (TOY_CLIP, DINO_NONE)
    assert load_clip(TOY_CLIP).random_weights is False


@pytest.fixture(scope="module")
def toy_pipe():
    pipe = load_pipeline("toy-sd15")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_toy_sd15_draws_the_background_it_is_asked_for(toy_pipe):
    from studio.engine.sampling import generate

    pairs = adherence_scenes()[:6]
    readings = [read_picture(generate(toy_pipe, scene.phrase, seed, steps=20, guidance=7.5, width=64, height=64))
                for scene, seed in pairs]
    wanted = [scene.background for scene, _ in pairs]
    assert [r.background for r in readings] == wanted


def test_toy_clip_names_what_a_drawn_scene_shows():
    clip = load_clip(TOY_CLIP)
    scenes = [sample_scene(scene_rng(99, i)) for i in range(45)]
    images = clip.encode_images([draw_scene(s) for s in scenes])
    right = 0
    for feature, scene in zip(images, scenes):
        options = [(phrase(c, s, b), (c, s, b)) for c in COLOURS for b in COLOURS if b != c for s in SHAPES]
        texts = clip.encode_texts([t for t, _ in options])
        right += options[int(torch.argmax(texts @ feature))][1] == (scene.colour, scene.shape, scene.background)
    assert right / len(scenes) >= 0.9, f"toy-clip picked the right one of 90 captions for {right} of {len(scenes)}"
