"""Dataset tab handlers without a browser: open the demo (as a copy), edit, bulk edit and undo,
save to disk, uploads and zips, the report and lint tables, template auto-captioning, and
sending the dataset to the Train tab."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from studio.core.lock import ACCELERATOR, AcceleratorLock
from studio.data.demo import DEMO_CLASS, DEMO_TRIGGER
from studio.engine.runner import Runner
from studio.ui import dataset_view as view
from studio.ui.app import Settings, Studio, build_app
from studio.ui.dataset_handlers import DatasetHandlers
from studio.ui.security import Roots

RES = 512
# the outputs of every editing handler, in order (see DatasetHandlers._view)
VIEW = ("notice", "state", "status", "gallery", "page", "preview", "caption", "info", "report",
        "lint", "skipped", "buckets", "sizes", "lengths", "duplicates", "missing")


TABLES = ("lint", "skipped", "buckets", "sizes", "lengths", "duplicates", "missing")
SKIP = gr.skip()


def named(outputs) -> dict:
    assert len(outputs) >= len(VIEW)
    return dict(zip(VIEW, outputs))


def open_tab(handlers, session, tab: str) -> dict:
    """Open a report tab, as a click on it does: (the tab, *the tables), the others left as they are."""
    shown, *tables = handlers.show_report_tab(session, tab)
    assert shown == tab
    return dict(zip(TABLES, tables))


@pytest.fixture
def roots(tmp_path) -> Roots:
    return Roots.create(tmp_path / "datasets", tmp_path / "models", tmp_path / "outputs")


@pytest.fixture
def handlers(roots) -> DatasetHandlers:
    return DatasetHandlers(Studio(runner=Runner(roots.outputs, roots.models, lock=AcceleratorLock()), roots=roots))


@pytest.fixture
def demo(handlers):
    """The demo opened through "Open the demo": (handlers, view dict)."""
    picker, *rest = handlers.open_demo(None, RES)
    assert picker.value == "demo" and ("demo", "demo") in picker.choices
    out = named(rest)
    assert rest[len(VIEW):] == [DEMO_TRIGGER, DEMO_CLASS]
    return handlers, out


def png(colour=(200, 50, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_open_the_demo_copies_it_and_shows_thumbnails(demo, roots):
    handlers, out = demo
    folder = roots.datasets / "demo"
    assert sorted(p.name for p in folder.glob("*.png")) == [f"robot_{i:02d}.png" for i in range(16)]
    session = out["state"]
    assert session.name == "demo" and len(session.scan.items) == 16
    assert len(out["gallery"]) == 16 and out["page"] == "Page 1 of 1 · 16 images"
    thumb, label = out["gallery"][0]
    assert Path(thumb).is_relative_to(roots.outputs / ".workspace" / "thumbs"), "served from the outputs root"
    assert Image.open(thumb).size == (128, 128) and label == "robot_00.png", "thumbnails are labelled by file name"
    assert "**demo** · 16 usable images, 16 captioned, 0 skipped · all changes saved" == out["status"]
    assert out["lint"].finding.tolist() == [view.NO_FINDINGS], "the demo's captions are clean, and it says so"
    assert all(out[name] == SKIP for name in TABLES[1:]), "only the lint and the report tab shown are sent"
    buckets = open_tab(handlers, session, "buckets")
    assert buckets["buckets"].values.tolist() == [["448×576", 2], ["512×512", 12], ["576×448", 2]]
    assert buckets["sizes"].values.tolist()[0][1] > 0 and buckets["lengths"] == SKIP
    assert open_tab(handlers, session, "lengths")["lengths"]["over 77"].tolist() == [""] * 16
    assert open_tab(handlers, session, "skipped")["skipped"].reason.tolist() == [view.NO_SKIPPED]
    assert open_tab(handlers, session, "duplicates")["duplicates"].files.tolist() == [view.NO_DUPLICATES]
    assert open_tab(handlers, session, "missing")["missing"].file.tolist() == [view.NO_MISSING]
    assert "Ready to train." in out["report"]

    # a second "Open the demo" opens the same copy, edits and all
    (folder / "robot_00.txt").write_text("edited on disk\n", encoding="utf-8")
    again = named(handlers.open_demo(None, RES)[1:])
    assert again["state"].editor.captions["robot_00.png"] == "edited on disk"


def test_edit_a_caption_and_save_writes_the_sidecar_and_metadata(demo, roots):
    handlers, out = demo
    session = out["state"]
    shown = named(handlers.show_image(session, "", DEMO_TRIGGER, RES, "robot_03.png"))
    original = (roots.datasets / "demo" / "robot_03.txt").read_text(encoding="utf-8").strip()
    assert shown["caption"] == original and "robot_03.png" in shown["info"] and "128×96 px" in shown["info"]
    assert Path(shown["preview"]).is_relative_to(roots.outputs)

    # typing then clicking another image keeps the typed caption (the box is applied first)
    moved = named(handlers.show_image(session, "ohwx toy robot, waving hello", DEMO_TRIGGER, RES, "robot_04.png"))
    assert session.editor.captions["robot_03.png"] == "ohwx toy robot, waving hello"
    assert "1 unsaved caption changes" in moved["status"]
    assert moved["gallery"] == SKIP and moved["page"] == SKIP, "labels are file names: one edit leaves the page as is"
    emptied = named(handlers.apply_caption(session, "  ", DEMO_TRIGGER, RES))
    assert ("robot_04.png" not in [label for _, label in emptied["gallery"]]
            and "(no caption) · robot_04.png" in [label for _, label in emptied["gallery"]]), \
        "an image that lost its caption is marked on the page"
    handlers.apply_caption(session, moved["caption"], DEMO_TRIGGER, RES)
    assert (roots.datasets / "demo" / "robot_03.txt").read_text(encoding="utf-8").strip() == original

    saved = named(handlers.save(session, moved["caption"], DEMO_TRIGGER, RES))
    assert "Saved **demo**: 1 changed captions" in saved["notice"] and "all changes saved" in saved["status"]
    assert (roots.datasets / "demo" / "robot_03.txt").read_text(encoding="utf-8") == "ohwx toy robot, waving hello\n"
    rows = [json.loads(line) for line in (roots.datasets / "demo" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"file_name": "robot_03.png", "text": "ohwx toy robot, waving hello"} in rows


def test_bulk_edit_and_undo_update_the_gallery_and_lint(demo):
    handlers, out = demo
    session = out["state"]
    edited = named(handlers.replace_text(session, "", DEMO_TRIGGER, RES, "ohwx ", "", False))
    assert "16 captions changed" in edited["notice"]
    # the page shows the same images under the same labels: its thumbnails are not sent again, its line is
    assert isinstance(edited["gallery"], type(gr.skip())) and edited["page"] == "Page 1 of 1 · 16 images"
    lint = edited["lint"]
    assert lint.values.tolist()[0][:1] == ["warning"] and "16 of 16 captions lack the trigger word" in lint.finding[0]
    assert "16 unsaved caption changes" in edited["status"] and "undo: replace" in edited["status"]

    restored = named(handlers.add_trigger(session, "", DEMO_TRIGGER, RES))
    assert restored["lint"].finding.tolist() == [view.NO_FINDINGS] and session.editor.captions["robot_00.png"].startswith("ohwx, ")
    handlers.undo(session, "", DEMO_TRIGGER, RES)
    back = named(handlers.undo(session, "", DEMO_TRIGGER, RES))
    assert "Undid replace" in back["notice"] and "all changes saved" in back["status"]
    assert not session.editor.dirty

    with pytest.raises(gr.Error, match="type the tag to remove first"):
        handlers.remove_tag(session, "", DEMO_TRIGGER, RES, "  ")


def test_a_bulk_edit_redraws_the_page_when_the_filter_now_matches_other_images_or_a_label_changes(demo):
    handlers, out = demo
    session = out["state"]
    handlers.filter_gallery(session, "ohwx", False)
    gone = named(handlers.replace_text(session, "", DEMO_TRIGGER, RES, "ohwx ", "", False))
    assert gone["gallery"] == [] and gone["page"] == "No image matches the filter (16 images in the dataset)"
    back = named(handlers.undo(session, "", DEMO_TRIGGER, RES))
    assert [label for _, label in back["gallery"]] == [f"robot_{i:02d}.png" for i in range(16)]

    handlers.filter_gallery(session, "", False)
    emptied = named(handlers.replace_text(session, "", DEMO_TRIGGER, RES, session.editor.captions["robot_03.png"],
                                          "", False))
    labels = [label for _, label in emptied["gallery"]]
    assert labels[3] == f"{view.NO_CAPTION} · robot_03.png" and labels[2] == "robot_02.png"


def test_problem_filter_search_and_a_common_trigger_word(demo):
    handlers, out = demo
    session = out["state"]
    handlers.show_image(session, "", DEMO_TRIGGER, RES, "robot_05.png")
    handlers.apply_caption(session, "", DEMO_TRIGGER, RES)
    assert session.editor.captions["robot_05.png"] == ""
    _, items, line = handlers.filter_gallery(session, "", True)
    assert [label for _, label in items] == ["(no caption) · robot_05.png"]
    assert line == "Page 1 of 1 · 1 of 16 images"
    _, items, line = handlers.filter_gallery(session, "green background", False)
    assert len(items) == 3 and all("green background" in session.editor.captions[label] for _, label in items)
    assert line == "Page 1 of 1 · 3 of 16 images"

    open_tab(handlers, session, "missing")
    report = named(handlers.refresh_report(session, "", "robot", RES))
    kinds = report["lint"].finding.tolist()
    assert any('The trigger word "robot" is an everyday word for CLIP' in k for k in kinds)
    assert report["missing"]["file"].tolist() == ["robot_05.png"], "the tab shown is redrawn by an edit"
    assert report["lengths"] == SKIP, "a tab not shown is not"


def test_open_refuses_unsaved_changes_and_paths_outside(demo, handlers, roots):
    _, out = demo
    session = out["state"]
    handlers.add_trigger(session, "", "zzq", RES)
    with pytest.raises(gr.Error, match="unsaved caption changes. Save them"):
        handlers.open_dataset(session, "empty", RES)
    reverted = named(handlers.revert(session, "", DEMO_TRIGGER, RES))
    assert "Reverted 16 unsaved caption changes" in reverted["notice"] and not session.editor.dirty
    (roots.datasets / "empty").mkdir()
    with pytest.raises(gr.Error, match="no images found"):
        handlers.open_dataset(session, "empty", RES)
    with pytest.raises(gr.Error, match="outside the datasets folder"):
        handlers.open_dataset(session, "../outputs", RES)
    with pytest.raises(gr.Error, match="datasets folder itself"):
        handlers.open_dataset(session, ".", RES)


def test_create_from_a_zip_and_a_zip_with_dotdot_is_refused(handlers, roots, tmp_path):
    good = tmp_path / "shoes.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("shoes/a.png", png())
        z.writestr("shoes/a.txt", "ohwx shoe")
        z.writestr("shoes/b.png", png((0, 90, 0)))
        z.writestr("__MACOSX/shoes/._a.png", b"\x00")
    picker, *rest = handlers.create_dataset(None, "shoes", [str(good)], RES, "missing")
    out = named(rest)
    assert picker.value == "shoes" and ("shoes", "shoes") in picker.choices
    assert "Created **shoes**: added 2 images and 1 caption files; skipped 1: __MACOSX/shoes/._a.png" in out["notice"]
    assert sorted(p.name for p in (roots.datasets / "shoes").iterdir()) == ["a.png", "a.txt", "b.png"]
    assert out["missing"]["file"].tolist() == ["b.png"]
    assert rest[len(VIEW):] == ["", ""], "no trigger word guessed for a user dataset"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("a.png", png())
        z.writestr("../escape.png", png())
    with pytest.raises(gr.Error, match="'../escape.png' points outside"):
        handlers.create_dataset(None, "evil", [str(evil)], RES)
    assert not (roots.datasets / "evil").exists() and not (roots.datasets / "escape.png").exists()
    assert sorted(p.name for p in roots.datasets.iterdir()) == ["shoes"]

    with pytest.raises(gr.Error, match="a dataset named 'shoes' already exists"):
        handlers.create_dataset(None, "shoes", [str(good)], RES)
    with pytest.raises(gr.Error, match="no images among the uploads"):
        handlers.create_dataset(None, "notes", [str(_text(tmp_path))], RES)
    assert not (roots.datasets / "notes").exists()

    added = named(handlers.add_to_dataset(out["state"], [str(_png_file(tmp_path))], "", RES))
    assert "added 1 images" in added["notice"] and len(added["gallery"]) == 3


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "readme.md"
    path.write_text("no images here")
    return path


def _png_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.png"
    path.write_bytes(png((0, 0, 120)))
    return path


def test_import_captions_json_with_ids(demo, tmp_path):
    handlers, out = demo
    session = out["state"]
    (tmp_path / "captions.json").write_text(json.dumps([f"ohwx toy robot number {i}" for i in range(16)]))
    (tmp_path / "ids.txt").write_text("\n".join(f"robot_{i:02d}" for i in range(16)))
    imported = named(handlers.import_captions(session, "", DEMO_TRIGGER, RES,
                                              [str(tmp_path / "captions.json"), str(tmp_path / "ids.txt")]))
    assert "captions for 16 of 16 images, 16 changed" in imported["notice"]
    assert session.editor.captions["robot_07.png"] == "ohwx toy robot number 7"
    assert session.editor.last_bulk_edit == "import captions.json"
    with pytest.raises(gr.Error, match="Upload one captions.json"):
        handlers.import_captions(session, "", DEMO_TRIGGER, RES, [str(tmp_path / "ids.txt")])


def test_template_auto_caption_fills_the_editor_as_one_undoable_edit(demo, roots):
    handlers, out = demo
    session = out["state"]
    for rel in ("robot_01.png", "robot_02.png"):
        session.editor.set_caption(rel, "")
    filled = named(handlers.auto_caption(session, "", DEMO_TRIGGER, RES, DEMO_CLASS, "template", "",
                                         "on a plain background", False, True, 77))
    assert "Auto-captioned 2 images" in filled["notice"] and "14 kept" in filled["notice"]
    for rel in ("robot_01.png", "robot_02.png"):
        text = session.editor.captions[rel]
        assert DEMO_TRIGGER in text and DEMO_CLASS in text and "on a plain background" in text
    assert session.editor.last_bulk_edit == "auto-caption (template)"
    assert (roots.datasets / "demo" / "robot_01.txt").read_text().strip() != session.editor.captions["robot_01.png"], \
        "nothing written before Save"
    handlers.undo(session, "", DEMO_TRIGGER, RES)
    assert session.editor.captions["robot_01.png"] == ""
    with pytest.raises(gr.Error, match="captioner must be one of"):
        handlers.auto_caption(session, "", DEMO_TRIGGER, RES, DEMO_CLASS, "gpt", "", "", False, True, 77)


def test_model_auto_caption_waits_for_no_one_and_says_tiny_random_is_noise(demo):
    handlers, out = demo
    session = out["state"]
    before = dict(session.editor.captions)
    args = (DEMO_CLASS, "blip", "tiny-random", "", True, True, 8)
    # both answers are the notice line, not a toast (gr.Warning) besides it
    with ACCELERATOR.hold("training"), warnings.catch_warnings(record=True) as toasts:
        warnings.simplefilter("always")
        busy = named(handlers.auto_caption(session, "", DEMO_TRIGGER, RES, *args))
    assert "⚠️" in busy["notice"] and "accelerator is busy" in busy["notice"] and session.editor.captions == before

    with warnings.catch_warnings(record=True) as more:
        warnings.simplefilter("always")
        filled = named(handlers.auto_caption(session, "", DEMO_TRIGGER, RES, *args))
    assert not [w for w in toasts + more if "busy" in str(w.message) or "random weights" in str(w.message)]
    assert "Auto-captioned 16 images with tiny-random: 16 captions changed" in filled["notice"]
    assert "⚠️ tiny-random has random weights" in filled["notice"]
    assert all(text.startswith("ohwx, ") for text in session.editor.captions.values()), "prefix-trigger"
    assert session.editor.last_bulk_edit == "auto-caption (blip)"
    with pytest.raises(gr.Error, match="outside the models folder"):
        handlers.auto_caption(session, "", DEMO_TRIGGER, RES, DEMO_CLASS, "blip", "../../etc", "", True, True, 8)


def test_send_to_train_needs_saved_captions(demo):
    handlers, out = demo
    session = out["state"]
    handlers.lowercase(session, "", "OHWX", RES)
    handlers.add_suffix(session, "", DEMO_TRIGGER, RES, "studio photo", "comma")
    with pytest.raises(gr.Error, match="16 unsaved caption changes.*Save first"):
        handlers.send_to_train(session, "", DEMO_TRIGGER, DEMO_CLASS)
    handlers.save(session, "", DEMO_TRIGGER, RES)
    notice, data_dir, trigger, class_phrase, tabs, sent = handlers.send_to_train(session, "", " ohwx ", DEMO_CLASS)
    assert data_dir.value == "demo" and ("demo", "demo") in data_dir.choices
    assert (trigger, class_phrase) == ("ohwx", "toy robot") and tabs.selected == "train"
    assert "Sent **demo** to Train (16 images" in notice

    # a reload: what was sent comes back from the browser into both tabs
    picker, box_trigger, box_class, data_dir, data_trigger, data_class = handlers.restore_sent(sent)
    assert picker.value == "demo" and data_dir.value == "demo" and ("demo", "demo") in data_dir.choices
    assert (box_trigger, box_class, data_trigger, data_class) == ("ohwx", "toy robot", "ohwx", "toy robot")
    assert handlers.restore_sent({}) == (SKIP,) * 6, "nothing sent yet: the form keeps its defaults"
    assert handlers.restore_sent({"dir": "gone"}) == (SKIP,) * 6, "a folder deleted since is forgotten"
    assert handlers.restore_sent({"dir": "../outputs"}) == (SKIP,) * 6


def test_the_tab_is_wired_to_the_train_tab(roots):
    app, studio = build_app(Settings(roots=roots), Runner(roots.outputs, roots.models, lock=AcceleratorLock()))
    fns = {fn.api_name: fn for fn in app.fns.values()}
    for name in ("open_demo", "select_image", "save_captions", "add_trigger", "undo_bulk_edit", "auto_caption"):
        assert name in fns, name
    send = fns["send_to_train"]
    fields = studio.train.fields
    assert [o._id for o in send.outputs][:5] == [c._id for c in (studio.notice, fields["data.dir"],
                                                                 fields["data.trigger_word"], fields["data.class_phrase"],
                                                                 studio.tabs)]
    assert isinstance(send.outputs[5], gr.BrowserState), "what was sent is kept in the browser"
    # the report is made at the Train tab's resolution (64 px for the demo preset), not the 512 default
    resolution = next(b for b in app.blocks.values() if getattr(b, "label", None) == "Training resolution")
    assert resolution.value == fields["data.resolution"].value == 64


def test_the_report_is_at_the_training_resolution_and_follows_it(handlers):
    out = named(handlers.open_demo(None, 64)[1:])
    session = out["state"]
    assert "Buckets at 64 px" in out["report"] and "smaller than half" not in out["report"], \
        "the demo's 128 px images are not small for its 64 px training"
    assert handlers.follow_resolution(session, "", DEMO_TRIGGER, 64) == SKIP, "already at 64 px: nothing sent"
    at_512 = named(handlers.follow_resolution(session, "", DEMO_TRIGGER, 512))
    assert "Buckets at 512 px" in at_512["report"]
    assert "16 images are smaller than half the training resolution (256 px" in at_512["report"]


def test_the_unsaved_count_while_typing_is_honest(demo):
    handlers, out = demo
    session = out["state"]
    shown = named(handlers.show_image(session, "", DEMO_TRIGGER, RES, "robot_02.png"))
    original = shown["caption"]
    assert "1 unsaved caption changes" in handlers.typing_status(session, original + ", waving")
    assert "all changes saved" in handlers.typing_status(session, f"  {original}   "), \
        "spaces the editor drops are no change"
    handlers.apply_caption(session, original + ", waving", DEMO_TRIGGER, RES)
    assert "all changes saved" in handlers.typing_status(session, original), "typing it back undoes the change"
    assert "1 unsaved caption changes" in handlers.typing_status(session, original + ", waving")


def test_clear_the_tensor_cache_with_a_confirm_step_and_not_under_a_job(handlers, tmp_path, monkeypatch):
    from studio.ui.notices import Refusal

    cache = tmp_path / "tensors"
    monkeypatch.setenv("LORA_STUDIO_TENSOR_CACHE", str(cache))
    entry = cache / "latents" / "ab" / ("ab" + "0" * 62 + ".safetensors")
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"x" * 3000)
    line, row, button = handlers.ask_clear_cache()
    assert "**2.9 KB**" in line and "1 latents" in line and str(cache) in line
    assert row.visible is True and button.value == "Delete 2.9 KB of cached tensors"

    with ACCELERATOR.hold("training run-a"):
        with pytest.raises(Refusal, match="busy with training run-a"):
            handlers.clear_cache()
    assert entry.exists(), "a job's cache is left alone"

    notice, line, row = handlers.clear_cache()
    assert "Cleared the cache: 2.9 KB (1 entries) deleted" in notice and row.visible is False
    assert not entry.exists() and "**0 B**" in line
    assert handlers.ask_clear_cache()[1].visible is False, "nothing to clear: no confirm step"
