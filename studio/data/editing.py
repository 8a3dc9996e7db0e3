"""The caption editor behind the Dataset tab: one caption per image, single edits, bulk edits that
can be undone, and saving to `.txt` sidecars (kohya) plus `metadata.jsonl` (Hugging Face).

Pure Python, no UI: the tab keeps one editor per browser session. Captions are keyed by the
image's path relative to the dataset folder and held with their whitespace collapsed, as training
reads them; "" means no caption. A bulk edit (add the trigger word, prefix, suffix, find and
replace, remove a tag, lower-case, fill from auto-captioning or an imported `captions.json`)
is recorded so `undo()` can revert it; single edits are not. Nothing touches disk before `save()`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from studio.data.captions import (
    IDS_FILE,
    SOURCE_CAPTIONS_JSON,
    normalize_caption,
    save_captions,
    scan_captions,
    sidecar_path,
)
from studio.data.dataset import DatasetScan
from studio.data.lint import has_trigger_word

HISTORY_LIMIT = 50
"""Bulk edits kept for undo; older ones are forgotten."""


class EditError(ValueError):
    """An edit that cannot be done as asked; the message says what to change."""


@dataclass(frozen=True)
class BulkEdit:
    label: str
    before: dict[str, str]
    after: dict[str, str]
    """Only the captions the edit changed, before and after."""


@dataclass(frozen=True)
class Undone:
    label: str
    restored: int
    kept: int
    """Captions edited by hand since the bulk edit: left as they are now."""


@dataclass(frozen=True)
class CaptionImport:
    changed: int
    matched: int
    """Images the file had a caption for (changed or already equal)."""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SaveResult:
    written: list[Path]
    shadowed: dict[str, tuple[str, str]]
    """Images saved without a caption that still get one from a lower-precedence file:
    relative path → (source, caption). Training will use that caption."""


class CaptionEditor:
    """Captions of one dataset folder, edited in memory until `save()`."""

    def __init__(self, folder: Path, captions: dict[str, str | None]):
        self.folder = Path(folder)
        self.captions: dict[str, str] = {rel: normalize_caption(text or "") for rel, text in captions.items()}
        self.saved: dict[str, str] = dict(self.captions)
        self.history: list[BulkEdit] = []

    @classmethod
    def from_scan(cls, scan: DatasetScan) -> CaptionEditor:
        """An editor over the usable images of `scan`, holding the captions found on disk."""
        return cls(scan.folder, {item.rel: item.caption for item in scan.items})

    # --- state ----------------------------------------------------------------------------------
    def caption(self, rel: str) -> str:
        self._check_image(rel)
        return self.captions[rel]

    def unsaved(self) -> list[str]:
        """Images whose caption differs from what was last opened or saved."""
        return [rel for rel, text in self.captions.items() if text != self.saved[rel]]

    @property
    def dirty(self) -> bool:
        return any(text != self.saved[rel] for rel, text in self.captions.items())

    @property
    def last_bulk_edit(self) -> str | None:
        """Label of the bulk edit `undo()` would revert, None when there is none."""
        return self.history[-1].label if self.history else None

    # --- one caption ----------------------------------------------------------------------------
    def set_caption(self, rel: str, text: str) -> bool:
        """Replace one image's caption; returns whether it changed."""
        self._check_image(rel)
        new = normalize_caption(text or "")
        changed = new != self.captions[rel]
        self.captions[rel] = new
        return changed

    # --- bulk edits: each returns how many captions it changed ----------------------------------
    def add_trigger(self, word: str) -> int:
        """Put `word` at the front ("word, caption") of every caption that lacks it as a whole word;
        an empty caption becomes the word alone."""
        word = _required(word, "the trigger word")
        return self._bulk(f'add trigger word "{word}"',
                          lambda _, text: text if has_trigger_word(text, word) else _join(word, ", ", text))

    def prefix(self, text: str, separator: str = ", ") -> int:
        """Start every caption with `text` (captions that already start with it are left alone)."""
        text = _required(text, "the prefix")
        return self._bulk(f'prefix "{text}"',
                          lambda _, caption: caption if caption.startswith(text) else _join(text, separator, caption))

    def suffix(self, text: str, separator: str = ", ") -> int:
        """End every caption with `text` (captions that already end with it are left alone)."""
        text = _required(text, "the suffix")
        return self._bulk(f'suffix "{text}"',
                          lambda _, caption: caption if caption.endswith(text) else _join(caption, separator, text))

    def replace(self, find: str, replacement: str, *, ignore_case: bool = False) -> int:
        """Replace plain text `find` with `replacement` everywhere (no patterns)."""
        if not find:
            raise EditError("type the text to find first")
        pattern = re.compile(re.escape(find), re.IGNORECASE if ignore_case else 0)
        return self._bulk(f'replace "{find}" with "{replacement}"',
                          lambda _, caption: pattern.sub(lambda _: replacement, caption))

    def remove_tag(self, tag: str) -> int:
        """Drop the comma-separated tag `tag` (whitespace-normalised, any case) from every caption."""
        wanted = normalize_caption(_required(tag, "the tag to remove")).lower()

        def without(_: str, caption: str) -> str:
            tags = [normalize_caption(part) for part in caption.split(",")]
            kept = [t for t in tags if t.lower() != wanted]
            return caption if len(kept) == len(tags) else ", ".join(t for t in kept if t)

        return self._bulk(f'remove tag "{wanted}"', without)

    def lowercase(self, keep: str = "") -> int:
        """Lower-case every caption except whole-word occurrences of `keep` (the trigger word)."""
        keep = keep.strip()
        if not keep:
            return self._bulk("lower-case", lambda _, caption: caption.lower())
        # split on the trigger word, keeping it: odd pieces are the trigger, left as written
        splitter = re.compile(rf"((?<!\w){re.escape(keep)}(?!\w))", re.IGNORECASE)

        def lower(_: str, caption: str) -> str:
            pieces = splitter.split(caption)
            return "".join(piece if i % 2 else piece.lower() for i, piece in enumerate(pieces))

        return self._bulk("lower-case", lower)

    def fill(self, captions: dict[str, str], label: str) -> int:
        """Set many captions at once as one bulk edit (auto-captioning, an import)."""
        for rel in captions:
            self._check_image(rel)
        new = {rel: normalize_caption(text or "") for rel, text in captions.items()}
        return self._bulk(label, lambda rel, caption: new.get(rel, caption))

    def import_captions_json(self, json_path: Path, ids_path: Path | None = None) -> CaptionImport:
        """Take the captions of a `captions.json` (a dict, a list of objects, or a list of captions
        aligned with the lines of `ids_path`) as one bulk edit. Names are matched to this dataset's
        images exactly as the dataset scan matches them (relative path, file name, then stem)."""
        json_path = Path(json_path)
        if not json_path.is_file():
            raise EditError(f"{json_path} is not a file")
        # the scan's own reader, run on a scratch copy: the file is matched against our image
        # names without being put into the dataset folder
        with tempfile.TemporaryDirectory(prefix="captions-import-") as scratch:
            root = Path(scratch)
            shutil.copyfile(json_path, root / SOURCE_CAPTIONS_JSON)
            if ids_path is not None:
                shutil.copyfile(ids_path, root / IDS_FILE)
            scan = scan_captions(root, [root / rel for rel in self.captions])
            found = {path.relative_to(root).as_posix(): caption.text for path, caption in scan.captions.items()}
        warnings = [w.replace(SOURCE_CAPTIONS_JSON, json_path.name, 1) for w in scan.warnings]
        changed = self.fill(found, f"import {json_path.name}") if found else 0
        return CaptionImport(changed=changed, matched=len(found), warnings=warnings)

    def undo(self) -> Undone:
        """Revert the last bulk edit. Captions edited by hand since then keep the hand edit."""
        if not self.history:
            raise EditError("there is no bulk edit to undo")
        edit = self.history.pop()
        restored = kept = 0
        for rel, before in edit.before.items():
            if self.captions[rel] == edit.after[rel]:
                self.captions[rel] = before
                restored += 1
            else:
                kept += 1
        return Undone(label=edit.label, restored=restored, kept=kept)

    # --- disk -----------------------------------------------------------------------------------
    def save(self) -> SaveResult:
        """Write every caption to its `.txt` sidecar and all of them to `metadata.jsonl`, all or
        nothing. An image without a caption gets no new sidecar; an existing one is emptied."""
        images = {self.folder / rel: text for rel, text in self.captions.items()}
        sidecars = {path: text for path, text in images.items() if text or sidecar_path(path).exists()}
        written = save_captions(self.folder, sidecars, metadata=images)
        self.saved = dict(self.captions)
        return SaveResult(written=written, shadowed=self._shadowed())

    def _shadowed(self) -> dict[str, tuple[str, str]]:
        """Empty captions that a lower-precedence caption file (captions.json) still fills."""
        if all(self.captions.values()):
            return {}
        paths = [self.folder / rel for rel in self.captions]
        found = scan_captions(self.folder, paths).captions
        return {rel: (found[path].source, found[path].text)
                for rel, path in zip(self.captions, paths) if not self.captions[rel] and path in found}

    # --- internals ------------------------------------------------------------------------------
    def _check_image(self, rel: str) -> None:
        if rel not in self.captions:
            raise EditError(f"{rel!r} is not a usable image of the dataset {self.folder}")

    def _bulk(self, label: str, edit: Callable[[str, str], str]) -> int:
        """Apply `edit(rel, caption) -> caption` to every caption and record what changed."""
        before, after = {}, {}
        for rel, text in self.captions.items():
            new = normalize_caption(edit(rel, text))
            if new != text:
                before[rel], after[rel] = text, new
        if after:
            self.captions.update(after)
            self.history = [*self.history, BulkEdit(label, before, after)][-HISTORY_LIMIT:]
        return len(after)


def _required(text: str, what: str) -> str:
    value = normalize_caption(text or "")
    if not value:
        raise EditError(f"type {what} first")
    return value


def _join(first: str, separator: str, second: str) -> str:
    return separator.join(part for part in (first, second) if part)
