"""The Dataset tab at scale, cheaply: the scan cache answers a second open without decoding an image,
reads again exactly the files that changed, and what an edit sends does not grow with the dataset."""

from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image

from studio.data.synthetic import write_image_set
from studio.ui.dataset_bench import run_dataset_bench
from studio.data import dataset as dataset_module
from studio.data.dataset import scan_dataset
from studio.data.scan_cache import ScanCache

IMAGES = 300


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The names of the files the scan decodes."""
    seen: list[str] = []
    real = dataset_module.load_image

    def counting(path, *args, **kwargs):
        seen.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "load_image", counting)
    return seen


def _facts(scan):
    return [(i.rel, i.width, i.height, i.fingerprint, i.file_hash, i.caption) for i in scan.items], \
        [(s.rel, s.reason) for s in scan.skipped]


def test_a_second_scan_decodes_nothing_and_a_changed_file_is_read_again(tmp_path, cache, decodes):
    folder = write_image_set(tmp_path / "big", IMAGES, 32, mixed=True)
    (folder / "broken.png").write_bytes(b"not a png")
    past = time.time() - 3600
    os.utime(folder / "broken.png", (past, past))

    first = scan_dataset(folder)
    assert len(decodes) == IMAGES + 1 and len(first.items) == IMAGES and len(first.skipped) == 1
    stored = json.loads(ScanCache(folder).path.read_text())
    assert len(stored["files"]) == IMAGES + 1 and "skip" in stored["files"]["broken.png"]

    decodes.clear()
    again = scan_dataset(folder)
    assert decodes == [] and _facts(again) == _facts(first), "the cache answers, skips and reasons included"

    # a new size, and the same size with the old modification time put back: both are read again
    Image.new("RGB", (40, 30), "red").save(folder / "img_0000.png")
    os.utime(folder / "img_0000.png", (past, past))
    (folder / "img_0001.png").write_bytes((folder / "img_0001.png").read_bytes())  # rewritten, same size,
    os.utime(folder / "img_0001.png", (past, past))  # and its old time put back (`touch -r`): the change time moved
    decodes.clear()
    changed = scan_dataset(folder)
    assert sorted(decodes) == ["img_0000.png", "img_0001.png"]
    assert changed.items[0].width == 40 and changed.items[0].file_hash != first.items[0].file_hash

    # a file written just now is not trusted to the cache (its times may not move on a rewrite)
    Image.new("RGB", (32, 32), "blue").save(folder / "new.png")
    for _ in range(2):
        decodes.clear()
        scan_dataset(folder)
        assert decodes == ["new.png"]

    # a deleted image leaves the cache; an unreadable cache is an empty one
    (folder / "img_0003.png").unlink()
    scan_dataset(folder)
    assert "img_0003.png" not in json.loads(ScanCache(folder).path.read_text())["files"]
    ScanCache(folder).path.write_text("{ torn")
    decodes.clear()
    assert _facts(scan_dataset(folder))[1] == _facts(first)[1] and len(decodes) == IMAGES + 1, \
        "299 images, the new one and the broken file, all decoded again"


def test_what_an_edit_sends_does_not_grow_with_the_dataset():
    """Through Gradio's own request path (the bench's): a caption edit and a bulk edit send the same
    bytes at 60 images (more than a gallery page) and at 300."""
    small = {t.label.split(" (")[0]: t for t in run_dataset_bench(60, side=32)}
    big = {t.label.split(" (")[0]: t for t in run_dataset_bench(IMAGES, side=32)}
    for edit in ("caption edit", "bulk edit"):
        assert big[edit].sent_bytes <= small[edit].sent_bytes + 64, (edit, small[edit], big[edit])
        assert big[edit].sent_bytes < 50_000
    assert big["caption edit"].sent_bytes < 4_000, "one edit: no gallery page, no full table"


def test_caption_facts_kept_up_to_date_equal_facts_made_afresh():
    """The report's caption half, updated one edit at a time, is what a new scan would report."""
    import random

    from studio.data.captions import CAPTION_MAX_CHARS
    import statistics

    from studio.data.lint import CaptionFacts, caption_token_counts

    rng = random.Random(3)
    texts = ["ohwx toy robot", "a toy robot", "", "ohwx, " + "very long words " * 30, "x" * (CAPTION_MAX_CHARS + 5),
             "ohwx toy robot on a red background", "same caption", "same caption"]
    captions = {f"img_{i:02d}.png": rng.choice(texts) for i in range(24)}
    facts = CaptionFacts(captions, "ohwx", sources={rel: "txt" if text else None for rel, text in captions.items()})
    for step in range(60):
        changes = {rel: rng.choice(texts) for rel in rng.sample(sorted(captions), rng.randint(1, 6))}
        captions.update(changes)
        facts.update(changes, sources={rel: "txt" if text else None for rel, text in changes.items()})
        fresh = CaptionFacts(captions, "ohwx", sources={rel: "txt" if text else None for rel, text in captions.items()})
        assert facts.findings() == fresh.findings(), step
        assert facts.token_stats() == fresh.token_stats() and facts.source_counts == fresh.source_counts, step
        assert facts.in_order(facts.empty) == fresh.in_order(fresh.empty)
        assert facts.most_shared() == fresh.most_shared(), step
        counted = caption_token_counts([text for text in captions.values() if text])  # the tokenizer, directly
        assert facts.token_stats() == {"min": min(counted), "mean": round(statistics.fmean(counted), 1),
                                       "median": statistics.median(counted), "max": max(counted)}
        assert facts.captioned == len(counted) and len(facts.empty) == len(captions) - len(counted)
