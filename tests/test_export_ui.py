"""The Checkpoints tab's export, without a server: the four formats, the preview picker, the merge
weight, the notice beside Export (size and time for merged models), and errors in UI words."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from studio.config import load_config
from studio.core.lock import ACCELERATOR
from studio.engine.control import Control
from studio.engine.export import default_out
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.engine.train import run_training
from studio.ui.app import Studio
from studio.ui.checkpoints_tab import CheckpointHandlers
from studio.ui.notices import Refusal
from studio.ui.security import Roots


@pytest.fixture(scope="module")
def handlers(tmp_path_factory) -> CheckpointHandlers:
    base = tmp_path_factory.mktemp("export-ui")
    roots = Roots.create(base / "datasets", base / "models", base / "outputs")
    config = load_config("tiny-demo", ["model.base=tiny-sd15", "model.family=sd15", "train.max_steps=4",
                                       "save.every_steps=2", "sample.every_steps=2", "optim.warmup_steps=0",
                                       "train.batch_size=2", "sample.inference_steps=2", "sample.seeds=[1, 2]"])
    run = RunFolder.create(roots.outputs, "done", config)
    assert run_training(config, run, Control()) == "finished"
    studio = Studio(runner=Runner(roots.outputs, roots.models), roots=roots)
    return CheckpointHandlers(studio)


def exported_files(shown) -> list[str]:
    """The files an export offers for download."""
    files, _note = shown
    return files or []


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_webui_export_with_a_chosen_preview(handlers):
    *_, preview = handlers.show_run("done")
    values = [value for _, value in preview.choices]
    assert values[:2] == ["auto", "none"] and "step-000002/p00-s2.png" in values
    shown, note = handlers.export_checkpoint("done", 4, "webui", "step-000002/p00-s2.png")
    files = exported_files((shown, note))
    assert [Path(f).suffix for f in files] == [".safetensors", ".json", ".png"]
    assert note.startswith("✓ Exported: wrote `done/exports/") and "Exported files, just below" in note
    run = RunFolder(handlers.studio.roots.outputs / "done")
    assert (_pixels(files[2]) == _pixels(run.samples_dir / "step-000002" / "p00-s2.png")).all()
    with pytest.raises(Refusal, match="no sample image") as refused:
        handlers.export_checkpoint("done", 4, "webui", "../../etc/passwd")
    assert refused.value.field == "preview"


def test_notice_beside_export_says_what_and_how_big(handlers):
    assert ".json" in handlers.export_note("done", 4, "webui", 1.0)
    scale, note = handlers.pick_format("done", 4, "checkpoint", 0.5)
    assert scale.visible and "weight **0.5**" in note and "done-step000004-merged-x0.5.safetensors" in note
    assert "MB" in note and " s" in note, "a size and a time estimate"
    scale, note = handlers.pick_format("done", 4, "pipeline", 1.0)
    assert scale.visible and "diffusers folder" in note
    scale, _ = handlers.pick_format("done", 4, "diffusers", 1.0)
    assert not scale.visible
    assert "Pick a checkpoint" in handlers.export_note("done", None, "webui", 1.0)


def test_merged_exports_stay_on_the_server_with_a_notice(handlers):
    run = RunFolder(handlers.studio.roots.outputs / "done")
    shown, note = handlers.export_checkpoint("done", 2, "checkpoint", "auto", 0.5)
    assert exported_files((shown, note)) == [] and shown is None
    path = default_out(run, "checkpoint", 2, 0.5)
    assert path.is_file() and path.with_suffix(".preview.png").is_file()
    assert path.name in note and "MB" in note and "stays on this machine" in note
    assert exported_files(handlers.export_checkpoint("done", 2, "pipeline", "auto", 1.0)) == []
    assert (default_out(run, "pipeline", 2) / "model_index.json").is_file()


def test_export_errors_in_ui_words(handlers):
    with ACCELERATOR.hold("training", "someone-else"):
        with pytest.raises(gr.Error, match="busy with"):
            handlers.export_checkpoint("done", 4, "checkpoint", "auto", 1.0)
    with pytest.raises(Refusal, match="no checkpoint at step 3") as refused:
        handlers.export_checkpoint("done", 3, "pipeline")
    assert refused.value.field == "checkpoint"
