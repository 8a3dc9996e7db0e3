"""Command line: `python studio.py` launches the studio; subcommands run the same engine headless."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path

from studio import __version__
from studio.paths import default_datasets_dir, default_models_dir, default_outputs_dir

log = logging.getLogger("studio")

# Subcommands that later issues build. They exist (with --help) so the CLI is complete, and say so
# plainly instead of pretending to work.
NOT_YET = {
    "caption": "the Dataset tab and captioners (issue #5)",
    "compare": "the Compare tab (issue #6)",
    "score": "the Score tab (issue #6)",
    "generate": "batch generation (issue #6)",
}


def _config_keys_epilog() -> str:
    from studio.config import all_keys, field_help

    lines = ["config keys for --set (defaults ← preset ← --set):"]
    for key in all_keys():
        lines.append(f"  {key}")
        lines += textwrap.wrap(field_help(key), width=88, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio.py",
        description="LoRA Studio: train LoRA adapters for Stable Diffusion 1.5 and SDXL. "
                    "With no subcommand, launches the studio in your browser.",
    )
    parser.add_argument("--version", action="version", version=f"LoRA Studio {__version__}")
    parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"),
                        help="address to serve on (default 127.0.0.1; 0.0.0.0 exposes it to your network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "7860")), help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link (Colab)")
    parser.add_argument("--auth", default=os.environ.get("STUDIO_AUTH"), metavar="USER:PASS",
                        help="require a login (also from the STUDIO_AUTH environment variable)")
    parser.add_argument("--outputs", type=Path, default=default_outputs_dir(), help="runs folder (default ./outputs)")
    parser.add_argument("--models", type=Path, default=default_models_dir(), help="base models and LoRAs (default ./models)")
    parser.add_argument("--datasets", type=Path, default=default_datasets_dir(),
                        help="dataset folders (default ./datasets); the studio reads datasets only from here and "
                             "the built-in builtin:demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("train", help="train a LoRA headless", formatter_class=fmt, epilog=_config_keys_epilog())
    p.add_argument("--preset", required=True, metavar="NAME|FILE", help="built-in preset name or a YAML file")
    p.add_argument("--data", metavar="DIR", help="dataset folder (sets data.dir)")
    p.add_argument("--name", metavar="RUN", help="run name (default: preset + date)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set lora.rank=16 (repeatable)")

    p = sub.add_parser("resume", help="continue a run from its latest complete checkpoint")
    p.add_argument("run", metavar="RUN", help="run name or folder")

    p = sub.add_parser("export", help="write a run's LoRA in webui (kohya) or diffusers format")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--step", type=int, help="checkpoint step (default: final LoRA, else latest)")
    p.add_argument("--format", choices=("webui", "diffusers"), default="webui")
    p.add_argument("--out", type=Path, metavar="FILE")

    p = sub.add_parser("caption", help="caption a dataset folder")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--captioner", required=True, metavar="NAME", help="template, blip or florence2")
    p.add_argument("--trigger", metavar="WORD")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("compare", help="prompt-only vs LoRA comparison grid")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prompts", required=True, metavar="FILE|TEXT")
    p.add_argument("--seeds", default="1", metavar="1,2")
    p.add_argument("--scales", default="1", metavar="0,0.5,1")
    p.add_argument("--steps", default="final", metavar="N,M|all")

    p = sub.add_parser("score", help="CLIP-I / CLIP-T / DINO scores for a grid")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--refs", type=Path, metavar="DIR")
    p.add_argument("--grid", metavar="NAME")

    p = sub.add_parser("generate", help="batch-generate images with a run's LoRA")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prompts", required=True, type=Path, metavar="FILE")
    p.add_argument("--count", required=True, type=int, metavar="N")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")

    p = sub.add_parser("check", help="environment and dataset report; non-zero exit if training can't start",
                       formatter_class=fmt)
    p.add_argument("--data", metavar="DIR", help="also scan this dataset folder and print its full report")
    p.add_argument("--preset", metavar="NAME|FILE", help="also check this preset's model, dataset and precision")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("bench", help="speed benchmark: our loop vs an uncached loop")
    p.add_argument("--preset", default="tiny-demo")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        from studio.ui.app import launch

        return launch(args)
    if args.command in NOT_YET:
        print(f"`{args.command}` is not available yet: it arrives with {NOT_YET[args.command]}.", file=sys.stderr)
        return 2
    if args.command == "train":
        from studio.commands.train import run_train

        return run_train(args)
    if args.command == "resume":
        from studio.commands.train import run_resume

        return run_resume(args)
    if args.command == "export":
        from studio.commands.export import run_export

        return run_export(args)
    if args.command == "bench":
        from studio.commands.bench import run_bench_command

        return run_bench_command(args)
    if args.command == "check":
        from studio.commands.check import run_check

        return run_check(args)
    parser.error(f"unknown command {args.command}")
    return 2
