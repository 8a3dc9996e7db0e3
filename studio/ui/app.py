"""The studio's shell: header bar, tabs and the one poll timer; `launch()` serves it.

A tab is a module with `TITLE`, `TAB_ID` and `build(studio, tab)`; adding one is one line in
`TABS`. A tab that sends work to another one (Dataset → Train, Compare → Score) also has
`connect(studio)`, called once every tab is built, and finds the other tab's components in
`studio.parts` under names like "train.fields". Every tab shares one `Studio`: the process's
single `Runner` (so every browser tab sees the same job) and the roots that confine every path a
user can name.
"""

from __future__ import annotations

import argparse
import functools
import html
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio import __version__
from studio.engine.environment import environment_report
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.ui import checkpoints_tab, compare_tab, dataset_tab, live, score_tab, train_tab
from studio.ui.security import PathNotAllowed, Roots, is_exposed, is_loopback, running_on_space
from studio.ui.theme import CSS, studio_theme

log = logging.getLogger(__name__)

TABS = (dataset_tab, train_tab, checkpoints_tab, compare_tab, score_tab)
"""Tab modules in page order: the workflow from photos to a scored LoRA."""

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Settings:
    """How the studio is served; `from_args` reads the command line."""

    roots: Roots
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    auth: tuple[str, str] | None = None

    @property
    def exposed(self) -> bool:
        return is_exposed(self.host, self.share)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        host = args.host
        if running_on_space() and is_loopback(host):
            host = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0")  # a Space must listen on all interfaces
        return cls(roots=Roots.create(args.datasets, args.models, args.outputs), host=host, port=args.port,
                   share=args.share, auth=parse_auth(args.auth))


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth / STUDIO_AUTH must be USER:PASS with a non-empty user and password")
    return user, password


@dataclass
class Studio:
    """What every tab shares: the one runner, the roots, and the shell's components."""

    runner: Runner
    roots: Roots
    app: gr.Blocks | None = None
    tabs: gr.Tabs | None = None
    timer: gr.Timer | None = None
    header_job: gr.HTML | None = None
    notice: gr.Markdown | None = None
    """The header's one-line answer to the last action (started, paused, refused and why)."""
    env: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)
    """Components (and event settings) a tab offers to others, by "<tab id>.<name>"."""

    def release_eval_models(self) -> None:
        """Free what evaluation keeps loaded (the Compare tab's base pipeline, the scoring backbones) once
        a training job has the accelerator: the job loads its own copy, and both rarely fit together."""
        from studio.eval.backbones import unload_backbones

        cache = self.parts.get(compare_tab.CACHE_PART)
        if cache is not None:
            cache.clear()
        unload_backbones()

    def run(self, name: str) -> RunFolder:
        """The run `name` in the outputs folder, or the error the page shows when there is none."""
        try:
            return self.roots.run(name)
        except PathNotAllowed as err:
            raise gr.Error(str(err), title="No such run") from None


def _header_html(env: dict[str, Any], settings: Settings) -> str:
    device, precision = env["device"], env["precision"]
    if not settings.exposed:
        access = '<span class="chip" title="Only this computer can open the studio">local</span>'
    elif settings.auth:
        access = '<span class="chip" title="Reachable by others; a login is required">exposed · login required</span>'
    else:
        access = ('<span class="chip chip-warn" title="Anyone who can reach this address can use the studio">'
                  'exposed · no password</span>')
    chips = [
        f'<span class="chip" title="{html.escape(device["name"])}">device: {html.escape(device["type"])}</span>',
        f'<span class="chip" title="{html.escape(precision["reason"] or "")}">'
        f'precision: {html.escape(precision["precision"] or "unavailable")}</span>',
        access,
    ]
    return (f'<div class="brand"><span class="brand-name">LoRA Studio</span>'
            f'<span class="brand-version">{__version__}</span>{"".join(chips)}</div>')


def build_app(settings: Settings, runner: Runner | None = None) -> tuple[gr.Blocks, Studio]:
    """The Blocks app and its shared `Studio` (a new Runner unless one is given)."""
    roots = settings.roots
    studio = Studio(runner=runner or Runner(roots.outputs, roots.models), roots=roots,
                    env=environment_report(roots.outputs, roots.models))
    with gr.Blocks(title="LoRA Studio", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        studio.app = app
        with gr.Row(elem_id="studio-header"):
            gr.HTML(_header_html(studio.env, settings), elem_id="brand", scale=3, min_width=480, padding=False)
            with gr.Column(scale=2, min_width=320, elem_id="header-right"):
                studio.header_job = gr.HTML(live.header_job_html(studio.runner.snapshot()), elem_id="header-job",
                                            label="Current job", padding=False)
                studio.notice = gr.Markdown(elem_id="notice", padding=False, label="Last action")
        studio.timer = gr.Timer(POLL_SECONDS)
        with gr.Tabs() as studio.tabs:
            for module in TABS:
                with gr.Tab(module.TITLE, id=module.TAB_ID) as tab:
                    module.build(studio, tab)
        for module in TABS:
            if hasattr(module, "connect"):
                module.connect(studio)
        app.load(functools.partial(_landing_tab, studio), None, studio.tabs, api_name="landing_tab",
                 api_visibility="private", show_progress="hidden")
    return app, studio


def _landing_tab(studio: Studio) -> Any:
    """A page opened while a job runs lands on Train, where the job is shown; otherwise on the first tab."""
    return gr.Tabs(selected=train_tab.TAB_ID) if studio.runner.snapshot().active else gr.skip()


def launch_options(settings: Settings) -> dict[str, Any]:
    """`Blocks.launch` arguments: auth, the outputs root as the only servable path, no monitoring, no MCP."""
    return dict(
        server_name=settings.host, server_port=settings.port, share=settings.share, auth=settings.auth,
        auth_message="LoRA Studio: log in with the user and password given to --auth / STUDIO_AUTH.",
        allowed_paths=settings.roots.allowed_paths(), enable_monitoring=False, mcp_server=False, run_history=False,
        show_error=not settings.exposed, footer_links=["api", "settings"], theme=studio_theme(), css=CSS,
        ssr_mode=False,
    )


def warn_if_open(settings: Settings) -> None:
    if settings.exposed and not settings.auth:
        why = "a share link" if settings.share else "a Hugging Face Space" if running_on_space() else settings.host
        bar = "!" * 78
        log.warning("\n%s\n  LoRA Studio is EXPOSED (%s) WITHOUT A PASSWORD: anyone who can reach it can start\n"
                    "  training, read your runs and delete checkpoints. Add --auth USER:PASS (or set the\n"
                    "  STUDIO_AUTH environment variable / Space secret).\n%s", bar, why, bar)


def start_studio(settings: Settings, runner: Runner | None = None,
                 prevent_thread_lock: bool = False) -> tuple[gr.Blocks, Studio]:
    """Build and serve the studio. Gradio's uploads and served copies go to the workspace folder
    inside the outputs root, so nothing a user sends lands outside the roots."""
    settings.roots.workspace.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(settings.roots.workspace)
    warn_if_open(settings)
    app, studio = build_app(settings, runner)
    app.queue(default_concurrency_limit=1)
    app.launch(prevent_thread_lock=prevent_thread_lock, **launch_options(settings))
    return app, studio


def launch(args: argparse.Namespace) -> int:
    """`python studio.py` with no subcommand."""
    try:
        settings = Settings.from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start_studio(settings)
    return 0

