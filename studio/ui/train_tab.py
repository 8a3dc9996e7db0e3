"""Train tab: pick a preset, adjust the schema-generated settings, start, and watch the job live.

Out of the box the form holds the `tiny-demo` preset on the built-in demo dataset, so pressing
Start with no typing trains a LoRA in about a minute. The live view has two paths: the header and
the job panel (tiles, progress bar), both drawn from one snapshot, come over the studio's own event
stream (studio/ui/live_feed.py: every new snapshot, within a quarter second, at a fraction of a CPU-ms
per page), with the loss chart's edition (new rows at most every `CHART_SECONDS`), which the page then
asks for (`chart`); everything else (`poll`: buttons, samples, error, validation scores) only when it
changed, when `follow`, one Gradio stream per page, sees its key change. A page opened while a job
runs shows that job's settings, read-only until it ends.
Test setup runs the engine's dry run on the form (a few real steps) and reports speed, memory and
the projected run.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

import gradio as gr

from studio.config import ConfigError, clamp_warmup, list_presets, load_config
from studio.core.lock import AcceleratorBusy
from studio.engine.runs import RunFolder, suggest_run_name
from studio.ui import live
from studio.ui.live import CHART_SECONDS
from studio.ui.live_feed import live_script
from studio.ui.notices import Refusal, refusing
from studio.ui.context import TRAIN_TAB, Step, TrainLink
from studio.ui.form import (FIELD_ORDER, base_model_choices, build_form, cli_command, dataset_choices, form_config,
                             form_values, job_form_values, model_family)
from studio.ui.security import PathNotAllowed

if TYPE_CHECKING:
    from studio.ui.context import Studio

TITLE, TAB_ID = "Train", TRAIN_TAB
DEFAULT_PRESET = "tiny-demo"
BUTTONS = ("start", "pause", "resume", "stop", "sample", "save")
LIVE_SECONDS = 0.5
"""How often `follow` looks at the snapshot for a change of the view's or the job's key. A look costs
nothing but the wake-up; a message (a key that changed) ~6 CPU-ms of Gradio's streaming work, which is
why the step itself goes over the live feed."""
RESTART_SECONDS = 5.0
"""A page whose stream ended (a dropped connection) starts a new one within this (the tick is ignored while
one runs)."""


def config_notes(config) -> str:
    """What the engine will change about a valid config when the run starts, for the check line."""
    _, notice = clamp_warmup(config) if config.train.max_epochs is None else (config, None)
    notes = [notice] if notice else []
    if config.train.max_epochs:
        notes.append(f"train.max_steps comes from train.max_epochs ({config.train.max_epochs}) when the run starts")
    return "".join(f" · {n}" for n in notes)


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

    def resolve_config(self, preset: str, run_name: str, **settings: Any) -> tuple[Any, ...]:
        """The form as the YAML a run will save, the equivalent CLI command, the Start button (disabled
        while the form is invalid), whether the form is valid (for the poll) and the check line beside
        Start (why it is disabled)."""
        return self._resolved(preset, run_name, settings)

    def _resolved(self, preset: str, run_name: str, values: dict[str, Any]) -> tuple[Any, ...]:
        idle = not self.studio.runner.snapshot().active
        try:
            config = form_config(values, self.studio.roots)
        except (ConfigError, PathNotAllowed) as err:
            line = err.line if isinstance(err, ConfigError) else str(err)
            return gr.skip(), gr.skip(), gr.Button(interactive=False), False, f"✗ {line}"
        return (config.to_yaml(), cli_command(preset, config, run_name), gr.Button(interactive=idle), True,
                "✓ Valid config" + config_notes(config))

    def pick_base(self, base: str, family: str) -> str:
        """Picking a built-in or local model sets model.family to what the model is."""
        return model_family(self.studio.roots, base) or family

    def on_load(self, preset: str) -> tuple[Any, Any, Any]:
        """A page (re)load: fresh model and dataset lists and a run name that is free now (while a job
        runs, the form shows that job's name instead: `show_job`)."""
        roots = self.studio.roots
        name = gr.skip() if self.studio.runner.snapshot().active else suggest_run_name(roots.outputs, preset)
        return gr.Dropdown(choices=base_model_choices(roots)), gr.Dropdown(choices=dataset_choices(roots)), name

    def show_job(self, preset: str, run_name: str, job: str | None) -> tuple[Any, ...]:
        """The form follows the studio's job (`job`: its run name while it runs, else None): while it runs,
        that job's settings and name, read-only; once it ends, editable again under a free run name."""
        snap = self.studio.runner.snapshot()
        if job and snap.run == job and snap.config is not None:
            values = job_form_values(snap.config, self.studio.roots)
            return (gr.Dropdown(interactive=False), *(gr.update(value=values[k], interactive=False) for k in FIELD_ORDER),
                    gr.Textbox(value=job, interactive=False))
        name = self.suggest_name(preset, run_name)  # gr.skip() keeps a typed name that is still free
        return (gr.Dropdown(interactive=True), *(gr.update(interactive=True) for _ in FIELD_ORDER),
                gr.Textbox(value=name, interactive=True) if isinstance(name, str) else gr.Textbox(interactive=True))

    def suggest_name(self, preset: str, run_name: str = "") -> Any:
        """A free run name once the typed one is taken (a run started under it) or none was typed;
        after a refused start the typed name stays."""
        typed = (run_name or "").strip()
        if typed and not (self.studio.roots.outputs / typed).exists():
            return gr.skip()
        return suggest_run_name(self.studio.roots.outputs, preset)

    # --- the job -------------------------------------------------------------------------------
    def start(self, run_name: str, **settings: Any) -> str:
        """Validate the form and start training it as run `run_name` (empty: a dated name); a setting
        the run cannot take, a busy accelerator or a taken name raise `Refusal`."""
        roots = self.studio.roots
        try:
            config = form_config(settings, roots)
            name = (run_name or "").strip() or suggest_run_name(roots.outputs, "lora")
            self.studio.runner.start(config, name)
        except ConfigError as err:  # a bad setting: the first problem, every problem in the details
            raise Refusal(f"Cannot start: {err.line}", str(err)) from None
        except (ValueError, FileExistsError) as err:  # a path outside the roots, a taken name
            raise Refusal(f"Cannot start: {err}") from None
        except (AcceleratorBusy, RuntimeError) as err:  # one accelerator user at a time: say so, don't wait
            raise Refusal(str(err)) from None
        notices = "".join(f" Notice: {n}." for n in self.studio.runner.snapshot().notices)
        length = f"{config.train.max_epochs} epochs" if config.train.max_epochs else f"{config.train.max_steps} steps"
        return live.notice(f"Started run **{name}**: {length} on {config.model.base}.{notices}")

    def test_setup(self, **settings: Any) -> str:
        """The dry run on the form's config: a few real steps, then speed, memory and the projected run."""
        from studio.engine.dryrun import dry_run

        roots = self.studio.roots
        try:
            config = form_config(settings, roots)
        except ConfigError as err:
            raise Refusal(f"Cannot test: {err.line}", str(err)) from None
        except (ValueError, PathNotAllowed) as err:
            raise Refusal(f"Cannot test: {err}") from None
        try:
            report = dry_run(config, outputs_dir=roots.outputs, models_dir=roots.models, datasets_dir=roots.datasets,
                             lock=self.studio.runner.lock)
        except AcceleratorBusy as err:  # a job is running: say so, don't wait
            raise Refusal(f"Test setup: {err}") from None
        except (ValueError, RuntimeError, OSError) as err:  # what the run would fail with at setup
            first = str(err).split("\n", 1)[0]
            raise Refusal(f"Test setup failed: {first}", str(err)) from None
        title, *lines = report.lines()
        return f"**{title}**\n\n```\n" + "\n".join(lines) + "\n```"

    def _command(self, action, done: str) -> str:
        try:
            action()
        except RuntimeError as err:  # not in this state (e.g. save now while paused): a notice, not a toast
            raise Refusal(str(err)) from None
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
    async def follow(self) -> AsyncIterator[tuple[tuple, tuple]]:
        """One Gradio stream per page, which sends only keys, and only when they change: the key of the
        rest of the view, whose changes run `poll` (the job's run, status, samples, error and number of
        scored rows), and the job's key (run, status, checkpoints), whose changes the Checkpoints and
        Compare tabs follow. The header, the job panel and the loss chart's edition, which change with
        every step, come over the live feed; the page asks for each new chart edition (`chart`).

        Why not the chart here: Gradio diffs every streamed output against its last message, which for
        a chart of ~1000 points costs more than a request. A stream costs the server only what changes:
        no request per tick, and nothing while the job is idle."""
        key, job_key = None, None
        while True:
            snap = self.studio.runner.snapshot()
            self.studio.chart.key(snap, time.monotonic())  # the edition, and with it its scored rows
            fresh = (snap.run, snap.status, snap.sample_step, len(snap.samples), snap.error, self.studio.chart.scored)
            fresh_job = (snap.run, snap.status, tuple(snap.checkpoints))
            if fresh != key or fresh_job != job_key:
                key, job_key = fresh, fresh_job
                yield key, job_key
            await asyncio.sleep(LIVE_SECONDS)

    def chart(self) -> Any:
        """The loss chart's current edition, which the page asks for when the live feed names a new one.
        One output and nothing skipped: the cheapest request Gradio serves (~15 CPU-ms)."""
        return self.studio.chart.frame(self.studio.runner.snapshot(), time.monotonic())[1]

    def poll(self, seen: dict[str, Any] | None, form_ok: bool = True) -> tuple[Any, ...]:
        """The whole live view, sending only what changed since this page last drew it (`seen`), else
        gr.skip(): on a page load, after each command and when `follow`'s key changes. Start stays
        disabled while this page's form is invalid (`form_ok`, from `resolve_config`). The last output is
        the job the form follows (its run while it runs, else None)."""
        snap = self.studio.runner.snapshot()
        seen = dict(seen or {})
        job = snap.run if snap.active else None
        if seen.get("version") == snap.version:
            return (*[gr.skip()] * (9 + len(BUTTONS)), gr.skip(), job)

        def changed(part: str, key: Any) -> bool:
            fresh = seen.get(part) != key
            seen[part] = key
            return fresh

        run = RunFolder(self.studio.roots.outputs / snap.run) if snap.run else None
        out: list[Any] = [live.header_job_html(snap), live.job_html(snap)]
        edition, frame = self.studio.chart.frame(snap, time.monotonic())
        out.append(frame if changed("chart", edition) else gr.skip())
        scored = live.scores_frame(snap.metrics)
        if changed("scores", (snap.run, 0 if scored is None else len(scored))):
            out += [gr.LinePlot(value=scored, label=live.scores_label(snap.metrics)),
                    gr.Column(visible=scored is not None)]
        else:
            out += [gr.skip()] * 2
        if changed("samples", (snap.run, snap.sample_step, snap.samples)):
            label = f"Latest samples · step {snap.sample_step}" if snap.sample_step is not None else "Latest samples"
            items = live.gallery_items(run, snap.sample_step, snap.samples) if run else []
            out.append(gr.Gallery(value=items, label=live.images_label(label, live.run_base_model(run))))
        else:
            out.append(gr.skip())
        if changed("error", (snap.run, snap.error)):
            out += [gr.Column(visible=bool(snap.error)), live.error_html(snap.error), snap.traceback or ""]
        else:
            out += [gr.skip()] * 3
        if changed("buttons", (snap.run, snap.status)):
            states = live.button_states(snap, self._run_has_prompts(run))
            states["start"] = states["start"] and form_ok is not False
            out += [gr.Button(interactive=states[name]) for name in BUTTONS]
        else:
            out += [gr.skip()] * len(BUTTONS)
        seen["version"] = snap.version
        return (*out, seen, job)

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
                test = gr.Button("Test setup", min_width=104)
            check = gr.Markdown("✓ Valid config", elem_id="config-check", label="Config check")
            setup_report = gr.Markdown(elem_id="setup-report", label="Test setup")
            job = gr.HTML(live.job_html(snap), label="Job", elem_id="job", padding=False,
                          js_on_load=live_script("job", asks_for_chart=True))
            with gr.Column(visible=False) as error_box:
                error = gr.HTML(label="Error")
                with gr.Accordion("Traceback", open=False):
                    traceback = gr.Code(language="python", label="Traceback", interactive=False, max_lines=40)
            with gr.Row(equal_height=True):
                with gr.Column(min_width=240):
                    chart = gr.LinePlot(None, x="step", y="loss", color="series", label="Loss", elem_id="loss-chart",
                                        color_map=live.LOSS_COLORS, colors_in_legend=[], x_title="step",
                                        y_title="loss")
                    gr.HTML(live.legend_html(live.LOSS_COLORS, "Loss series"), padding=False)
                with gr.Column(min_width=240, visible=False) as score_box:
                    score_chart = gr.LinePlot(None, x="step", y="score", color="metric", label="Validation scores",
                                              elem_id="validation-chart", color_map=live.SCORE_COLORS,
                                              colors_in_legend=[], x_title="step", y_title="cosine")
                    gr.HTML(live.legend_html(live.SCORE_COLORS, "Validation series"), padding=False)
            gallery = gr.Gallery(label="Latest samples", elem_id="latest-samples", columns=4, height=240,
                                 object_fit="contain", allow_preview=True)
    seen = gr.State({})
    form_ok = gr.State(True)
    followed = gr.State(None)  # the run of the job the form shows (None: no job); the poll sets it
    view_key = gr.State(None)  # what `follow` last saw of the rest of the view; a change runs the poll
    restart = gr.Timer(RESTART_SECONDS)

    # 2. Events. Settings: a preset fills every field; any edit re-resolves the config.
    field_list = list(fields.values())
    resolved = [yaml_view, cli_view, buttons["start"], form_ok, check]
    preset.input(handlers.load_preset, preset, [preset, *field_list, run_name, *resolved], api_name="load_preset")
    gr.on([f.input for f in field_list] + [run_name.input], handlers.resolve_config, [preset, run_name], resolved,
          inputs_kwargs=fields, api_name="resolve_config", show_progress="hidden", trigger_mode="always_last")
    base, family = fields["model.base"], fields["model.family"]
    base.input(handlers.pick_base, [base, family], family, api_name="pick_base").then(
        handlers.resolve_config, [preset, run_name], resolved, inputs_kwargs=fields, api_visibility="private")

    # The job: every command refreshes the live view at once instead of waiting for the tick.
    live_outputs = [studio.header_job, job, chart, score_chart, score_box, gallery, error_box, error, traceback,
                    *buttons.values(), seen, followed]
    refresh = dict(fn=handlers.poll, inputs=[seen, form_ok], outputs=live_outputs, concurrency_limit=None,
                   show_progress="hidden", api_visibility="private")
    gr.on([studio.app.load, restart.tick], handlers.follow, None, [view_key, studio.job_key],
          api_name="live",
          concurrency_limit=None, show_progress="hidden", trigger_mode="once")
    # The live feed names each new edition of the loss chart; the page's panel asks for it ("apply").
    job.apply(handlers.chart, None, chart, api_name="loss_chart", concurrency_limit=None, show_progress="hidden")
    view_key.change(handlers.poll, [seen, form_ok], live_outputs, api_name="poll", concurrency_limit=None,
                    show_progress="hidden")
    # The form follows the job: its settings, read-only, while it runs (also on a page opened during it).
    followed.change(handlers.show_job, [preset, run_name, followed], [preset, *field_list, run_name],
                    api_visibility="private", show_progress="hidden").then(
        handlers.resolve_config, [preset, run_name], resolved, inputs_kwargs=fields, api_visibility="private",
        show_progress="hidden")
    # A refusal (bad setting, busy accelerator, taken name) is one line in the header's notice area.
    started = buttons["start"].click(inputs=run_name, **refusing(handlers.start, studio.notice, studio.notice),
                                     inputs_kwargs=fields, api_name="start")
    started.success(handlers.suggest_name, [preset, run_name], run_name, api_name="suggest_run_name")
    started.then(**refresh)
    test.click(inputs=None, **refusing(handlers.test_setup, setup_report, studio.notice), inputs_kwargs=fields,
               api_name="test_setup")
    commands = {"pause": handlers.pause, "resume": handlers.resume, "stop": handlers.stop,
                "sample": handlers.sample_now, "save": handlers.save_now}
    for name, fn in commands.items():
        buttons[name].click(inputs=None, **refusing(fn, studio.notice, studio.notice), api_name=fn.__name__).then(
            **refresh)
    # What other tabs may fill in (Dataset → "Use for training") and how to re-resolve after they do.
    studio.train = TrainLink(fields=fields, resolve=Step(handlers.resolve_config, [preset, run_name], resolved,
                                                         inputs_kwargs=fields))
    studio.app.load(handlers.on_load, preset, [base, fields["data.dir"], run_name], api_name="on_load",
                    show_progress="hidden")
