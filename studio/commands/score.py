"""`python studio.py score RUN [--grid NAME | --batch NAME|DIR] [--refs DIR] [--clip NAME] [--dino NAME]
[--inception NAME] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys

from studio.commands.progress import ProgressBar
from studio.core.lock import AcceleratorBusy
from studio.engine.runs import RunFolder, find_run


def run_score(args: argparse.Namespace) -> int:
    from studio.eval.backbones import BackboneError, default_backbones

    try:
        run = find_run(args.outputs, args.run)
        clip, dino = default_backbones(run.config().model.base)
        clip, dino = args.clip or clip, args.dino or dino
        if args.batch and args.grid:
            raise ValueError("give --grid NAME or --batch NAME|DIR, not both")
        if args.inception and not args.batch:
            raise ValueError("--inception is for FID / KID of a batch: add --batch NAME|DIR (grids get no FID)")
        text = _score_batch(run, args, clip, dino) if args.batch else _score_grid(run, args, clip, dino)
    except (FileNotFoundError, ValueError, BackboneError, AcceleratorBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(text)
    return 0


def _score_grid(run: RunFolder, args: argparse.Namespace, clip: str, dino: str) -> str:
    from studio.eval.grids import list_grids
    from studio.eval.scorecard import format_scorecard
    from studio.eval.scoring import score_grid

    grid = args.grid
    if not grid:
        grids = list_grids(run)
        if not grids:
            raise FileNotFoundError(f"run {run.name} has no comparison grid yet: make one first with "
                                    f"python studio.py compare {run.name}")
        grid = grids[0]
        others = f"; {len(grids) - 1} older, pick one with --grid NAME" if len(grids) > 1 else ""
        print(f"scoring grid {grid} (the newest of run {run.name}{others})", file=sys.stderr)
    bar = ProgressBar(f"scoring {grid}")
    try:
        scores = score_grid(run, grid, refs=args.refs, clip=clip, dino=dino, progress=bar)
    finally:
        bar.close()
    return json.dumps(scores, indent=2, ensure_ascii=False) if args.json else format_scorecard(scores)


def _score_batch(run: RunFolder, args: argparse.Namespace, clip: str, dino: str) -> str:
    from studio.eval.batch_scores import format_batch_scores, score_batch
    from studio.eval.inception import INCEPTION_DEFAULT

    bar = ProgressBar(f"scoring batch {args.batch}")
    try:
        scores = score_batch(run, args.batch, refs=args.refs, clip=clip, dino=dino,
                             inception=args.inception or INCEPTION_DEFAULT, progress=bar)
    finally:
        bar.close()
    print(f"scores.json written in {scores['folder']}", file=sys.stderr)
    return json.dumps(scores, indent=2, ensure_ascii=False) if args.json else format_batch_scores(scores)
