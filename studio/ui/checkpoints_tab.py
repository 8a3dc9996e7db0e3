"""Checkpoints tab: every run in outputs/, its loss curve and samples, and per checkpoint export
(LoRA files, or the base model with the LoRA merged in), download, resume and delete.

Runs are addressed by name and checkpoints by step, never by path. Resume always continues from
the run's latest checkpoint (the engine's contract); picking an older one is refused with the way
out. "Train N more steps" extends a finished or stopped run exactly (`resume --max-steps`). Whether a
run can go on, and whether it is alive, is the engine's `RunFolder.state()`; the checkpoints table
says which checkpoints retention keeps and which the next checkpoint prunes. A checkpoint of a run
that is training (here or in another process) is never deleted. A refusal is one line in the
studio's notice with the field at fault outlined; what Export wrote shows beside the Export button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from studio.core.lock import AcceleratorBusy
from studio.engine.runs import RunFolder, delete_checkpoint, list_runs
from studio.engine.runstate import NotResumable
from studio.ui import export_view, live, runs_view
from studio.ui.notices import Refusal, refusal_from, refused_as, refusing, wire
from studio.ui.context import CHECKPOINTS_TAB, TRAIN_TAB
from studio.ui.security import PathNotAllowed

if TYPE_CHECKING:
    from studio.ui.context import Studio

TITLE, TAB_ID = "Checkpoints", CHECKPOINTS_TAB
FORMATS = export_view.FORMATS
RESUME_NOTE = ("Resume continues from the run's **latest** checkpoint{where}, with its optimizer state and data "
               "order.{why}")
MORE_STEPS = 500
"""The default of "Train N more steps"."""


class CheckpointHandlers:
    """The Checkpoints tab's event handlers; they read run folders and call the engine."""

    def __init__(self, studio: Studio):
        self.studio = studio

    def _checkpoint_step(self, run: RunFolder, step: Any) -> int:
        steps = [c.step for c in run.checkpoints()]
        try:
            value = int(step)
        except (TypeError, ValueError):
            raise Refusal(f"Pick a checkpoint of {run.name} first (steps: {', '.join(map(str, steps)) or 'none'}).",
                          field="checkpoint") from None
        if value not in steps:
            raise Refusal(f"Run {run.name} has no checkpoint at step {value} (steps: "
                          f"{', '.join(map(str, steps)) or 'none'}).", field="checkpoint")
        return value

    # --- browsing -------------------------------------------------------------------------------
    def list_runs(self, selected: str | None) -> tuple[Any, Any]:
        """The runs table, and the run picker (keeping the picked run while it exists)."""
        names = self.run_names()
        keep = selected if selected in names else (names[0] if names else None)
        table = runs_view.runs_table(self.studio.roots.outputs, self.studio.runner.snapshot())
        return table, gr.Dropdown(choices=names, value=keep)

    def run_names(self) -> list[str]:
        return [run.name for run in list_runs(self.studio.roots.outputs)]

    def follow_job(self, selected: str | None, seen: dict[str, Any] | None) -> tuple[Any, ...]:
        """When the studio's job changes state or saves a checkpoint, refresh the
        runs table (and the picked run's summary and checkpoints if it is that job); else gr.skip()."""
        snap = self.studio.runner.snapshot()
        key = (snap.run, snap.status, snap.checkpoints)
        if (seen or {}).get("job") == key:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), seen
        table = runs_view.runs_table(self.studio.roots.outputs, snap)
        if not selected or selected != snap.run:
            return table, gr.skip(), gr.skip(), gr.skip(), {"job": key}
        run = self.studio.run(selected)
        steps = [c.step for c in run.checkpoints()]
        return (table, runs_view.run_summary_html(run, snap), runs_view.checkpoints_table(run),
                gr.Dropdown(choices=list(reversed(steps))), {"job": key})

    def pick_row(self, evt: gr.SelectData) -> Any:
        """A click anywhere in a row of the runs (or checkpoints) table picks that run (or step)."""
        return evt.row_value[0]

    def show_run(self, name: str | None) -> tuple[Any, ...]:
        """Summary, loss curve, samples by step, checkpoints and the resume note of one run."""
        if not name:
            return ("", gr.Accordion(visible=False), "", None, gr.Dropdown(choices=[], value=None),
                    [], runs_view.empty_checkpoints_table(), gr.Dropdown(choices=[], value=None),
                    RESUME_NOTE.format(where="", why=""), gr.Group(visible=False),
                    gr.File(value=None, visible=False),
                    gr.Dropdown(choices=export_view.preview_choices(None), value=export_view.AUTO))
        run = self.studio.run(name)
        info = run.read_status()
        snap = self.studio.runner.snapshot()
        state = run.state()
        failed = runs_view.run_status(state, snap) == "failed" and bool(info.get("traceback"))
        metrics = snap.metrics if snap.run == run.name and snap.active else run.read_metrics()
        sample_steps = run.sample_steps()
        latest_samples = sample_steps[-1] if sample_steps else None
        steps = [c.step for c in run.checkpoints()]
        where = f" (step {steps[-1]})" if steps else " (this run has none yet)"
        why = f" {state.why[0].upper()}{state.why[1:]}."
        return (
            runs_view.run_summary_html(run, snap),
            gr.Accordion(visible=failed), info.get("traceback") or "",
            live.loss_frame(metrics),
            gr.Dropdown(choices=sample_steps, value=latest_samples),
            gr.Gallery(value=live.gallery_items(run, latest_samples),
                       label=live.images_label("Samples", live.run_base_model(run))),
            runs_view.checkpoints_table(run),
            gr.Dropdown(choices=list(reversed(steps)), value=steps[-1] if steps else None),
            RESUME_NOTE.format(where=where, why=why),
            gr.Group(visible=False),
            gr.File(value=None, visible=False),
            gr.Dropdown(choices=export_view.preview_choices(run), value=export_view.AUTO),
        )

    def show_samples(self, name: str, step: Any) -> list[tuple[str, str]]:
        run = self.studio.run(name)
        if step not in run.sample_steps():
            raise Refusal(f"Run {run.name} has no samples at step {step} (steps with samples: "
                          f"{', '.join(map(str, run.sample_steps())) or 'none'}).", field="sample_step")
        return live.gallery_items(run, step)

    # --- per checkpoint -------------------------------------------------------------------------
    def export_checkpoint(self, name: str, step: Any, fmt: str, preview: str | None = export_view.AUTO,
                          scale: float | None = 1.0, author: str = "", license: str = "", description: str = "",
                          tags: str = "", progress: gr.Progress = gr.Progress()) -> tuple[Any, str]:
        """Write the checkpoint in `fmt` (see FORMATS) into the run's exports/; returns the files to download
        (the LoRA, its A1111 sidecar and preview; none for a merged model, which stays on the server) and
        the notice beside Export saying what was written."""
        from studio.engine.export import export_run  # imports peft and diffusers: only when exporting
        from studio.engine.lora_metadata import ModelCard
        from studio.engine.models import ModelLoadError

        run = self.studio.run(name)
        if fmt not in FORMATS:
            raise Refusal(f"Pick an export format: {', '.join(FORMATS)} (got {fmt!r}).", field="format")
        value = self._checkpoint_step(run, step)
        with refused_as("Cannot export", "preview"):
            chosen = export_view.resolve_preview(run, preview)
        merged = fmt in export_view.MERGED
        card = ModelCard(author=author or "", license=license or "", description=description or "", tags=tags or "")
        try:
            path = export_run(run, fmt, value, scale=float(1.0 if scale is None or not merged else scale),
                              preview=chosen, card=card, models_dir=self.studio.roots.models,
                              progress=export_view.gradio_progress(progress))
        except AcceleratorBusy as err:
            raise Refusal(str(err)) from None
        except (FileNotFoundError, ValueError, ModelLoadError) as err:
            raise refusal_from("Cannot export", err) from None
        files = export_view.downloads(path, fmt)
        return files or None, export_view.written_note(run, path, fmt)

    def export_note(self, name: str | None, step: Any, fmt: str, scale: float | None) -> str:
        """The notice beside Export: what it will write, and for merged models how big and how long."""
        if not name:
            return export_view.export_note(None, None, fmt, scale, None)
        run = self.studio.run(name)
        try:
            value = self._checkpoint_step(run, step)
        except Refusal:
            value = None
        return export_view.export_note(run, value, fmt, scale, self.studio.roots.models)

    def pick_format(self, name: str | None, step: Any, fmt: str, scale: float | None) -> tuple[Any, str]:
        """The merge weight only applies to (and shows for) the merged formats."""
        return gr.Number(visible=fmt in export_view.MERGED), self.export_note(name, step, fmt, scale)

    def resume_run(self, name: str, step: Any) -> tuple[str, Any]:
        """Continue a run from its latest checkpoint in the background and switch to the Train tab."""
        run = self.studio.run(name)
        latest = run.latest_checkpoint()
        if latest is not None and step is not None and self._checkpoint_step(run, step) != latest.step:
            newer = [str(c.step) for c in run.checkpoints() if c.step > int(step)]
            raise Refusal(f"Resume continues from the run's latest checkpoint (step {latest.step}), not step {step}. "
                          f"To continue from step {step}, delete the newer checkpoints ({', '.join(newer)}) first.",
                          field="checkpoint")
        return self._continue(run, None)

    def extend_run(self, name: str, more: Any) -> tuple[str, Any]:
        """Train N more steps from the run's latest checkpoint (a finished run too): `resume --max-steps`."""
        run = self.studio.run(name)
        try:
            extra = int(more)
        except (TypeError, ValueError):
            raise Refusal(f"More steps: enter a whole number of steps (got {more!r}).", field="more") from None
        if extra < 1:
            raise Refusal(f"More steps must be at least 1 (got {extra}).", field="more")
        latest = run.latest_checkpoint()
        if latest is None:
            raise Refusal(f"Run {run.name} cannot be extended: {run.state().why}.")
        return self._continue(run, latest.step + extra)

    def _continue(self, run: RunFolder, max_steps: int | None) -> tuple[str, Any]:
        self._refuse_if_training(run)
        try:
            self.studio.runner.resume(run.name, max_steps=max_steps)
        except NotResumable as err:
            raise refusal_from("Cannot resume", err) from None
        except (AcceleratorBusy, RuntimeError) as err:  # one accelerator user at a time: say so, don't wait
            raise Refusal(str(err)) from None
        except (FileNotFoundError, ValueError) as err:
            raise refusal_from("Cannot resume", err) from None
        step = run.latest_checkpoint().step
        upto = f" up to step {max_steps}" if max_steps else ""
        notice = live.notice(f"Resuming **{run.name}** from step {step}{upto}.")
        return notice, gr.Tabs(selected=TRAIN_TAB)

    def _refuse_if_training(self, run: RunFolder) -> None:
        """A run the studio, or another process (the CLI), is training right now is left alone."""
        snap = self.studio.runner.snapshot()
        if snap.active and snap.run == run.name:
            raise Refusal(f"Run {run.name} is {snap.status} right now and needs its checkpoints: stop it first.")
        state = run.state()
        if state.live:
            where = "this studio" if state.in_this_process else f"another process ({state.pid} on {state.host})"
            raise Refusal(f"Run {run.name} is {state.state} in {where}: stop it first.")

    def ask_delete(self, name: str, step: Any) -> tuple[Any, str]:
        """Show the confirmation for deleting one checkpoint (refused at once for the training run)."""
        run = self.studio.run(name)
        value = self._checkpoint_step(run, step)
        self._refuse_if_training(run)
        latest = run.latest_checkpoint()
        note = " It is the run's latest checkpoint: resume would then continue from the one before." \
            if latest and latest.step == value else ""
        question = f"Delete checkpoint **step {value}** of **{run.name}**? This cannot be undone.{note}"
        return gr.Group(visible=True), question

    def cancel_delete(self) -> Any:
        return gr.Group(visible=False)

    def delete_checkpoint(self, name: str, step: Any) -> tuple[str, Any]:
        run = self.studio.run(name)
        value = self._checkpoint_step(run, step)
        self._refuse_if_training(run)
        try:
            self.studio.roots.check_deletable(run.checkpoint_dir(value))
            delete_checkpoint(run, value)
        except (PathNotAllowed, FileNotFoundError) as err:
            raise refusal_from("Cannot delete", err) from None
        return live.notice(f"Deleted checkpoint step {value} of **{run.name}**."), gr.Group(visible=False)


def build(studio: Studio, tab: gr.Tab) -> None:
    handlers = CheckpointHandlers(studio)

    # 1. Components: the runs and the picked run (summary, curve) on the left; on the right what to do
    #    with its checkpoints first (so the pickers open downwards and Export's files show beside it),
    #    then the checkpoints, resume, delete and the samples.
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=420):
            with gr.Row(equal_height=True):
                # filled when the tab opens (no run names in the page before login); the handlers check every
                # name, so API callers may pass any
                run_pick = gr.Dropdown([], value=None, label="Run", scale=5, allow_custom_value=True,
                                       info="Pick a run here or click its row in the table.")
                refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_classes="refresh")
            runs = gr.Dataframe(runs_view.empty_runs_table(), label="Runs",
                                interactive=False, max_height=220, wrap=True)
            summary = gr.HTML(padding=False)
            with gr.Accordion("Traceback", open=False, visible=False) as trace_box:
                trace = gr.Code(language="python", label="Traceback", interactive=False, max_lines=40)
            chart = gr.LinePlot(None, x="step", y="loss", color="series", label="Loss curve",
                                color_map={"raw": "#94a3b8", "smoothed": "#4f46e5"})
        with gr.Column(scale=6, min_width=480):
            with gr.Row(equal_height=True):
                ckpt_pick = gr.Dropdown([], label="Checkpoint", allow_custom_value=True, scale=1,
                                        info="Step to act on; or click its row in Checkpoints.")
                fmt = gr.Radio(list(FORMATS), value="webui", label="Export format",
                               info=" · ".join(FORMATS.values()), scale=2)
            with gr.Row(equal_height=True):
                preview = gr.Dropdown(export_view.preview_choices(None), value=export_view.AUTO, label="Preview image",
                                      info="Saved as NAME.preview.png beside the file and embedded as its thumbnail.",
                                      allow_custom_value=True, scale=2)
                scale = gr.Number(1.0, label="Merge weight", minimum=-4, maximum=4, step=0.05, visible=False,
                                  info="The LoRA weight fused into the merged model.", scale=1)
            with gr.Accordion("File details: author, license, description, tags", open=False):
                with gr.Row():
                    author = gr.Textbox("", label="Author", max_lines=1)
                    license_ = gr.Textbox("", label="License", max_lines=1, placeholder="e.g. CreativeML-OpenRAIL-M")
                description = gr.Textbox("", label="Description", lines=2,
                                         placeholder="Default: what the run trained (base, trigger word, steps)")
                tags = gr.Textbox("", label="Tags", max_lines=1, placeholder="comma-separated; default: the trigger word")
            with gr.Row(equal_height=False):
                export = gr.Button("Export", variant="primary", scale=0, min_width=110)
                with gr.Column(scale=1):
                    export_note = gr.Markdown(export_view.export_note(None, None, "webui", 1.0, None),
                                              elem_classes="notice", elem_id="export-note", label="Export")
                    files = gr.File(label="Exported files", file_count="multiple", interactive=False,
                                    elem_id="export-files")
            ckpts = gr.Dataframe(runs_view.empty_checkpoints_table(), label="Checkpoints", interactive=False,
                                 max_height=200, wrap=True)
            with gr.Row(equal_height=True):
                resume = gr.Button("Resume training")
                more = gr.Number(MORE_STEPS, label="More steps", precision=0, minimum=1, scale=1,
                                 info="Continue from the latest checkpoint for this many steps.")
                extend = gr.Button("Train N more steps")
                delete = gr.Button("Delete checkpoint…", variant="stop")
            resume_note = gr.Markdown(RESUME_NOTE.format(where="", why=""), elem_classes="notice")
            with gr.Group(visible=False) as confirm_box:
                confirm_text = gr.Markdown(padding=True)
                with gr.Row():
                    confirm = gr.Button("Yes, delete", variant="stop")
                    cancel = gr.Button("Cancel")
            sample_step = gr.Dropdown([], label="Samples at step", info="Validation images rendered during training.",
                                      allow_custom_value=True)
            samples = gr.Gallery(label="Samples", columns=4, height=200, object_fit="contain")

    # 2. Events: browse, then act; every action refreshes what it changed. A refusal (no such run or
    #    checkpoint, not the latest checkpoint, a run in use) is one line in the notice area, with the
    #    field at fault outlined.
    details = [summary, trace_box, trace, chart, sample_step, samples, ckpts, ckpt_pick, resume_note, confirm_box,
               files, preview]
    listed = [runs, run_pick]
    show_run = refusing(handlers.show_run, details, studio.notice)
    run_pick.change(inputs=run_pick, **show_run, api_name="show_run")
    gr.on([tab.select, refresh.click], handlers.list_runs, run_pick, listed, api_name="list_runs").then(
        inputs=run_pick, **show_run, api_visibility="private")
    runs.select(handlers.pick_row, None, run_pick, api_name="pick_run_row")
    ckpts.select(handlers.pick_row, None, ckpt_pick, api_visibility="private")
    seen = gr.State({})
    studio.job_key.change(handlers.follow_job, [run_pick, seen], [runs, summary, ckpts, ckpt_pick, seen],
                          api_name="follow_job", concurrency_limit=None, show_progress="hidden")
    wire(sample_step.input, handlers.show_samples, [run_pick, sample_step], samples, studio.notice,
         fields=dict(sample_step=sample_step), api_name="show_samples")
    picked = dict(checkpoint=ckpt_pick)
    wire(export.click, handlers.export_checkpoint,
         [run_pick, ckpt_pick, fmt, preview, scale, author, license_, description, tags], [files, export_note],
         studio.notice, fields=dict(picked, format=fmt, preview=preview), api_name="export_checkpoint")
    fmt.change(handlers.pick_format, [run_pick, ckpt_pick, fmt, scale], [scale, export_note], api_visibility="private")
    gr.on([run_pick.change, ckpt_pick.change, scale.change], handlers.export_note, [run_pick, ckpt_pick, fmt, scale],
          export_note, api_visibility="private", show_progress="hidden")
    moves = [studio.notice, studio.tabs]
    wire(resume.click, handlers.resume_run, [run_pick, ckpt_pick], moves, studio.notice, fields=picked,
         api_name="resume_run")
    wire(extend.click, handlers.extend_run, [run_pick, more], moves, studio.notice, fields=dict(more=more),
         api_name="extend_run")
    wire(delete.click, handlers.ask_delete, [run_pick, ckpt_pick], [confirm_box, confirm_text], studio.notice,
         fields=picked, api_name="ask_delete")
    cancel.click(handlers.cancel_delete, None, confirm_box, api_name="cancel_delete")
    wire(confirm.click, handlers.delete_checkpoint, [run_pick, ckpt_pick], [studio.notice, confirm_box], studio.notice,
         fields=picked, api_name="delete_checkpoint").success(inputs=run_pick, **show_run, api_visibility="private")
