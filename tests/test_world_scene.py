"""The toy world's pictures, captions and pixel rule."""

import random

import numpy as np
import pytest

from studio.world.judge import read_picture
from studio.world.scene import (COLOURS, SHAPES, TINT, all_captions, caption_parts, draw_clutter, draw_scene,
                                sample_scene, scene_rng)


def test_scenes_are_pure_functions_of_seed_and_index():
    a = [np.asarray(draw_scene(sample_scene(scene_rng(7, i)))) for i in range(5)]
    b = [np.asarray(draw_scene(sample_scene(scene_rng(7, i)))) for i in range(5)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == np.asarray(draw_scene(sample_scene(scene_rng(8, 0))))).all()


def test_object_and_background_never_share_a_colour():
    rng = random.Random(3)
    assert all(s.colour != s.background for s in (sample_scene(rng) for _ in range(500)))
    with pytest.raises(ValueError, match="both red"):
        sample_scene(rng, colour="red", background="red")


def test_named_colours_are_far_apart_even_with_their_tints():
    names = list(COLOURS)
    nearest = min(np.linalg.norm(np.subtract(COLOURS[a], COLOURS[b])) for a in names for b in names if a < b)
    widest_tint_gap = 2 * np.sqrt(3) * TINT  # two renditions of one colour differ by at most this
    assert nearest > 150 > 4 * widest_tint_gap


def test_the_pixel_rule_reads_every_drawn_scene_right():
    rng = random.Random(11)
    for _ in range(300):
        scene = sample_scene(rng)
        reading = read_picture(draw_scene(scene))
        assert (reading.background, reading.colour) == (scene.background, scene.colour), scene


def test_the_pixel_rule_finds_no_object_on_a_plain_picture():
    from PIL import Image

    reading = read_picture(Image.new("RGB", (64, 64), COLOURS["blue"]))
    assert reading.background == "blue" and reading.colour is None


def test_captions_say_what_they_mention():
    rng = random.Random(5)
    scene = sample_scene(rng, colour="red", background="blue", shape="circle")
    seen = {caption_parts(scene, rng) for _ in range(400)}
    assert ("a red circle on a blue background", frozenset({"colour", "shape", "background"})) in seen
    assert ("a circle on a blue background", frozenset({"shape", "background"})) in seen
    assert ("a red circle", frozenset({"colour", "shape"})) in seen
    for text, mentions in seen:
        assert ("red" in text) == ("colour" in mentions) and ("blue" in text) == ("background" in mentions)
    assert {text for text, _ in seen} <= set(all_captions())


def test_every_caption_is_listed_once():
    captions = all_captions()
    pairs = len(COLOURS) * (len(COLOURS) - 1)
    assert len(captions) == len(set(captions)) == 2 * pairs * len(SHAPES) + 2 * len(COLOURS) * len(SHAPES)


def test_clutter_is_varied():
    rng = random.Random(0)
    pictures = [np.asarray(draw_clutter(rng)) for _ in range(8)]
    assert all(p.shape == (64, 64, 3) for p in pictures)
    assert len({p.reshape(-1, 3).mean(axis=0).round().tobytes() for p in pictures}) == 8
