"""Checkpoints tab: every run in outputs/, its loss curve and samples, and per checkpoint export,
download, resume and delete.

Runs are addressed by name and checkpoints by step, never by path. Resume always continues from
the run's latest checkpoint (the engine's contract); picking an older one is refused with the way
out. A checkpoint of the run the studio is training is never deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from studio.engine.gpu_lock import AcceleratorBusy
from studio.engine.runs import RunFolder, delete_checkpoint, list_runs
from studio.ui import live, runs_view
from studio.ui.security import PathNotAllowed
from studio.ui.train_tab import TAB_ID as TRAIN_TAB_ID

if TYPE_CHECKING:
    from studio.ui.app import Studio

TITLE, TAB_ID = "Checkpoints", "checkpoints"
FORMATS = {"webui": "webui: one .safetensors for AUTOMATIC1111, ComfyUI, kohya and diffusers (+ A1111 .json)",
           "diffusers": "diffusers: pytorch_lora_weights.safetensors with PEFT metadata"}
RESUME_NOTE = "Resume continues from the run's **latest** checkpoint{where}, with its optimizer state and data order."


def _user_error(err: Exception) -> gr.Error:
    return gr.Error(str(err), title="Not possible")


class CheckpointHandlers:
    """The Checkpoints tab's event handlers; they read run folders and call the engine."""

    def __init__(self, studio: Studio):
        self.studio = studio

    def _checkpoint_step(self, run: RunFolder, step: Any) -> int:
        steps = [c.step for c in run.checkpoints()]
        try:
            value = int(step)
        except (TypeError, ValueError):
            raise gr.Error(f"pick a checkpoint of {run.name} first (steps: {', '.join(map(str, steps)) or 'none'})",
                           title="No checkpoint picked") from None
        if value not in steps:
            raise gr.Error(f"run {run.name} has no checkpoint at step {value} (available: "
                           f"{', '.join(map(str, steps)) or 'none'})", title="No such checkpoint")
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
        """On the app's tick: when the studio's job changes state or saves a checkpoint, refresh the
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

    def pick_row(self, evt: gr.SelectData) -> str:
        """A click anywhere in a row of the runs table picks that run."""
        return evt.row_value[0]

    def show_run(self, name: str | None) -> tuple[Any, ...]:
        """Summary, loss curve, samples by step, checkpoints and the resume note of one run."""
        if not name:
            return ("", gr.Accordion(visible=False), "", None, gr.Dropdown(choices=[], value=None),
                    [], runs_view.empty_checkpoints_table(), gr.Dropdown(choices=[], value=None),
                    RESUME_NOTE.format(where=""), gr.Group(visible=False), gr.File(value=None, visible=False))
        run = self.studio.run(name)
        info = run.read_status()
        snap = self.studio.runner.snapshot()
        failed = runs_view.run_status(run, info, snap) == "failed" and bool(info.get("traceback"))
        metrics = snap.metrics if snap.run == run.name and snap.active else run.read_metrics()
        sample_steps = run.sample_steps()
        latest_samples = sample_steps[-1] if sample_steps else None
        steps = [c.step for c in run.checkpoints()]
        where = f" (step {steps[-1]})" if steps else " (this run has none yet)"
        return (
            runs_view.run_summary_html(run, snap),
            gr.Accordion(visible=failed), info.get("traceback") or "",
            live.loss_frame(metrics),
            gr.Dropdown(choices=sample_steps, value=latest_samples),
            live.gallery_items(run, latest_samples),
            runs_view.checkpoints_table(run),
            gr.Dropdown(choices=list(reversed(steps)), value=steps[-1] if steps else None),
            RESUME_NOTE.format(where=where),
            gr.Group(visible=False),
            gr.File(value=None, visible=False),
        )

    def show_samples(self, name: str, step: Any) -> list[tuple[str, str]]:
        run = self.studio.run(name)
        if step not in run.sample_steps():
            raise gr.Error(f"run {run.name} has no samples at step {step} (steps with samples: "
                           f"{', '.join(map(str, run.sample_steps())) or 'none'})", title="No such samples")
        return live.gallery_items(run, step)

    # --- per checkpoint -------------------------------------------------------------------------
    def export_checkpoint(self, name: str, step: Any, fmt: str) -> list[str]:
        """Write the checkpoint's LoRA in `webui` or `diffusers` format; returns the files to download."""
        from studio.engine.export import export_run  # imports peft and diffusers: only when exporting

        run = self.studio.run(name)
        if fmt not in FORMATS:
            raise gr.Error(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", title="Unknown format")
        path = export_run(run, fmt, self._checkpoint_step(run, step))
        sidecar = path.with_suffix(".json")
        return [str(path)] + ([str(sidecar)] if fmt == "webui" and sidecar.is_file() else [])

    def show_files(self) -> Any:
        return gr.File(visible=True)

    def resume_run(self, name: str, step: Any) -> tuple[str, Any]:
        """Continue a run from its latest checkpoint in the background and switch to the Train tab."""
        run = self.studio.run(name)
        latest = run.latest_checkpoint()
        if latest is None:
            raise gr.Error(f"run {run.name} has no complete checkpoint to resume from", title="Cannot resume")
        if step is not None and self._checkpoint_step(run, step) != latest.step:
            newer = [str(c.step) for c in run.checkpoints() if c.step > int(step)]
            raise gr.Error(f"Resume continues from the run's latest checkpoint (step {latest.step}), not step {step}. "
                           f"To continue from step {step}, delete the newer checkpoints ({', '.join(newer)}) first.",
                           title="Resume uses the latest checkpoint")
        info = run.read_status()
        if info.get("status") == "finished":
            raise gr.Error(f"run {run.name} finished all {info.get('max_steps', '')} steps; there is nothing to "
                           "resume. Start a new run with more train.max_steps instead.", title="Already finished")
        self._refuse_if_training(run)
        try:
            self.studio.runner.resume(run.name)
        except (AcceleratorBusy, RuntimeError) as err:
            gr.Warning(str(err))
            return live.notice(f"⚠️ {err}"), gr.skip()
        except (FileNotFoundError, ValueError) as err:
            raise _user_error(err) from None
        self.studio.release_eval_models()
        notice = live.notice(f"Resuming **{run.name}** from step {latest.step}.")
        return notice, gr.Tabs(selected=TRAIN_TAB_ID)

    def _refuse_if_training(self, run: RunFolder) -> None:
        """A run the studio, or another process (the CLI), is training right now is left alone."""
        snap = self.studio.runner.snapshot()
        if snap.active and snap.run == run.name:
            raise gr.Error(f"run {run.name} is {snap.status} right now and needs its checkpoints: stop it first.",
                           title="Run in use")
        status = runs_view.run_status(run, run.read_status(), snap)
        if status.endswith("(other process)"):
            raise gr.Error(f"run {run.name} is {status}: its run.json was updated in the last "
                           f"{runs_view.STALE_AFTER_S // 60} minutes. Stop that process first.", title="Run in use")

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
            raise _user_error(err) from None
        return live.notice(f"Deleted checkpoint step {value} of **{run.name}**."), gr.Group(visible=False)


def build(studio: Studio, tab: gr.Tab) -> None:
    handlers = CheckpointHandlers(studio)
    names = handlers.run_names()

    # 1. Components: the runs table; then the picked run (summary, curve) beside its checkpoints,
    #    their actions and its samples.
    with gr.Row(equal_height=False):
        # choices change as runs appear; the handlers check every name, so API callers may pass any
        run_pick = gr.Dropdown(names, value=None, label="Run", scale=5, allow_custom_value=True,
                               info="Pick a run here or click its row in the table.")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_classes="refresh")
    runs = gr.Dataframe(runs_view.runs_table(studio.roots.outputs, studio.runner.snapshot()), label="Runs",
                        interactive=False, max_height=220, wrap=True)
    with gr.Row():
        with gr.Column(scale=5, min_width=420):
            summary = gr.HTML(padding=False)
            with gr.Accordion("Traceback", open=False, visible=False) as trace_box:
                trace = gr.Code(language="python", label="Traceback", interactive=False, max_lines=40)
            chart = gr.LinePlot(None, x="step", y="loss", color="series", label="Loss curve",
                                color_map={"raw": "#94a3b8", "smoothed": "#4f46e5"})
        with gr.Column(scale=6, min_width=480):
            ckpts = gr.Dataframe(runs_view.empty_checkpoints_table(), label="Checkpoints", interactive=False,
                                 max_height=200)
            with gr.Row(equal_height=True):
                ckpt_pick = gr.Dropdown([], label="Checkpoint", info="Step of the checkpoint to act on.",
                                        allow_custom_value=True, scale=1)
                fmt = gr.Radio(list(FORMATS), value="webui", label="Export format",
                               info=" · ".join(FORMATS.values()), scale=2)
            with gr.Row():
                export = gr.Button("Export", variant="primary")
                resume = gr.Button("Resume training")
                delete = gr.Button("Delete checkpoint…", variant="stop")
            resume_note = gr.Markdown(RESUME_NOTE.format(where=""), elem_classes="notice")
            files = gr.File(label="Exported files", file_count="multiple", interactive=False, visible=False)
            with gr.Group(visible=False) as confirm_box:
                confirm_text = gr.Markdown(padding=True)
                with gr.Row():
                    confirm = gr.Button("Yes, delete", variant="stop")
                    cancel = gr.Button("Cancel")
            sample_step = gr.Dropdown([], label="Samples at step", info="Validation images rendered during training.",
                                      allow_custom_value=True)
            samples = gr.Gallery(label="Samples", columns=4, height=200, object_fit="contain")

    # 2. Events: browse, then act; every action refreshes what it changed.
    details = [summary, trace_box, trace, chart, sample_step, samples, ckpts, ckpt_pick, resume_note, confirm_box,
               files]
    listed = [runs, run_pick]
    run_pick.change(handlers.show_run, run_pick, details, api_name="show_run")
    gr.on([tab.select, refresh.click], handlers.list_runs, run_pick, listed, api_name="list_runs").then(
        handlers.show_run, run_pick, details, api_visibility="private")
    runs.select(handlers.pick_row, None, run_pick, api_name="pick_run_row")
    seen = gr.State({})
    studio.timer.tick(handlers.follow_job, [run_pick, seen], [runs, summary, ckpts, ckpt_pick, seen],
                      api_name="follow_job", concurrency_limit=None, show_progress="hidden")
    sample_step.input(handlers.show_samples, [run_pick, sample_step], samples, api_name="show_samples")
    export.click(handlers.export_checkpoint, [run_pick, ckpt_pick, fmt], files, api_name="export_checkpoint").success(
        handlers.show_files, None, files, api_visibility="private")
    resume.click(handlers.resume_run, [run_pick, ckpt_pick], [studio.notice, studio.tabs], api_name="resume_run")
    delete.click(handlers.ask_delete, [run_pick, ckpt_pick], [confirm_box, confirm_text], api_name="ask_delete")
    cancel.click(handlers.cancel_delete, None, confirm_box, api_name="cancel_delete")
    confirm.click(handlers.delete_checkpoint, [run_pick, ckpt_pick], [studio.notice, confirm_box],
                  api_name="delete_checkpoint").success(handlers.show_run, run_pick, details,
                                                       api_visibility="private")
