"""The caption editor: single and bulk edits, undo, saving, and the caption formats round trip
(sidecars ↔ metadata.jsonl ↔ captions.json + ids.txt)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from studio.data.captions import write_captions_json
from studio.data.dataset import scan_dataset
from studio.data.editing import CaptionEditor, EditError

CAPTIONS = {
    "a.png": "ohwx toy robot, red background",
    "b.png": "A Photo Of A Robot, blurry, Outdoors",
    "c.png": "robot,  blurry ,on grass",
    "sub/d.png": None,
}


@pytest.fixture
def dataset(tmp_path) -> Path:
    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    for i, (rel, caption) in enumerate(CAPTIONS.items()):
        Image.new("RGB", (32, 32), (40 * i, 100, 200)).save(folder / rel)
        if caption:
            (folder / rel).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def editor(dataset) -> CaptionEditor:
    return CaptionEditor.from_scan(scan_dataset(dataset))


def on_disk(folder: Path) -> dict[str, str | None]:
    return {item.rel: item.caption for item in scan_dataset(folder).items}


def test_opens_with_the_captions_on_disk_and_tracks_single_edits(editor):
    assert editor.captions == {"a.png": "ohwx toy robot, red background",
                               "b.png": "A Photo Of A Robot, blurry, Outdoors",
                               "c.png": "robot, blurry ,on grass", "sub/d.png": ""}
    assert not editor.dirty and editor.unsaved() == []
    assert editor.set_caption("sub/d.png", "  ohwx toy robot\non a  shelf ")
    assert editor.caption("sub/d.png") == "ohwx toy robot on a shelf", "whitespace collapsed, as training reads it"
    assert editor.dirty and editor.unsaved() == ["sub/d.png"]
    assert not editor.set_caption("sub/d.png", "ohwx toy robot on a shelf")
    assert editor.last_bulk_edit is None, "a single edit is not a bulk edit"
    with pytest.raises(EditError, match="'nope.png' is not a usable image"):
        editor.set_caption("nope.png", "x")


def test_add_trigger_only_where_missing_then_undo(editor):
    assert editor.add_trigger("ohwx") == 3
    assert editor.captions == {"a.png": "ohwx toy robot, red background",
                               "b.png": "ohwx, A Photo Of A Robot, blurry, Outdoors",
                               "c.png": "ohwx, robot, blurry ,on grass", "sub/d.png": "ohwx"}
    assert editor.add_trigger("OHWX") == 0, "whole-word, case-insensitive: already there"
    assert editor.last_bulk_edit == 'add trigger word "ohwx"'
    undone = editor.undo()
    assert (undone.label, undone.restored, undone.kept) == ('add trigger word "ohwx"', 3, 0)
    assert editor.captions["b.png"] == "A Photo Of A Robot, blurry, Outdoors" and editor.captions["sub/d.png"] == ""
    assert not editor.dirty
    with pytest.raises(EditError, match="no bulk edit to undo"):
        editor.undo()
    with pytest.raises(EditError, match="type the trigger word first"):
        editor.add_trigger("  ")


def test_prefix_suffix_replace_remove_tag_lowercase(editor):
    assert editor.prefix("photo", separator=" ") == 4
    assert editor.captions["sub/d.png"] == "photo"
    assert editor.captions["a.png"] == "photo ohwx toy robot, red background"
    assert editor.prefix("photo", separator=" ") == 0, "captions that already start with it are left alone"
    editor.undo()
    assert editor.suffix("studio light") == 4
    assert editor.captions["c.png"] == "robot, blurry ,on grass, studio light"
    editor.undo()

    assert editor.replace("robot", "android") == 2, "plain text, case-sensitive by default"
    assert editor.captions["b.png"] == "A Photo Of A Robot, blurry, Outdoors"
    assert editor.replace("ROBOT", "droid", ignore_case=True) == 1
    assert editor.captions["b.png"] == "A Photo Of A droid, blurry, Outdoors"
    assert editor.replace("(", "[") == 0, "no regular expressions"
    editor.undo()
    editor.undo()

    assert editor.remove_tag(" Blurry ") == 2
    assert editor.captions["b.png"] == "A Photo Of A Robot, Outdoors"
    assert editor.captions["c.png"] == "robot, on grass"
    assert editor.captions["a.png"] == "ohwx toy robot, red background", "untouched captions keep their text"

    editor.set_caption("a.png", "OHWX Toy Robot, Red")
    assert editor.lowercase(keep="ohwx") == 2
    assert editor.captions["a.png"] == "OHWX toy robot, red", "the trigger word keeps its case"
    assert editor.captions["b.png"] == "a photo of a robot, outdoors"


def test_undo_keeps_hand_edits_made_after_the_bulk_edit(editor):
    editor.add_trigger("ohwx")
    editor.set_caption("b.png", "ohwx, hand written")
    undone = editor.undo()
    assert (undone.restored, undone.kept) == (2, 1)
    assert editor.captions["b.png"] == "ohwx, hand written"
    assert editor.captions["c.png"] == "robot, blurry ,on grass"


def test_bulk_edits_stack_and_undo_in_reverse_order(editor):
    editor.add_trigger("ohwx")
    editor.lowercase(keep="ohwx")
    editor.undo()
    assert editor.captions["b.png"] == "ohwx, A Photo Of A Robot, blurry, Outdoors"
    editor.undo()
    assert editor.captions["b.png"] == "A Photo Of A Robot, blurry, Outdoors"


def test_save_writes_sidecars_and_metadata_jsonl(editor, dataset):
    editor.add_trigger("ohwx")
    editor.set_caption("a.png", "")
    result = editor.save()
    assert not editor.dirty
    assert (dataset / "b.txt").read_text(encoding="utf-8") == "ohwx, A Photo Of A Robot, blurry, Outdoors\n"
    assert (dataset / "sub" / "d.txt").read_text(encoding="utf-8") == "ohwx\n"
    assert (dataset / "a.txt").read_text(encoding="utf-8") == "\n", "a cleared caption empties its sidecar"
    rows = [json.loads(line) for line in (dataset / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == [{"file_name": "a.png", "text": ""},
                    {"file_name": "b.png", "text": "ohwx, A Photo Of A Robot, blurry, Outdoors"},
                    {"file_name": "c.png", "text": "ohwx, robot, blurry ,on grass"},
                    {"file_name": "sub/d.png", "text": "ohwx"}]
    assert set(map(Path, result.written)) == {dataset / n for n in ("a.txt", "b.txt", "c.txt", "sub/d.txt",
                                                                    "metadata.jsonl")}
    assert result.shadowed == {}
    assert on_disk(dataset) == {rel: text or None for rel, text in editor.captions.items()}


def test_an_image_without_caption_gets_no_new_sidecar(editor, dataset):
    editor.save()
    assert not (dataset / "sub" / "d.txt").exists()


def test_a_cleared_caption_that_captions_json_still_fills_is_reported(editor, dataset):
    write_captions_json(dataset, {dataset / "a.png": "from the json"})
    editor.set_caption("a.png", "")
    result = editor.save()
    assert result.shadowed == {"a.png": ("captions.json", "from the json")}
    assert on_disk(dataset)["a.png"] == "from the json"


def test_formats_round_trip_sidecars_jsonl_captions_json(editor, dataset, tmp_path):
    editor.add_trigger("ohwx")
    editor.set_caption("sub/d.png", "ohwx toy robot, ünïcode “quotes”")
    editor.save()
    expected = {rel: text for rel, text in editor.captions.items()}

    # metadata.jsonl alone gives the same captions
    for sidecar in dataset.rglob("*.txt"):
        sidecar.unlink()
    assert on_disk(dataset) == expected

    # captions.json (dict form) alone gives the same captions
    write_captions_json(dataset, {dataset / rel: text for rel, text in expected.items()})
    (dataset / "metadata.jsonl").unlink()
    assert on_disk(dataset) == expected

    # the product seed's form: a list aligned with ids.txt, imported as one undoable bulk edit
    seed = tmp_path / "seed"
    seed.mkdir()
    ids = list(expected)
    (seed / "captions.json").write_text(json.dumps([expected[rel] for rel in ids]), encoding="utf-8")
    (seed / "ids.txt").write_text("\n".join(Path(rel).stem for rel in ids) + "\n", encoding="utf-8")
    (dataset / "captions.json").unlink()
    fresh = CaptionEditor.from_scan(scan_dataset(dataset))
    assert set(fresh.captions.values()) == {""}
    imported = fresh.import_captions_json(seed / "captions.json", seed / "ids.txt")
    assert (imported.changed, imported.matched, imported.warnings) == (4, 4, [])
    assert fresh.captions == expected and fresh.last_bulk_edit == "import captions.json"
    fresh.save()
    assert on_disk(dataset) == expected, "and back to sidecars"
    fresh.undo()
    assert set(fresh.captions.values()) == {""}


def test_import_reports_what_it_could_not_use(editor, tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(["one", "two"]), encoding="utf-8")
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\nc\n", encoding="utf-8")
    result = editor.import_captions_json(path, ids)
    assert (result.changed, result.matched) == (0, 0) and not editor.dirty
    assert result.warnings == ["captions.json has 2 captions but ids.txt has 3 ids; they cannot be paired "
                               "safely, so the file is ignored"]

    path.write_text(json.dumps({"b.png": "bee", "zzz": "nobody"}), encoding="utf-8")
    result = editor.import_captions_json(path)
    assert (result.changed, result.matched) == (1, 1) and editor.captions["b.png"] == "bee"
    assert result.warnings == ['captions.json: 1 entry names no file in the folder: "zzz"']
    with pytest.raises(EditError, match="is not a file"):
        editor.import_captions_json(tmp_path / "missing.json")


def test_fill_is_one_undoable_bulk_edit(editor):
    assert editor.fill({"sub/d.png": "ohwx, a robot", "a.png": "ohwx toy robot, red background"}, "auto-caption") == 1
    assert editor.last_bulk_edit == "auto-caption"
    editor.undo()
    assert editor.captions["sub/d.png"] == ""
    with pytest.raises(EditError):
        editor.fill({"nope.png": "x"}, "auto-caption")
