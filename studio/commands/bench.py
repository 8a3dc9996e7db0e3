"""`python studio.py bench [--preset P] [--steps N] [--grids]`: prints speed figures; asserts nothing."""

from __future__ import annotations

import argparse
import os
import sys

from studio.config import ConfigError, load_config


def run_bench_command(args: argparse.Namespace) -> int:
    from studio.engine.bench import format_bench, run_bench

    if "OMP_NUM_THREADS" not in os.environ:
        print("note: set OMP_NUM_THREADS=1 for stable CPU comparisons", file=sys.stderr)
    try:
        config = load_config(args.preset, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.grids:
        from studio.eval.bench import format_grid_bench, run_grid_bench

        try:
            result = run_grid_bench(config, args.repeats, models_dir=args.models)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(format_grid_bench(result))
        return 0
    results = run_bench(config, args.steps, args.models)
    print(format_bench(results, config, args.steps))
    return 0
