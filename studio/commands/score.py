"""`python studio.py score RUN [--refs DIR] [--grid NAME] [--clip NAME] [--dino NAME] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys

from studio.commands.progress import ProgressBar
from studio.engine.gpu_lock import AcceleratorBusy
from studio.engine.runs import RunFolder, find_run


def run_score(args: argparse.Namespace) -> int:
    from studio.eval.backbones import CLIP_DEFAULT, DINO_DEFAULT, BackboneError
    from studio.eval.scorecard import format_scorecard
    from studio.eval.scoring import score_grid

    try:
        run = find_run(args.outputs, args.run)
        grid = args.grid or _newest_grid(run)
        bar = ProgressBar(f"scoring {grid}")
        try:
            scores = score_grid(run, grid, refs=args.refs, clip=args.clip or CLIP_DEFAULT,
                                dino=args.dino or DINO_DEFAULT, progress=bar)
        finally:
            bar.close()
    except (FileNotFoundError, ValueError, BackboneError, AcceleratorBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(scores, indent=2, ensure_ascii=False) if args.json else format_scorecard(scores))
    return 0


def _newest_grid(run: RunFolder) -> str:
    from studio.eval.grids import list_grids

    grids = list_grids(run)
    if not grids:
        raise FileNotFoundError(f"run {run.name} has no comparison grid yet: make one first with "
                                f"python studio.py compare {run.name} --prompts FILE|TEXT")
    return grids[0]
