"""`python studio.py export RUN [--step N] [--format webui|diffusers] [--out FILE]`."""

from __future__ import annotations

import argparse
import sys

from studio.engine.runs import find_run


def run_export(args: argparse.Namespace) -> int:
    from studio.engine.export import export_run

    try:
        run = find_run(args.outputs, args.run)
        path = export_run(run, args.format, args.step, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0
