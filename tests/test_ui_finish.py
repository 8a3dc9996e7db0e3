"""Issue 16, points 5 and 8 without a browser: the Dataset report at the Train tab's resolution, an
honest unsaved count while a caption is typed, Save committing the caption being typed, an empty lint
that says so, and the export success notice beside Export (checkpoint sizes: tests/test_ui_steer.py)."""

from __future__ import annotations

import pytest

from studio.config import load_config
from studio.core.lock import AcceleratorLock
from studio.data.demo import DEMO_TRIGGER
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.ui import dataset_view as view
from studio.ui import export_view
from studio.ui.app import Settings, Studio, build_app
from studio.ui.dataset_handlers import DatasetHandlers
from studio.ui.security import Roots

VIEW = ("notice", "state", "status", "gallery", "page", "preview", "caption", "info", "report",
        "lint", "skipped", "buckets", "sizes", "lengths", "duplicates", "missing")
SMALL = "smaller than half the training resolution"


def named(outputs) -> dict:
    return dict(zip(VIEW, outputs))


@pytest.fixture
def roots(tmp_path) -> Roots:
    return Roots.create(tmp_path / "datasets", tmp_path / "models", tmp_path / "outputs")


@pytest.fixture
def handlers(roots) -> DatasetHandlers:
    return DatasetHandlers(Studio(runner=Runner(roots.outputs, roots.models, lock=AcceleratorLock()), roots=roots))


def test_the_dataset_report_uses_the_train_tabs_resolution(roots):
    app, studio = build_app(Settings(roots=roots), Runner(roots.outputs, roots.models, lock=AcceleratorLock()))
    train_resolution = studio.train.fields["data.resolution"]
    demo_resolution = load_config("tiny-demo").data.resolution
    assert train_resolution.value == demo_resolution == 64
    ours = [b for b in app.blocks.values() if getattr(b, "label", None) == "Training resolution"]
    assert len(ours) == 1 and ours[0].value == demo_resolution  # the page opens at the preset's resolution
    follows = [fn for fn in app.fns.values()
               if train_resolution in fn.inputs and ours[0] in fn.outputs and "change" in str(fn.targets)]
    assert follows, "the Dataset tab's resolution follows the Train tab's data.resolution"


def test_the_demo_at_its_own_resolution_has_no_small_image_warning(handlers):
    _, *at_64 = handlers.open_demo(None, 64)
    assert SMALL not in named(at_64)["report"] and "Buckets at 64 px" in named(at_64)["report"]
    _, *at_512 = handlers.open_demo(named(at_64)["state"], 512)  # the check itself still works
    assert SMALL in named(at_512)["report"]


def test_the_unsaved_count_includes_the_caption_being_typed(handlers):
    _, *rest = handlers.open_demo(None, 64)
    session = named(rest)["state"]
    shown = named(handlers.show_image(session, "", DEMO_TRIGGER, 64, "robot_03.png"))
    assert "all changes saved" in shown["status"]
    assert "**1 unsaved caption changes**" in handlers.typing_status(session, shown["caption"] + ", waving")
    assert "all changes saved" in handlers.typing_status(session, shown["caption"])  # typed back: nothing unsaved
    assert session.editor.captions["robot_03.png"] == shown["caption"]  # the status line applies nothing


def test_save_commits_the_caption_being_typed(handlers, roots):
    """The browser race of issue 16: a caption typed and Save clicked before the box's blur event ran.
    Save gets the box's text as its input and writes it."""
    _, *rest = handlers.open_demo(None, 64)
    session = named(rest)["state"]
    handlers.show_image(session, "", DEMO_TRIGGER, 64, "robot_05.png")
    typed = "ohwx toy robot, typed and saved at once"
    saved = named(handlers.save(session, typed, DEMO_TRIGGER, 64))  # no apply_caption (blur) before it
    assert "Saved **demo**: 1 changed captions" in saved["notice"] and "all changes saved" in saved["status"]
    assert (roots.datasets / "demo" / "robot_05.txt").read_text(encoding="utf-8") == typed + "\n"


def test_the_empty_lint_says_no_findings():
    assert view.lint_table(None).empty  # nothing open: nothing to say
    assert view.lint_table({"lint": []}).finding.tolist() == [view.NO_FINDINGS]


def test_export_success_is_a_notice_beside_export(tmp_path):
    run = RunFolder(tmp_path / "outputs" / "done")
    lora = run.path / "exports" / "done-step4.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"x" * 2048)
    note = export_view.written_note(run, lora, "webui")
    assert note.startswith("✓ Exported: wrote `done/exports/done-step4.safetensors` (2.0 KB)")
    assert "Exported files, just below" in note
    assert "stays on this machine" in export_view.written_note(run, lora, "checkpoint")
