"""`python studio.py pretrain-world`: pretrain the toy world's models, with a progress bar per phase."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def run_pretrain_world(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from studio.world.pretrain import FULL, PHASES, QUICK, run_pretraining, ship

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip()) if args.phases else PHASES
    bars: dict[str, tqdm] = {}

    def progress(phase: str, done: int, total: int, losses: dict[str, float], cpu_s: float) -> None:
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[phase] = tqdm(total=total, initial=done - 1, desc=phase, unit="step", file=sys.stderr,
                                     dynamic_ncols=True)
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{losses.get('loss', float('nan')):.4f}", cpu=f"{cpu_s / 60:.1f}min", refresh=False)

    try:
        finished = run_pretraining(args.out, plan, phases, args.minutes, progress)
    except (RuntimeError, ValueError) as err:
        print(f"pretrain-world: {err}", file=sys.stderr)
        return 2
    finally:
        for bar in bars.values():
            bar.close()
    if not finished:
        print(f"pretrain-world: stopped after {args.minutes} minutes with a checkpoint in {args.out}; "
              "run the same command again to continue", file=sys.stderr)
        return 0
    print(f"pretrain-world: phases {', '.join(phases)} are done in {args.out}")
    if args.ship:
        try:
            dest = ship(args.out, args.ship, plan, command=shlex.join(["python", "studio.py", *sys.argv[1:]]))
        except RuntimeError as err:
            print(f"pretrain-world: {err}", file=sys.stderr)
            return 2
        print(f"pretrain-world: wrote toy-sd15, toy-clip and provenance.json into {dest}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain-world", help="pretrain the toy world's toy-sd15 and toy-clip (hours on a CPU)",
                       description="Pretrain the built-in toy world's models into OUT: the autoencoder (vae), then "
                                   "the text encoder + UNet (unet), and the toy-clip scorer (clip). Seeded and "
                                   "resumable: run the same command again to continue after --minutes or a kill. "
                                   "--ship DIR then writes toy-sd15/, toy-clip/ and provenance.json.")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="work folder (checkpoints, logs)")
    p.add_argument("--minutes", type=float, metavar="N", help="stop cleanly after N minutes (wall clock)")
    p.add_argument("--phases", metavar="vae,unet,clip",
                   help="phases to run, in that order (default: all); clip can run in a second process")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--ship", type=Path, metavar="DIR", help="when every phase is done, write the built-in folders here")
    p.add_argument("--quick", action="store_true", help="a few steps of each phase (a smoke test, not a model)")
