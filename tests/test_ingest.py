"""Dataset ingest on a malformed corpus the test draws itself: every image decoded right, every bad
file skipped with its reason, captions from the right source, and the report a user reads."""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.data.buckets import assign_bucket, make_buckets
from studio.data.captions import read_captions, write_captions_json, write_metadata_jsonl
from studio.data.dataset import DatasetError, dataset_fingerprint, resolve_data_dir, scan_dataset
from studio.data.demo import DEMO_TRIGGER, demo_dataset_dir
from studio.data.images import ImageSkip, load_image
from studio.data.report import build_report, format_report


def _png16(path: Path, value: int, mode: str) -> None:
    """A 16-bit PNG written by hand: grayscale (color type 0) or RGB (color type 2)."""
    width = height = 20
    channels, color_type = (1, 0) if mode == "L" else (3, 2)
    row = b"\x00" + struct.pack(">H", value) * width * channels
    raw = row * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.fixture
def corpus(tmp_path) -> Path:
    d = tmp_path / "corpus"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "__MACOSX").mkdir()

    # EXIF orientation 6 (rotate 90° clockwise to display): stored 40×20, red on the left half
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(d / "rotated.jpg", exif=exif, quality=100)

    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 32))  # left half fully transparent black
    rgba.save(d / "transparent.png")
    Image.new("LA", (32, 32), (0, 0)).save(d / "la.png")
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.info["transparency"] = 0
    palette.paste(0, (0, 0, 16, 32))
    palette.save(d / "palette.png", transparency=0)
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(d / "cmyk.jpg")  # CMYK red
    _png16(d / "gray16.png", 32768, "L")
    _png16(d / "sub" / "rgb16.png", 16384, "RGB")
    bilevel = Image.new("1", (32, 32), 1)
    bilevel.paste(0, (0, 0, 32, 8))  # black band on top, white below
    bilevel.save(d / "sub" / "bilevel.png")
    frames = [Image.new("RGB", (32, 32), c) for c in ((0, 0, 255), (255, 255, 0))]
    frames[0].save(d / "sub" / "deeper" / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (64, 32), (90, 90, 90)).save(d / "wide.webp")
    Image.new("RGB", (30, 30), (1, 2, 3)).save(d / "bitmap.bmp")

    # duplicates: the same picture under two names
    Image.new("RGB", (48, 48), (200, 100, 50)).save(d / "dup_a.png")
    (d / "dup_b.png").write_bytes((d / "dup_a.png").read_bytes())

    # bad files
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (5, 5, 5)).save(buffer, format="JPEG")
    (d / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (d / "zero.png").write_bytes(b"")
    (d / "notes.jpg").write_text("definitely not a jpeg")
    (d / "__MACOSX" / "._rotated.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 60)
    (d / "._wide.webp").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 60)
    (d / "readme.md").write_text("not part of the dataset")

    # captions: txt beats metadata.jsonl beats captions.json
    (d / "rotated.txt").write_text("from the sidecar")
    (d / "metadata.jsonl").write_text(
        json.dumps({"file_name": "rotated.jpg", "text": "from jsonl (loses)"}) + "\n"
        + json.dumps({"file_name": "transparent.png", "text": "from jsonl"}) + "\n"
        + "{not json\n")
    (d / "captions.json").write_text(json.dumps({"transparent.png": "from captions.json (loses)",
                                                 "la": "from captions.json", "cmyk.jpg": "ohwx " * 90}))
    return d


def test_every_kind_of_image_decodes_correctly(corpus):
    rotated = load_image(corpus / "rotated.jpg")
    assert rotated.size == (20, 40) and rotated.mode == "RGB"
    top = np.asarray(rotated)[2, 10]
    assert top[0] > 200 and top[2] < 60, "orientation 6: the left (red) half ends up on top"

    for name in ("transparent.png", "palette.png"):
        pixels = np.asarray(load_image(corpus / name))
        assert (pixels[:, :10] > 245).all(), f"{name}: transparent area must be white"
    assert (np.asarray(load_image(corpus / "la.png")) > 245).all()
    cmyk = np.asarray(load_image(corpus / "cmyk.jpg"))[16, 16]
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60, f"CMYK red came out {cmyk}"
    gray = np.asarray(load_image(corpus / "gray16.png"))
    assert abs(int(gray.mean()) - 128) <= 2, f"16-bit mid grey became {gray.mean()} (must not turn white)"
    rgb16 = np.asarray(load_image(corpus / "sub" / "rgb16.png"))
    assert abs(int(rgb16.mean()) - 64) <= 2
    bilevel = np.asarray(load_image(corpus / "sub" / "bilevel.png"))
    assert (bilevel[:8] == 0).all() and (bilevel[8:] == 255).all()
    first = np.asarray(load_image(corpus / "sub" / "deeper" / "anim.gif"))[0, 0]
    assert first[2] > 200 and first[0] < 60, "a GIF trains on its first frame"


@pytest.mark.parametrize("name, reason", [("truncated.jpg", "truncat"), ("zero.png", "zero-byte"),
                                          ("notes.jpg", "not an image"), ("._wide.webp", "macOS")])
def test_bad_files_raise_a_readable_reason(corpus, name, reason):
    with pytest.raises(ImageSkip) as err:
        load_image(corpus / name)
    assert reason in err.value.reason


def test_scan_and_report_on_the_malformed_corpus(corpus):
    scan = scan_dataset(corpus)
    usable = {item.rel for item in scan.items}
    assert usable == {"rotated.jpg", "transparent.png", "la.png", "palette.png", "cmyk.jpg", "gray16.png",
                      "sub/rgb16.png", "sub/bilevel.png", "sub/deeper/anim.gif", "wide.webp", "bitmap.bmp",
                      "dup_a.png", "dup_b.png"}
    skipped = {s.rel: s.reason for s in scan.skipped}
    assert set(skipped) == {"truncated.jpg", "zero.png", "notes.jpg", "__MACOSX/._rotated.jpg", "._wide.webp"}
    assert all(skipped.values())

    captions = {item.rel: (item.caption, item.caption_source) for item in scan.items}
    assert captions["rotated.jpg"] == ("from the sidecar", "txt")
    assert captions["transparent.png"] == ("from jsonl", "metadata.jsonl")
    assert captions["la.png"] == ("from captions.json", "captions.json")
    assert captions["wide.webp"] == (None, None)
    assert any("metadata.jsonl" in w for w in scan.warnings), "the malformed jsonl line is reported"

    report = build_report(scan, resolution=64, trigger_word="ohwx", bucket_step=32)
    assert report["ok"] and report["counts"] == {"found": 18, "usable": 13, "skipped": 5, "captioned": 4}
    assert report["duplicates"] == [["dup_a.png", "dup_b.png"]]
    assert [o["file"] for o in report["over_77_tokens"]] == ["cmyk.jpg"]
    assert "wide.webp" in report["missing_captions"]
    assert set(report["trigger_word"]["missing"]) == {"rotated.jpg", "transparent.png", "la.png"}
    assert report["buckets"].get("64x32") == 1
    text = format_report(report)
    for rel, reason in skipped.items():
        assert rel in text and reason in text
    assert "13" in text and "duplicate" in text.lower()


def test_a_folder_with_nothing_usable_stops_with_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_data_dir(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images"):
        scan_dataset(empty)
    (empty / "zero.png").write_bytes(b"")
    (empty / "junk.jpg").write_text("text")
    with pytest.raises(DatasetError) as err:
        scan_dataset(empty)
    assert "zero.png" in str(err.value) and "junk.jpg" in str(err.value)


def test_captions_json_with_ids_and_writers_round_trip(tmp_path):
    d = tmp_path / "seed"
    d.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (i, i, i)).save(d / f"{1000 + i}.jpg")
    (d / "ids.txt").write_text("1000\n1001\n1002\n")
    (d / "captions.json").write_text(json.dumps(["a red bag", "a blue shoe", "a green hat"]))
    images = sorted(d.glob("*.jpg"))
    found = read_captions(d, images)
    assert [found[p].text for p in images] == ["a red bag", "a blue shoe", "a green hat"]
    assert {c.source for c in found.values()} == {"captions.json"}

    other = tmp_path / "copy"
    other.mkdir()
    for p in images:
        (other / p.name).write_bytes(p.read_bytes())
    copies = sorted(other.glob("*.jpg"))
    write_metadata_jsonl(other, {c: found[p].text for c, p in zip(copies, images)})
    assert [read_captions(other, copies)[c].text for c in copies] == [found[p].text for p in images]
    (other / "metadata.jsonl").unlink()
    write_captions_json(other, {c: found[p].text for c, p in zip(copies, images)})
    assert [read_captions(other, copies)[c].source for c in copies] == ["captions.json"] * 3


def test_buckets_cover_both_orientations_within_the_area():
    buckets = make_buckets(512, 64)
    assert (512, 512) in buckets and all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    wide, tall = assign_bucket(1920, 1080, buckets), assign_bucket(1080, 1920, buckets)
    assert wide[0] > wide[1] and tall == wide[::-1]
    assert make_buckets(64, 64) == [(64, 64)]


def test_builtin_demo_dataset_is_generated_once_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path / "cache"))
    folder = resolve_data_dir("builtin:demo")
    assert folder == demo_dataset_dir()
    scan = scan_dataset(folder)
    assert len(scan.items) >= 12 and not scan.skipped
    assert all(item.caption and DEMO_TRIGGER in item.caption for item in scan.items)
    assert len({(i.width, i.height) for i in scan.items}) > 1, "shapes vary, so buckets are exercised"
    fingerprint = dataset_fingerprint(scan)
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path / "other"))
    assert dataset_fingerprint(scan_dataset(demo_dataset_dir())) == fingerprint
