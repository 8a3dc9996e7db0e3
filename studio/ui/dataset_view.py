"""What the Dataset tab shows: one browser session's open dataset, its gallery pages of
thumbnails, the selected image, and the dataset report as tables.

Dataset images live in the datasets root, which the studio never serves. The gallery shows JPEG
thumbnails made once into the workspace (inside the outputs root), named by a hash of the image's
path, size and modification time, so an edited image gets a new one and a big dataset costs one
page of thumbnails at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gradio as gr
import pandas as pd

from studio.data.captions import normalize_caption
from studio.data.dataset import DatasetScan, ImageItem
from studio.data.editing import CaptionEditor
from studio.data.images import ImageSkip, load_image
from studio.data.lint import CLIP_MAX_TOKENS, CaptionFacts
from studio.data.report import combine_report, image_report, printable

PAGE_SIZE = 48
THUMB_SIZE = 256
PREVIEW_SIZE = 512
NO_CAPTION = "(no caption)"
DEFAULT_RESOLUTION = 512

LINT_COLUMNS = ["severity", "finding", "files"]
SKIPPED_COLUMNS = ["file", "reason"]
BUCKET_COLUMNS = ["bucket (w×h)", "images"]
SIZE_COLUMNS = ["size (w×h)", "images"]
CAPTION_COLUMNS = ["file", "CLIP tokens", "over 77", "caption"]
DUPLICATE_COLUMNS = ["group", "files"]
MISSING_COLUMNS = ["file"]
REPORT_TABS = {"lint": "Caption lint", "skipped": "Skipped files", "buckets": "Buckets and sizes",
               "lengths": "Caption lengths", "duplicates": "Duplicates", "missing": "Missing captions"}
"""The report's tabs (key → label); each is drawn only while it is the one shown, but for the bounded lint."""
TABLES = ("lint", "skipped", "buckets", "sizes", "lengths", "duplicates", "missing")
"""The report's tables, in the order of `report_tables`; "buckets" and "sizes" share a tab."""


@dataclass
class DatasetSession:
    """The dataset one browser tab has open (kept in a `gr.State`)."""

    name: str
    """Folder relative to the datasets root: what the Train tab's data.dir takes."""
    scan: DatasetScan
    editor: CaptionEditor
    query: str = ""
    problems_only: bool = False
    page: int = 0
    selected: str | None = None
    page_rels: list[str] = field(default_factory=list)
    page_labels: list[str] = field(default_factory=list)
    """The labels the gallery in the page shows (see `gallery_label`)."""
    report: dict[str, Any] | None = None
    table: str = "lint"
    """The report tab shown in the page (`REPORT_TABS`): the one table, beside the lint, an edit redraws."""
    facts: CaptionFacts | None = None
    """The captions' facts, updated per edited caption (see `refresh_report`)."""
    images: dict[str, Any] | None = None
    """The caption-free half of the report, for `images["resolution"]`."""

    @property
    def folder(self) -> Path:
        return self.scan.folder

    @functools.cached_property
    def items(self) -> dict[str, ImageItem]:
        return {item.rel: item for item in self.scan.items}

    def source(self, rel: str) -> str | None:
        """Where training would take the caption from after Save: the file it was read from, or the
        .txt sidecar Save writes for an edited one (None without a caption)."""
        text = self.editor.captions[rel]
        if not text:
            return None
        return self.items[rel].caption_source if text == self.editor.saved[rel] else "txt"

    def mark_saved(self, shadowed: dict[str, tuple[str, str]]) -> None:
        """After a save: every caption now comes from its sidecar (or, when emptied, from whatever
        lower-precedence file still gives one), as a fresh scan would find."""
        items = []
        for item in self.scan.items:
            text = self.editor.captions[item.rel]
            source, text = ("txt", text) if text else shadowed.get(item.rel, (None, None))
            if source is not None and source != "txt":
                self.editor.captions[item.rel] = self.editor.saved[item.rel] = text
            items.append(dataclasses.replace(item, caption=text or None, caption_source=source))
        self.scan.items = items
        self.__dict__.pop("items", None)
        if self.facts is not None:  # every source may have moved (to txt): one pass, no tokenising
            self.facts.update({}, sources={rel: self.source(rel) for rel in self.editor.captions})

    def refresh_report(self, trigger: str, resolution: int) -> dict[str, Any]:
        """The report with the editor's captions (unsaved edits included: what training would see after
        Save). Only what changed is redone: the image half for a new resolution, the captions' facts for
        a new trigger word, and otherwise just the captions edited since the last call."""
        trigger = (trigger or "").strip()
        if self.images is None or self.images["resolution"] != resolution:
            self.images = image_report(self.scan, resolution=resolution)
        captions = self.editor.captions
        if self.facts is None or self.facts.trigger != trigger:
            self.facts = CaptionFacts(captions, trigger, sources={rel: self.source(rel) for rel in captions})
        else:
            known = self.facts.texts
            changed = {rel: text for rel, text in captions.items() if text != known[rel]}
            if changed:
                self.facts.update(changed, sources={rel: self.source(rel) for rel in changed})
        self.report = combine_report(self.images, self.facts, self.scan.warnings)
        return self.report

    def flagged(self) -> set[str]:
        """Images with a problem: no caption, or named by a lint finding."""
        flagged = {rel for rel, text in self.editor.captions.items() if not text}
        for finding in (self.report or {}).get("lint", []):
            flagged.update(finding["files"])
        return flagged

    def visible_rels(self) -> list[str]:
        """Images that pass the caption search and the "only problems" filter, in folder order."""
        query = self.query.strip().lower()
        flagged = self.flagged() if self.problems_only else set()
        return [rel for rel, text in self.editor.captions.items()
                if (not query or query in text.lower() or query in rel.lower())
                and (not self.problems_only or rel in flagged)]

    def page_count(self, visible: list[str]) -> int:
        return max(1, math.ceil(len(visible) / PAGE_SIZE))


# --- thumbnails --------------------------------------------------------------------------------

def thumbnail(image: Path, thumbs_dir: Path, size: int = THUMB_SIZE) -> Path | None:
    """A JPEG of `image` at most `size` px on its long side, made once; None if it can't be read."""
    stat = image.stat()
    key = hashlib.sha1(f"{image.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{size}".encode()).hexdigest()
    path = thumbs_dir / f"{key[:24]}.jpg"
    if path.exists():
        return path
    try:
        picture = load_image(image)
    except ImageSkip:
        return None
    picture.thumbnail((size, size))
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=thumbs_dir, prefix=".thumb-", suffix=".jpg")
    try:
        with os.fdopen(fd, "wb") as out:
            picture.save(out, format="JPEG", quality=85)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def gallery_label(session: DatasetSession, rel: str) -> str:
    """A thumbnail's label: the file name, marked when the image has no caption. Not the caption: the
    caption is in the editor, and a label that never changes while captions are typed keeps an edit from
    resending the page's thumbnails."""
    return rel if session.editor.captions[rel] else f"{NO_CAPTION} · {rel}"


def _page(session: DatasetSession) -> tuple[list[str], str]:
    """The current page's images (the page number clamped to the pages there are) and its "page i of n"
    line."""
    visible = session.visible_rels()
    pages = session.page_count(visible)
    session.page = min(max(session.page, 0), pages - 1)
    start = session.page * PAGE_SIZE
    total = len(session.editor.captions)
    what = f"{len(visible)} of {total} images" if len(visible) != total else f"{total} images"
    line = (f"Page {session.page + 1} of {pages} · {what}" if visible
            else f"No image matches the filter ({total} images in the dataset)")
    return visible[start:start + PAGE_SIZE], line


def gallery_page(session: DatasetSession, thumbs_dir: Path) -> tuple[list[tuple[str, str]], str]:
    """The current page's (thumbnail, label) pairs and the "page i of n" line; remembers which
    image each gallery slot holds so a click can be mapped back to it."""
    rels, line = _page(session)
    items, shown = [], []
    for rel in rels:
        thumb = thumbnail(session.folder / rel, thumbs_dir)
        if thumb is not None:
            items.append((str(thumb), gallery_label(session, rel)))
            shown.append(rel)
    session.page_rels = shown
    session.page_labels = [label for _, label in items]
    return items, line


# --- the whole view ------------------------------------------------------------------------------

GalleryMode = Literal["send", "if-changed", "if-relabelled"]


def render_view(session: DatasetSession | None, thumbs_dir: Path, trigger: str, resolution: int, *,
                changed: bool = True, gallery: GalleryMode = "send") -> tuple[Any, ...]:
    """(state, status, gallery, page line, preview, caption, image info, report, *tables).

    What is sent stays the same size however big the dataset: at most one gallery page, the report's
    summary, the lint (a few findings, a few names each) and the report tab being shown; the other tables
    are left as they are (`gr.skip()`) and drawn when their tab is opened (`show_report_tab`). With
    `changed=False` (no caption changed) the gallery, report and tables are all left as they are in the
    page. The gallery page, whose thumbnails cost Gradio more to send than the rest of an edit together,
    is sent whole with `gallery="send"` (a dataset opened, a page or filter changed); with "if-changed"
    (a bulk edit) only if the page would show other images or labels, else just its page line; with
    "if-relabelled" (one caption edited, its image stays where it is even if a filter no longer matches
    it) only if a label on it changed (the image gained or lost its caption)."""
    if session is None:
        return (None, status_markdown(None), [], "", None, "", "", report_markdown(None), *report_tables(None))
    if changed or session.report is None:
        session.refresh_report(trigger, resolution)
    selection = selected_image(session, thumbs_dir)
    if not changed:
        return (session, status_markdown(session), gr.skip(), gr.skip(), *selection,
                *[gr.skip()] * (1 + len(TABLES)))  # the report and its tables
    items, page_line = gr.skip(), gr.skip()
    relabelled = [gallery_label(session, rel) for rel in session.page_rels] != session.page_labels
    if gallery == "send" or relabelled:
        items, page_line = gallery_page(session, thumbs_dir)
    elif gallery == "if-changed":
        rels, page_line = _page(session)
        if rels != session.page_rels:
            items, page_line = gallery_page(session, thumbs_dir)
    return (session, status_markdown(session), items, page_line, *selection, report_markdown(session.report),
            *report_tables(session, {"lint", session.table}))


def selected_image(session: DatasetSession, thumbs_dir: Path) -> tuple[str | None, str, str]:
    """(preview thumbnail, caption, info line) of the selected image."""
    rel = session.selected
    if rel is None:
        return None, "", "Click an image to edit its caption."
    preview = thumbnail(session.folder / rel, thumbs_dir, PREVIEW_SIZE)
    return (str(preview) if preview else None), session.editor.captions[rel], image_info(session, rel)


def report_tables(session: DatasetSession | None, tabs: set[str] | None = None) -> tuple[Any, ...]:
    """Lint, skipped files, buckets, sizes, caption lengths, duplicates, missing captions: those of the
    report tabs in `tabs` (all when None), `gr.skip()` for the others."""
    report = session.report if session else None
    draw = {"lint": lambda: lint_table(report), "skipped": lambda: skipped_table(report),
            "buckets": lambda: buckets_table(report), "sizes": lambda: sizes_table(report),
            "lengths": lambda: captions_table(session), "duplicates": lambda: duplicates_table(report),
            "missing": lambda: missing_table(report)}
    wanted = set(REPORT_TABS) if tabs is None else tabs
    if "buckets" in wanted:
        wanted = wanted | {"sizes"}
    return tuple(draw[name]() if name in wanted else gr.skip() for name in TABLES)


# --- text --------------------------------------------------------------------------------------

NO_FINDINGS = "No findings: every caption passes the lint."
NO_SKIPPED = "No file skipped: every image file can be used."
NO_DUPLICATES = "No duplicates: no two images look the same."
NO_MISSING = "Every image has a caption."
NO_CAPTIONS = "No image has a caption yet: write some, or auto-caption them."


def unsaved_count(session: DatasetSession, pending: str | None = None) -> int:
    """Captions that differ from the files, counting the caption being typed (`pending`, the caption
    box's text) for the selected image as if it were applied."""
    editor = session.editor
    unsaved = set(editor.unsaved())
    rel = session.selected
    pending = None if pending is None else normalize_caption(pending)  # as applying it would keep it
    if rel is not None and pending is not None and pending != editor.captions[rel]:
        unsaved.discard(rel)
        if pending != editor.saved[rel]:
            unsaved.add(rel)
    return len(unsaved)


def status_markdown(session: DatasetSession | None, pending: str | None = None) -> str:
    """The line above the gallery: the dataset, its counts and how many captions are unsaved (with
    the one being typed, `pending`)."""
    if session is None:
        return "No dataset open. Pick one and press **Open**, open the demo, or create one from your photos."
    unsaved = unsaved_count(session, pending)
    counts = session.report["counts"] if session.report else None
    parts = [f"**{html.escape(session.name)}**"]
    if counts:
        parts.append(f"{counts['usable']} usable images, {counts['captioned']} captioned, {counts['skipped']} skipped")
    parts.append(f"**{unsaved} unsaved caption changes**" if unsaved else "all changes saved")
    if session.editor.last_bulk_edit:
        parts.append(f"undo: {session.editor.last_bulk_edit}")
    return " · ".join(parts)


def image_info(session: DatasetSession, rel: str) -> str:
    item = session.items[rel]
    text = session.editor.captions[rel]
    tokens = session.facts.tokens.get(rel, 0) if session.facts else 0
    over = f" (over {CLIP_MAX_TOKENS}: the rest is cut off)" if tokens > CLIP_MAX_TOKENS else ""
    source = "unsaved edit" if text != session.editor.saved[rel] else (item.caption_source or "none")
    return (f"`{printable(rel)}` · {item.width}×{item.height} px · {tokens} CLIP tokens{over} · caption from {source}")


def report_markdown(report: dict[str, Any] | None) -> str:
    if report is None:
        return "Open a dataset to see its report: counts, skipped files, aspect buckets and the caption lint."
    counts = report["counts"]
    lines = [f"**{counts['found']} image files**: {counts['usable']} usable, {counts['skipped']} skipped; "
             f"{counts['captioned']} of {counts['usable']} captioned. Buckets at {report['resolution']} px."]
    if report["caption_tokens"]:
        t = report["caption_tokens"]
        lines.append(f"Caption length in CLIP tokens: min {t['min']}, mean {t['mean']}, max {t['max']} "
                     f"(limit {t['limit']}).")
    # printable: a name with a newline stays inside its list item
    items = [f"- {html.escape(printable(w))}" for w in report["warnings"]]
    items += [f"- **{html.escape(printable(p))}**" for p in report["problems"]]
    verdict = "Ready to train." if report["ok"] else "**Not ready to train**: fix the problems above."
    return "\n\n".join([" ".join(lines), "\n".join(items), verdict] if items else [" ".join(lines), verdict])


# --- tables ------------------------------------------------------------------------------------

def _names(files: list[str], limit: int = 12) -> str:
    more = f", … and {len(files) - limit} more" if len(files) > limit else ""
    return ", ".join(files[:limit]) + more


def lint_table(report: dict[str, Any] | None) -> pd.DataFrame:
    rows = [[f["severity"], f["message"], _names(f["files"])] for f in (report or {}).get("lint", [])]
    if report is not None and not rows:  # an open dataset with a clean lint says so
        rows = [["—", NO_FINDINGS, ""]]
    return pd.DataFrame(rows, columns=LINT_COLUMNS)


def skipped_table(report: dict[str, Any] | None) -> pd.DataFrame:
    rows = [[s["file"], s["reason"]] for s in (report or {}).get("skipped", [])]
    if report is not None and not rows:
        rows = [["—", NO_SKIPPED]]
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def buckets_table(report: dict[str, Any] | None) -> pd.DataFrame:
    rows = [[bucket.replace("x", "×"), n] for bucket, n in (report or {}).get("buckets", {}).items()]
    return pd.DataFrame(rows, columns=BUCKET_COLUMNS)


def sizes_table(report: dict[str, Any] | None) -> pd.DataFrame:
    sizes = (report or {}).get("resolutions") or {"counts": {}}
    return pd.DataFrame([[size.replace("x", "×"), n] for size, n in sizes["counts"].items()], columns=SIZE_COLUMNS)


def captions_table(session: DatasetSession | None) -> pd.DataFrame:
    """Every caption with its CLIP token count, longest first; those over 77 are flagged."""
    if session is None or session.facts is None:
        return pd.DataFrame([], columns=CAPTION_COLUMNS)
    captions, tokens = session.editor.captions, session.facts.tokens
    rows = [[rel, n, "yes" if n > CLIP_MAX_TOKENS else "", captions[rel]] for rel, n in tokens.items()]
    rows.sort(key=lambda row: (-row[1], session.facts.order[row[0]]))
    if not rows:
        rows = [["—", 0, "", NO_CAPTIONS]]
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS)


def duplicates_table(report: dict[str, Any] | None) -> pd.DataFrame:
    groups = (report or {}).get("duplicates", [])
    rows = [[i, " = ".join(group)] for i, group in enumerate(groups, start=1)]
    if report is not None and not rows:
        rows = [["—", NO_DUPLICATES]]
    return pd.DataFrame(rows, columns=DUPLICATE_COLUMNS)


def missing_table(report: dict[str, Any] | None) -> pd.DataFrame:
    rows = [[rel] for rel in (report or {}).get("missing_captions", [])]
    if report is not None and not rows:
        rows = [[NO_MISSING]]
    return pd.DataFrame(rows, columns=MISSING_COLUMNS)
