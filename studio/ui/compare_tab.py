"""Compare tab: prompt-only against LoRA side by side, across checkpoints and scales, and batches.

A comparison grid's rows are prompt × seed and its columns prompt only (or, with baseline prompts,
each row's baseline prompt without the LoRA), then each picked checkpoint at each scale, then the
images of other generators added as columns; a row uses the same seed in every rendered column.
The grid shows as a captioned gallery, a before/after slider (prompt only against one column, for
one row) and the labelled grid.png to download; earlier grids reopen from disk, and "Send to Score"
hands one to the Score tab. A batch writes images with their prompts as captions, and "Score this
batch" hands it to the Score tab. The base model stays loaded between grids and batches in one
`PipelineCache` per studio process. A refused grid or batch is one line in the studio's notice, with
the field at fault outlined (see notices.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from studio.config import field_bounds
from studio.core.lock import AcceleratorBusy
from studio.engine.models import ModelLoadError
from studio.engine.runs import RunFolder
from studio.eval.columns import ExternalImages, external_from_files, plan_columns
from studio.eval.grids import Grid, check_grid_name, grid_spec, list_grids, load_grid, make_grid
from studio.eval.manifest import Column
from studio.eval.parsing import FINAL, match_baselines, parse_scales, parse_seeds, parse_steps, prompt_lines
from studio.ui import eval_view, live
from studio.ui.context import COMPARE_TAB, SCORE_TAB
from studio.ui.notices import Refusal, refusal_from, refused_as, refusing, wire

if TYPE_CHECKING:
    from studio.eval.pipelines import PipelineCache
    from studio.ui.context import Studio

TITLE, TAB_ID = "Compare", COMPARE_TAB
BATCH_PREVIEW = 8
"""Images of a batch shown after it ran: the last ones written."""
USER_ERRORS = (ValueError, FileNotFoundError, ModelLoadError)
GRID_REFUSED, BATCH_REFUSED = "Cannot make the grid", "Cannot generate"


class CompareHandlers:
    """The Compare tab's event handlers; thin calls into the grid and batch generators."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self._stop_batch = threading.Event()

    def cache(self) -> PipelineCache:
        """The studio's one pipeline cache, so the base model stays loaded between grids."""
        return self.studio.eval_models.pipelines()

    # --- runs ------------------------------------------------------------------------------------
    def run_names(self) -> list[str]:
        return eval_view.runs_with_lora(self.studio.roots.outputs)

    def list_runs(self, selected: str | None) -> Any:
        """Runs with a LoRA file, keeping the picked run while it exists."""
        names = self.run_names()
        return gr.Dropdown(choices=names, value=selected if selected in names else (names[0] if names else None))

    def list_checkpoints(self, selected: str | None, picked: list[str] | None, batch_pick: str | None
                         ) -> tuple[Any, Any]:
        """The picked run's checkpoints as on disk now (a page left open during training saw fewer). The
        picks are sent only when one of them is gone: this may run while a new pick of the run is filling
        them in (`pick_run`), and picks read before that must not overwrite it."""
        if not selected or selected not in self.run_names():
            return gr.skip(), gr.skip()
        choices = eval_view.checkpoint_choices(self.studio.run(selected))
        kept = [p for p in picked or [] if p in choices]
        grid = gr.Dropdown(choices=choices, multiselect=True) if kept == list(picked or []) else \
            gr.Dropdown(choices=choices, value=kept, multiselect=True)
        batch = gr.Dropdown(choices=choices) if batch_pick in choices or batch_pick is None else \
            gr.Dropdown(choices=choices, value=choices[-1])
        return grid, batch

    def follow_job(self, selected: str | None, picked: list[str] | None, batch_pick: str | None,
                   seen: dict[str, Any] | None) -> tuple[Any, ...]:
        """When the studio's job changes state or saves a checkpoint, list the runs
        again (a finished run brings its final LoRA) and the picked run's checkpoints; else gr.skip()."""
        snap = self.studio.runner.snapshot()
        key = [snap.run, snap.status, list(snap.checkpoints)]
        if (seen or {}).get("job") == key:
            return gr.skip(), gr.skip(), gr.skip(), seen
        runs = self.list_runs(selected)
        if selected != snap.run:
            return runs, gr.skip(), gr.skip(), {"job": key}
        return (runs, *self.list_checkpoints(selected, picked, batch_pick), {"job": key})

    def pick_run(self, name: str | None) -> tuple[Any, ...]:
        """The run's sample prompts and settings as the grid's defaults, its checkpoints and its grids."""
        if not name:
            empty = gr.Dropdown(choices=[], value=None)
            return ("", gr.Dropdown(choices=[], value=[], multiselect=True), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    empty, empty, "", *self._shown(None))
        run = self.studio.run(name)
        config = run.config()
        choices = eval_view.checkpoint_choices(run)
        picked = [choices[-1]] if choices else []
        size = config.data.resolution
        return ("\n".join(config.sample.prompts), gr.Dropdown(choices=choices, value=picked, multiselect=True),
                config.sample.inference_steps, config.sample.guidance_scale, size, size, config.sample.negative_prompt,
                gr.Dropdown(choices=list_grids(run), value=None),
                gr.Dropdown(choices=choices, value=picked[0] if picked else None),
                "\n".join(config.sample.prompts), *self._shown(None))

    # --- grids -----------------------------------------------------------------------------------
    def make_grid(self, run_name: str, prompts: str, seeds: str, checkpoints: list[str] | None, prompt_only: bool,
                  scales: str, inference_steps: float, guidance: float, width: float, height: float,
                  negative_prompt: str, grid_name: str, baseline_prompts: str = "",
                  external: list[dict[str, Any]] | None = None,
                  progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Render the grid (rows prompt × seed; columns prompt only or the baseline prompt, checkpoint × scale,
        other generators' images) and show it."""
        run = self.studio.run(run_name)
        name = (grid_name or "").strip() or None
        # 1. Check each field, so that a refusal outlines the one at fault.
        with refused_as(GRID_REFUSED, "prompts"):
            prompt_list = self.prompts(prompts)
        with refused_as(GRID_REFUSED, "seeds"):
            seed_list = parse_seeds(seeds)
        with refused_as(GRID_REFUSED, "scales"):
            scale_list = parse_scales(scales)
        with refused_as(GRID_REFUSED, "grid_name"):
            if name:
                check_grid_name(name)
        baselines = prompt_lines(baseline_prompts)
        with refused_as(GRID_REFUSED, "baseline"):
            match_baselines(prompt_list, baselines)
        with refused_as(GRID_REFUSED):
            images = self.external_images(external or [])
        with refused_as(GRID_REFUSED, "checkpoints"):
            columns = self.plan(run, checkpoints or [], scale_list, prompt_only, bool(baselines), images)
        sampler = sampler_settings(inference_steps, guidance, width, height, negative_prompt, GRID_REFUSED)
        with refused_as(GRID_REFUSED):
            spec = grid_spec(run, prompt_list, seed_list, columns, baseline_prompts=baselines, external=images,
                             **sampler)
        # 2. Render it (the accelerator may be busy: say so, don't wait).
        try:
            grid = make_grid(run, spec, cache=self.cache(), name=name,
                             progress=lambda done, total: progress((done, total), desc="Rendering the grid",
                                                                   unit="images"))
        except AcceleratorBusy as err:
            raise Refusal(str(err)) from None
        except USER_ERRORS as err:
            raise refusal_from(GRID_REFUSED, err) from None
        return (gr.Dropdown(choices=list_grids(run), value=grid.name), *self._shown(grid),
                live.notice(f"Made grid **{grid.name}** of **{run.name}** ({len(grid.images)} images)."))

    def plan(self, run: RunFolder, picked: list[str], scales: list[float], prompt_only: bool, baseline: bool = False,
             external: list[ExternalImages] = ()) -> list[Column]:
        """The engine's column planner on the picks: prompt only, each picked checkpoint (ascending, final last)
        at each scale, the other generators."""
        columns = plan_columns(run, parse_steps(picked) if picked else [], scales, prompt_only, baseline=baseline,
                               external=external)
        if not columns:
            raise ValueError("the grid has no columns: tick prompt only or pick at least one checkpoint")
        return columns

    def external_images(self, external: list[dict[str, Any]]) -> list[ExternalImages]:
        """The added generators' uploads as image sets (checked again: an upload may be gone)."""
        return [external_from_files(e["label"], [Path(f) for f in e["files"]]) for e in external]

    def add_external(self, label: str, files: list[str] | None, external: list[dict[str, Any]] | None
                     ) -> tuple[list[dict[str, Any]], str, Any, str]:
        """Add another generator's uploaded images (and an optional prompts.json) as a column of the next grid."""
        external = list(external or [])
        if not files:
            raise Refusal("Upload the generator's images first (and a prompts.json naming each one's prompt, "
                          "or they are matched to rows in file-name order).")
        if any(e["label"] == " ".join((label or "").split()) for e in external):
            raise Refusal(f"There is already a column {label!r}: give this one another label.")
        with refused_as("Cannot add the images"):
            images = external_from_files(label, [Path(f) for f in files])
        external.append({"label": images.label, "files": [str(f) for f in files]})
        return external, external_md(external), gr.File(value=None), ""

    def clear_external(self) -> tuple[list, str]:
        return [], external_md([])

    def prompts(self, text: str) -> list[str]:
        prompts = prompt_lines(text)
        if not prompts:
            raise ValueError("Prompts is empty: give at least one prompt, one per line ({trigger} is the trigger word)")
        return prompts

    def open_grid(self, run_name: str, grid_name: str | None) -> tuple[Any, ...]:
        """Show an earlier grid of the run from disk."""
        if not grid_name:
            return self._shown(None)
        with refused_as("Cannot open the grid"):
            return self._shown(load_grid(self.studio.run(run_name), grid_name))

    def _shown(self, grid: Grid | None) -> tuple[Any, ...]:
        """What shows a grid (summary, gallery, slider row and column pickers, slider, labelled grid, download),
        or cleared ones for None."""
        if grid is None:
            none = gr.Dropdown(choices=[], value=None)
            return ("", gr.Gallery(value=None), none, none, gr.ImageSlider(value=None, label="Before / after"),
                    None, gr.DownloadButton(value=None, visible=False))
        manifest = grid.manifest
        rows, columns = eval_view.row_choices(manifest), eval_view.column_choices(manifest)
        row, column = rows[0][1], (columns[0][1] if columns else None)
        pair, label = eval_view.slider_pair(grid.folder, manifest, row, column)
        return (eval_view.grid_summary(grid.folder, self.studio.roots.outputs, manifest),
                gr.Gallery(value=eval_view.gallery_items(grid.folder, grid.images), columns=len(manifest.columns),
                           label=live.images_label("Grid images", manifest.base_model)),
                gr.Dropdown(choices=rows, value=row), gr.Dropdown(choices=columns, value=column),
                gr.ImageSlider(value=pair, label=label), str(grid.grid_png),
                gr.DownloadButton(value=str(grid.grid_png), visible=True))

    def show_slider(self, run_name: str, grid_name: str, row: Any, column: Any) -> Any:
        """Prompt only (left) against the picked column (right) for the picked row."""
        if not grid_name or row is None or column is None:
            return gr.ImageSlider(value=None, label="Before / after")
        with refused_as("Cannot open the grid"):
            grid = load_grid(self.studio.run(run_name), grid_name)
        pair, label = eval_view.slider_pair(grid.folder, grid.manifest, row, column)
        return gr.ImageSlider(value=pair, label=label)

    def send_to_score(self, run_name: str, grid_name: str | None) -> tuple[Any, Any, Any]:
        """Pick this run and grid in the Score tab and go there."""
        run = self.studio.run(run_name)
        grids = list_grids(run)
        if grid_name not in grids:
            raise Refusal(f"Make a grid of {run.name} first, or pick one under Earlier grids.", field="grids")
        return (gr.Dropdown(choices=eval_view.runs_with_grids(self.studio.roots.outputs), value=run.name),
                gr.Dropdown(choices=grids, value=grid_name), gr.Tabs(selected=SCORE_TAB))

    # --- batches ---------------------------------------------------------------------------------
    def generate_batch(self, run_name: str, prompts: str, prompts_file: str | None, count: float | None,
                       checkpoint: str, scale: float | None, seed: float | None, batch_name: str,
                       inference_steps: float | None, guidance: float | None, width: float | None,
                       height: float | None, negative_prompt: str,
                       progress: gr.Progress = gr.Progress()) -> tuple[Any, str, str]:
        """N images from a prompt list with one checkpoint and the Advanced sampler settings, into
        outputs/<run>/generated/<name>; running the same name again continues where it stopped."""
        from studio.eval.generate import generate_batch, generated_dir  # imports diffusers: only when generating

        run = self.studio.run(run_name)
        self._stop_batch.clear()
        # 1. Check each field, so that a refusal outlines the one at fault.
        with refused_as(BATCH_REFUSED, "prompts_file" if prompts_file else "prompts"):
            # UnicodeDecodeError (a prompt list that is not text) is a ValueError
            lines = self.prompts(Path(prompts_file).read_text(encoding="utf-8") if prompts_file else prompts)
        with refused_as(BATCH_REFUSED, "checkpoint"):
            step = self.batch_step(run, checkpoint)
        with refused_as(BATCH_REFUSED, "count"):
            total = eval_view.number(count, int, "Images")
        with refused_as(BATCH_REFUSED, "scale"):
            lora_scale = eval_view.number(scale, float, "Scale")
        with refused_as(BATCH_REFUSED, "seed"):
            first_seed = eval_view.number(seed, int, "First seed")
        with refused_as(BATCH_REFUSED, "name"):
            out_dir = generated_dir(run, batch_name or "")
        sampler = sampler_settings(inference_steps, guidance, width, height, negative_prompt, BATCH_REFUSED)
        # 2. Generate (the accelerator may be busy: say so, don't wait).
        try:
            result = generate_batch(run, lines, total, out_dir, cache=self.cache(), step=step, scale=lora_scale,
                                    seed=first_seed, should_stop=self._stop_batch.is_set,
                                    progress=lambda done, of: progress((done, of), desc="Generating", unit="images"),
                                    **sampler)
        except AcceleratorBusy as err:
            raise Refusal(str(err)) from None
        except USER_ERRORS as err:
            raise refusal_from(BATCH_REFUSED, err) from None
        done = result.written + result.skipped
        stopped = " Stopped early: run it again with the same name to continue." if done < total else ""
        where = result.out_dir.relative_to(self.studio.roots.outputs)
        status = (f"Wrote {result.written} images, skipped {result.skipped} already written ({done} of {total})"
                  f" in `{where}`, each with its prompt as caption (`.txt` and `metadata.jsonl`: the folder is a "
                  f"dataset).{stopped} Manifest: `{result.manifest.relative_to(self.studio.roots.outputs)}`")
        files = sorted(result.out_dir.glob("*.png"))[-BATCH_PREVIEW:]
        return [str(f) for f in files], status, live.notice(f"Batch **{where.name}**: {result.written} new images.")

    def batch_step(self, run: RunFolder, checkpoint: str | None) -> int | None:
        """The step of the picked checkpoint; None for the final LoRA."""
        choices = eval_view.checkpoint_choices(run)
        if checkpoint not in choices:
            raise ValueError(f"pick a checkpoint of {run.name}: {', '.join(choices) or 'none has a LoRA file yet'}")
        return None if checkpoint == FINAL else int(checkpoint)

    def stop_batch(self) -> str:
        self._stop_batch.set()
        return live.notice("Stopping the batch after the image being generated.")

    def send_batch_to_score(self, run_name: str, batch_name: str) -> tuple[Any, Any, Any]:
        """Pick this run and batch in the Score tab and go there."""
        from studio.eval.generate import list_batches

        run = self.studio.run(run_name)
        batches = list_batches(run)
        name = (batch_name or "").strip()
        if name not in batches:
            raise Refusal(f"Run {run.name} has no batch {name!r}: generate it first, or type an earlier batch's "
                          "name under Batch name.", field="name")
        return (gr.Dropdown(choices=eval_view.runs_with_batches(self.studio.roots.outputs), value=run.name),
                gr.Dropdown(choices=batches, value=name), gr.Tabs(selected=SCORE_TAB))


def external_md(external: list[dict[str, Any]]) -> str:
    """The generators added as columns of the next grid."""
    if not external:
        return "No other generator added."
    items = "".join(f"\n- **{e['label']}**: {len(e['files'])} files" for e in external)
    return f"Columns of the next grid:{items}"


def sampler_settings(inference_steps: float | None, guidance: float | None, width: float | None,
                     height: float | None, negative_prompt: str | None, lead: str = "") -> dict[str, Any]:
    """The Advanced fields as grid_spec / generate_batch keywords; an empty or non-number field is
    refused (with `lead`) and outlined."""
    def read(value: float | None, kind: type, what: str, field: str) -> Any:
        with refused_as(lead, field):
            return eval_view.number(value, kind, what)

    return dict(inference_steps=read(inference_steps, int, "Inference steps", "inference_steps"),
                guidance=read(guidance, float, "Guidance", "guidance"),
                size=(read(width, int, "Width", "width"), read(height, int, "Height", "height")),
                negative_prompt=negative_prompt or "")


def build(studio: Studio, tab: gr.Tab) -> None:
    handlers = CompareHandlers(studio)

    # 1. Components: the grid's settings (run and columns first); the result (gallery, slider, grid.png);
    #    the batch panel.
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360):
            run_pick = gr.Dropdown([], value=None, label="Run", allow_custom_value=True,  # filled on select
                                   info="Runs with a LoRA file (a checkpoint or the final one).")
            # the columns right under the run: high on the page, the checkpoint list opens downwards
            with gr.Row(equal_height=True):
                checkpoints = gr.Dropdown([], value=[], multiselect=True, label="Checkpoints", scale=3,
                                          elem_id="compare-checkpoints", info="A column per checkpoint × scale.")
                prompt_only = gr.Checkbox(True, label="Prompt only", scale=1, min_width=110,
                                          info="A column without the LoRA.")
            prompts = gr.Textbox(label="Prompts", lines=3, info="One per line; {trigger} is the run's trigger word.")
            baseline = gr.Textbox(label="Baseline prompts", lines=2, elem_id="compare-baseline",
                                  placeholder="e.g. storybook illustration of a folk hero in an orange patterned robe",
                                  info="Optional: what the prompt-only column renders instead, without the LoRA — one "
                                       "per prompt, or one for all (the long prompt you would write without a LoRA).")
            with gr.Row():
                seeds = gr.Textbox("1,2", label="Seeds", info="A row per prompt × seed.", min_width=100)
                scales = gr.Textbox("1", label="LoRA scales", info="e.g. 0.5,1", min_width=100)
            with gr.Accordion("Advanced", open=False):
                steps_range, guidance_range = field_bounds("sample.inference_steps"), field_bounds("sample.guidance_scale")
                size_low, size_high = field_bounds("data.resolution")
                with gr.Row():
                    inference_steps = gr.Number(25, label="Inference steps", precision=0, minimum=steps_range[0],
                                                maximum=steps_range[1])
                    guidance = gr.Number(7.0, label="Guidance", minimum=guidance_range[0], maximum=guidance_range[1])
                with gr.Row():
                    width = gr.Number(512, label="Width", precision=0, minimum=size_low, maximum=size_high, step=8)
                    height = gr.Number(512, label="Height", precision=0, minimum=size_low, maximum=size_high, step=8)
                negative = gr.Textbox(label="Negative prompt")
            with gr.Accordion("Add images from another generator", open=False):
                ext_label = gr.Textbox(label="Generator", placeholder="Freepik",
                                       info="The column's label in the grid and the scorecard.")
                ext_files = gr.File(label="Its images", file_count="multiple", type="filepath",
                                    file_types=["image", ".json"], elem_id="compare-external-files")
                gr.Markdown("One image per row (prompt × seed), matched in file-name order; or add a "
                            "`prompts.json` (`{\"file.png\": \"its prompt\"}`) to match them by prompt.",
                            elem_classes="notice")
                with gr.Row():
                    ext_add = gr.Button("Add column", min_width=100)
                    ext_clear = gr.Button("Remove all", min_width=100)
                ext_list = gr.Markdown(external_md([]), elem_id="compare-external")
            grid_name = gr.Textbox(label="Grid name", placeholder="grid-YYYYMMDD-HHMMSS",
                                   info="Optional: a new name; empty gives a dated one.")
            make = gr.Button("Make grid", variant="primary")
            with gr.Row(equal_height=True):
                grids = gr.Dropdown([], value=None, label="Earlier grids", allow_custom_value=True, scale=3,
                                    info="Grids of this run, newest first.")
                send = gr.Button("Send to Score", scale=1, min_width=120)
        with gr.Column(scale=5, min_width=480):
            summary = gr.Markdown(elem_id="grid-summary")
            gallery = gr.Gallery(label="Grid images", elem_id="grid-gallery", columns=2, height=360,
                                 object_fit="contain", allow_preview=True)
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    with gr.Row():
                        slider_row = gr.Dropdown([], label="Row", info="Prompt and seed.", min_width=160)
                        slider_col = gr.Dropdown([], label="Column", info="Against prompt only.", min_width=140)
                    slider = gr.ImageSlider(label="Before / after", type="filepath", elem_id="grid-slider",
                                            max_height=360, interactive=False)
                with gr.Column(scale=2):
                    grid_image = gr.Image(label="Labelled grid", type="filepath", interactive=False, height=300,
                                          buttons=["fullscreen"])
                    download = gr.DownloadButton("Download grid.png", visible=False)
    with gr.Accordion("Batch generation", open=False):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=360):
                batch_prompts = gr.Textbox(label="Batch prompts", lines=3, info="One per line, or upload a .txt.")
                batch_file = gr.File(label="Prompt list (.txt)", file_types=[".txt"], type="filepath")
                with gr.Row():
                    count = gr.Number(8, label="Images", precision=0, minimum=1)
                    batch_ckpt = gr.Dropdown([], label="Checkpoint", min_width=100)
                    batch_scale = gr.Number(1.0, label="Scale", minimum=0, step=0.1)
                    batch_seed = gr.Number(0, label="First seed", precision=0)
                batch_name = gr.Textbox("batch", label="Batch name",
                                        info="Into outputs/<run>/generated/<name>; the same name continues a batch. "
                                             "Sampler settings: the grid's Advanced ones.")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
                    score_batch = gr.Button("Score this batch", min_width=130)
            with gr.Column(scale=3, min_width=420):
                batch_status = gr.Markdown(elem_id="batch-status")
                batch_gallery = gr.Gallery(label="Latest batch images", columns=4, height=240, object_fit="contain")

    # 2. Events. The run list follows the studio's job; picking a run fills in its defaults.
    seen = gr.State({})
    external = gr.State([])
    shown = [summary, gallery, slider_row, slider_col, slider, grid_image, download]
    studio.job_key.change(handlers.follow_job, [run_pick, checkpoints, batch_ckpt, seen],
                          [run_pick, checkpoints, batch_ckpt, seen], api_name="follow_job_compare",
                          concurrency_limit=None, show_progress="hidden")
    # Selecting the tab lists the runs again and the picked run's checkpoints as they are on disk now.
    tab.select(handlers.list_runs, run_pick, run_pick, api_name="list_lora_runs").then(
        handlers.list_checkpoints, [run_pick, checkpoints, batch_ckpt], [checkpoints, batch_ckpt],
        api_visibility="private", show_progress="hidden")
    run_pick.change(handlers.pick_run, run_pick,
                    [prompts, checkpoints, inference_steps, guidance, width, height, negative, grids, batch_ckpt,
                     batch_prompts, *shown], api_name="pick_compare_run")
    # A refusal is one line in the notice area, with the field at fault outlined.
    advanced = dict(inference_steps=inference_steps, guidance=guidance, width=width, height=height)
    wire(make.click, handlers.make_grid, [run_pick, prompts, seeds, checkpoints, prompt_only, scales, inference_steps,
                                          guidance, width, height, negative, grid_name, baseline, external],
         [grids, *shown, studio.notice], studio.notice,
         fields=dict(prompts=prompts, seeds=seeds, scales=scales, grid_name=grid_name, checkpoints=checkpoints,
                     baseline=baseline, **advanced), api_name="make_grid")
    ext_add.click(inputs=[ext_label, ext_files, external],
                  **refusing(handlers.add_external, [external, ext_list, ext_files, ext_label], studio.notice),
                  api_name="add_external")
    ext_clear.click(handlers.clear_external, None, [external, ext_list], api_name="clear_external")
    grids.input(inputs=[run_pick, grids], **refusing(handlers.open_grid, shown, studio.notice), api_name="open_grid")
    gr.on([slider_row.input, slider_col.input], inputs=[run_pick, grids, slider_row, slider_col],
          **refusing(handlers.show_slider, slider, studio.notice), api_name="show_slider")
    wire(generate.click, handlers.generate_batch, [run_pick, batch_prompts, batch_file, count, batch_ckpt, batch_scale,
                                                   batch_seed, batch_name, inference_steps, guidance, width, height,
                                                   negative],
         [batch_gallery, batch_status, studio.notice], studio.notice,
         fields=dict(prompts=batch_prompts, prompts_file=batch_file, checkpoint=batch_ckpt, count=count,
                     scale=batch_scale, seed=batch_seed, name=batch_name, **advanced), api_name="generate_batch")
    stop.click(handlers.stop_batch, None, studio.notice, api_name="stop_batch", concurrency_limit=None)

    # Send to Score / Score this batch: pick the grid or batch in the Score tab, switch to it and show its
    # saved scores; wired once that tab is built.
    def send_to_score() -> None:
        score = studio.score
        wire(send.click, handlers.send_to_score, [run_pick, grids], [score.run, score.grid, studio.tabs], studio.notice,
             fields=dict(grids=grids), api_name="send_to_score").success(**score.show_grid.kwargs())
        wire(score_batch.click, handlers.send_batch_to_score, [run_pick, batch_name],
             [score.run, score.batch, studio.tabs], studio.notice, fields=dict(name=batch_name),
             api_name="send_batch_to_score").success(**score.show_batch.kwargs())

    studio.when_built(send_to_score)
