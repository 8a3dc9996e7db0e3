"""The built-in demo dataset: generated once into the cache, deterministic, captioned, versioned."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.tokenizer import clip_tokenizer
from studio.data import demo
from studio.data.dataset import BUILTIN_DEMO, resolve_data_dir, scan_dataset
from studio.data.demo import DEMO_CLASS, DEMO_TRIGGER, demo_dataset_dir, generate_demo_dataset
from studio.data.report import build_report


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_demo_is_generated_into_the_cache_with_captions(cache):
    folder = demo_dataset_dir()
    assert folder == cache / "datasets" / "demo"
    assert resolve_data_dir(BUILTIN_DEMO) == folder
    assert sorted(p.name for p in folder.parent.iterdir()) == ["demo"], "no temp folders left behind"

    images = sorted(folder.glob("*.png"))
    assert len(images) == 16
    sizes = [Image.open(p).size for p in images]
    assert sizes.count((128, 128)) == 12 and sizes.count((128, 96)) == 2 and sizes.count((96, 128)) == 2
    for image in images:
        caption = image.with_suffix(".txt").read_text(encoding="utf-8").strip()
        assert f"{DEMO_TRIGGER} {DEMO_CLASS}" in caption and "background" in caption

    scan = scan_dataset(BUILTIN_DEMO)
    assert len(scan.items) == 16 and scan.skipped == [] and scan.warnings == []
    assert {item.caption_source for item in scan.items} == {"txt"}
    assert len({item.fingerprint for item in scan.items}) == 16, "16 different pictures, no duplicates"

    report = build_report(scan, resolution=128, trigger_word=DEMO_TRIGGER, bucket_step=32)
    assert report["ok"] and report["trigger_word"]["missing"] == [] and report["over_77_tokens"] == []
    assert report["buckets"] == {"96x160": 2, "128x128": 12, "160x96": 2}


def test_demo_trigger_is_a_single_rare_token():
    ids = clip_tokenizer()(DEMO_TRIGGER).input_ids
    assert len(ids) == 3, f"{DEMO_TRIGGER!r} should be one token between start and end, got {ids}"


def test_demo_pictures_show_one_robot_on_varied_backgrounds(cache):
    images = [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in sorted(demo_dataset_dir().glob("*.png"))]
    corners = {tuple(image[0, 0]) for image in images}
    assert len(corners) >= 6, "backgrounds vary"
    for image in images:
        orange = (abs(image - demo._BODY).sum(axis=-1) < 40).mean()
        cyan = (abs(image - demo._EYES).sum(axis=-1) < 40).mean()
        assert 0.02 < orange < 0.4 and cyan > 0.001, "every picture shows the orange robot with cyan eyes"


def test_demo_is_deterministic(tmp_path):
    first = generate_demo_dataset(tmp_path / "one")
    second = generate_demo_dataset(tmp_path / "two")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert [p.with_suffix(".txt").read_text() for p in first] == [p.with_suffix(".txt").read_text() for p in second]


def test_demo_is_built_once_and_rebuilt_for_a_new_version(cache):
    folder = demo_dataset_dir()
    image = folder / "robot_00.png"
    stamp = image.stat().st_mtime_ns
    assert demo_dataset_dir() == folder and image.stat().st_mtime_ns == stamp, "second call reuses the folder"

    (folder / ".demo-version").write_text("0\n")  # as if an older generator had written it
    (folder / "stray.png").write_bytes(b"left over from the old version")
    assert demo_dataset_dir() == folder
    assert (folder / ".demo-version").read_text().strip() == str(demo.DEMO_VERSION)
    assert not (folder / "stray.png").exists(), "the old folder was replaced, not patched"
    assert len(list(folder.glob("*.png"))) == 16
    assert sorted(p.name for p in folder.parent.iterdir()) == ["demo"]
