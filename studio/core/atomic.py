"""Atomic writes: a temp file (or folder) beside the target, then renamed into place.

A crash mid-write leaves either the old file or the new one, never half of one. Temp folders are
named `.<final>.tmp-XXXX`, so a leftover one is recognisable and cleaned up later
(`remove_temp_dirs`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` (UTF-8, newlines as written) to `path` atomically; creates the parent folder."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; creates the parent folder. Its temp file is
    `.<name>.<random>.tmp` beside it, so a reader of `path` never sees part of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_png_atomic(path: Path, image: Any) -> Path:
    """Save a PIL image as PNG at `path` atomically: a stop or crash never leaves half an image."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write `data` as indented UTF-8 JSON to `path` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def new_temp_dir(parent: Path, name: str) -> Path:
    """An empty `.<name>.tmp-XXXX` folder in `parent`, to fill and then `publish_dir` as `parent/name`."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-"))


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder into place (replacing an older one of the same name)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def remove_temp_dirs(parent: Path, pattern: str = ".*.tmp-*") -> list[Path]:
    """Delete temp folders a crashed writer left in `parent` (those `new_temp_dir` names); returns them.

    Only call this where no writer can be working right now (the caller knows the folder is idle).
    """
    removed = []
    if Path(parent).is_dir():
        for stale in sorted(Path(parent).glob(pattern)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
    return removed
