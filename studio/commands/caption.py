"""`python studio.py caption DIR --captioner template|blip|florence2 [...]`: caption a dataset headless.

DIR is the path as given or, failing that, a folder in the datasets root. Captions are computed
for every image first (a progress bar on stderr) and written only when all succeeded; a summary
says what was captioned, kept and skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studio.commands.progress import ProgressBar
from studio.core.lock import AcceleratorBusy
from studio.data.captioners import TINY_RANDOM, CaptionerError, CaptionOptions, CaptionResult, caption_dataset

_EXAMPLES = 3


def run_caption(args: argparse.Namespace) -> int:
    if args.model and args.captioner == "template":
        print("note: the template captioner uses no model; --model is ignored", file=sys.stderr)
    options = CaptionOptions(
        trigger=args.trigger or "",
        class_phrase=args.class_phrase,
        description=args.description,
        overwrite=args.overwrite,
        max_length=args.max_length,
        model=_model_argument(args.model),
    )
    bar = ProgressBar(f"captioning ({args.captioner})")
    try:
        folder = find_dataset_folder(args.dir, args.datasets)
        result = caption_dataset(folder, args.captioner, options, progress=bar, models_dir=args.models)
    except (CaptionerError, AcceleratorBusy) as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    bar.close()
    print(format_summary(result, folder, args.captioner, args.overwrite))
    return 0


def find_dataset_folder(path: Path, datasets: Path) -> Path:
    """The folder `path` names: as given, else under the datasets root; the demo cache is refused."""
    from studio.data.dataset import BUILTIN_DEMO

    if str(path) == BUILTIN_DEMO:
        from studio.paths import cache_dir

        raise CaptionerError(
            f"{BUILTIN_DEMO} is a generated cache, not a dataset to edit: copy it into the datasets folder first "
            f"(it lives in {cache_dir() / 'datasets' / 'demo'}), e.g. to {datasets / 'demo'}, then caption the copy")
    candidates = [path.expanduser()] + ([datasets / path] if not path.expanduser().is_absolute() else [])
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
        if candidate.exists():
            raise CaptionerError(f"{path} is a file, not a dataset folder")
    raise CaptionerError(f"dataset folder {path} not found (looked for {' and '.join(str(c) for c in candidates)})")


def _model_argument(model: str | None) -> str | None:
    """A folder relative to the working directory becomes absolute; other names pass as they are
    (the captioner looks them up in the models folder, then on the Hub)."""
    if model and Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().absolute())
    return model


def format_summary(result: CaptionResult, folder: Path, captioner: str, overwrite: bool) -> str:
    """What happened, in a few lines: counts, skips with reasons, files written, example captions."""
    source = "template" if captioner == "template" else f"{captioner} ({result.model})"
    if not result.captions and not result.skipped:
        return (f"nothing to caption in {folder}: all {result.kept} images already have a caption "
                "(--overwrite replaces them)")
    kept = "" if overwrite else f"; kept {result.kept} existing caption{'s' * (result.kept != 1)}"
    lines = [f"captioned {len(result.captions)} image{'s' * (len(result.captions) != 1)} with {source}{kept}; "
             f"skipped {len(result.skipped)}{':' if result.skipped else ''}"]
    lines += [f"  {rel}: {reason}" for rel, reason in result.skipped]
    lines.append(f"wrote {len(result.written)} caption file{'s' * (len(result.written) != 1)} in {folder}")
    for path, caption in list(result.captions.items())[:_EXAMPLES]:
        lines.append(f"  e.g. {path.relative_to(folder).as_posix()}: {caption}")
    if result.random_weights:
        lines.append(f"note: {TINY_RANDOM} has random weights, so these captions are meaningless; it only tries "
                     "the flow. Use the default model (or --model ID|DIR) for real captions.")
    return "\n".join(lines)
