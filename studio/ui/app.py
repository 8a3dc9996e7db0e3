"""The studio's shell: header bar, tabs and the one poll timer; `launch()` serves it.

A tab is a module with `TITLE`, `TAB_ID` and `build(studio, tab)`; adding one is one line in
`TABS`. Every tab shares one `Studio` (studio/ui/context.py): the process's single `Runner` (so
every browser tab sees the same job), the roots that confine every path a user can name, the loaded
evaluation models, and the typed hand-offs between tabs (Dataset → Train, Compare → Score).
"""

from __future__ import annotations

import argparse
import functools
import html
import importlib
import importlib.util
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from studio import __version__
from studio.engine.environment import environment_report
from studio.engine.runner import Runner
from studio.ui import checkpoints_tab, compare_tab, dataset_tab, live, score_tab, train_tab
from studio.ui.context import Studio
from studio.ui.live_feed import LiveFeed, live_script
from studio.ui.login_guard import LoginGuard
from studio.ui.security import Roots, is_exposed, is_loopback, running_on_space
from studio.ui.theme import CSS, studio_theme

log = logging.getLogger(__name__)

TABS = (dataset_tab, train_tab, checkpoints_tab, compare_tab, score_tab)
"""Tab modules in page order: the workflow from photos to a scored LoRA."""



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


def _header_html(env: dict[str, Any] | None, settings: Settings) -> str:
    """The brand bar's chips: device and precision (once `env` is known: the page loads it after it is
    served, because detecting the device imports PyTorch), and who can reach the studio."""
    if not settings.exposed:
        access = '<span class="chip" title="Only this computer can open the studio">local</span>'
    elif settings.auth:
        access = '<span class="chip" title="Reachable by others; a login is required">exposed · login required</span>'
    else:
        access = ('<span class="chip chip-warn" title="Anyone who can reach this address can use the studio">'
                  'exposed · no password</span>')
    if env is None:
        chips = ['<span class="chip" title="Loading PyTorch to find the accelerator">device: detecting…</span>', access]
    else:
        device, precision = env["device"], env["precision"]
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
    studio = Studio(runner=runner or Runner(roots.outputs, roots.models, datasets_dir=roots.datasets), roots=roots)
    with gr.Blocks(title="LoRA Studio", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        studio.app = app
        with gr.Row(elem_id="studio-header"):
            brand = gr.HTML(_header_html(None, settings), elem_id="brand", scale=3, min_width=480, padding=False)
            with gr.Column(scale=2, min_width=320, elem_id="header-right"):
                studio.header_job = gr.HTML(live.header_job_html(studio.runner.snapshot()), elem_id="header-job",
                                            label="Current job", padding=False, js_on_load=live_script("header"))
                studio.notice = gr.Markdown(elem_id="notice", padding=False, label="Last action")
        studio.job_key = gr.State(None)
        with gr.Tabs() as studio.tabs:
            for module in TABS:
                with gr.Tab(module.TITLE, id=module.TAB_ID) as tab:
                    module.build(studio, tab)
        studio.finish_build()
        app.load(functools.partial(_landing_tab, studio), None, studio.tabs, api_name="landing_tab",
                 api_visibility="private", show_progress="hidden")
        app.load(functools.partial(_header_with_device, studio, settings), None, brand, api_visibility="private",
                 show_progress="hidden", concurrency_limit=None)
    return app, studio


def _header_with_device(studio: Studio, settings: Settings) -> str:
    return _header_html(environment_report(studio.roots.outputs, studio.roots.models), settings)


def _landing_tab(studio: Studio) -> Any:
    """A page opened while a job runs lands on Train, where the job is shown; otherwise on the first tab."""
    return gr.Tabs(selected=train_tab.TAB_ID) if studio.runner.snapshot().active else gr.skip()


def launch_options(settings: Settings, routes: list | tuple = ()) -> dict[str, Any]:
    """`Blocks.launch` arguments: auth, the outputs root as the only servable path, no monitoring, no MCP;
    the login guard, and the studio's own `routes` (the live feed) ahead of Gradio's."""
    return dict(
        server_name=settings.host, server_port=settings.port, share=settings.share, auth=settings.auth,
        auth_message="LoRA Studio: log in with the user and password given to --auth / STUDIO_AUTH.",
        allowed_paths=settings.roots.allowed_paths(), enable_monitoring=False, mcp_server=False, run_history=False,
        show_error=not settings.exposed, footer_links=["api", "settings"], theme=studio_theme(), css=CSS,
        ssr_mode=False, app_kwargs={"middleware": [Middleware(LoginGuard)], "routes": list(routes)},
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
    _no_matplotlib_search()
    app, studio = build_app(settings, runner)
    app.queue(default_concurrency_limit=1)
    # quiet: `launch()` prints its own ready line with the address (Gradio still prints share-link errors).
    # _frontend=False skips Gradio's own reachability check, a HEAD with a 3 s timeout that, on a busy
    # machine, times out and aborts the start with "localhost is not accessible" although the server is
    # up; `launch()` waits for the page itself instead (`wait_for_page`).
    routes = [LiveFeed(studio.runner, studio.chart).route()]
    app.launch(prevent_thread_lock=prevent_thread_lock, quiet=True, _frontend=False,
               **launch_options(settings, routes))
    return app, studio


def _no_matplotlib_search() -> None:
    """Gradio tries `import matplotlib` twice around every event it runs, streamed messages included (to
    switch its backend). Where matplotlib is not installed each try searches every folder of sys.path
    again, about a tenth of what a live-view message costs the server. A None in sys.modules is Python's
    own "not importable" mark: the import then fails at once, and `importlib.util.find_spec` answers
    None, as it would anyway. Where matplotlib is installed nothing changes."""
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def launch(args: argparse.Namespace) -> int:
    """`python studio.py` with no subcommand."""
    try:
        settings = Settings.from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app, _ = start_studio(settings, prevent_thread_lock=True)
    if wait_for_page(app.local_url):
        print(ready_line(settings, app.local_url, app.share_url), flush=True)
    else:
        print(f"LoRA Studio is serving {app.local_url} but its page has not answered yet (a very busy machine?); "
              "try opening it in a minute. Stop it with Ctrl+C.", flush=True)
    # The page is served before PyTorch and diffusers are imported (several CPU-seconds); import them now,
    # in the background, so the first Start or Generate does not pay for it.
    threading.Thread(target=_import_engine, name="import-engine", daemon=True).start()
    app.block_thread()  # until Ctrl+C
    return 0


def _import_engine() -> None:
    importlib.import_module("studio.engine.train")  # torch, diffusers, peft


def wait_for_page(local_url: str, timeout_s: float = 300.0) -> bool:
    """Whether the page answers (any status but a server error: 401 means a login page) within `timeout_s`."""
    import time

    import httpx

    url = local_url.replace("://0.0.0.0:", "://127.0.0.1:")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.head(url, timeout=30).status_code < 500:
                return True
        except httpx.HTTPError:
            pass  # not listening yet, or it timed out: ask again
        time.sleep(0.2)
    return False


def ready_line(settings: Settings, local_url: str, share_url: str | None) -> str:
    """What `python studio.py` prints once the page answers: the address to open."""
    url = local_url.replace("://0.0.0.0:", "://127.0.0.1:").rstrip("/")
    line = f"LoRA Studio is ready: open {url}"
    if not is_loopback(settings.host):
        line += f" (listening on {settings.host}: other machines can reach it too)"
    if share_url:
        line += f"\n  public link: {share_url.rstrip('/')}"
    return line + "\n  stop it with Ctrl+C"

