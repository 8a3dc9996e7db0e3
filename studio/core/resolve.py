"""Paths users type, resolved one way for the CLI and the studio.

A relative path is looked for, in this order, and the first place where it exists wins:

1. the working directory (what a shell user means by `datasets/products`);
2. the root folder of its kind: the datasets folder (`--datasets`) for `data.dir`, the models
   folder (`--models`) for `model.*` and LoRA files, the outputs folder for runs;
3. the studio's own folder (the repository), where the presets' `datasets/products` lives.

An absolute path (`~` expanded) is taken as it is. When the path exists nowhere, the first place
(the working directory) is used, so that the error a user meets later names a full path. The studio
confines what its users type: with `within=ROOT` the places outside that root are skipped.

Run folders store what this gives (absolute paths), once, when they are created: a run's
config.yaml then reloads the same from any working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from studio.paths import REPO_ROOT


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def search_paths(text: str, roots: Sequence[Path] = (), within: Path | None = None) -> list[Path]:
    """Every place `text` may mean, resolved (symlinks followed), in search order, without repeats."""
    path = Path(text).expanduser()
    raw = [path] if path.is_absolute() else [Path.cwd() / path, *(Path(r) / path for r in roots), REPO_ROOT / path]
    places: list[Path] = []
    for candidate in raw:
        resolved = candidate.resolve()
        if resolved not in places:
            places.append(resolved)
    if within is not None:
        root = Path(within).resolve()
        places = [p for p in places if inside(p, root)]
    return places


def resolve_path(text: str, roots: Sequence[Path] = (), within: Path | None = None) -> Path | None:
    """The first existing place `text` names, else the first place; None when every place lies
    outside `within`."""
    places = search_paths(text, roots, within)
    return next((p for p in places if p.exists()), places[0] if places else None)


def find_existing(texts: Sequence[str], roots: Sequence[Path] = (), within: Path | None = None) -> Path | None:
    """The first existing place of the first text that has one (e.g. `NAME`, then `NAME.safetensors`)."""
    for text in texts:
        found = next((p for p in search_paths(text, roots, within) if p.exists()), None)
        if found is not None:
            return found
    return None
