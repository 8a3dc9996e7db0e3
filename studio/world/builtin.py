"""Where the toy world's shipped models live, and the check that they are the ones pretrained.

`toy-sd15` (a diffusers SD1.5 folder) and `toy-clip` (an open_clip `local-dir:` folder) sit in
`studio/world/weights/` beside `provenance.json`, which `python studio.py pretrain-world --ship`
wrote: the plan, steps, CPU time, final losses and the sha256 of every file.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PROVENANCE_FILE = WEIGHTS_DIR / "provenance.json"
TOY_SD15 = "toy-sd15"
TOY_CLIP = "toy-clip"


class ToyWeightsMissing(FileNotFoundError):
    """The checkout has no (or incomplete) toy-world weights."""


def toy_dir(name: str) -> Path:
    """The shipped folder of `toy-sd15` or `toy-clip`."""
    if name not in (TOY_SD15, TOY_CLIP):
        raise ValueError(f"{name!r} is not a toy-world model: expected {TOY_SD15} or {TOY_CLIP}")
    folder = WEIGHTS_DIR / name
    if not folder.is_dir() or not any(folder.rglob("*.safetensors")):
        raise ToyWeightsMissing(
            f"the built-in {name} is missing from {folder}: this checkout lacks the toy world's weights. "
            "Check out the repository again (the weights are ordinary files in git), or pretrain them with "
            f"`python studio.py pretrain-world --out work/toy --ship {WEIGHTS_DIR}`.")
    return folder


def provenance() -> dict:
    """The shipped provenance record (plan, steps, CPU time, losses, file hashes)."""
    return json.loads(PROVENANCE_FILE.read_text(encoding="utf-8"))


def changed_files() -> list[str]:
    """Shipped files whose sha256 differs from provenance.json, or that are missing or unlisted."""
    from studio.world.pretrain import sha256_of

    listed = provenance()["files"]
    present = {str(p.relative_to(WEIGHTS_DIR)) for name in (TOY_SD15, TOY_CLIP)
               for p in (WEIGHTS_DIR / name).rglob("*") if p.is_file()}
    problems = [f"{f}: missing" for f in sorted(set(listed) - present)]
    problems += [f"{f}: not in provenance.json" for f in sorted(present - set(listed))]
    problems += [f"{f}: sha256 differs" for f in sorted(set(listed) & present)
                 if sha256_of(WEIGHTS_DIR / f) != listed[f]]
    return problems
