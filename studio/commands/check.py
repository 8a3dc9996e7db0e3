"""`python studio.py check`: can training start here? Environment, then optionally preset and dataset."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from studio.config import ConfigError, RunConfig, load_config
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
    return report, format_report(report), list(report["problems"])


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

    if args.preset:
        text, model_problems = _model_section(config, args.models)
        sections.append(text)
        problems += model_problems
    data_dir = args.data or (config.data.dir if args.preset else None)
    if data_dir:
        report, text, data_problems = _dataset_section(data_dir, config)
        sections.append(text)
        result["dataset"] = report
        problems += data_problems

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
