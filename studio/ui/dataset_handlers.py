"""The Dataset tab's event handlers: open, create, browse, edit, bulk-edit, save, auto-caption,
and send to Train. Thin calls into `studio.data` (editing, upload, captioners, report).

Captions are edited in memory per browser tab (a `CaptionEditor` inside the `DatasetSession` kept
in a `gr.State`) and written only by Save. Every editing handler first applies what is in the
caption box to the selected image, so a typed caption is never lost to a click elsewhere. The
built-in demo is edited as a copy in the datasets root (`datasets/demo`), never in the cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from studio.data.captioners import (
    CAPTIONERS,
    DEFAULT_MODELS,
    TINY_RANDOM,
    CaptionerError,
    CaptionOptions,
    caption_dataset,
)
from studio.core.lock import ACCELERATOR, AcceleratorBusy
from studio.data.dataset import BUILTIN_DEMO, DatasetError, scan_dataset
from studio.data.demo import DEMO_CLASS, DEMO_TRIGGER
from studio.data.editing import CaptionEditor, EditError
from studio.data.upload import UploadError, add_files, copy_demo_dataset, create_dataset
from studio.engine.environment import human_bytes
from studio.ui import dataset_view as view
from studio.ui import live
from studio.ui.dataset_view import DatasetSession
from studio.ui.form import dataset_choices
from studio.ui.notices import Refusal
from studio.ui.context import TRAIN_TAB
from studio.ui.security import PathNotAllowed

if TYPE_CHECKING:
    from studio.ui.context import Studio

DEMO_NAME = "demo"
SEPARATORS = {"comma": ", ", "space": " "}


def _need(session: DatasetSession | None) -> DatasetSession:
    if session is None:
        raise gr.Error("Open a dataset first: pick one and press Open, or press Open the demo.",
                       title="No dataset open")
    return session


def _files(files: Any) -> list[Path]:
    """Uploaded files as paths (gr.File gives one path or a list, depending on file_count)."""
    if not files:
        return []
    return [Path(f) for f in (files if isinstance(files, list) else [files])]


class DatasetHandlers:
    """The Dataset tab's event handlers. Editing handlers take (session, caption box, trigger word,
    resolution, …) and return (notice, *the view), in the order of `dataset_view.render_view`."""

    def __init__(self, studio: Studio):
        self.studio = studio

    @property
    def thumbs(self) -> Path:
        return self.studio.roots.workspace / "thumbs"

    def _view(self, session: DatasetSession | None, notice: str | None, trigger: str = "", resolution: Any = None,
              *, changed: bool = True, gallery: view.GalleryMode = "send") -> tuple[Any, ...]:
        """(notice, *the view): see `dataset_view.render_view`."""
        return (live.notice(notice) if notice else gr.skip(),
                *view.render_view(session, self.thumbs, trigger or "", _resolution(resolution), changed=changed,
                                  gallery=gallery))

    def _refuse_if_unsaved(self, session: DatasetSession | None, then: str) -> None:
        if session is not None and session.editor.dirty:
            raise gr.Error(f"{session.name} has {len(session.editor.unsaved())} unsaved caption changes. Save them, "
                           f"or press Revert unsaved changes, then {then}.", title="Save first")

    def _apply_pending(self, session: DatasetSession, pending: str | None) -> bool:
        """Put the caption box's text into the selected image's caption; returns whether it changed."""
        if session.selected is None or pending is None:
            return False
        return session.editor.set_caption(session.selected, pending)

    # --- opening and creating ---------------------------------------------------------------------
    def list_datasets(self, current: str | None) -> Any:
        names = self.studio.roots.dataset_folders()
        return gr.Dropdown(choices=names, value=current if current in names else None)

    def _open(self, name: str, progress: Any, table: str = "lint") -> DatasetSession:
        try:
            folder = Path(self.studio.roots.dataset(name))
            if folder == self.studio.roots.datasets:
                raise PathNotAllowed(f"{name!r} is the datasets folder itself: pick a dataset folder inside it")
            scan = scan_dataset(folder, require_usable=False,
                                progress=lambda done, total: progress((done, total), desc="Reading images",
                                                                      unit="images"))
        except (PathNotAllowed, DatasetError) as err:
            raise gr.Error(str(err), title="Cannot open the dataset") from None
        rel = folder.relative_to(self.studio.roots.datasets).as_posix()
        return DatasetSession(name=rel, scan=scan, editor=CaptionEditor.from_scan(scan),
                              table=table if table in view.REPORT_TABS else "lint")

    def open_dataset(self, session: DatasetSession | None, name: str, resolution: Any, table: str = "lint",
                     progress: Any = gr.Progress()) -> tuple[Any, ...]:
        """Scan a folder of the datasets root; the trigger word and class are prefilled for the demo.
        `table` is the report tab the page shows (the one table drawn with the lint)."""
        name = (name or "").strip()
        if not name:
            raise gr.Error("Pick a dataset folder first (or press Open the demo).", title="No dataset picked")
        self._refuse_if_unsaved(session, "open another dataset")
        if name == BUILTIN_DEMO:  # the generated original is never edited: open the copy
            name = copy_demo_dataset(self.studio.roots.datasets, DEMO_NAME).name
        opened = self._open(name, progress, table)
        trigger, class_phrase = (DEMO_TRIGGER, DEMO_CLASS) if opened.name == DEMO_NAME else ("", "")
        scan = opened.scan
        notice = f"Opened **{opened.name}**: {len(scan.items)} usable images, {len(scan.skipped)} skipped."
        return (*self._view(opened, notice, trigger, resolution), trigger, class_phrase)

    def open_demo(self, session: DatasetSession | None, resolution: Any, table: str = "lint",
                  progress: Any = gr.Progress()) -> tuple[Any, ...]:
        """Copy the built-in demo to datasets/demo (once) and open that copy."""
        self._refuse_if_unsaved(session, "open the demo")
        copy_demo_dataset(self.studio.roots.datasets, DEMO_NAME)
        return (self.list_datasets(DEMO_NAME), *self.open_dataset(session, DEMO_NAME, resolution, table, progress))

    def create_dataset(self, session: DatasetSession | None, name: str, files: Any, resolution: Any,
                       table: str = "lint", progress: Any = gr.Progress()) -> tuple[Any, ...]:
        """A new folder in the datasets root from uploaded images, caption files and zips; then open it."""
        uploads = _files(files)
        if not uploads:
            raise gr.Error("Add images or a zip to upload first.", title="Nothing to upload")
        self._refuse_if_unsaved(session, "create a dataset")
        try:
            folder = create_dataset(self.studio.roots.datasets, name)
            try:
                result = add_files(folder, uploads)
            except UploadError:
                shutil.rmtree(folder)  # made by this call a moment ago: it holds only what the upload wrote
                raise
            if not result.images:
                shutil.rmtree(folder)
                raise UploadError(f"no images among the uploads, so no dataset was made: {result.summary()}")
        except UploadError as err:
            raise gr.Error(str(err), title="Cannot create the dataset") from None
        opened = self.open_dataset(None, folder.name, resolution, table, progress)
        notice = f"Created **{folder.name}**: {result.summary()}."
        return (self.list_datasets(folder.name), live.notice(notice), *opened[1:])

    def add_to_dataset(self, session: DatasetSession | None, files: Any, trigger: str, resolution: Any,
                       progress: Any = gr.Progress()) -> tuple[Any, ...]:
        """Add uploads to the open dataset (never replacing a file), then read it again."""
        session = _need(session)
        uploads = _files(files)
        if not uploads:
            raise gr.Error("Add images or a zip to upload first.", title="Nothing to upload")
        self._refuse_if_unsaved(session, "add files")
        try:
            result = add_files(session.folder, uploads)
        except UploadError as err:
            raise gr.Error(str(err), title="Cannot add the files") from None
        reopened = self._open(session.name, progress, session.table)
        return self._view(reopened, f"**{session.name}**: {result.summary()}.", trigger, resolution)

    # --- browsing ---------------------------------------------------------------------------------
    def show_report_tab(self, session: DatasetSession | None, tab: str) -> tuple[Any, ...]:
        """A report tab was opened: remember it (edits redraw it from now on) and draw its tables.
        Returns (the tab, *the report's tables), the tables of other tabs left as they are."""
        if tab not in view.REPORT_TABS:
            raise gr.Error(f"no report tab {tab!r}: one of {', '.join(view.REPORT_TABS)}", title="No such tab")
        if session is None:
            return (tab, *view.report_tables(None, {tab}))
        session.table = tab
        return (tab, *view.report_tables(session, {tab}))

    def filter_gallery(self, session: DatasetSession | None, query: str, problems_only: bool) -> tuple[Any, ...]:
        if session is None:
            return None, [], ""
        session.query, session.problems_only, session.page = query or "", bool(problems_only), 0
        return (session, *view.gallery_page(session, self.thumbs))

    def previous_page(self, session: DatasetSession | None) -> tuple[Any, ...]:
        return self._turn(session, -1)

    def next_page(self, session: DatasetSession | None) -> tuple[Any, ...]:
        return self._turn(session, +1)

    def _turn(self, session: DatasetSession | None, step: int) -> tuple[Any, ...]:
        if session is None:
            return None, [], ""
        session.page += step
        return (session, *view.gallery_page(session, self.thumbs))

    def select_image(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                     evt: gr.SelectData) -> tuple[Any, ...]:
        """A click on a thumbnail selects that image for editing."""
        session = _need(session)
        if not 0 <= evt.index < len(session.page_rels):
            raise gr.Error("That image is no longer on this page; refresh the gallery.", title="No such image")
        return self.show_image(session, pending, trigger, resolution, session.page_rels[evt.index])

    def show_image(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                   rel: str) -> tuple[Any, ...]:
        """Select image `rel` (relative path) for editing, keeping the caption typed for the last one."""
        session = _need(session)
        if rel not in session.editor.captions:
            raise gr.Error(f"{rel!r} is not a usable image of {session.name}", title="No such image")
        changed = self._apply_pending(session, pending)
        session.selected = rel
        return self._view(session, None, trigger, resolution, changed=changed, gallery="if-relabelled")

    # --- editing ----------------------------------------------------------------------------------
    def typing_status(self, session: DatasetSession | None, pending: str) -> str:
        """The status line while a caption is typed: the unsaved count with the caption being typed
        (nothing is applied: Save and every other action apply the caption box's text first)."""
        return view.status_markdown(session, pending)

    def apply_caption(self, session: DatasetSession | None, pending: str, trigger: str,
                      resolution: Any) -> tuple[Any, ...]:
        if session is None or session.selected is None:
            return self._view(session, "⚠️ Click an image first, then edit its caption.", trigger, resolution,
                              changed=False)
        changed = self._apply_pending(session, pending)
        notice = f"Caption of `{session.selected}` updated (not saved yet)." if changed else None
        return self._view(session, notice, trigger, resolution, changed=changed, gallery="if-relabelled")

    def _bulk(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
              edit: Any, what: str) -> tuple[Any, ...]:
        session = _need(session)
        self._apply_pending(session, pending)
        try:
            changed = edit(session.editor)
        except EditError as err:
            raise gr.Error(str(err), title="Bulk edit") from None
        notice = (f"{what}: {changed} captions changed (not saved yet; Undo reverts it)." if changed
                  else f"{what}: no caption needed a change.")
        return self._view(session, notice, trigger, resolution, gallery="if-changed")

    def add_trigger(self, session: DatasetSession | None, pending: str, trigger: str,
                    resolution: Any) -> tuple[Any, ...]:
        """Put the trigger word at the front of every caption that lacks it."""
        return self._bulk(session, pending, trigger, resolution, lambda e: e.add_trigger(_text(trigger)),
                          f'Add trigger word "{_text(trigger)}"')

    def add_prefix(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                   text: str, separator: str) -> tuple[Any, ...]:
        return self._bulk(session, pending, trigger, resolution,
                          lambda e: e.prefix(_text(text), SEPARATORS.get(separator, ", ")), f'Prefix "{_text(text)}"')

    def add_suffix(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                   text: str, separator: str) -> tuple[Any, ...]:
        return self._bulk(session, pending, trigger, resolution,
                          lambda e: e.suffix(_text(text), SEPARATORS.get(separator, ", ")), f'Suffix "{_text(text)}"')

    def replace_text(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                     find: str, replacement: str, ignore_case: bool) -> tuple[Any, ...]:
        return self._bulk(session, pending, trigger, resolution,
                          lambda e: e.replace(find or "", replacement or "", ignore_case=bool(ignore_case)),
                          f'Replace "{find or ""}"')

    def remove_tag(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                   tag: str) -> tuple[Any, ...]:
        return self._bulk(session, pending, trigger, resolution, lambda e: e.remove_tag(_text(tag)),
                          f'Remove tag "{_text(tag)}"')

    def lowercase(self, session: DatasetSession | None, pending: str, trigger: str,
                  resolution: Any) -> tuple[Any, ...]:
        return self._bulk(session, pending, trigger, resolution, lambda e: e.lowercase(keep=_text(trigger)),
                          "Lower-case")

    def undo(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any) -> tuple[Any, ...]:
        """Revert the last bulk edit (captions edited by hand since then keep the hand edit)."""
        session = _need(session)
        self._apply_pending(session, pending)
        try:
            undone = session.editor.undo()
        except EditError as err:
            return self._view(session, f"⚠️ Nothing to undo: {err}.", trigger, resolution)
        kept = f"; {undone.kept} edited by hand since were kept" if undone.kept else ""
        return self._view(session, f"Undid {undone.label}: {undone.restored} captions restored{kept}.", trigger,
                          resolution, gallery="if-changed")

    def revert(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any) -> tuple[Any, ...]:
        """Drop every unsaved change (itself undoable)."""
        session = _need(session)
        self._apply_pending(session, pending)
        editor = session.editor
        changed = editor.fill({rel: editor.saved[rel] for rel in editor.unsaved()}, "revert unsaved changes")
        return self._view(session, f"Reverted {changed} unsaved caption changes (Undo brings them back).", trigger,
                          resolution, gallery="if-changed")

    def save(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any) -> tuple[Any, ...]:
        """Write every caption to its .txt sidecar and metadata.jsonl (all or nothing)."""
        session = _need(session)
        self._apply_pending(session, pending)
        unsaved = len(session.editor.unsaved())
        try:
            result = session.editor.save()
        except OSError as err:
            raise gr.Error(f"could not write the captions of {session.name}: {err}; no caption file was changed",
                           title="Save failed") from None
        session.mark_saved(result.shadowed)
        notice = (f"Saved **{session.name}**: {unsaved} changed captions, {len(result.written) - 1} .txt files and "
                  "metadata.jsonl written.")
        if result.shadowed:
            names = ", ".join(list(result.shadowed)[:5])
            message = (f"{len(result.shadowed)} images you left without a caption still get one from captions.json "
                       f"({names}): training will use it. Give them a caption, or remove their entries there.")
            notice += f" ⚠️ {message}"
        return self._view(session, notice, trigger, resolution)

    def import_captions(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                        files: Any) -> tuple[Any, ...]:
        """Take the captions of an uploaded captions.json (+ ids.txt for a list) as one bulk edit."""
        session = _need(session)
        uploads = _files(files)
        jsons = [f for f in uploads if f.suffix.lower() == ".json"]
        ids = [f for f in uploads if f.suffix.lower() == ".txt"]
        if len(jsons) != 1 or len(ids) > 1:
            raise gr.Error("Upload one captions.json, and with a list of captions also its ids.txt "
                           "(one image name per line, in the same order).", title="Import captions.json")
        self._apply_pending(session, pending)
        try:
            result = session.editor.import_captions_json(jsons[0], ids[0] if ids else None)
        except EditError as err:
            raise gr.Error(str(err), title="Import captions.json") from None
        notice = (f"Imported {jsons[0].name}: captions for {result.matched} of {len(session.editor.captions)} images, "
                  f"{result.changed} changed (not saved yet; Undo reverts it).")
        if result.warnings:
            notice += f" ⚠️ {len(result.warnings)} problems: {' · '.join(result.warnings)}"
        return self._view(session, notice, trigger, resolution)

    def refresh_report(self, session: DatasetSession | None, pending: str, trigger: str,
                       resolution: Any) -> tuple[Any, ...]:
        """Recompute the report (for a new trigger word or training resolution)."""
        if session is None:
            return self._view(None, "No dataset open.")
        self._apply_pending(session, pending)
        return self._view(session, f"Report updated for trigger word \"{_text(trigger)}\" at "
                                   f"{_resolution(resolution)} px.", trigger, resolution)

    def follow_resolution(self, session: DatasetSession | None, pending: str, trigger: str,
                          resolution: Any) -> Any:
        """The Train tab's data.resolution changed, and the report's box with it: redo the report at it
        (nothing is sent when no dataset is open or the report is already at that resolution)."""
        if session is None or session.report is None or session.report["resolution"] == _resolution(resolution):
            return gr.skip()
        self._apply_pending(session, pending)
        return self._view(session, None, trigger, resolution)

    # --- auto-captioning --------------------------------------------------------------------------
    def pick_captioner(self, captioner: str) -> tuple[Any, Any, Any]:
        """The model picker for a model captioner; the description field for the template."""
        is_template = captioner == "template"
        return (gr.Dropdown(choices=self.model_choices(captioner), value="" if is_template else
                            DEFAULT_MODELS.get(captioner, ""), visible=not is_template),
                gr.Textbox(visible=is_template), gr.Number(visible=not is_template))

    def model_choices(self, captioner: str) -> list[tuple[str, str]]:
        if captioner not in DEFAULT_MODELS:
            return []
        choices = [(f"{DEFAULT_MODELS[captioner]} (default; downloads once)", DEFAULT_MODELS[captioner]),
                   (f"{TINY_RANDOM} (random weights: tests only, the captions mean nothing)", TINY_RANDOM)]
        local = self.studio.roots.models / "captioners"
        if local.is_dir():
            choices += [(f"{p.name} (models/captioners)", p.name) for p in sorted(local.iterdir()) if p.is_dir()]
        return choices

    def _captioner_model(self, captioner: str, model: str | None) -> str | None:
        value = (model or "").strip()
        if captioner == "template" or not value:
            return None
        if value == TINY_RANDOM:
            return value
        roots = self.studio.roots
        local = (roots.models / "captioners" / value).resolve()
        if local.is_relative_to(roots.models) and local.exists():
            return str(local)
        try:
            return roots.model(value, "captioner model")
        except PathNotAllowed as err:
            raise gr.Error(str(err), title="Auto-caption") from None

    def auto_caption(self, session: DatasetSession | None, pending: str, trigger: str, resolution: Any,
                     class_phrase: str, captioner: str, model: str, description: str, overwrite: bool,
                     prefix_trigger: bool, max_length: Any, progress: Any = gr.Progress()) -> tuple[Any, ...]:
        """Caption the images (all, or those without a caption) into the editor as one bulk edit;
        nothing is written until Save."""
        session = _need(session)
        if captioner not in CAPTIONERS:
            raise gr.Error(f"captioner must be one of {', '.join(CAPTIONERS)}, got {captioner!r}", title="Auto-caption")
        self._apply_pending(session, pending)
        editor = session.editor
        options = CaptionOptions(trigger=_text(trigger), class_phrase=_text(class_phrase),
                                 description=_text(description), prefix_trigger=bool(prefix_trigger),
                                 overwrite=bool(overwrite), max_length=int(max_length or 77),
                                 model=self._captioner_model(captioner, model))
        existing = {session.folder / rel: text for rel, text in editor.captions.items() if text}
        try:
            result = caption_dataset(
                session.folder, captioner, options, write=False, models_dir=self.studio.roots.models,
                existing=existing,
                progress=lambda done, total: progress((done, total), desc="Captioning", unit="images"))
        except AcceleratorBusy as err:
            return self._view(session, f"⚠️ {err}", trigger, resolution, changed=False)
        except CaptionerError as err:
            raise gr.Error(str(err), title="Auto-caption failed") from None
        found = {path.relative_to(session.folder).as_posix(): text for path, text in result.captions.items()}
        new = {rel: text for rel, text in found.items() if rel in editor.captions}
        changed = editor.fill(new, f"auto-caption ({captioner})") if new else 0
        notice = (f"Auto-captioned {len(found)} images with {result.model}: {changed} captions changed, "
                  f"{result.kept} kept (not saved yet; Undo reverts it).")
        if len(new) < len(found):
            notice += f" {len(found) - len(new)} images are new on disk: open the dataset again to see them."
        if result.skipped:
            notice += f" Skipped {len(result.skipped)}: " + "; ".join(f"{rel} ({why})" for rel, why in result.skipped)
        if result.random_weights:
            warning = f"{result.model} has random weights: its captions are noise, for testing the flow only."
            notice += f" ⚠️ {warning}"
        return self._view(session, notice, trigger, resolution)

    # --- the disk cache of training tensors ---------------------------------------------------------
    def cache_line(self, usage: Any = None) -> str:
        """What the disk cache of latents and caption embeddings holds (`usage`, else counted now), and where."""
        from studio.engine.caches import tensor_cache_usage  # imports torch: not while the page is built

        usage = usage or tensor_cache_usage()
        counts = f"{usage.entries.get('latents', 0):,} latents, {usage.entries.get('text', 0):,} caption embeddings"
        return (f"**{human_bytes(usage.bytes)}** of cached latents and caption embeddings ({counts}) in "
                f"`{usage.folder}`. Runs on the same images and model reuse them; after clearing, the next run "
                "encodes its images again.")

    def ask_clear_cache(self) -> tuple[Any, ...]:
        """The confirm step: the current size on the button that deletes it."""
        from studio.engine.caches import tensor_cache_usage

        usage = tensor_cache_usage()
        if not usage.bytes:
            return self.cache_line(usage), gr.Row(visible=False), gr.Button()
        return (self.cache_line(usage), gr.Row(visible=True),
                gr.Button(value=f"Delete {human_bytes(usage.bytes)} of cached tensors"))

    def clear_cache(self) -> tuple[Any, ...]:
        """Empty the cache, unless a job holds the accelerator (it may be writing or reading entries)."""
        from studio.engine.caches import clear_tensor_cache, tensor_cache_dir

        holder = getattr(self.studio.runner, "lock", ACCELERATOR).current()
        if holder is not None:
            raise Refusal(f"The accelerator is busy with {holder.describe()}, which may be using the cache. "
                          "Clear it once that job has finished.")
        try:
            cleared = clear_tensor_cache()
        except OSError as err:
            raise Refusal(f"Could not clear the cache in {tensor_cache_dir()}: {err.strerror or err}.",
                          str(err)) from None
        entries = sum(cleared.entries.values())
        notice = live.notice(f"Cleared the cache: {human_bytes(cleared.bytes)} ({entries:,} entries) deleted.")
        return notice, self.cache_line(), gr.Row(visible=False)

    def keep_cache(self) -> Any:
        return gr.Row(visible=False)

    # --- to the Train tab -------------------------------------------------------------------------
    def send_to_train(self, session: DatasetSession | None, pending: str, trigger: str,
                      class_phrase: str) -> tuple[Any, ...]:
        """Fill the Train tab's data.dir, data.trigger_word and data.class_phrase, and switch to it."""
        session = _need(session)
        self._apply_pending(session, pending)
        unsaved = len(session.editor.unsaved())
        if unsaved:
            raise gr.Error(f"{session.name} has {unsaved} unsaved caption changes: training reads the files. "
                           "Save first, then send it.", title="Save first")
        if not session.scan.items:
            raise gr.Error(f"{session.name} has no usable image (see Skipped files in the report).",
                           title="Nothing to train on")
        roots = self.studio.roots
        notice = live.notice(f"Sent **{session.name}** to Train ({len(session.scan.items)} images, trigger word "
                             f"\"{_text(trigger)}\"). Check the settings and press Start.")
        sent = {"dir": session.name, "trigger": _text(trigger), "class_phrase": _text(class_phrase)}
        return (notice, gr.Dropdown(choices=dataset_choices(roots), value=session.name), _text(trigger),
                _text(class_phrase), gr.Tabs(selected=TRAIN_TAB), sent)

    def restore_sent(self, sent: dict[str, Any] | None) -> tuple[Any, ...]:
        """A page (re)load: what "Use for training" last sent from this browser (`send_to_train`'s last
        output, kept in the browser), back in the Dataset picker and boxes and the Train tab's data fields.
        Not while a job runs (the form then belongs to that job), nor for a folder that is gone.
        Returns (picker, trigger, class phrase, data.dir, data.trigger_word, data.class_phrase)."""
        name = (sent or {}).get("dir") if isinstance(sent, dict) else None
        if not name or self.studio.runner.snapshot().active:
            return (gr.skip(),) * 6
        try:
            folder = Path(self.studio.roots.dataset(name))
        except PathNotAllowed:
            return (gr.skip(),) * 6
        if not folder.is_dir():
            return (gr.skip(),) * 6
        trigger, class_phrase = _text(sent.get("trigger")), _text(sent.get("class_phrase"))
        return (self.list_datasets(name), trigger, class_phrase,
                gr.Dropdown(choices=dataset_choices(self.studio.roots), value=name), trigger, class_phrase)


def _text(value: str | None) -> str:
    return (value or "").strip()


def _resolution(value: Any) -> int:
    try:
        resolution = int(value)
    except (TypeError, ValueError):
        return view.DEFAULT_RESOLUTION
    return resolution if resolution >= 64 else view.DEFAULT_RESOLUTION
