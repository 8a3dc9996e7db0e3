"""`python studio.py bench --peers [--diffusers-repo DIR] [--kohya-repo DIR]`: our loop against the peers' own
scripts at the same settings (engine/peers_bench.py); prints figures, asserts nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studio.config import ConfigError, load_config


def parse_steps(text: str) -> tuple[int, int]:
    """`--peer-steps N1,N2`: two step counts, N1 < N2."""
    try:
        short, long = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--peer-steps {text!r}: give two step counts N1,N2, e.g. 10,60") from None
    if not 1 <= short < long:
        raise ValueError(f"--peer-steps {text!r}: need 1 <= N1 < N2")
    return short, long


def run_peers_command(args: argparse.Namespace) -> int:
    from studio.engine import peers_bench as pb

    try:
        steps = parse_steps(args.peer_steps)
        overrides = [f"{key}={pb._yaml_value(value)}" for key, value in pb.PEER_SETTINGS.items()] + args.overrides
        config = pb.peer_config(load_config(args.preset, overrides))
        if args.rounds < 1 or args.peer_images < config.train.batch_size:
            raise ValueError(f"--rounds must be at least 1 and --peer-images at least train.batch_size "
                             f"({config.train.batch_size})")
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.diffusers_repo is None and args.kohya_repo is None:
        print("note: no --diffusers-repo or --kohya-repo given: only our own loop runs", file=sys.stderr)

    def progress(message: str) -> None:
        print(f"bench --peers: {message}", file=sys.stderr, flush=True)

    with pb.bench_work_dir() as tmp:
        work = Path(tmp)
        if args.peer_model in ("small", "real-size"):
            progress(f"building the {args.peer_model} SD1.5-shaped model")
            model = pb.write_bench_model(work / "model", args.peer_model)
            described = f"{args.peer_model} SD1.5-shaped UNet (random init)"
        else:
            model = Path(args.peer_model).resolve()
            if not (model / "unet" / "config.json").is_file():
                print(f"error: --peer-model {args.peer_model}: not a diffusers folder (no unet/config.json)",
                      file=sys.stderr)
                return 1
            described = str(model)
        data = pb.write_bench_data(work / "data", args.peer_images, config.data.resolution)
        loops = []
        try:
            if args.diffusers_repo is not None:
                loops += [pb.ours_loop(config, args.preset, model, data["ours"], work, "attention"),
                          pb.diffusers_loop(config, args.diffusers_repo.resolve(), model, data["diffusers"], work,
                                            args.diffusers_python or sys.executable)]
            if args.kohya_repo is not None:
                loops += [pb.ours_loop(config, args.preset, model, data["ours"], work, "attention+ff"),
                          pb.kohya_loop(config, args.kohya_repo.resolve(), model, data["kohya"], work,
                                        args.kohya_python or sys.executable)]
            if not loops:
                loops = [pb.ours_loop(config, args.preset, model, data["ours"], work, config.lora.targets)]
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        results = pb.run_peers_bench(loops, work, steps, args.rounds, progress)
        print(pb.format_peers_bench(results, config, described, steps, args.rounds, args.peer_images))
    return 0 if all(r.error is None for r in results) else 1
