"""Caption sources, their precedence, forgiving-but-explicit parsing, and the atomic writers."""

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from studio.data.captions import (
    Caption,
    read_captions,
    scan_captions,
    write_captions_json,
    write_metadata_jsonl,
    write_sidecars,
)


def _images(folder: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(path)
        paths.append(path)
    return paths


def _jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def test_txt_beats_metadata_jsonl_beats_captions_json(tmp_path):
    a, b, c, d = _images(tmp_path, "a.png", "b.png", "c.jpg", "d.png")
    (tmp_path / "a.txt").write_text("a from txt")
    (tmp_path / "metadata.jsonl").write_text(_jsonl(
        {"file_name": "a.png", "text": "a from jsonl"},
        {"file_name": "b.png", "text": "b from jsonl"},
    ))
    (tmp_path / "captions.json").write_text(json.dumps(
        {"a.png": "a from json", "b.png": "b from json", "c.jpg": "c from json"}
    ))

    scan = scan_captions(tmp_path, [a, b, c, d])
    assert scan.captions == {
        a: Caption("a from txt", "txt"),
        b: Caption("b from jsonl", "metadata.jsonl"),
        c: Caption("c from json", "captions.json"),
    }
    assert d not in scan.captions
    assert scan.warnings == []


def test_empty_sidecar_falls_through_with_a_warning(tmp_path):
    (a,) = _images(tmp_path, "a.png")
    (tmp_path / "a.txt").write_text("  \n")
    (tmp_path / "metadata.jsonl").write_text(_jsonl({"file_name": "a.png", "text": "from jsonl"}))
    scan = scan_captions(tmp_path, [a])
    assert scan.captions[a] == Caption("from jsonl", "metadata.jsonl")
    assert scan.warnings == ["a.txt: empty caption file; looking for a caption elsewhere"]


def test_caption_text_is_normalised(tmp_path):
    (a,) = _images(tmp_path, "a.png")
    (tmp_path / "a.txt").write_bytes("\ufeffa photo of\n  ohwx   dog\r\n".encode("utf-8"))
    assert read_captions(tmp_path, [a])[a].text == "a photo of ohwx dog"


def test_non_utf8_sidecar_is_reported(tmp_path):
    (a,) = _images(tmp_path, "a.png")
    (tmp_path / "a.txt").write_bytes("caf\xe9".encode("latin-1"))
    scan = scan_captions(tmp_path, [a])
    assert scan.captions == {}
    assert len(scan.warnings) == 1 and scan.warnings[0].startswith("a.txt: not UTF-8 text")


def test_malformed_metadata_lines_are_reported_not_fatal(tmp_path):
    a, b, c, e = _images(tmp_path, "a.png", "b.png", "c.png", "sub/e.png")
    (tmp_path / "metadata.jsonl").write_text(_jsonl(
        {"file_name": "a.png", "text": "alpha"},
        "{not json",
        {"text": "no file name"},
        {"file_name": "b.png"},
        {"file_name": "./c.png", "caption": "gamma via the caption key"},
        {"file_name": "sub/e.png", "text": "epsilon"},
        {"file_name": "a.png", "text": "second alpha"},
        {"file_name": "gone.png", "text": "no such file"},
    ))
    scan = scan_captions(tmp_path, [a, b, c, e])
    assert {p: cap.text for p, cap in scan.captions.items()} == {
        a: "alpha", c: "gamma via the caption key", e: "epsilon",
    }
    assert scan.warnings == [
        "metadata.jsonl line 2: not valid JSON (Expecting property name enclosed in double quotes); line skipped",
        'metadata.jsonl line 3: expected an object with a "file_name" string; line skipped',
        'metadata.jsonl line 4: no "text" (or "caption") string; line skipped',
        "metadata.jsonl line 7: a second caption for a.png; the first one is kept",
        'metadata.jsonl: 1 entry names no file in the folder: "gone.png"',
    ]


def test_entry_for_a_skipped_image_is_not_reported_as_missing(tmp_path):
    (a,) = _images(tmp_path, "a.png")
    (tmp_path / "broken.png").write_bytes(b"")  # exists, but the scan skipped it
    (tmp_path / "metadata.jsonl").write_text(_jsonl({"file_name": "broken.png", "text": "x"}))
    (tmp_path / "captions.json").write_text(json.dumps({"broken": "x"}))
    assert scan_captions(tmp_path, [a]).warnings == []


def test_nearest_metadata_file_wins(tmp_path):
    top, nested = _images(tmp_path, "top.png", "sub/nested.png")
    (tmp_path / "metadata.jsonl").write_text(_jsonl(
        {"file_name": "top.png", "text": "root file"},
        {"file_name": "sub/nested.png", "text": "root file about nested"},
    ))
    (tmp_path / "sub" / "metadata.jsonl").write_text(_jsonl({"file_name": "nested.png", "text": "sub file"}))
    captions = read_captions(tmp_path, [top, nested])
    assert captions[top].text == "root file" and captions[nested].text == "sub file"


def test_captions_json_list_aligned_with_ids_txt(tmp_path):
    images = _images(tmp_path, "1001.jpg", "1002.jpg", "1003.png")
    (tmp_path / "ids.txt").write_text("1002\n1001\n\n1003.png\n")  # stems or names, blank line ignored
    (tmp_path / "captions.json").write_text(json.dumps(["a blue shoe", "a red bag", "a green hat"]))
    captions = read_captions(tmp_path, images)
    assert [captions[p].text for p in images] == ["a red bag", "a blue shoe", "a green hat"]
    assert {c.source for c in captions.values()} == {"captions.json"}


def test_captions_json_list_that_does_not_match_ids_is_refused(tmp_path):
    images = _images(tmp_path, "1.jpg", "2.jpg")
    (tmp_path / "ids.txt").write_text("1\n2\n")
    (tmp_path / "captions.json").write_text(json.dumps(["one", "two", "three"]))
    scan = scan_captions(tmp_path, images)
    assert scan.captions == {}
    assert scan.warnings == [
        "captions.json has 3 captions but ids.txt has 2 ids; they cannot be paired safely, so the file is ignored"
    ]
    (tmp_path / "ids.txt").unlink()
    scan = scan_captions(tmp_path, images)
    assert scan.captions == {} and "needs ids.txt beside it" in scan.warnings[0]


def test_captions_json_list_of_objects(tmp_path):
    a, b, c, d = _images(tmp_path, "a.png", "b.png", "sub/c.png", "d.png")
    (tmp_path / "captions.json").write_text(json.dumps([
        {"id": "a", "caption": "by id and stem"},
        {"file_name": "b.png", "text": "by file name"},
        {"image": "sub/c.png", "caption": "by relative path"},
        {"file": "d.png"},
        "not an object",
    ]))
    scan = scan_captions(tmp_path, [a, b, c, d])
    assert {p: cap.text for p, cap in scan.captions.items()} == {
        a: "by id and stem", b: "by file name", c: "by relative path",
    }
    assert scan.warnings == [
        "captions.json item 4: expected an object with one of id, file_name, image, file; item skipped",
        'captions.json item 3: no caption string ("caption" or "text"); entry skipped',
    ]


def test_captions_json_dict_by_path_name_or_stem_and_ambiguity(tmp_path):
    a, b, x1, x2 = _images(tmp_path, "a.png", "sub/b.jpg", "x.png", "sub/x.png")
    (tmp_path / "captions.json").write_text(json.dumps({
        "a": "stem", "b.jpg": "name", "sub/x.png": "path", "x": "ambiguous", "zzz": "nothing",
    }))
    scan = scan_captions(tmp_path, [a, b, x1, x2])
    assert {p: cap.text for p, cap in scan.captions.items()} == {a: "stem", b: "name", x2: "path"}
    assert scan.warnings == [
        'captions.json key "x": "x" fits several images (x.png, sub/x.png); entry skipped',
        'captions.json: 1 entry names no file in the folder: "zzz"',
    ]


def test_invalid_captions_json_is_reported(tmp_path):
    (a,) = _images(tmp_path, "a.png")
    (tmp_path / "captions.json").write_text('{"a.png": "unterminated')
    scan = scan_captions(tmp_path, [a])
    assert scan.captions == {} and scan.warnings[0].startswith("captions.json: not valid JSON")


def test_read_captions_logs_the_warnings(tmp_path, caplog):
    (a,) = _images(tmp_path, "a.png")
    (tmp_path / "metadata.jsonl").write_text("oops\n")
    with caplog.at_level(logging.WARNING, logger="studio.data.captions"):
        assert read_captions(tmp_path, [a]) == {}
    assert "metadata.jsonl line 1: not valid JSON" in caplog.text


def test_writers_round_trip_atomically(tmp_path):
    a, b = _images(tmp_path, "a.png", "sub/b.png")
    texts = {a: "ohwx dog on grass", b: "ohwx dog, “quoted” été"}

    written = write_sidecars(texts)
    assert written == [tmp_path / "a.txt", tmp_path / "sub" / "b.txt"]
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "ohwx dog on grass\n"
    assert read_captions(tmp_path, [a, b]) == {a: Caption(t, "txt") for a, t in texts.items()}
    for path in written:
        path.unlink()

    write_metadata_jsonl(tmp_path, texts)
    lines = (tmp_path / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"file_name": "a.png", "text": "ohwx dog on grass"},
        {"file_name": "sub/b.png", "text": "ohwx dog, “quoted” été"},
    ]
    assert read_captions(tmp_path, [a, b]) == {a: Caption(t, "metadata.jsonl") for a, t in texts.items()}
    (tmp_path / "metadata.jsonl").unlink()

    write_captions_json(tmp_path, texts)
    assert json.loads((tmp_path / "captions.json").read_text(encoding="utf-8")) == {
        "a.png": "ohwx dog on grass", "sub/b.png": "ohwx dog, “quoted” été",
    }
    assert read_captions(tmp_path, [a, b]) == {a: Caption(t, "captions.json") for a, t in texts.items()}
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == [], "no temp files left behind"


def test_writers_refuse_images_outside_the_folder(tmp_path):
    (outside,) = _images(tmp_path, "elsewhere/a.png")
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="not inside the dataset folder"):
        write_metadata_jsonl(tmp_path / "data", {outside: "x"})
    assert not (tmp_path / "data" / "metadata.jsonl").exists()
