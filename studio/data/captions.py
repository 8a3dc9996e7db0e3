"""Caption files: find each image's caption, and write captions back in any of the formats.

Three sources are detected automatically. Per image, the first that has a non-empty caption wins:

1. `txt` — a sidecar with the image's stem next to it (`cat.png` → `cat.txt`), kohya style.
2. `metadata.jsonl` — Hugging Face imagefolder style, one JSON object per line:
   `{"file_name": "<path relative to the metadata file>", "text": "..."}` (`"caption"` is accepted
   for `"text"`). A metadata file may sit in the dataset folder or any sub-folder; the one nearest
   to the image wins.
3. `captions.json` (+ optional `ids.txt` beside it), in one of three forms:
   - a dict `{"<relative path, file name or stem>": "caption", ...}`;
   - a list of captions, aligned line by line with the ids in `ids.txt` (id = file name or stem);
   - a list of objects `{"id" | "file_name" | "image" | "file": ..., "caption" | "text": ...}`.
   Names are matched as a relative path first, then as a file name, then as a stem; a name that
   fits several images is reported and not used.

Captions are read as UTF-8 (a BOM is fine) and their whitespace is collapsed to single spaces.
An empty caption counts as no caption, so the next source is consulted. Problems in caption files
(a malformed JSON line, an entry naming no image, a list whose length does not match `ids.txt`)
never stop a scan: they come back as warnings, one readable line each.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from studio.core.atomic import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

SOURCE_TXT = "txt"
SOURCE_METADATA = "metadata.jsonl"
SOURCE_CAPTIONS_JSON = "captions.json"
CAPTION_SOURCES = (SOURCE_TXT, SOURCE_METADATA, SOURCE_CAPTIONS_JSON)
IDS_FILE = "ids.txt"

CAPTION_MAX_CHARS = 2000
"""Longest caption training uses: CLIP reads 77 tokens (about 300 characters), so anything past this
is an essay or a pasted file. Longer captions are flagged by the linter and cut to this for training,
so a 10 MB caption can cost neither minutes of tokenising nor megabytes in every LoRA's metadata."""

_ID_KEYS = ("id", "file_name", "image", "file")
_TEXT_KEYS = ("caption", "text")
_MAX_NAMES_IN_WARNING = 5


@dataclass(frozen=True)
class Caption:
    text: str
    source: str
    """Where the caption came from: "txt", "metadata.jsonl" or "captions.json"."""


def training_caption(text: str) -> str:
    """The caption as training uses it: at most `CAPTION_MAX_CHARS` characters."""
    return text[:CAPTION_MAX_CHARS]


@dataclass
class CaptionScan:
    captions: dict[Path, Caption] = field(default_factory=dict)
    """Caption per image path; images without a caption are absent."""
    warnings: list[str] = field(default_factory=list)
    """Problems found in caption files, one readable line each."""


def read_captions(folder: Path, images: list[Path]) -> dict[Path, Caption]:
    """Caption per image (absent when it has none); problems in caption files are logged."""
    scan = scan_captions(folder, images)
    for warning in scan.warnings:
        log.warning("%s", warning)
    return scan.captions


def scan_captions(folder: Path, images: list[Path]) -> CaptionScan:
    """Caption per image with the precedence of the module docstring, plus the warnings found.

    `images` must lie inside `folder`; they are the dictionary's keys, exactly as given.
    """
    folder = Path(folder)
    scan = CaptionScan()
    # index folders, nearest to the images first: deeper folders before their parents
    index_dirs = sorted(_folders_between(folder, images), key=lambda d: len(d.parts), reverse=True)
    metadata: list[dict[Path, str]] = []
    captions_json: list[dict[Path, str]] = []
    for index_dir in index_dirs:
        under = [image for image in images if image.is_relative_to(index_dir)]
        if (index_dir / SOURCE_METADATA).is_file():
            metadata.append(_read_metadata_jsonl(folder, index_dir, under, scan.warnings))
        if (index_dir / SOURCE_CAPTIONS_JSON).is_file():
            captions_json.append(_read_captions_json(folder, index_dir, under, scan.warnings))

    for image in images:
        text = _read_sidecar(folder, image, scan.warnings)
        if text:
            scan.captions[image] = Caption(text, SOURCE_TXT)
            continue
        for source, tables in ((SOURCE_METADATA, metadata), (SOURCE_CAPTIONS_JSON, captions_json)):
            text = next((table[image] for table in tables if table.get(image)), "")
            if text:
                scan.captions[image] = Caption(text, source)
                break
    return scan


def normalize_caption(text: str) -> str:
    """Caption text as training uses it: whitespace (newlines included) collapsed to one space."""
    return " ".join(text.split())


def sidecar_path(image: Path) -> Path:
    """The `.txt` caption file that belongs to `image`."""
    return Path(image).with_suffix(".txt")


def write_sidecars(captions: dict[Path, str]) -> list[Path]:
    """Write one `.txt` sidecar per image (atomically); returns the files written."""
    return [write_text_atomic(sidecar_path(image), text.strip() + "\n") for image, text in captions.items()]


def write_metadata_jsonl(folder: Path, captions: dict[Path, str]) -> Path:
    """Replace `folder/metadata.jsonl` with one `{"file_name", "text"}` line per image."""
    folder = Path(folder)
    rows = sorted((_relative_name(folder, image), text.strip()) for image, text in captions.items())
    lines = [json.dumps({"file_name": rel, "text": text}, ensure_ascii=False) for rel, text in rows]
    return write_text_atomic(folder / SOURCE_METADATA, "".join(line + "\n" for line in lines))


def save_captions(folder: Path, sidecars: dict[Path, str], metadata: dict[Path, str] | None = None) -> list[Path]:
    """Write `sidecars` as `.txt` files and, when given, `metadata` as `folder/metadata.jsonl` — all or nothing.

    Every new file is first written to a temp file beside its target; only when all of them are
    written are they renamed into place. If a rename fails part way, the files already replaced
    get their old contents back (or are removed if they were new), so a failure leaves every
    caption file as it was. Returns the files written.
    """
    folder = Path(folder)
    targets = {sidecar_path(image): text.strip() + "\n" for image, text in sidecars.items()}
    if metadata is not None:
        rows = sorted((_relative_name(folder, image), text.strip()) for image, text in metadata.items())
        targets[folder / SOURCE_METADATA] = "".join(
            json.dumps({"file_name": rel, "text": text}, ensure_ascii=False) + "\n" for rel, text in rows)
    staged: dict[Path, Path] = {}
    replaced: dict[Path, bytes | None] = {}
    try:
        for target, text in targets.items():
            staged[target] = _stage(target, text)
        for target, tmp in staged.items():
            previous = target.read_bytes() if target.exists() else None
            os.replace(tmp, target)
            replaced[target] = previous
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        for target, previous in replaced.items():
            if previous is None:
                target.unlink(missing_ok=True)
            else:
                target.write_bytes(previous)
        raise
    return list(targets)


def _stage(target: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)
    return Path(tmp)


def write_captions_json(folder: Path, captions: dict[Path, str]) -> Path:
    """Replace `folder/captions.json` with the dict form `{relative path: caption}`.

    The dict form names its images itself, so an `ids.txt` beside it is not consulted.
    """
    folder = Path(folder)
    table = {_relative_name(folder, image): text.strip() for image, text in captions.items()}
    return write_json_atomic(folder / SOURCE_CAPTIONS_JSON, dict(sorted(table.items())))


def _relative_name(folder: Path, image: Path) -> str:
    if not Path(image).is_relative_to(folder):
        raise ValueError(f"image {image} is not inside the dataset folder {folder}")
    return Path(image).relative_to(folder).as_posix()


def _folders_between(folder: Path, images: list[Path]) -> set[Path]:
    """`folder` and every folder between it and an image."""
    dirs = {folder}
    for image in images:
        for parent in image.parents:
            if parent == folder or not parent.is_relative_to(folder):
                break
            dirs.add(parent)
    return dirs


def _read_sidecar(folder: Path, image: Path, warnings: list[str]) -> str:
    path = sidecar_path(image)
    if not path.is_file():
        return ""
    shown = _relative_name(folder, path)
    try:
        text = normalize_caption(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        warnings.append(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start}); caption ignored")
        return ""
    if not text:
        warnings.append(f"{shown}: empty caption file; looking for a caption elsewhere")
    return text


def _read_text(folder: Path, path: Path, warnings: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.append(f"{_relative_name(folder, path)}: not UTF-8 text ({exc.reason}); file ignored")
        return None


def _clean_name(name: str) -> str:
    """A name from a caption file as a posix relative path (`./a.png`, `sub\\a.png` allowed)."""
    return PurePosixPath(name.strip().replace("\\", "/")).as_posix()


def _read_metadata_jsonl(folder: Path, index_dir: Path, images: list[Path], warnings: list[str]) -> dict[Path, str]:
    path = index_dir / SOURCE_METADATA
    shown = _relative_name(folder, path)
    raw = _read_text(folder, path, warnings)
    if raw is None:
        return {}
    by_rel = {image.relative_to(index_dir).as_posix(): image for image in images}
    table: dict[Path, str] = {}
    unmatched: list[str] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{shown} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            warnings.append(f"{where}: not valid JSON ({exc.msg}); line skipped")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            warnings.append(f'{where}: expected an object with a "file_name" string; line skipped')
            continue
        text = _first_string(row, ("text", "caption"))
        if text is None:
            warnings.append(f'{where}: no "text" (or "caption") string; line skipped')
            continue
        name = _clean_name(row["file_name"])
        image = by_rel.get(name)
        if image is None:
            if not (index_dir / name).exists():
                unmatched.append(name)
            continue
        _add_entry(table, image, normalize_caption(text), where, warnings)
    _warn_unmatched(shown, unmatched, warnings)
    return table


def _read_captions_json(folder: Path, index_dir: Path, images: list[Path], warnings: list[str]) -> dict[Path, str]:
    path = index_dir / SOURCE_CAPTIONS_JSON
    shown = _relative_name(folder, path)
    raw = _read_text(folder, path, warnings)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        warnings.append(f"{shown}: not valid JSON ({exc.msg} at line {exc.lineno}); file ignored")
        return {}

    entries: list[tuple[str, object, str]] = []  # (name, caption, where)
    if isinstance(data, dict):
        entries = [(str(key), value, f'{shown} key "{key}"') for key, value in data.items()]
    elif isinstance(data, list) and all(isinstance(item, str) for item in data):
        entries = _aligned_with_ids(folder, index_dir, data, warnings)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            where = f"{shown} item {index}"
            name = _first_string(item, _ID_KEYS) if isinstance(item, dict) else None
            if name is None:
                warnings.append(f"{where}: expected an object with one of {', '.join(_ID_KEYS)}; item skipped")
                continue
            entries.append((name, _first_string(item, _TEXT_KEYS), where))
    else:
        warnings.append(f"{shown}: expected a dict or a list, found {type(data).__name__}; file ignored")
        return {}

    lookup = _NameLookup(index_dir, images)
    table: dict[Path, str] = {}
    unmatched: list[str] = []
    for name, text, where in entries:
        if not isinstance(text, str):
            warnings.append(f'{where}: no caption string ("caption" or "text"); entry skipped')
            continue
        matches = lookup.find(_clean_name(name))
        if len(matches) > 1:
            shown_matches = ", ".join(m.relative_to(index_dir).as_posix() for m in matches[:_MAX_NAMES_IN_WARNING])
            warnings.append(f'{where}: "{name}" fits several images ({shown_matches}); entry skipped')
        elif matches:
            _add_entry(table, matches[0], normalize_caption(text), where, warnings)
        elif not lookup.on_disk(_clean_name(name)):
            unmatched.append(name)
    _warn_unmatched(shown, unmatched, warnings)
    return table


def _aligned_with_ids(
    folder: Path, index_dir: Path, captions: list[str], warnings: list[str]
) -> list[tuple[str, object, str]]:
    shown = _relative_name(folder, index_dir / SOURCE_CAPTIONS_JSON)
    ids_path = index_dir / IDS_FILE
    if not ids_path.is_file():
        warnings.append(
            f"{shown}: a list of captions needs {IDS_FILE} beside it (one image id per line, "
            "in the same order) to know which image each caption belongs to; file ignored"
        )
        return []
    raw = _read_text(folder, ids_path, warnings)
    if raw is None:
        return []
    ids = [line.strip() for line in raw.splitlines() if line.strip()]
    if len(ids) != len(captions):
        warnings.append(
            f"{shown} has {len(captions)} captions but {_relative_name(folder, ids_path)} has {len(ids)} ids; "
            "they cannot be paired safely, so the file is ignored"
        )
        return []
    pairs = enumerate(zip(ids, captions))
    return [(image_id, text, f"{shown} item {i} (id {image_id})") for i, (image_id, text) in pairs]


class _NameLookup:
    """Find images under one folder by relative path, then file name, then stem."""

    def __init__(self, index_dir: Path, images: list[Path]) -> None:
        self.index_dir = index_dir
        self.by_rel = {image.relative_to(index_dir).as_posix(): image for image in images}
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)
        for image in images:
            self.by_name[image.name].append(image)
            self.by_stem[image.stem].append(image)

    def find(self, name: str) -> list[Path]:
        if name in self.by_rel:
            return [self.by_rel[name]]
        return self.by_name.get(name) or self.by_stem.get(name) or []

    def on_disk(self, name: str) -> bool:
        """Whether a file (perhaps a skipped image) with this path or stem exists in the folder."""
        if (self.index_dir / name).exists():
            return True
        parent = (self.index_dir / name).parent
        stem = PurePosixPath(name).name
        return parent.is_dir() and any(p.stem == stem for p in parent.iterdir())


def _first_string(row: dict, keys: tuple[str, ...]) -> str | None:
    return next((row[key] for key in keys if isinstance(row.get(key), str)), None)


def _add_entry(table: dict[Path, str], image: Path, text: str, where: str, warnings: list[str]) -> None:
    if image in table:
        warnings.append(f"{where}: a second caption for {image.name}; the first one is kept")
        return
    table[image] = text


def _warn_unmatched(shown: str, names: list[str], warnings: list[str]) -> None:
    if not names:
        return
    listed = ", ".join(f'"{n}"' for n in names[:_MAX_NAMES_IN_WARNING])
    more = f" and {len(names) - _MAX_NAMES_IN_WARNING} more" if len(names) > _MAX_NAMES_IN_WARNING else ""
    entries = "1 entry names" if len(names) == 1 else f"{len(names)} entries name"
    warnings.append(f"{shown}: {entries} no file in the folder: {listed}{more}")
