"""Scan a dataset folder: decode and check every image, attach captions, explain every skip.

The scan walks the folder recursively in a fixed (sorted) order. Files with an image extension
are decoded in full; the ones that cannot be used are kept as `SkippedFile`s with the reason, so a
report can list them. What a decode found (size, dHash, SHA-1, or why it is skipped) is kept in the
scan cache (`studio.data.scan_cache`) under the file's size and times, so a folder read again decodes
only the files that changed. Other files (captions, notes, `.DS_Store`) are ignored, and so are hidden
folders such as `.git`. `builtin:demo` names the generated demo dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from studio.data.captions import scan_captions
from studio.data.demo import demo_dataset_dir
from studio.data.images import (
    IMAGE_EXTENSIONS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    ImageSkip,
    dhash,
    is_resource_fork,
    load_image,
)
from studio.data.scan_cache import ScanCache

BUILTIN_DEMO = "builtin:demo"
_REASONS_IN_ERROR = 5


class DatasetError(ValueError):
    """A dataset that training cannot use; the message says which folder and why."""


@dataclass(frozen=True)
class ImageItem:
    path: Path
    rel: str
    """Path relative to the dataset folder, with `/` separators."""
    caption: str | None
    caption_source: str | None
    """"txt", "metadata.jsonl" or "captions.json"; None when the image has no caption."""
    width: int
    height: int
    """Size after EXIF orientation, as training sees the image."""
    fingerprint: str
    """Perceptual hash (dHash) of the decoded pixels: equal for visual duplicates."""
    file_hash: str
    """SHA-1 of the file's bytes."""


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    rel: str
    reason: str


@dataclass
class DatasetScan:
    folder: Path
    items: list[ImageItem] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        """Image files found: usable plus skipped."""
        return len(self.items) + len(self.skipped)


def resolve_data_dir(value: str | Path) -> Path:
    """The dataset folder `value` names: `builtin:demo` (generated on first use) or a folder path."""
    if str(value) == BUILTIN_DEMO:
        return demo_dataset_dir()
    path = Path(value).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset path {path} is a file, not a folder of images")
    return path


def find_image_files(folder: Path) -> list[Path]:
    """Files under `folder` that are (or claim to be) images, sorted by relative path.

    Hidden folders are not entered. Known image formats the trainer does not take (`.heic`,
    `.tiff`, …) are included so that the scan can say why they are skipped.
    """
    suffixes = IMAGE_EXTENSIONS + UNSUPPORTED_IMAGE_EXTENSIONS
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / name for name in files if Path(name).suffix.lower() in suffixes]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def scan_dataset(
    folder: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    require_usable: bool = True,
) -> DatasetScan:
    """Decode and check every image under `folder` (those the scan cache vouches for are not read again)
    and attach its caption.

    `progress(done, total)` is called after each file. Raises `DatasetError` when the folder is
    missing or holds no image files, and, with `require_usable` (the default), when none of them
    can be used. `require_usable=False` returns such a scan so that a report can list every skip.
    """
    folder = resolve_data_dir(folder)
    files = find_image_files(folder)
    if not files:
        raise DatasetError(
            f"no images found in {folder}: looked for {', '.join(IMAGE_EXTENSIONS)} files, sub-folders included"
        )
    scan = DatasetScan(folder=folder)
    cache = ScanCache(folder)
    usable: list[tuple[Path, str, int, int, str, str]] = []
    for done, path in enumerate(files, start=1):
        rel = path.relative_to(folder).as_posix()
        try:
            checked = _check_file(path, folder, rel, cache)
        except ImageSkip as skip:
            scan.skipped.append(SkippedFile(path=path, rel=rel, reason=skip.reason))
        else:
            usable.append((path, rel, *checked))
        if progress is not None:
            progress(done, len(files))
    cache.save()

    captions = scan_captions(folder, [path for path, *_ in usable])
    scan.warnings += captions.warnings
    for path, rel, width, height, fingerprint, file_hash in usable:
        caption = captions.captions.get(path)
        scan.items.append(ImageItem(
            path=path,
            rel=rel,
            caption=caption.text if caption else None,
            caption_source=caption.source if caption else None,
            width=width,
            height=height,
            fingerprint=fingerprint,
            file_hash=file_hash,
        ))
    if require_usable and not scan.items:
        raise DatasetError(_nothing_usable_message(scan))
    return scan


def dataset_fingerprint(scan: DatasetScan) -> str:
    """SHA-256 over the usable images' relative paths, file hashes and captions (order-free)."""
    rows = sorted([item.rel, item.file_hash, item.caption] for item in scan.items)
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


def _check_file(path: Path, folder: Path, rel: str, cache: ScanCache) -> tuple[int, int, str, str]:
    """(width, height, dHash, SHA-1) of a usable image; raises `ImageSkip` otherwise. A link is followed
    only when it stays inside the dataset folder: one that points elsewhere is skipped unread. The link
    and format checks cost nothing and run every time; the decode's verdict comes from `cache` when the
    file is unchanged."""
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise ImageSkip(f"a link to a missing file ({os.readlink(path)})")
        if not target.is_relative_to(folder.resolve()):
            raise ImageSkip("a link to a file outside the dataset folder: skipped, not read "
                            "(copy the image into the folder to use it)")
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_IMAGE_EXTENSIONS and not is_resource_fork(path):
        raise ImageSkip(f"unsupported image format {suffix} (convert it to PNG or JPEG)")
    try:
        stat = path.stat()
    except OSError:
        stat = None  # gone or unreadable since the walk: load_image says which
    known = cache.lookup(rel, stat) if stat else None
    if known is not None:
        if "skip" in known:
            raise ImageSkip(known["skip"])
        return known["width"], known["height"], known["dhash"], known["sha1"]
    try:
        image = load_image(path)
    except ImageSkip as skip:
        if stat:
            cache.store(rel, stat, {"skip": skip.reason})
        raise
    facts = {"width": image.width, "height": image.height, "dhash": dhash(image), "sha1": _sha1(path)}
    if stat:
        cache.store(rel, stat, facts)
    return facts["width"], facts["height"], facts["dhash"], facts["sha1"]


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _nothing_usable_message(scan: DatasetScan) -> str:
    shown = "; ".join(f"{s.rel} ({s.reason})" for s in scan.skipped[:_REASONS_IN_ERROR])
    more = len(scan.skipped) - _REASONS_IN_ERROR
    tail = f"; and {more} more" if more > 0 else ""
    return f"none of the {len(scan.skipped)} image files in {scan.folder} can be used: {shown}{tail}"
