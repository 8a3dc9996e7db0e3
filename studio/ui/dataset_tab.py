"""Dataset tab: open a dataset (or the demo, or make one from uploaded photos or a zip), caption
it by hand, in bulk or with a captioner, read its report and caption lint, save, and send it to
the Train tab.

The handlers live in `dataset_handlers.py`, what the tab draws (gallery pages, report tables) in
`dataset_view.py`; this module lays the components out and wires the events. Editing handlers run
one at a time (one concurrency group), and each takes the caption box's text as an input, so a click
commits what is being typed in the same event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from studio.data.captioners import CAPTIONERS, DEFAULT_MODELS
from studio.data.upload import MAX_BYTES, MAX_FILES
from studio.ui import dataset_view as view
from studio.ui.context import DATASET_TAB
from studio.ui.dataset_handlers import SEPARATORS, DatasetHandlers
from studio.ui.notices import refusing

if TYPE_CHECKING:
    from studio.ui.context import Studio

TITLE, TAB_ID = "Dataset", DATASET_TAB
UPLOAD_TYPES = ["image", ".zip", ".txt", ".json", ".jsonl"]


def build(studio: Studio, tab: gr.Tab) -> None:
    handlers = DatasetHandlers(studio)
    first = next(iter(CAPTIONERS))

    # 1. Components. Top: pick, open, create; left: the gallery; right: the selected image and
    #    the edits; below: auto-captioning and the report.
    with gr.Row(equal_height=True):
        picker = gr.Dropdown([], value=None, label="Dataset", scale=4,  # filled when the page loads
                             allow_custom_value=True,
                             info=f"A folder in the datasets root ({studio.roots.datasets.name}/).")
        open_button = gr.Button("Open", variant="primary", scale=0, min_width=90)
        demo_button = gr.Button("Open the demo", scale=0, min_width=140)
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_classes="refresh")
    with gr.Accordion("New dataset from photos", open=False):
        with gr.Row(equal_height=True):
            new_name = gr.Textbox(label="New dataset name", placeholder="e.g. my-shoes", scale=2,
                                  info="A folder in the datasets root: letters, digits, '.', '_' or '-'.")
            uploads = gr.File(label="Images, caption files or a zip", file_count="multiple", file_types=UPLOAD_TYPES,
                              type="filepath", scale=3)
        with gr.Row():
            create_button = gr.Button("Create dataset", variant="primary")
            add_button = gr.Button("Add to the open dataset")
        gr.Markdown(f"Zips are unpacked safely: no paths outside the folder, no `__MACOSX`, at most "
                    f"{MAX_FILES:,} files and {MAX_BYTES // 1024**3} GiB. Existing files are never replaced.",
                    elem_classes="notice")
    # The action bar stays in view while the page scrolls (CSS `#dataset-actions`): the unsaved count,
    # Save and Use for training are never below the fold, whichever edit is being made.
    with gr.Row(equal_height=True, elem_id="dataset-actions"):
        status = gr.Markdown(view.status_markdown(None), elem_id="dataset-status")
        save_button = gr.Button("Save captions", variant="primary", size="sm", scale=0, min_width=130)
        send_button = gr.Button("Use for training", size="sm", scale=0, min_width=130)
    with gr.Row():
        with gr.Column(scale=3, min_width=480):
            with gr.Row(equal_height=True):
                query = gr.Textbox(label="Search captions", placeholder="words in a caption or file name", scale=3)
                problems_only = gr.Checkbox(label="Only problems", scale=1,
                                            info="No caption, or flagged by the caption lint.")
            gallery = gr.Gallery(label="Images", elem_id="dataset-gallery", columns=6, height=560,
                                 object_fit="contain", allow_preview=False, show_label=True)
            with gr.Row(equal_height=True):
                previous = gr.Button("◀ Previous page", size="sm", min_width=120)
                page_line = gr.Markdown(elem_id="dataset-page")
                following = gr.Button("Next page ▶", size="sm", min_width=120)
        with gr.Column(scale=2, min_width=380):
            preview = gr.Image(label="Selected image", type="filepath", interactive=False, height=256,
                               buttons=[])
            caption = gr.Textbox(label="Caption", lines=3, max_lines=8, elem_id="dataset-caption",
                                 placeholder="Click an image, then type its caption")
            info = gr.Markdown("Click an image to edit its caption.", elem_classes="notice")
            apply_button = gr.Button("Apply caption", size="sm")
            with gr.Row(equal_height=True):
                trigger = gr.Textbox(label="Trigger word", placeholder="e.g. ohwx",
                                     info="The rare token that names your subject.")
                class_phrase = gr.Textbox(label="Class phrase", placeholder="e.g. toy robot",
                                          info="What the subject is, in plain words.")
            with gr.Accordion("Bulk edits", open=True):
                trigger_button = gr.Button("Add trigger word", size="sm")
                with gr.Row(equal_height=True):
                    affix = gr.Textbox(label="Prefix / suffix text", scale=3)
                    separator = gr.Radio(list(SEPARATORS), value="comma", label="Joined with", scale=2)
                with gr.Row():
                    prefix_button = gr.Button("Add prefix", size="sm")
                    suffix_button = gr.Button("Add suffix", size="sm")
                with gr.Row(equal_height=True):
                    find = gr.Textbox(label="Find")
                    replacement = gr.Textbox(label="Replace with")
                with gr.Row(equal_height=True):
                    ignore_case = gr.Checkbox(label="Ignore case")
                    replace_button = gr.Button("Replace", size="sm")
                with gr.Row(equal_height=True):
                    tag = gr.Textbox(label="Tag to remove", scale=3, info="One comma-separated tag, any case.")
                    remove_button = gr.Button("Remove tag", size="sm", scale=1)
                lower_button = gr.Button("Lower-case (keeps the trigger word)", size="sm")
            with gr.Row():
                undo_button = gr.Button("Undo last bulk edit", size="sm")
                revert_button = gr.Button("Revert unsaved changes", size="sm")
            with gr.Accordion("Import captions.json", open=False):
                imports = gr.File(label="captions.json (+ ids.txt)", file_count="multiple",
                                  file_types=[".json", ".txt"], type="filepath")
                import_button = gr.Button("Import captions.json", size="sm")
    with gr.Accordion("Auto-caption", open=False):
        with gr.Row(equal_height=True):
            captioner = gr.Dropdown([(f"{name}: {text}", name) for name, text in CAPTIONERS.items()],
                                    value=first, label="Captioner")
            model = gr.Dropdown(handlers.model_choices(first), value=DEFAULT_MODELS.get(first),
                                label="Captioner model", allow_custom_value=True, visible=first != "template",
                                info="A Hub id, a folder in models/captioners, or tiny-random.")
            description = gr.Textbox(label="Description", placeholder="e.g. on a plain background",
                                     visible=first == "template",
                                     info="Template captioner: words added after the class phrase.")
        with gr.Row(equal_height=True):
            overwrite = gr.Checkbox(label="Overwrite existing captions", value=False)
            prefix_trigger = gr.Checkbox(label="Start each caption with the trigger word", value=True)
            max_length = gr.Number(77, label="Max length (tokens)", precision=0, minimum=8, maximum=512,
                                   visible=first != "template")
            caption_button = gr.Button("Run auto-caption", variant="primary")
        gr.Markdown("Captions go into the editor as one bulk edit: review them, Undo if needed, then Save. "
                    "Model captioners use the accelerator and wait for no one: while training runs they refuse.",
                    elem_classes="notice")
    with gr.Accordion("Dataset report", open=True):
        with gr.Row(equal_height=True):
            resolution = gr.Number(view.DEFAULT_RESOLUTION, label="Training resolution", precision=0, minimum=64,
                                   maximum=4096, scale=0, min_width=160,
                                   info="For the aspect buckets and size checks; follows the Train tab's.")
            report_button = gr.Button("Refresh report", size="sm", scale=0, min_width=140)
        report = gr.Markdown(view.report_markdown(None), elem_id="dataset-report")
        # Each table is drawn when its tab is opened, and redrawn by edits only while it is the one shown
        # (the lint, a few lines, always): an edit sends the same few KB at 20 images or 2,000.
        report_tabs: dict[str, gr.Tab] = {}
        with gr.Tabs():
            with gr.Tab(view.REPORT_TABS["lint"]) as report_tabs["lint"]:
                lint = gr.Dataframe(view.lint_table(None), label="Caption lint", interactive=False, wrap=True)
            with gr.Tab(view.REPORT_TABS["skipped"]) as report_tabs["skipped"]:
                skipped = gr.Dataframe(view.skipped_table(None), label="Skipped files", interactive=False)
            with gr.Tab(view.REPORT_TABS["buckets"]) as report_tabs["buckets"]:
                with gr.Row():
                    buckets = gr.Dataframe(view.buckets_table(None), label="Aspect buckets", interactive=False)
                    sizes = gr.Dataframe(view.sizes_table(None), label="Image sizes", interactive=False)
            with gr.Tab(view.REPORT_TABS["lengths"]) as report_tabs["lengths"]:
                lengths = gr.Dataframe(view.captions_table(None), label="Caption lengths", interactive=False,
                                       wrap=True, max_height=400)
            with gr.Tab(view.REPORT_TABS["duplicates"]) as report_tabs["duplicates"]:
                duplicates = gr.Dataframe(view.duplicates_table(None), label="Duplicates", interactive=False)
            with gr.Tab(view.REPORT_TABS["missing"]) as report_tabs["missing"]:
                missing = gr.Dataframe(view.missing_table(None), label="Missing captions", interactive=False)
    with gr.Accordion("Disk cache of training tensors", open=False) as cache_box:
        cache_line = gr.Markdown(elem_classes="notice")
        clear_button = gr.Button("Clear cache…", size="sm", variant="stop")
        with gr.Row(visible=False) as confirm_row:
            confirm_clear = gr.Button("Delete the cached tensors", size="sm", variant="stop")
            cancel_clear = gr.Button("Keep them", size="sm")
    state = gr.State(None)
    shown_tab = gr.State("lint")
    """The report tab the page shows, before any dataset is open too (a new session starts with it)."""
    sent = gr.BrowserState({}, storage_key="lora-studio-dataset-sent")
    """What "Use for training" last sent from this browser: the Train tab gets it back after a reload."""

    # 2. Events. Every editing handler takes the session, the caption box (applied first), the
    #    trigger word and the resolution, and redraws the same outputs.
    # One at a time: handlers share the session object. The caption box has no blur handler: every
    # action takes the box's text as an input and applies it first, so a click (Save, a bulk edit, another
    # thumbnail) is one event that commits what is being typed, never a race between the box's blur and
    # the click that caused it.
    serial = dict(concurrency_id="dataset", concurrency_limit=1)
    view_outputs = [studio.notice, state, status, gallery, page_line, preview, caption, info, report,
                    lint, skipped, buckets, sizes, lengths, duplicates, missing]
    context = [state, caption, trigger, resolution]
    page_outputs = [state, gallery, page_line]

    gr.on([tab.select, refresh.click], handlers.list_datasets, picker, picker, api_name="list_datasets",
          show_progress="hidden")
    listed = studio.app.load(handlers.list_datasets, picker, picker, api_visibility="private", show_progress="hidden")
    opened = [*view_outputs, trigger, class_phrase]
    # A refusal (no dataset open, a bad upload, a busy accelerator) is one line in the notice area,
    # which every opening and editing handler already answers in.
    def refused(fn, outputs):
        return refusing(fn, outputs, studio.notice)

    open_button.click(inputs=[state, picker, resolution, shown_tab], **refused(handlers.open_dataset, opened),
                      api_name="open_dataset", **serial)
    demo_button.click(inputs=[state, resolution, shown_tab], **refused(handlers.open_demo, [picker, *opened]),
                      api_name="open_demo", **serial)
    create_button.click(inputs=[state, new_name, uploads, resolution, shown_tab],
                        **refused(handlers.create_dataset, [picker, *opened]), api_name="create_dataset", **serial)
    add_button.click(inputs=[state, uploads, trigger, resolution], **refused(handlers.add_to_dataset, view_outputs),
                     api_name="add_to_dataset", **serial)

    quiet = dict(show_progress="hidden", **serial)
    gr.on([query.submit, problems_only.input], handlers.filter_gallery, [state, query, problems_only], page_outputs,
          api_name="filter_gallery", **quiet)
    previous.click(handlers.previous_page, state, page_outputs, api_name="previous_page", **quiet)
    following.click(handlers.next_page, state, page_outputs, api_name="next_page", **quiet)
    gallery.select(inputs=context, **refused(handlers.select_image, view_outputs), api_name="select_image", **quiet)
    apply_button.click(inputs=context, **refused(handlers.apply_caption, view_outputs), api_name="apply_caption",
                       **quiet)
    # While typing, the status line counts the caption being typed as unsaved (it reads, never writes,
    # so it stays out of the editing queue and never holds up Save). On `change`, not `input`: text that
    # is pasted or filled in without a key press counts too.
    caption.change(handlers.typing_status, [state, caption], status, api_visibility="private", show_progress="hidden",
                   trigger_mode="always_last", concurrency_limit=None)
    gr.on([trigger.submit, resolution.submit, report_button.click], inputs=context,
          **refused(handlers.refresh_report, view_outputs), api_name="refresh_report", **quiet)

    edits = {trigger_button: (handlers.add_trigger, [], "add_trigger"),
             prefix_button: (handlers.add_prefix, [affix, separator], "add_prefix"),
             suffix_button: (handlers.add_suffix, [affix, separator], "add_suffix"),
             replace_button: (handlers.replace_text, [find, replacement, ignore_case], "replace_text"),
             remove_button: (handlers.remove_tag, [tag], "remove_tag"),
             lower_button: (handlers.lowercase, [], "lowercase"),
             undo_button: (handlers.undo, [], "undo_bulk_edit"),
             revert_button: (handlers.revert, [], "revert_unsaved"),
             save_button: (handlers.save, [], "save_captions"),
             import_button: (handlers.import_captions, [imports], "import_captions")}
    for button, (fn, extra, api_name) in edits.items():
        button.click(inputs=[*context, *extra], **refused(fn, view_outputs), api_name=api_name, **serial)

    # The disk cache of latents and caption embeddings: its size when the box opens, cleared after a confirm.
    cache_box.expand(handlers.cache_line, None, cache_line, api_name="tensor_cache", show_progress="hidden")
    clear_button.click(handlers.ask_clear_cache, None, [cache_line, confirm_row, confirm_clear],
                       api_name="ask_clear_cache", show_progress="hidden")
    confirm_clear.click(**refused(handlers.clear_cache, [studio.notice, cache_line, confirm_row]),
                        api_name="clear_cache")
    cancel_clear.click(handlers.keep_cache, None, confirm_row, api_visibility="private", show_progress="hidden")

    captioner.change(handlers.pick_captioner, captioner, [model, description, max_length], api_name="pick_captioner")
    caption_button.click(inputs=[*context, class_phrase, captioner, model, description, overwrite, prefix_trigger,
                                 max_length], **refused(handlers.auto_caption, view_outputs), api_name="auto_caption",
                         **serial)

    # "Use for training" fills the Train tab's data fields, then lets it re-resolve its config: wired
    # once that tab is built.
    # What it sent is kept in the browser and filled in again after a reload.
    def send_to_train() -> None:
        fields = studio.train.fields
        data_fields = [fields["data.dir"], fields["data.trigger_word"], fields["data.class_phrase"]]
        send_button.click(inputs=[state, caption, trigger, class_phrase],
                          **refused(handlers.send_to_train, [studio.notice, *data_fields, studio.tabs, sent]),
                          api_name="send_to_train", concurrency_id="dataset").success(**studio.train.resolve.kwargs())
        listed.then(handlers.restore_sent, sent, [picker, trigger, class_phrase, *data_fields],
                    api_visibility="private", show_progress="hidden").then(**studio.train.resolve.kwargs())

    studio.when_built(send_to_train)

    # The report buckets at the Train tab's data.resolution (64 px for the demo preset), and follows it.
    def follow_train_resolution() -> None:
        train_resolution = studio.train.fields["data.resolution"]
        resolution.value = train_resolution.value
        train_resolution.change(_same, train_resolution, resolution, api_visibility="private", show_progress="hidden") \
            .then(inputs=context, **refused(handlers.follow_resolution, view_outputs), api_visibility="private",
                  **quiet)

    studio.when_built(follow_train_resolution)


def _same(value: object) -> object:
    return value
