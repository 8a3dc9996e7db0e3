"""Train tab: pick a preset, adjust the schema-generated settings, start, and watch the job live.

Out of the box the form holds the `tiny-demo` preset on the built-in demo dataset, so pressing
Start with no typing trains a LoRA in about a minute. The live view polls the shared runner's
snapshot on the app's one timer and only resends what changed since this page last drew it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from studio.config import ConfigError, list_presets, load_config
from studio.engine.gpu_lock import AcceleratorBusy
from studio.engine.runs import RunFolder, suggest_run_name
from studio.ui import live
from studio.ui.form import (FIELD_ORDER, base_model_choices, build_form, cli_command, dataset_choices, form_config,
                             form_values, model_family)
from studio.ui.security import PathNotAllowed

if TYPE_CHECKING:
    from studio.ui.app import Studio

TITLE, TAB_ID = "Train", "train"
DEFAULT_PRESET = "tiny-demo"
BUTTONS = ("start", "pause", "resume", "stop", "sample", "save")


class TrainHandlers:
    """The Train tab's event handlers; thin calls into the runner and the config."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self._has_prompts: dict[str, bool] = {}

    # --- settings ------------------------------------------------------------------------------
    def load_preset(self, preset: str) -> tuple[Any, ...]:
        """Every field's value from a preset, a fresh run name, and the resolved config."""
        config = load_config(preset)
        values = form_values(config)
        name = suggest_run_name(self.studio.roots.outputs, preset)
        info = list_presets().get(preset, "")
        return (gr.Dropdown(info=info), *(values[k] for k in FIELD_ORDER), name, *self._resolved(preset, name, values))

    def resolve_config(self, preset: str, run_name: str, **settings: Any) -> tuple[str, str, str]:
        """The form as the YAML a run will save, the equivalent CLI command, and a validity line."""
        return self._resolved(preset, run_name, settings)

    def _resolved(self, preset: str, run_name: str, values: dict[str, Any]) -> tuple[str, str, str]:
        try:
            config = form_config(values, self.studio.roots)
        except (ConfigError, PathNotAllowed) as err:
            return gr.skip(), gr.skip(), f"✗ {err}"
        return config.to_yaml(), cli_command(preset, config, run_name), "✓ Valid config"

    def pick_base(self, base: str, family: str) -> str:
        """Picking a built-in or local model sets model.family to what the model is."""
        return model_family(self.studio.roots, base) or family

    def on_load(self, preset: str) -> tuple[Any, Any, str]:
        """A page (re)load: fresh model and dataset lists and a run name that is free now."""
        roots = self.studio.roots
        return (gr.Dropdown(choices=base_model_choices(roots)), gr.Dropdown(choices=dataset_choices(roots)),
                suggest_run_name(roots.outputs, preset))

    def suggest_name(self, preset: str) -> str:
        return suggest_run_name(self.studio.roots.outputs, preset)

    # --- the job -------------------------------------------------------------------------------
    def start(self, run_name: str, **settings: Any) -> str:
        """Validate the form and start training it as run `run_name` (empty: a dated name)."""
        roots = self.studio.roots
        try:
            config = form_config(settings, roots)
            name = (run_name or "").strip() or suggest_run_name(roots.outputs, "lora")
            self.studio.runner.start(config, name)
        except (ValueError, FileExistsError) as err:  # a bad setting, a path outside the roots, a taken name
            raise gr.Error(str(err), title="Cannot start") from None
        except (AcceleratorBusy, RuntimeError) as err:  # one accelerator user at a time: say so, don't wait
            gr.Warning(str(err))
            return live.notice(f"⚠️ {err}")
        self.studio.release_eval_models()
        return live.notice(f"Started run **{name}**: {config.train.max_steps} steps on {config.model.base}.")

    def _command(self, action, done: str) -> str:
        try:
            action()
        except RuntimeError as err:
            gr.Warning(str(err))
            return live.notice(f"⚠️ {err}")
        return live.notice(done)

    def pause(self) -> str:
        return self._command(self.studio.runner.pause, "Pausing after this step; the model stays loaded.")

    def resume(self) -> str:
        return self._command(self.studio.runner.resume_job, "Resumed.")

    def stop(self) -> str:
        return self._command(self.studio.runner.stop, "Stopping after this step; a checkpoint will be saved.")

    def sample_now(self) -> str:
        return self._command(self.studio.runner.sample_now, "Samples will render after this step.")

    def save_now(self) -> str:
        return self._command(self.studio.runner.save_now, "A checkpoint will be saved after this step.")

    # --- live view -----------------------------------------------------------------------------
    def poll(self, seen: dict[str, Any] | None) -> tuple[Any, ...]:
        """One tick: what changed since this page last drew (`seen`), else gr.skip()."""
        snap = self.studio.runner.snapshot()
        seen = dict(seen or {})
        count = 7 + len(BUTTONS)
        if seen.get("version") == snap.version:
            return (*[gr.skip()] * count, seen)

        def changed(part: str, key: Any) -> bool:
            fresh = seen.get(part) != key
            seen[part] = key
            return fresh

        run = RunFolder(self.studio.roots.outputs / snap.run) if snap.run else None
        out: list[Any] = [live.header_job_html(snap), live.job_html(snap)]
        out.append(live.loss_frame(snap.metrics) if changed("chart", (snap.run, len(snap.metrics))) else gr.skip())
        if changed("samples", (snap.run, snap.sample_step, snap.samples)):
            label = f"Latest samples · step {snap.sample_step}" if snap.sample_step is not None else "Latest samples"
            items = live.gallery_items(run, snap.sample_step, snap.samples) if run else []
            out.append(gr.Gallery(value=items, label=label))
        else:
            out.append(gr.skip())
        if changed("error", (snap.run, snap.error)):
            out += [gr.Column(visible=bool(snap.error)), live.error_html(snap.error), snap.traceback or ""]
        else:
            out += [gr.skip()] * 3
        if changed("buttons", (snap.run, snap.status)):
            states = live.button_states(snap, self._run_has_prompts(run))
            out += [gr.Button(interactive=states[name]) for name in BUTTONS]
        else:
            out += [gr.skip()] * len(BUTTONS)
        seen["version"] = snap.version
        return (*out, seen)

    def _run_has_prompts(self, run: RunFolder | None) -> bool:
        """Sample now needs sample.prompts; read once per run from its config."""
        if run is None:
            return False
        if run.name not in self._has_prompts:
            try:
                self._has_prompts[run.name] = bool(run.config().sample.prompts)
            except ConfigError:
                self._has_prompts[run.name] = False
        return self._has_prompts[run.name]


def build(studio: Studio, tab: gr.Tab) -> None:
    handlers = TrainHandlers(studio)
    presets = list_presets()
    config = load_config(DEFAULT_PRESET)
    snap = studio.runner.snapshot()
    states = live.button_states(snap, False)

    # 1. Components: settings on the left, the live job on the right.
    with gr.Row():
        with gr.Column(scale=5, min_width=400):
            with gr.Row(equal_height=True):
                preset = gr.Dropdown(list(presets), value=DEFAULT_PRESET, label="Preset", info=presets[DEFAULT_PRESET])
                run_name = gr.Textbox("", label="Run name", placeholder="empty: a dated name",
                                      info="A folder under outputs/: letters, digits, '.', '_' or '-'.")
            fields = build_form(config, studio.roots)
            with gr.Accordion("Resolved config", open=False):
                yaml_view = gr.Code(config.to_yaml(), language="yaml", label="config.yaml", interactive=False,
                                    max_lines=30)
                cli_view = gr.Code(cli_command(DEFAULT_PRESET, config, ""), language="shell",
                                   label="The same run from a terminal", interactive=False)
        with gr.Column(scale=6, min_width=480):
            with gr.Row(elem_classes="controls"):
                buttons = {
                    "start": gr.Button("Start", variant="primary", interactive=states["start"], min_width=80),
                    "pause": gr.Button("Pause", interactive=states["pause"], min_width=80),
                    "resume": gr.Button("Resume", interactive=states["resume"], min_width=80),
                    "stop": gr.Button("Stop", variant="stop", interactive=states["stop"], min_width=80),
                    "sample": gr.Button("Sample now", interactive=states["sample"], min_width=112),
                    "save": gr.Button("Save now", interactive=states["save"], min_width=104),
                }
            check = gr.Markdown("✓ Valid config", elem_id="config-check", label="Config check")
            job = gr.HTML(live.job_html(snap), label="Job", elem_id="job", padding=False)
            with gr.Column(visible=False) as error_box:
                error = gr.HTML(label="Error")
                with gr.Accordion("Traceback", open=False):
                    traceback = gr.Code(language="python", label="Traceback", interactive=False, max_lines=40)
            chart = gr.LinePlot(None, x="step", y="loss", color="series", label="Loss", elem_id="loss-chart",
                                color_map={"raw": "#94a3b8", "smoothed": "#4f46e5"},
                                x_title="step", y_title="loss")
            gallery = gr.Gallery(label="Latest samples", elem_id="latest-samples", columns=4, height=240,
                                 object_fit="contain", allow_preview=True)
    seen = gr.State({})

    # 2. Events. Settings: a preset fills every field; any edit re-resolves the config.
    field_list = list(fields.values())
    resolved = [yaml_view, cli_view, check]
    preset.input(handlers.load_preset, preset, [preset, *field_list, run_name, *resolved], api_name="load_preset")
    gr.on([f.input for f in field_list] + [run_name.input], handlers.resolve_config, [preset, run_name], resolved,
          inputs_kwargs=fields, api_name="resolve_config", show_progress="hidden", trigger_mode="always_last")
    base, family = fields["model.base"], fields["model.family"]
    base.input(handlers.pick_base, [base, family], family, api_name="pick_base").then(
        handlers.resolve_config, [preset, run_name], resolved, inputs_kwargs=fields, api_visibility="private")

    # The job: every command refreshes the live view at once instead of waiting for the tick.
    live_outputs = [studio.header_job, job, chart, gallery, error_box, error, traceback, *buttons.values(), seen]
    refresh = dict(fn=handlers.poll, inputs=seen, outputs=live_outputs, concurrency_limit=None,
                   show_progress="hidden", api_visibility="private")
    studio.timer.tick(handlers.poll, seen, live_outputs, api_name="poll", concurrency_limit=None,
                      show_progress="hidden")
    started = buttons["start"].click(handlers.start, run_name, studio.notice, inputs_kwargs=fields, api_name="start")
    started.success(handlers.suggest_name, preset, run_name, api_name="suggest_run_name")
    started.then(**refresh)
    commands = {"pause": handlers.pause, "resume": handlers.resume, "stop": handlers.stop,
                "sample": handlers.sample_now, "save": handlers.save_now}
    for name, fn in commands.items():
        buttons[name].click(fn, None, studio.notice, api_name=fn.__name__).then(**refresh)
    # What other tabs may fill in (Dataset → "Use for training") and how to re-resolve after they do.
    studio.parts["train.fields"] = fields
    studio.parts["train.resolve"] = dict(fn=handlers.resolve_config, inputs=[preset, run_name], outputs=resolved,
                                         inputs_kwargs=fields, api_visibility="private")
    studio.app.load(handlers.on_load, preset, [base, fields["data.dir"], run_name], api_name="on_load",
                    show_progress="hidden")
    studio.app.load(**refresh)
