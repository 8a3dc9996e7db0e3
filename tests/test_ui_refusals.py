"""Errors in one place for the Checkpoints, Compare and Score tabs and the Train tab's job commands
(issue 16, point 2): a refused action is one line in the header's notice, the field at fault is
outlined until the action runs again, no other output is touched and nothing goes to a toast. Also
the Score chart's fixed axes and its legend, and the Compare tab's checkpoints as they are on disk
(issue 16, point 5)."""

from __future__ import annotations

import shutil
import warnings

import gradio as gr
import pandas as pd
import pytest

from studio.core.lock import ACCELERATOR, AcceleratorLock
from studio.engine.runner import Runner
from studio.ui import eval_view, live
from studio.ui.app import Settings, build_app
from studio.ui.compare_tab import CompareHandlers
from studio.ui.notices import INVALID, Refusal, wire
from studio.ui.security import Roots

RUN = "tiny-run"


@pytest.fixture(scope="module")
def built(finished_run, tmp_path_factory):
    """The whole app on a copy of the shared finished tiny run (checkpoints 4 and 8 and the final LoRA)."""
    base = tmp_path_factory.mktemp("refusals")
    roots = Roots.create(base / "datasets", base / "models", base / "outputs")
    shutil.copytree(finished_run.path, roots.outputs / RUN)
    runner = Runner(roots.outputs, roots.models, lock=AcceleratorLock(base / "lock"), datasets_dir=roots.datasets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app, studio = build_app(Settings(roots=roots), runner)
    return app, studio


def event(app: gr.Blocks, api_name: str):
    return next(fn for fn in app.fns.values() if fn.api_name == api_name)


def call(app: gr.Blocks, api_name: str, *args) -> dict:
    """Run an event's wired function, then the step that outlines fields (when it has one), as the
    page would; their outputs by component."""
    fn = event(app, api_name)
    values = fn.fn(*args)
    values = values if isinstance(values, tuple) else (values,)
    assert len(values) == len(fn.outputs)
    out = dict(zip(fn.outputs, values))
    flag = fn.outputs[-1]
    if isinstance(flag, gr.State):
        (outline,) = [f for f in app.fns.values() if f.inputs == [flag]]
        marks = outline.fn(out.pop(flag))
        out |= dict(zip(outline.outputs, marks if isinstance(marks, tuple) else (marks,)))
    return out


def marked(value) -> bool:
    return isinstance(value, dict) and INVALID in value.get("elem_classes", [])


def unmarked(value) -> bool:
    return isinstance(value, dict) and "elem_classes" in value and INVALID not in value["elem_classes"]


def is_skip(value) -> bool:
    return value == gr.skip()


def component(app: gr.Blocks, label: str, kind: type = gr.components.Component):
    found = [b for b in app.blocks.values() if isinstance(b, kind) and getattr(b, "label", None) == label]
    assert found, label
    return found


# --- the mechanism -------------------------------------------------------------------------------

def test_a_refusal_outlines_its_field_and_the_next_run_takes_the_outline_off():
    def act(text: str) -> str:
        if text == "bad":
            raise Refusal("Seeds: give numbers.", field="seeds")
        return f"done {text}"

    with gr.Blocks() as app:
        notice, output, button = gr.Markdown(), gr.Textbox(), gr.Button()
        seeds, scales = gr.Textbox(elem_classes="mine"), gr.Textbox()
        wire(button.click, act, seeds, output, notice, fields=dict(seeds=seeds, scales=scales), api_name="act")
    main = event(app, "act")
    assert main.outputs[:2] == [output, notice] and isinstance(main.outputs[2], gr.State)
    out = call(app, "act", "bad")
    assert is_skip(out[output]) and out[notice].endswith("⚠️ Seeds: give numbers.")
    assert out[seeds]["elem_classes"] == ["mine", INVALID] and unmarked(out[scales])
    out = call(app, "act", "ok")
    assert out[output] == "done ok" and is_skip(out[notice])
    assert out[seeds]["elem_classes"] == ["mine"] and unmarked(out[scales])


def test_the_api_answers_with_the_events_outputs_and_the_notice_only(built):
    app, _ = built
    info = app.get_api_info()["named_endpoints"]
    assert [r["label"] for r in info["/delete_checkpoint"]["returns"]] == ["Last action"]
    assert [r["label"] for r in info["/export_checkpoint"]["returns"]] == ["Exported files", "Export", "Last action"]


# --- Compare -------------------------------------------------------------------------------------

def grid_args(app, **changes):
    values = dict(run=RUN, prompts="a photo of {trigger}", seeds="1", checkpoints=["final"], prompt_only=True,
                  scales="1", inference_steps=2, guidance=7.0, width=64, height=64, negative="", grid_name="",
                  baseline="", external=[]) | changes
    return list(values.values())


@pytest.mark.parametrize("field, value, label, words", [
    ("seeds", "1,x", "Seeds", "seeds '1,x' must be numbers"),
    ("scales", "", "LoRA scales", "LoRA scales is empty"),
    ("prompts", "# only a comment", "Prompts", "Prompts is empty"),
    ("checkpoints", ["12"], "Checkpoints", "no checkpoint LoRA at step 12"),
    ("width", None, "Width", "Width is empty"),
    ("grid_name", "../up", "Grid name", "Cannot make the grid"),
    ("baseline", "x\ny", "Baseline prompts", "1 prompts but 2 baseline prompts"),
])
def test_a_refused_grid_is_one_line_with_its_field_outlined(built, field, value, label, words):
    app, studio = built
    out = call(app, "make_grid", *grid_args(app, **{field: value}))
    line = out[studio.notice]
    assert "⚠️ Cannot make the grid: " in line and words in line.partition("\n")[0]
    (box,) = [c for c in out if getattr(c, "label", None) == label]
    assert marked(out[box])
    others = [c for c in out if c is not box and c is not studio.notice]
    assert all(is_skip(out[c]) or unmarked(out[c]) for c in others), "nothing else is touched"
    assert not (studio.roots.outputs / RUN / "grids").exists()


def test_a_busy_accelerator_refuses_the_grid_in_the_notice_not_a_toast(built, recwarn):
    app, studio = built
    with ACCELERATOR.hold("training other-run"):
        out = call(app, "make_grid", *grid_args(app))
    assert "busy with training other-run" in out[studio.notice]
    assert not [w for w in recwarn if "busy" in str(w.message)]
    assert not (studio.roots.outputs / RUN / "grids").exists()


def test_send_to_score_without_a_grid_outlines_earlier_grids(built):
    app, studio = built
    out = call(app, "send_to_score", RUN, None)
    (grids,) = component(app, "Earlier grids")
    assert marked(out[grids]) and "Make a grid of tiny-run first" in out[studio.notice]
    assert is_skip(out[studio.tabs]), "the page stays on Compare"


def test_the_compare_tab_lists_the_checkpoints_on_disk_when_selected(built):
    """A page left open during training keeps its checkpoint list; selecting the tab lists them again."""
    app, studio = built
    handlers = CompareHandlers(studio)
    run = studio.roots.run(RUN)
    final = run.final_lora.read_bytes()
    run.final_lora.unlink()  # as while the run was training: no final LoRA yet
    try:
        picked, batch = handlers.list_checkpoints(RUN, ["8"], "8")
        assert picked.constructor_args["choices"] == ["4", "8"] and "value" not in picked.constructor_args
        assert "value" not in batch.constructor_args, "picks that still exist are not sent back"
    finally:
        run.final_lora.write_bytes(final)
    # while a new pick of the run fills them in, empty picks read before it must not clear them
    picked, batch = handlers.list_checkpoints(RUN, [], None)
    assert "value" not in picked.constructor_args and "value" not in batch.constructor_args
    picked, batch = handlers.list_checkpoints(RUN, ["8", "gone"], "gone")
    assert picked.constructor_args["choices"] == ["4", "8", "final"] and picked.constructor_args["value"] == ["8"]
    assert batch.constructor_args["value"] == "final"
    chained = [fn for fn in app.fns.values() if getattr(fn.fn, "__name__", "") == "list_checkpoints"]
    assert chained, "the tab's select lists the checkpoints again"


# --- Checkpoints ---------------------------------------------------------------------------------

def test_checkpoint_actions_without_a_pick_outline_the_checkpoint_field(built):
    app, studio = built
    (pick,) = [c for c in event(app, "ask_delete").inputs if getattr(c, "label", None) == "Checkpoint"]
    for api_name, args in (("ask_delete", (RUN, None)), ("export_checkpoint", (RUN, None, "webui", "auto", 1.0,
                                                                                  "", "", "", "")),
                           ("resume_run", (RUN, 3))):
        out = call(app, api_name, *args)
        assert marked(out[pick]), api_name
        assert "⚠️" in out[studio.notice] and ("Pick a checkpoint" in out[studio.notice]
                                               or "no checkpoint at step 3" in out[studio.notice])
    assert not (studio.roots.outputs / RUN / "exports").exists()


def test_a_run_that_is_not_there_is_a_notice(built):
    app, studio = built
    out = call(app, "show_run", "../outputs")
    assert "⚠️" in out[studio.notice] and "letters, digits" in out[studio.notice]
    assert all(is_skip(v) for c, v in out.items() if c is not studio.notice)


def test_export_writes_its_files_beside_the_button_with_a_notice(built):
    app, studio = built
    out = call(app, "export_checkpoint", RUN, 8, "webui", "none", 1.0, "", "", "", "")
    (files,) = component(app, "Exported files")
    (note,) = [c for c in out if getattr(c, "elem_id", None) == "export-note"]
    assert files.visible and len(out[files]) == 2
    assert out[note].startswith("✓ Exported: wrote `tiny-run/exports/") and is_skip(out[studio.notice])


# --- Score ---------------------------------------------------------------------------------------

def test_a_broken_scores_file_is_a_notice_with_the_grid_outlined(built):
    app, studio = built
    folder = studio.roots.outputs / RUN / "grids" / "broken"
    folder.mkdir(parents=True)
    (folder / "scores.json").write_text("{not json", encoding="utf-8")
    try:
        out = call(app, "show_scores", RUN, "broken", "DINO")
    finally:
        shutil.rmtree(folder.parent)
    (grid,) = component(app, "Grid", gr.Dropdown)
    assert marked(out[grid]) and "⚠️ Cannot read the scores" in out[studio.notice]


def test_the_score_chart_has_fixed_axes_and_a_legend_that_wraps():
    assert eval_view.chart_limits(None) == {"x_lim": [0.0, 0.5], "y_lim": [0.0, 1.0]}
    close = pd.DataFrame({"CLIP-T": [0.301, 0.305], "fidelity": [0.760, 0.764], "column": ["a", "b"]})
    assert eval_view.chart_limits(close) == {"x_lim": [0.0, 0.5], "y_lim": [0.0, 1.0]}, "0.004 stays small"
    random = pd.DataFrame({"CLIP-T": [-0.109, -0.108], "fidelity": [0.77, 0.77], "column": ["a", "b"]})
    assert eval_view.chart_limits(random)["x_lim"] == [-0.2, 0.5], "a negative cosine stays on the chart"
    scores = {"columns": [{"label": "prompt only", "kind": "prompt_only", "step": None, "clip_t": 0.3},
                          {"label": "final · ×1", "kind": "lora", "step": "final", "scale": 1.0, "clip_t": 0.3},
                          {"label": "Freepik", "kind": "external", "step": None, "clip_t": 0.3}]}
    frame = pd.DataFrame({"CLIP-T": [0.3] * 3, "fidelity": [0.7] * 3,
                          "column": ["prompt only (baseline)", "final · ×1", "Freepik (external)"]})
    colors = eval_view.chart_colors(scores, frame)
    assert list(colors) == list(frame["column"]) and colors["prompt only (baseline)"] == eval_view.BASELINE_COLOR
    assert len(set(colors.values())) == 3
    legend = live.legend_html(colors, "Columns", marker="dot")
    assert legend.count('class="legend-chip"') == 3 and "Freepik (external)" in legend


# --- Train: the job commands ---------------------------------------------------------------------

def test_a_job_command_that_does_not_apply_is_a_notice_not_a_toast(built, recwarn):
    app, studio = built
    for api_name in ("pause", "resume", "stop", "sample_now", "save_now"):
        out = call(app, api_name)
        assert "⚠️" in out[studio.notice] and "<details" not in out[studio.notice], api_name
    assert not [w for w in recwarn if issubclass(w.category, UserWarning) and "job" in str(w.message).lower()]
