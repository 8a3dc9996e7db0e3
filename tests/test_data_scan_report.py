"""Scanning a messy dataset folder, the report a user reads, buckets, and the dataset errors."""

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.tokenizer import clip_tokenizer
from studio.data.buckets import assign_bucket, make_buckets
from studio.data.dataset import DatasetError, dataset_fingerprint, resolve_data_dir, scan_dataset
from studio.data.lint import caption_token_counts, has_trigger_word
from studio.data.report import build_report, format_report, write_report

LONG_CAPTION = "ohwx " + " ".join(f"detail{i}" for i in range(60))


def _png(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def corpus(tmp_path) -> Path:
    d = tmp_path / "dataset"
    for sub in ("sub", "__MACOSX", ".git/objects"):
        (d / sub).mkdir(parents=True)

    # usable images, several shapes and formats
    Image.new("RGB", (32, 32), (200, 30, 30)).save(d / "square.png")
    _noise(64, 32, 1).save(d / "wide.png")
    _noise(48, 64, 2).save(d / "tall.jpg")
    _noise(40, 30, 3).save(d / "four_three.webp")
    _noise(400, 300, 4).save(d / "big_photo.png")
    _noise(48, 48, 5).save(d / "dup_a.png")
    (d / "sub" / "dup_b.png").write_bytes((d / "dup_a.png").read_bytes())
    (d / "gray16.png").write_bytes(_png(24, 24, 16, 0, (b"\x00" + struct.pack(">H", 32896) * 24) * 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    _noise(40, 20, 6).save(d / "rotated.jpg", exif=exif)

    # files that claim to be images and are not usable
    jpeg = io.BytesIO()
    _noise(64, 64, 7).save(jpeg, "JPEG")
    (d / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.jpg").write_text("not a jpeg at all")
    Image.new("RGB", (32, 32)).save(d / "__MACOSX" / "._square.png")
    (d / "._wide.png").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    (d / "bomb.png").write_bytes(_png(100_000, 100_000, 8, 2, b"\x00" * 16))
    Image.new("RGB", (5, 5)).save(d / "dot.png")
    (d / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")

    # ignored: hidden folders, non-image files
    Image.new("RGB", (32, 32)).save(d / ".git" / "objects" / "thumb.png")
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (d / "readme.md").write_text("my dataset")

    # captions from all three sources, one malformed line, one caption over 77 tokens
    for name, text in {"square": "ohwx on red", "dup_a": "ohwx noise", "gray16": "ohwx grey",
                       "big_photo": "OHWX big", "rotated": "ohwx rotated"}.items():
        (d / f"{name}.txt").write_text(text)
    (d / "sub" / "dup_b.txt").write_text("ohwx noise again")
    (d / "metadata.jsonl").write_text(json.dumps({"file_name": "wide.png", "text": "a wide photo"}) + "\n{oops\n")
    (d / "captions.json").write_text(json.dumps({"tall": LONG_CAPTION, "wide": "loses to metadata.jsonl"}))
    return d


SKIPPED = {
    "truncated.jpg": "truncated file",
    "empty.png": "zero-byte file",
    "notes.jpg": "not an image (a text file)",
    "__MACOSX/._square.png": "macOS resource fork",
    "._wide.png": "macOS resource fork",
    "dot.png": "image too small (5×5 px)",
    "phone.heic": "unsupported image format .heic (convert it to PNG or JPEG)",
}
USABLE = ["big_photo.png", "dup_a.png", "four_three.webp", "gray16.png", "rotated.jpg", "square.png",
          "sub/dup_b.png", "tall.jpg", "wide.png"]


def test_scan_finds_usable_images_and_explains_every_skip(corpus):
    calls = []
    scan = scan_dataset(corpus, progress=lambda done, total: calls.append((done, total)))

    assert [item.rel for item in scan.items] == USABLE, "sorted, recursive, hidden folders ignored"
    skipped = {s.rel: s.reason for s in scan.skipped}
    assert set(skipped) == set(SKIPPED) | {"bomb.png"}
    for rel, reason in SKIPPED.items():
        assert skipped[rel] == reason, rel
    assert skipped["bomb.png"].startswith("image too large") and "decompression bomb" in skipped["bomb.png"]
    assert calls == [(i, 17) for i in range(1, 18)]
    assert scan.found == 17

    items = {item.rel: item for item in scan.items}
    assert (items["rotated.jpg"].width, items["rotated.jpg"].height) == (20, 40), "size after EXIF orientation"
    assert items["gray16.png"].file_hash == hashlib.sha1((corpus / "gray16.png").read_bytes()).hexdigest()
    assert items["dup_a.png"].fingerprint == items["sub/dup_b.png"].fingerprint
    assert items["dup_a.png"].fingerprint != items["wide.png"].fingerprint
    assert (items["wide.png"].caption, items["wide.png"].caption_source) == ("a wide photo", "metadata.jsonl")
    assert (items["tall.jpg"].caption, items["tall.jpg"].caption_source) == (LONG_CAPTION, "captions.json")
    assert (items["square.png"].caption, items["square.png"].caption_source) == ("ohwx on red", "txt")
    assert (items["four_three.webp"].caption, items["four_three.webp"].caption_source) == (None, None)
    assert scan.warnings == ["metadata.jsonl line 2: not valid JSON (Expecting property name enclosed in "
                             "double quotes); line skipped"]


def test_report_counts_captions_buckets_duplicates_and_warnings(corpus, tmp_path):
    report = build_report(scan_dataset(corpus), resolution=512, trigger_word="ohwx")

    assert report["ok"] is True and report["problems"] == []
    assert report["counts"] == {"found": 17, "usable": 9, "skipped": 8, "captioned": 8}
    assert {s["file"]: s["reason"] for s in report["skipped"]}.items() >= SKIPPED.items()
    assert report["caption_sources"] == {"txt": 6, "metadata.jsonl": 1, "captions.json": 1}
    assert report["missing_captions"] == ["four_three.webp"]
    assert report["trigger_word"] == {"word": "ohwx", "missing": ["wide.png"]}, "OHWX counts (case-insensitive)"

    long_tokens = len(clip_tokenizer()(LONG_CAPTION).input_ids)
    assert long_tokens > 77
    assert report["over_77_tokens"] == [{"file": "tall.jpg", "tokens": long_tokens}]
    assert report["caption_tokens"]["max"] == long_tokens and report["caption_tokens"]["limit"] == 77
    assert report["caption_tokens"]["min"] == len(clip_tokenizer()("ohwx big").input_ids)

    assert list(report["buckets"].items()) == [
        ("320x640", 1), ("448x576", 1), ("512x512", 4), ("576x448", 2), ("640x320", 1),
    ]
    assert report["duplicates"] == [["dup_a.png", "sub/dup_b.png"]]
    assert [s["file"] for s in report["small_images"]] == [rel for rel in USABLE if rel != "big_photo.png"]
    assert report["resolutions"]["width"]["min"] == 20 and report["resolutions"]["width"]["max"] == 400
    assert report["resolutions"]["counts"]["48x48"] == 2

    assert report["warnings"][0].startswith("metadata.jsonl line 2: not valid JSON")
    assert "8 image files skipped (listed with reasons)" in report["warnings"]
    assert "1 of 9 usable images have no caption" in report["warnings"]
    assert '1 captions do not contain the trigger word "ohwx"' in report["warnings"]
    assert any(w.startswith("1 captions are longer than 77 CLIP tokens") for w in report["warnings"])
    assert any(w.startswith("8 images are smaller than half the training resolution") for w in report["warnings"])

    path = write_report(report, tmp_path / "run" / "dataset_report.json")
    assert json.loads(path.read_text(encoding="utf-8")) == report
    assert [p.name for p in path.parent.iterdir()] == ["dataset_report.json"]


def test_format_report_lists_every_skipped_file_and_the_findings(corpus):
    report = build_report(scan_dataset(corpus), resolution=512, trigger_word="ohwx")
    text = format_report(report)
    lines = text.splitlines()

    assert lines[1] == "  17 image files: 9 usable, 8 skipped; 8 of 9 usable images captioned"
    assert "Skipped (8):" in lines
    for skip in report["skipped"]:
        assert f"  {skip['file']}: {skip['reason']}" in lines
    assert "Buckets at 512 px (step 64):" in lines and "  512x512: 4" in lines and "  640x320: 1" in lines
    assert "Captions: 6 from txt, 1 from metadata.jsonl, 1 from captions.json; 1 missing" in lines
    assert "  missing: four_three.webp" in lines
    assert f"  over 77 tokens: tall.jpg ({report['over_77_tokens'][0]['tokens']})" in lines
    assert '  trigger word "ohwx": missing from 1 captions' in lines and "    wide.png" in lines
    assert "  dup_a.png = sub/dup_b.png" in lines
    assert any(line.startswith("  - metadata.jsonl line 2: not valid JSON") for line in lines)
    assert lines[-1] == "Ready to train."
    assert text.index("Skipped") < text.index("Buckets") < text.index("Warnings:")


def test_report_without_trigger_word_or_captions(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    _noise(64, 64, 1).save(d / "a.png")
    _noise(31, 40, 2).save(d / "b.png")  # short side just under half of 64: upscaled
    report = build_report(scan_dataset(d), resolution=64, bucket_step=32)
    assert report["trigger_word"] is None and report["caption_tokens"] is None
    assert report["missing_captions"] == ["a.png", "b.png"]
    assert report["small_images"] == [{"file": "b.png", "width": 31, "height": 40}]
    assert report["buckets"] == {"64x64": 2}
    text = format_report(report)
    assert "Captions: none; 2 missing" in text
    assert "Small images (short side under 32 px, will be upscaled):" in text and "  b.png: 31x40" in text


def test_dataset_errors_name_the_folder_and_the_reasons(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset folder {tmp_path / 'missing'} does not exist"):
        resolve_data_dir(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        scan_dataset(tmp_path / "file.png")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "captions.txt").write_text("a caption without images")
    with pytest.raises(DatasetError, match=f"no images found in {empty}"):
        scan_dataset(empty)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.png").write_bytes(b"")
    (bad / "junk.jpg").write_text("text")
    with pytest.raises(DatasetError) as err:
        scan_dataset(bad)
    assert str(err.value) == (
        f"none of the 2 image files in {bad} can be used: "
        "junk.jpg (not an image (a text file)); zero.png (zero-byte file)"
    )
    for i in range(5):
        (bad / f"more{i}.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="and 2 more$"):
        scan_dataset(bad)


def test_folder_with_nothing_usable_still_gets_a_full_report(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(7):
        (bad / f"zero{i}.png").write_bytes(b"")
    scan = scan_dataset(bad, require_usable=False)
    assert scan.items == [] and len(scan.skipped) == 7

    report = build_report(scan, resolution=512)
    assert report["ok"] is False
    assert report["problems"] == [f"no usable image in {bad}: all 7 image files were skipped"]
    text = format_report(report)
    assert all(f"  zero{i}.png: zero-byte file" in text for i in range(7)), "every skip, not the first few"
    assert text.splitlines()[-1] == "NOT ready to train: fix the problems above."


def test_dataset_fingerprint_tracks_images_and_captions(corpus):
    first = dataset_fingerprint(scan_dataset(corpus))
    assert len(first) == 64 and dataset_fingerprint(scan_dataset(corpus)) == first
    (corpus / "notes.md").write_text("not an image: the fingerprint ignores it")
    assert dataset_fingerprint(scan_dataset(corpus)) == first

    (corpus / "square.txt").write_text("ohwx on a different red")
    second = dataset_fingerprint(scan_dataset(corpus))
    assert second != first
    Image.new("RGB", (32, 32), (200, 30, 31)).save(corpus / "square.png")
    assert dataset_fingerprint(scan_dataset(corpus)) != second


def test_token_counts_match_the_clip_tokenizer():
    captions = ["a photo of a cat", "ohwx toy robot, arms raised", LONG_CAPTION]
    assert caption_token_counts(captions) == [len(clip_tokenizer()(c).input_ids) for c in captions]
    assert caption_token_counts(["a photo of a cat"]) == [7]


def test_token_counts_by_piece_equal_the_tokenizer_on_any_text():
    """The counter sums memoised counts of CLIP's pieces; the tokenizer, run on each whole caption, is the
    truth: random strings of letters in several scripts and cases, digits, punctuation, odd whitespace,
    combining marks, emoji and the special tokens."""
    import random

    alphabet = list("abcXYZ  \t\n,.!?'sdlmrtve0123456789-_/()[]{}<>|\"") + [
        "é", "É", "ß", "ﬁ", "İ", "ς", "Σ", "日本", "😀", "👍🏽", "\u00a0", "\u2003", "e\u0301", "'S", "'LL", "ǅ", "Ⅻ",
        "٣", "½", "\u200b", "\u0085", "\u2028", "\x1c", "Ω", "K", "<|startoftext|>", "<|endoftext|>", "ohwx", " studio"]
    rng = random.Random(7)
    captions = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    truth = [len(e.ids) for e in clip_tokenizer().backend_tokenizer.encode_batch(captions, add_special_tokens=True)]
    assert caption_token_counts(captions) == truth
    assert caption_token_counts(captions[::-1]) == truth[::-1]  # memoised pieces count the same the second time


def test_trigger_word_is_matched_as_a_whole_word():
    assert has_trigger_word("a photo of OHWX dog", "ohwx")
    assert has_trigger_word("ohwx's bowl", "ohwx")
    assert not has_trigger_word("ohwxdog on grass", "ohwx")
    assert not has_trigger_word("a photo of a dog", "ohwx")


def test_buckets_for_512_and_tiny_resolutions():
    assert make_buckets(512) == [(320, 640), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (640, 320)]
    assert make_buckets(64) == [(64, 64)]
    assert make_buckets(64, step=32) == [(32, 64), (64, 64), (64, 32)]
    for resolution, step in ((512, 64), (1024, 64), (768, 32), (128, 8)):
        buckets = make_buckets(resolution, step)
        assert (resolution, resolution) in buckets
        assert all(w % step == 0 and h % step == 0 and w * h <= resolution**2 for w, h in buckets)
        assert all(max(w / h, h / w) <= 2.0 for w, h in buckets)
        assert sorted(buckets) == sorted((h, w) for w, h in buckets), "both orientations"
    assert {(1216, 832), (832, 1216), (1344, 768)} <= set(make_buckets(1024))


def test_assign_bucket_picks_the_closest_aspect_ratio():
    buckets = make_buckets(512)
    assert assign_bucket(1920, 1080, buckets) == (640, 384)
    assert assign_bucket(1080, 1920, buckets) == (384, 640)
    assert assign_bucket(3000, 1000, buckets) == (640, 320)
    assert assign_bucket(999, 1000, buckets) == (512, 512)
    assert assign_bucket(4000, 3000, buckets) == (576, 448)


def test_bucket_arguments_are_checked():
    with pytest.raises(ValueError, match="resolution 500 must be a positive multiple of the bucket step 64"):
        make_buckets(500)
    with pytest.raises(ValueError, match="step"):
        make_buckets(512, step=0)
    with pytest.raises(ValueError, match="max_aspect"):
        make_buckets(512, max_aspect=0.5)
    with pytest.raises(ValueError, match="no buckets"):
        assign_bucket(10, 10, [])
    with pytest.raises(ValueError, match="0×10"):
        assign_bucket(0, 10, [(64, 64)])
