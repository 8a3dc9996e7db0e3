"""`python studio.py export RUN [--step N] [--format webui|diffusers|pipeline|checkpoint] [--out FILE|DIR]
[--scale S]`: a run's LoRA file, or its base model with the LoRA merged in."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from studio.engine.runs import find_run

FORMATS = ("webui", "diffusers", "pipeline", "checkpoint")
EPILOG = textwrap.dedent("""\
    formats:
      webui       the LoRA for AUTOMATIC1111, Forge, ComfyUI, kohya and diffusers: FILE.safetensors with
                  kohya's metadata, FILE.json (A1111's activation text) and FILE.preview.png
      diffusers   the LoRA in diffusers' own PEFT layout (load_lora_weights), alpha kept in its metadata
      pipeline    the base model with the LoRA merged in, as a diffusers folder (from_pretrained)
      checkpoint  the base model with the LoRA merged in, as one .safetensors (A1111, ComfyUI, from_single_file)
    --out is the file to write; only --format pipeline writes a folder. The merged formats load the
    whole base model once and write it tensor by tensor, in save.dtype (fp16 unless the run says otherwise).""")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write a run's LoRA file, or the base model with the LoRA merged in",
                       description="Write one checkpoint of RUN as a LoRA file (webui, diffusers) or merged into "
                                   "its base model (pipeline, checkpoint); prints what it wrote.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run name or folder")
    p.add_argument("--step", type=int, metavar="N",
                   help="checkpoint step (default: the latest; for a finished run, its final LoRA)")
    p.add_argument("--format", choices=FORMATS, default="webui", help="what to write (default webui; see below)")
    p.add_argument("--out", type=Path, metavar="FILE|DIR",
                   help="the file to write (a folder for --format pipeline); default: outputs/RUN/exports/…")
    p.add_argument("--scale", type=float, default=1.0, metavar="S",
                   help="pipeline / checkpoint: the LoRA weight merged into the base model (default 1.0)")
    p.add_argument("--preview", default="auto", metavar="IMAGE|auto|none",
                   help="webui / checkpoint: the image for NAME.preview.png and the file's thumbnail "
                        "(default auto: a sample of that step, or of the nearest step with samples)")
    p.add_argument("--author", default="", help="webui / checkpoint: modelspec.author of the file")
    p.add_argument("--license", default="", help="webui / checkpoint: modelspec.license, e.g. CreativeML-OpenRAIL-M")
    p.add_argument("--description", default="", help="modelspec.description (default: what the run trained)")
    p.add_argument("--tags", default="", help="modelspec.tags, comma-separated (default: trigger word, class phrase)")
    return p


class _ExportProgress:
    """Phase lines on stderr, and a bar in bytes while weights are written."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if what != self.phase:
            self.close()
            self.phase = what
            if total:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=what, unit="B", unit_scale=True, file=sys.stderr, dynamic_ncols=True)
            else:
                print(f"{what}…", file=sys.stderr)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_export(args: argparse.Namespace) -> int:
    from studio.core.lock import AcceleratorBusy
    from studio.engine.export import export_run
    from studio.engine.lora_metadata import ModelCard
    from studio.engine.models import ModelLoadError

    preview = args.preview if args.preview in ("auto", "none") else Path(args.preview)
    card = ModelCard(author=args.author, license=args.license, description=args.description, tags=args.tags)
    progress = _ExportProgress()
    try:
        run = find_run(args.outputs, args.run)
        path = export_run(run, args.format, args.step, args.out, scale=args.scale, preview=preview, card=card,
                          models_dir=args.models, progress=progress)
    except (FileNotFoundError, ValueError, ModelLoadError, AcceleratorBusy) as err:
        progress.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    progress.close()
    print(path)
    return 0
