"""What the dataset scan learnt about each image file, kept on disk so that reading a folder again
costs a `stat` per file instead of a full decode, a dHash and a SHA-1.

One JSON file per dataset folder under `<LORA_STUDIO_CACHE or ~/.cache/lora-studio>/scans/`, named by
a hash of the folder's absolute path. An entry is keyed by the file's relative path, size, modification
time, status-change time (nanoseconds) and inode: a file written since, even one given its old modification time
back (`touch -r`, `rsync -t`), has a new change time and is read again. The change time cannot be set by
hand, so what a key vouches for is the bytes the scan read.

Like git's index, the cache refuses "racy" entries: a file modified less than `RACY_S` before the scan
started could be rewritten within the same clock tick without its times moving, so it is not stored
(the next scan reads it again). Writes are atomic; two processes scanning the same folder write
equivalent files and the last rename wins. An unreadable or outdated cache file is treated as empty.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from studio.core.atomic import write_json_atomic
from studio.paths import cache_dir

log = logging.getLogger(__name__)

SCAN_CACHE_FORMAT = 1
"""Stored in each file: raise it when what an entry holds changes (the dHash, a new skip check)."""
RACY_S = 2.0
"""A file modified this close to the scan's start is not cached (file times tick coarsely: 2 s on FAT)."""


def scan_cache_dir() -> Path:
    """The per-user folder of dataset scan caches."""
    return cache_dir() / "scans"


def file_key(stat: os.stat_result) -> list[int]:
    """Size, modification and change times, and inode (a link pointed at another file)."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class ScanCache:
    """The cached facts of one dataset folder: `lookup` before reading a file, `store` after, `save` at the end
    (it keeps only the files seen by this scan, so deleted images leave the cache too)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        name = hashlib.sha256(str(self.folder).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.path = scan_cache_dir() / f"{name}.json"
        self.started_ns = time.time_ns()
        self._old = self._read()
        self._new: dict[str, dict[str, Any]] = {}
        self.hits = 0

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.info("ignoring the unreadable scan cache %s (%s)", self.path, err)
            return {}
        if not isinstance(data, dict) or data.get("format") != SCAN_CACHE_FORMAT or data.get("folder") != str(
                self.folder) or not isinstance(data.get("files"), dict):
            return {}
        return data["files"]

    def lookup(self, rel: str, stat: os.stat_result) -> dict[str, Any] | None:
        """The facts stored for `rel` when the file is unchanged (same size and times), else None."""
        entry = self._old.get(rel)
        if not isinstance(entry, dict) or entry.get("key") != file_key(stat):
            return None
        self._new[rel] = entry
        self.hits += 1
        return entry

    def store(self, rel: str, stat: os.stat_result, facts: dict[str, Any]) -> None:
        """Remember `facts` (JSON values) for `rel`, unless the file is too new to trust its times."""
        if stat.st_mtime_ns >= self.started_ns - int(RACY_S * 1e9):
            return
        self._new[rel] = {"key": file_key(stat), **facts}

    def save(self) -> None:
        """Write what this scan saw, if it differs from what was on disk. A failed write costs only the reuse."""
        if self._new == self._old:
            return
        try:
            write_json_atomic(self.path, {"format": SCAN_CACHE_FORMAT, "folder": str(self.folder), "files": self._new})
        except (OSError, UnicodeError) as err:  # a full disk; a file name that is not UTF-8
            log.warning("could not write the scan cache %s: %s (the next open reads every image again)", self.path, err)
