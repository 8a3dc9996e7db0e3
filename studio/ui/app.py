"""The studio's Gradio app: `build_app()` makes the Blocks, `launch()` serves it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import gradio as gr

from studio import __version__
from studio.config import list_presets
from studio.engine.environment import environment_report, format_environment

log = logging.getLogger(__name__)


def build_app(outputs_dir: Path, models_dir: Path) -> gr.Blocks:
    env = environment_report(outputs_dir, models_dir)
    dev, prec = env["device"], env["precision"]
    with gr.Blocks(title="LoRA Studio") as app:
        gr.Markdown(f"# LoRA Studio {__version__}\n"
                    f"**Device** {dev['type']} — {dev['name']} · **Precision** {prec['precision']} ({prec['reason']})")
        with gr.Accordion("Environment", open=True):
            gr.Code(format_environment(env), language=None, label="python studio.py check")
        presets = "\n".join(f"- **{name}** — {desc}" for name, desc in list_presets().items())
        gr.Markdown(f"### Presets\n{presets}")
    return app


def launch(args: argparse.Namespace) -> int:
    app = build_app(args.outputs, args.models)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    app.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth,
               allowed_paths=[str(args.outputs.resolve())])
    return 0
