"""`python studio.py check`: can training start here? Environment, then optionally preset and dataset, and
with `--dry-run` a real few-step trial of the preset (`engine/dryrun.py`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from studio.config import ConfigError, RunConfig, load_config
from studio.core.resolve import resolve_path
from studio.data.dataset import BUILTIN_DEMO
from studio.engine.environment import environment_report, format_environment


def _dataset_section(data_dir: str, config: RunConfig) -> tuple[dict[str, Any] | None, str, list[str]]:
    from studio.data.dataset import DatasetError, resolve_data_dir, scan_dataset
    from studio.data.report import build_report, format_report

    try:
        folder = resolve_data_dir(data_dir)
        # require_usable=False: a folder with nothing usable still gets its full report, every file named
        scan = scan_dataset(folder, progress=_progress("scanning images"), require_usable=False)
    except DatasetError as err:
        return None, f"Dataset {data_dir}: {err}", [str(err)]
    report = build_report(scan, resolution=config.data.resolution, trigger_word=config.data.trigger_word,
                          bucket_step=config.data.bucket_step)
    # the verdict comes once, at the end, for every section together
    return report, format_report(report, verdict=False), list(report["problems"])


def _model_section(config: RunConfig, models_dir) -> tuple[str, list[str]]:
    from studio.engine.models import ModelLoadError, resolve_base

    try:
        source = resolve_base(config.model.base, models_dir)
    except ModelLoadError as err:
        return f"Model: {err}", [str(err)]
    family = source.family or config.model.family
    if source.family and source.family != config.model.family:
        msg = f"model.family is {config.model.family} but {config.model.base} is an {source.family} model"
        return f"Model: {msg}", [msg]
    return f"Model:      {config.model.base} ({source.kind}, {family})", []


def _dry_run_section(config: RunConfig, args: argparse.Namespace) -> tuple[str, dict[str, Any] | None, list[str]]:
    from dataclasses import asdict

    from studio.core.lock import AcceleratorBusy
    from studio.engine.dryrun import dry_run

    if sys.stderr.isatty():
        print("test setup: loading the models and running a few training steps…", file=sys.stderr)
    try:
        report = dry_run(config, outputs_dir=args.outputs, models_dir=args.models, datasets_dir=args.datasets)
    except AcceleratorBusy as err:
        return f"Test setup: {err}", None, [str(err)]
    except Exception as err:  # what a real run would fail with at setup: the user's to fix
        return f"Test setup failed: {err}", None, [f"test setup: {err}"]
    data = asdict(report) | {"projected_s": report.projected_s, "projected_disk_bytes": report.projected_disk_bytes}
    return "\n".join(report.lines()), data, [report.oom] if report.oom else []


def _cache_section(clear: bool) -> tuple[str, dict[str, Any]]:
    """The disk cache of latents and caption embeddings: where, how big; emptied with --clear-cache."""
    from dataclasses import asdict

    from studio.engine.caches import clear_tensor_cache, tensor_cache_usage
    from studio.engine.environment import human_bytes

    usage = clear_tensor_cache() if clear else tensor_cache_usage()
    counts = f"{usage.entries.get('latents', 0)} latents, {usage.entries.get('text', 0)} caption embeddings"
    if clear:
        return f"Cache:      cleared {human_bytes(usage.bytes)} ({counts}) from {usage.folder}", asdict(usage) | {
            "cleared": True}
    hint = " (python studio.py check --clear-cache empties it)" if usage.bytes else ""
    return f"Cache:      {human_bytes(usage.bytes)} in {usage.folder}: {counts}{hint}", asdict(usage)


def _progress(label: str):
    if not sys.stderr.isatty():
        return None

    def report(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report


def run_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.preset, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    env = environment_report(args.outputs, args.models, config.train.precision)
    problems = list(env["problems"])
    sections = [format_environment(env)]
    result: dict[str, Any] = {"environment": env}
    text, result["cache"] = _cache_section(args.clear_cache)
    sections.append(text)

    if args.preset:
        text, model_problems = _model_section(config, args.models)
        sections.append(text)
        problems += model_problems
    data_dir = args.data or (config.data.dir if args.preset else None)
    if data_dir and data_dir != BUILTIN_DEMO:  # the search order `train` uses (studio.core.resolve)
        data_dir = str(resolve_path(data_dir, [args.datasets]))
    if data_dir:
        report, text, data_problems = _dataset_section(data_dir, config)
        sections.append(text)
        result["dataset"] = report
        problems += data_problems

    if args.dry_run:
        if not args.preset:
            print("error: --dry-run needs --preset (the config to try)", file=sys.stderr)
            return 1
        if not problems:
            text, trial, trial_problems = _dry_run_section(config, args)
            sections.append(text)
            result["dry_run"] = trial
            problems += trial_problems

    result["problems"] = problems
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n\n".join(sections))
        print()
        if problems:
            print("Training cannot start:")
            for p in problems:
                print(f"  - {p}")
        else:
            print("Ready to train.")
    return 1 if problems else 0
