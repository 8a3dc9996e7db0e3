"""The dataset report: what a scan found, what was skipped and why, and what may hurt training.

`build_report` turns a `DatasetScan` into a JSON-serialisable dict (kept in each run folder as
`dataset_report.json`); `format_report` renders it as text for `python studio.py check`.
`ok` is False only when training cannot start (`problems`); everything else that deserves a look
(missing captions, captions CLIP will truncate, duplicates, small images, a missing trigger word)
is a warning. The caption linter's findings (`studio.data.lint`) are kept under `lint`.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from studio.core.atomic import write_json_atomic
from studio.data.buckets import assign_bucket, make_buckets
from studio.data.captions import CAPTION_SOURCES
from studio.data.dataset import DatasetScan
from studio.data.lint import CLIP_MAX_TOKENS, CaptionFacts

_LIST_LIMIT = 20  # longest list format_report prints in full (skipped files are always all shown)


def build_report(
    scan: DatasetScan, *, resolution: int, trigger_word: str = "", bucket_step: int = 64
) -> dict[str, Any]:
    """Summarise `scan` for training at `resolution` (buckets of `bucket_step` pixels)."""
    facts = CaptionFacts({item.rel: item.caption for item in scan.items}, trigger_word,
                         sources={item.rel: item.caption_source for item in scan.items})
    return combine_report(image_report(scan, resolution=resolution, bucket_step=bucket_step), facts, scan.warnings)


def image_report(scan: DatasetScan, *, resolution: int, bucket_step: int = 64) -> dict[str, Any]:
    """The half of the report that captions don't change: files, sizes, buckets, duplicates, small images.
    The Dataset tab keeps it while captions are edited, and makes it again for a new resolution."""
    items = scan.items
    buckets = make_buckets(resolution, step=bucket_step)
    bucket_counts = Counter(assign_bucket(item.width, item.height, buckets) for item in items)
    by_fingerprint: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_fingerprint[item.fingerprint].append(item.rel)
    return {
        "folder": str(scan.folder),
        "resolution": resolution,
        "bucket_step": bucket_step,
        "found": scan.found,
        "skipped": [{"file": s.rel, "reason": s.reason} for s in scan.skipped],
        "resolutions": _size_summary(items),
        "buckets": {f"{w}x{h}": bucket_counts[(w, h)] for w, h in buckets if bucket_counts[(w, h)]},
        "duplicates": sorted(group for group in by_fingerprint.values() if len(group) > 1),
        "small_images": [
            {"file": item.rel, "width": item.width, "height": item.height}
            for item in items
            if min(item.width, item.height) < resolution / 2
        ],
    }


def combine_report(images: dict[str, Any], facts: CaptionFacts, scan_warnings: list[str]) -> dict[str, Any]:
    """The full report from its image half (`image_report`) and the captions' facts; costs the size of
    the lists it holds, so the Dataset tab can redo it after every edit."""
    trigger = facts.trigger
    usable = len(facts.texts)
    tokens = facts.token_stats()
    report: dict[str, Any] = {
        "folder": images["folder"],
        "resolution": images["resolution"],
        "bucket_step": images["bucket_step"],
        "counts": {
            "found": images["found"], "usable": usable, "skipped": len(images["skipped"]),
            "captioned": facts.captioned,
        },
        "skipped": images["skipped"],
        "caption_sources": {source: facts.source_counts[source] for source in CAPTION_SOURCES},
        "missing_captions": facts.in_order(facts.empty),
        "resolutions": images["resolutions"],
        "buckets": images["buckets"],
        "caption_tokens": (tokens | {"limit": CLIP_MAX_TOKENS}) if tokens else None,
        "over_77_tokens": [{"file": rel, "tokens": facts.tokens[rel]} for rel in facts.in_order(facts.long)],
        "duplicates": images["duplicates"],
        "small_images": images["small_images"],
        "trigger_word": None if not trigger else {"word": trigger, "missing": facts.in_order(facts.missing_trigger)},
        "lint": facts.findings(),
    }
    report["warnings"] = list(scan_warnings) + _summary_warnings(report)
    report["problems"] = _problems(report)
    report["ok"] = not report["problems"]
    return report


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write the report as JSON to `path` atomically (a run keeps it as `dataset_report.json`)."""
    return write_json_atomic(Path(path), report)


def format_report(report: dict[str, Any], verdict: bool = True) -> str:
    """The report as readable text: counts first, then every skipped file, buckets, captions, warnings,
    and (unless `verdict=False`, for a caller that gives its own) whether the dataset is ready to train."""
    report = printable(report)  # a file name with a newline in it must not break a list into two entries
    counts = report["counts"]
    lines = [
        f"Dataset: {report['folder']}",
        f"  {counts['found']} image files: {counts['usable']} usable, {counts['skipped']} skipped; "
        f"{counts['captioned']} of {counts['usable']} usable images captioned",
    ]
    if report["skipped"]:
        lines += ["", f"Skipped ({len(report['skipped'])}):"]
        lines += [f"  {s['file']}: {s['reason']}" for s in report["skipped"]]

    sizes = report["resolutions"]
    if sizes:
        lines += [
            "",
            f"Sizes: width {_range(sizes['width'])}, height {_range(sizes['height'])}",
            *_limited([f"  {size}: {n}" for size, n in sizes["counts"].items()]),
        ]
    if report["buckets"]:
        lines += ["", f"Buckets at {report['resolution']} px (step {report['bucket_step']}):"]
        lines += [f"  {bucket}: {n}" for bucket, n in report["buckets"].items()]

    sources = ", ".join(f"{n} from {source}" for source, n in report["caption_sources"].items() if n)
    lines += ["", f"Captions: {sources or 'none'}; {len(report['missing_captions'])} missing"]
    lines += _limited([f"  missing: {rel}" for rel in report["missing_captions"]])
    if report["caption_tokens"]:
        t = report["caption_tokens"]
        lines.append(f"  CLIP tokens: min {t['min']}, mean {t['mean']}, max {t['max']} (limit {t['limit']})")
    over = report["over_77_tokens"]
    lines += _limited([f"  over {CLIP_MAX_TOKENS} tokens: {o['file']} ({o['tokens']})" for o in over])
    if report["trigger_word"]:
        trigger = report["trigger_word"]
        lines.append(f"  trigger word \"{trigger['word']}\": missing from {len(trigger['missing'])} captions")
        lines += _limited([f"    {rel}" for rel in trigger["missing"]])

    if report["duplicates"]:
        lines += ["", f"Duplicates ({len(report['duplicates'])} groups):"]
        lines += _limited([f"  {' = '.join(group)}" for group in report["duplicates"]])
    if report["small_images"]:
        lines += ["", f"Small images (short side under {report['resolution'] // 2} px, will be upscaled):"]
        lines += _limited([f"  {s['file']}: {s['width']}x{s['height']}" for s in report["small_images"]])
    if report["lint"]:
        lines += ["", f"Caption lint ({len(report['lint'])} findings):"]
        for finding in report["lint"]:
            lines.append(f"  [{finding['severity']}] {finding['message']}")
            if finding["files"]:
                lines.append(f"    files: {_first_few(finding['files'])}")
    if report["warnings"]:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in report["warnings"]]
    if report["problems"]:
        lines += ["", "Problems:"] + [f"  - {p}" for p in report["problems"]]
    if verdict:
        lines += ["", "Ready to train." if report["ok"] else "NOT ready to train: fix the problems above."]
    return "\n".join(lines)


def printable(value: Any) -> Any:
    """`value` with every control character in its strings shown as an escape (a newline in a file name
    as `\\n`), so that each name stays on its line; dicts and lists are copied, the rest kept."""
    if isinstance(value, str):
        return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                       for ch in value)
    if isinstance(value, dict):
        return {key: printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(item) for item in value]
    return value


def _first_few(names: list[str], limit: int = 5) -> str:
    more = f", … and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _stats(values: list[int]) -> dict[str, float]:
    return {
        "min": min(values),
        "mean": round(statistics.fmean(values), 1),
        "median": statistics.median(values),
        "max": max(values),
    }


def _size_summary(items: list) -> dict[str, Any] | None:
    if not items:
        return None
    sizes = Counter(f"{item.width}x{item.height}" for item in items)
    return {
        "width": _stats([item.width for item in items]),
        "height": _stats([item.height for item in items]),
        "counts": dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def _range(stats: dict[str, float]) -> str:
    return f"{stats['min']}-{stats['max']} (median {stats['median']:g})"


def _limited(lines: list[str]) -> list[str]:
    if len(lines) <= _LIST_LIMIT:
        return lines
    return lines[:_LIST_LIMIT] + [f"  … and {len(lines) - _LIST_LIMIT} more (all in dataset_report.json)"]


def _summary_warnings(report: dict[str, Any]) -> list[str]:
    warnings = []
    usable = report["counts"]["usable"]
    if report["skipped"]:
        warnings.append(f"{len(report['skipped'])} image files skipped (listed with reasons)")
    if report["missing_captions"]:
        warnings.append(f"{len(report['missing_captions'])} of {usable} usable images have no caption")
    if report["over_77_tokens"]:
        warnings.append(
            f"{len(report['over_77_tokens'])} captions are longer than {CLIP_MAX_TOKENS} CLIP tokens; "
            "the text encoder will only see the start of them"
        )
    if report["duplicates"]:
        extra = sum(len(group) - 1 for group in report["duplicates"])
        groups = len(report["duplicates"])
        warnings.append(f"{extra} images duplicate another one ({groups} groups); duplicates weigh double")
    if report["small_images"]:
        warnings.append(
            f"{len(report['small_images'])} images are smaller than half the training resolution "
            f"({report['resolution'] // 2} px on the short side) and will be upscaled"
        )
    trigger = report["trigger_word"]
    if trigger and trigger["missing"]:
        warnings.append(f"{len(trigger['missing'])} captions do not contain the trigger word \"{trigger['word']}\"")
    return warnings


def _problems(report: dict[str, Any]) -> list[str]:
    if report["counts"]["usable"] == 0:
        return [f"no usable image in {report['folder']}: all {report['counts']['skipped']} image files were skipped"]
    return []
