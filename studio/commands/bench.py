"""`python studio.py bench [--preset P] [--steps N] [--grids | --export | --world | --startup | --cache
| --augment | --dataset | --live | --peers]`: prints speed figures; asserts nothing."""

from __future__ import annotations

import argparse
import os
import sys

from studio.config import ConfigError, load_config


def run_bench_command(args: argparse.Namespace) -> int:
    from studio.engine.bench import format_bench, run_bench

    if "OMP_NUM_THREADS" not in os.environ:
        print("note: set OMP_NUM_THREADS=1 for stable CPU comparisons", file=sys.stderr)
    if args.dataset:
        from studio.ui.dataset_bench import format_dataset_bench, run_dataset_bench

        print(format_dataset_bench(run_dataset_bench(args.images), args.images))
        return 0
    if args.live:
        from studio.ui.live_bench import format_live_bench, run_live_bench

        try:
            result = run_live_bench(args.viewers, args.repeats, preset=args.preset, overrides=args.overrides)
        except (ConfigError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(format_live_bench(result))
        return 0
    if args.startup:
        from studio.commands.startup_bench import format_startup_bench, run_startup_bench

        runs, imports = run_startup_bench(args.repeats)
        print(format_startup_bench(runs, imports))
        return 0 if all(run.page_s is not None for run in runs) else 1
    if args.peers:
        from studio.commands.peers_bench import run_peers_command

        return run_peers_command(args)
    if args.world:
        from studio.world.report import format_world_report, world_report

        print(format_world_report(world_report(args.keep)))
        return 0
    try:
        config = load_config(args.preset, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.cache:
        from studio.engine.cache_bench import format_cache_bench, run_cache_bench

        results, cache_bytes = run_cache_bench(config, args.images, args.models)
        print(format_cache_bench(results, cache_bytes, config, args.images))
        return 0
    if args.augment:
        from studio.engine.augment_bench import format_augment_bench, run_augment_bench

        try:
            results = run_augment_bench(config, args.steps, args.images, args.models, args.overrides)
        except (ValueError, ConfigError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(format_augment_bench(results, config, args.images))
        return 0
    if args.export:
        from studio.engine.export_bench import format_export_bench, run_export_bench

        print(format_export_bench(run_export_bench(config, args.models)))
        return 0
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
