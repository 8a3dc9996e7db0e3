"""Score tab: a comparison grid's CLIP-I, CLIP-T, DINO and consistency, the scorecard and a recommended
checkpoint; and a batch (synthetic set) scored as a distribution: CLIP-T, CLIP-I / DINO, consistency,
diversity, FID / KID and CMMD, each with its sample sizes and caveat.

Numbers are raw cosines with the backbone named in every header; a grid or batch scored before shows
its scores.json at once, without recomputing. Backbones are chosen from a list (`tiny-random` ones are
labelled as random weights, and their scores carry a banner saying the numbers mean nothing); a
typed backbone path and a reference folder are confined to the models and datasets roots.
"""

from __future__ import annotations

import contextlib
import functools
import re
from typing import TYPE_CHECKING, Any

import gradio as gr

from studio.core.lock import AcceleratorBusy
from studio.engine.runs import list_runs
from studio.eval.backbones import (CLIP_DEFAULT, CLIP_OFFLINE_HELP, DINO_DEFAULT, DINO_OFFLINE_HELP, BackboneError,
                                   default_backbones)
from studio.eval.batch_scores import load_batch_scores, score_batch
from studio.eval.generate import batch_folder, list_batches
from studio.eval.grids import list_grids
from studio.eval.inception import INCEPTION_DEFAULT
from studio.eval.scoring import load_scores, score_grid
from studio.ui import eval_view, live
from studio.ui.context import SCORE_TAB, ScoreLink, Step
from studio.ui.notices import Refusal, refusal_from, refused_as, refusing, wire

if TYPE_CHECKING:
    from studio.ui.context import Studio

TITLE, TAB_ID = "Score", SCORE_TAB
TRAINING_IMAGES = "the run's training images"
NOT_SCORED = "Grid **{grid}** is not scored yet: choose the backbones and the references, then press **Score**."
NO_GRID = "Pick a run and one of its grids (make one in the **Compare** tab)."
BATCH_NOT_SCORED = ("Batch **{batch}** is not scored yet: choose the backbones above and the Inception backbone, then "
                    "press **Score batch**.")
NO_BATCH = "Pick a batch of the run (generate one in the **Compare** tab's Batch generation)."


@contextlib.contextmanager
def scoring_refusals(lead: str):
    """What scoring raises, as the user reads it: a busy accelerator, an unloadable backbone, a missing or
    broken grid, batch or reference folder (led by `lead`) as a refusal in the notice."""
    try:
        yield
    except AcceleratorBusy as err:
        raise Refusal(str(err)) from None
    except BackboneError as err:
        raise backbone_refusal(err) from None
    except (ValueError, FileNotFoundError) as err:
        raise refusal_from(lead, err) from None


class ScoreHandlers:
    """The Score tab's event handlers; they read grids, batches and scores and call the scoring engine."""

    def __init__(self, studio: Studio):
        self.studio = studio

    # --- picking -----------------------------------------------------------------------------------
    def run_names(self) -> list[str]:
        """Runs with a grid or a batch to score, newest first."""
        outputs = self.studio.roots.outputs
        scorable = set(eval_view.runs_with_grids(outputs)) | set(eval_view.runs_with_batches(outputs))
        return [run.name for run in list_runs(outputs) if run.name in scorable]

    def reference_choices(self) -> list[str]:
        return [TRAINING_IMAGES, *self.studio.roots.dataset_folders()]

    def list_runs(self, run: str | None, grid: str | None, batch: str | None = None) -> tuple[Any, ...]:
        """Runs that have grids or batches and the picked run's grids and batches (keeping the picks while
        they exist), the reference folders, and the backbones for the run when the pick changed."""
        names = self.run_names()
        picked = run if run in names else (names[0] if names else None)
        grids = list_grids(self.studio.run(picked)) if picked else []
        batches = list_batches(self.studio.run(picked)) if picked else []
        grid = grid if grid in grids else (grids[0] if grids else None)
        batch = batch if batch in batches else (batches[0] if batches else None)
        backbones = self.backbones_for(picked) if picked != run else (gr.skip(), gr.skip())
        return (gr.Dropdown(choices=names, value=picked), gr.Dropdown(choices=grids, value=grid),
                gr.Dropdown(choices=batches, value=batch), gr.Dropdown(choices=self.reference_choices()), *backbones)

    def list_grids(self, run: str | None) -> tuple[Any, ...]:
        """The run's grids and batches, newest first (the newest picked), and the backbones for the run."""
        folder = self.studio.run(run) if run else None
        grids = list_grids(folder) if folder else []
        batches = list_batches(folder) if folder else []
        return (gr.Dropdown(choices=grids, value=grids[0] if grids else None),
                gr.Dropdown(choices=batches, value=batches[0] if batches else None), *self.backbones_for(run))

    def backbones_for(self, run: str | None) -> tuple[Any, Any]:
        """The CLIP and DINO backbones the run is scored with by default (toy-clip for toy-sd15 runs)."""
        if not run:
            return gr.skip(), gr.skip()
        clip, dino = default_backbones(self.studio.run(run).config().model.base)
        return gr.Dropdown(value=clip), gr.Dropdown(value=dino)

    def show_sent(self, run: str | None, grid: str | None, fidelity: str) -> tuple[Any, ...]:
        """A grid sent from the Compare tab: its scores and the run's default backbones."""
        return (*self.show_scores(run, grid, fidelity), *self.backbones_for(run))

    def show_sent_batch(self, run: str | None, batch: str | None) -> tuple[Any, ...]:
        """A batch sent from the Compare tab: its scores and the run's default backbones."""
        return (*self.show_batch(run, batch), *self.backbones_for(run))

    # --- showing -----------------------------------------------------------------------------------
    def show_scores(self, run: str | None, grid: str | None, fidelity: str) -> tuple[Any, ...]:
        """The grid's scores.json as the scorecard, without recomputing; a prompt to score when it has none."""
        if not run or not grid:
            return self._scorecard(None, fidelity, NO_GRID)
        with refused_as("Cannot read the scores", "grid", errors=(ValueError,)):
            scores = load_scores(self.studio.run(run), grid)
        return self._scorecard(scores, fidelity, NOT_SCORED.format(grid=grid))

    def _scorecard(self, scores: dict[str, Any] | None, fidelity: str, empty_note: str) -> tuple[Any, ...]:
        x_title, y_title = eval_view.chart_titles(scores, fidelity)
        frame = eval_view.chart_frame(scores, fidelity)
        colors = eval_view.chart_colors(scores, frame)
        return (
            gr.HTML(eval_view.random_banner(scores), visible=bool(scores and eval_view.random_weights(scores))),
            eval_view.scores_summary(scores, self._base_model(scores)) if scores else empty_note,
            eval_view.columns_table(scores),
            gr.ScatterPlot(frame, x_title=x_title, y_title=y_title, color_map=colors or None, colors_in_legend=[],
                           **eval_view.chart_limits(frame)),
            live.legend_html(colors, "Columns", marker="dot"),
            eval_view.recommendation_md(scores) if scores else "",
            eval_view.images_table(scores),
        )

    def show_batch(self, run: str | None, batch: str | None) -> tuple[Any, Any]:
        """The batch's scores.json as its metrics table, without recomputing."""
        if not run or not batch:
            return NO_BATCH, eval_view.batch_table(None)
        with refused_as("Cannot read the scores", "batch"):
            scores = load_batch_scores(batch_folder(self.studio.run(run), batch))
        if scores is None:
            return BATCH_NOT_SCORED.format(batch=batch), eval_view.batch_table(None)
        return self._batch_summary(scores), eval_view.batch_table(scores)

    def _batch_summary(self, scores: dict[str, Any]) -> str:
        banner = ""
        if eval_view.random_weights(scores):
            banner = f"**⚠ {eval_view.RANDOM_BANNER}** (a tiny-random backbone). "
        return banner + eval_view.batch_summary(scores, self._base_model(scores))

    def _base_model(self, scores: dict[str, Any]) -> str | None:
        return live.run_base_model(self.studio.run(scores["run"]))

    # --- scoring -----------------------------------------------------------------------------------
    def _references(self, refs: str) -> str | None:
        return None if not refs or refs == TRAINING_IMAGES else self.studio.roots.dataset(refs)

    def score(self, run: str, grid: str, clip: str, dino: str, refs: str, fidelity: str,
              progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Score every image of the grid (writes scores.json) and show the scorecard."""
        folder = self.studio.run(run)
        if not grid:
            raise Refusal(f"Pick a grid of {folder.name} first (make one in the Compare tab).", field="grid")
        with scoring_refusals("Cannot score"):
            roots = self.studio.roots
            clip_name, dino_name = eval_view.clip_backbone(roots, clip), eval_view.dino_backbone(roots, dino)
            scores = score_grid(folder, grid, refs=self._references(refs), clip=clip_name, dino=dino_name,
                                progress=lambda done, total: progress((done, total), desc="Scoring images",
                                                                      unit="images"))
        rec = scores.get("recommendation")
        tail = f"; recommended: {rec['label']}" if rec else ""
        return (*self._scorecard(scores, fidelity, ""), live.notice(f"Scored grid **{grid}** of **{folder.name}**{tail}."))

    def score_batch(self, run: str, batch: str, clip: str, dino: str, inception: str, refs: str,
                    progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str]:
        """Score the batch as a distribution (writes scores.json in its folder) and show its metrics."""
        folder = self.studio.run(run)
        if not batch:
            raise Refusal(f"Pick a batch of {folder.name} first (generate one in the Compare tab's Batch generation).",
                          field="batch")
        with scoring_refusals("Cannot score the batch"):
            roots = self.studio.roots
            scores = score_batch(folder, batch_folder(folder, batch), refs=self._references(refs),
                                 clip=eval_view.clip_backbone(roots, clip), dino=eval_view.dino_backbone(roots, dino),
                                 inception=eval_view.inception_backbone(roots, inception),
                                 progress=lambda done, total: progress((done, total), desc="Scoring the batch",
                                                                       unit="images"))
        missing = [k for k in ("dino", "fid", "kid") if scores.get(k) is None]
        tail = f"; no {', '.join(missing)} (see the table)" if missing else ""
        return (self._batch_summary(scores), eval_view.batch_table(scores),
                live.notice(f"Scored batch **{batch}** of **{folder.name}**{tail}."))


def backbone_refusal(err: BackboneError) -> Refusal:
    """A scoring model that cannot be loaded, in the tab's words: which box to change and how; the
    library's own error (without the command-line help) goes in the details."""
    message = str(err)
    kind = next((k for k in ("DINO", "Inception", "CLIP") if f"{k} backbone" in message), "CLIP")
    named = re.search(r"backbone '([^']+)'", message)
    which = f"the {kind} backbone `{named.group(1)}`" if named else f"the {kind} backbone"
    line = (f"Cannot load {which}: pick another in the {kind} backbone box, or put its weights in the models "
            "folder and pick that file (nothing downloads offline).")
    cause = err.__cause__
    details = f"{type(cause).__name__}: {cause}" if cause is not None else message
    for cli_help in (CLIP_OFFLINE_HELP, DINO_OFFLINE_HELP):
        details = details.replace(cli_help, "").strip()
    return Refusal(line, details, field=kind.lower())


def build(studio: Studio, tab: gr.Tab) -> None:
    handlers = ScoreHandlers(studio)

    # 1. Components: what to score and with what; then the scorecard; then a batch.
    with gr.Row(equal_height=True):
        run = gr.Dropdown([], value=None, label="Run", allow_custom_value=True, scale=2,
                          info="Runs with a comparison grid or a batch.")
        grid = gr.Dropdown([], value=None, label="Grid", allow_custom_value=True, scale=2,
                           info="Grids of the run, newest first.")
        refs = gr.Dropdown([TRAINING_IMAGES], value=TRAINING_IMAGES, label="References",  # folders: on select
                           allow_custom_value=True, scale=2,
                           info="Images CLIP-I and DINO compare against: the run's own, or a folder in datasets.")
    with gr.Row(equal_height=True):
        clip = gr.Dropdown(eval_view.CLIP_OPTIONS, value=CLIP_DEFAULT, label="CLIP backbone", allow_custom_value=True,
                           scale=3, info="For CLIP-I and CLIP-T. Or MODEL/FILE with weights in the models folder.")
        dino = gr.Dropdown(eval_view.DINO_OPTIONS, value=DINO_DEFAULT, label="DINO backbone", allow_custom_value=True,
                           scale=3, info="For DINO. Or a weights file in the models folder.")
        score = gr.Button("Score", variant="primary", scale=1, min_width=120)
    banner = gr.HTML(visible=False, elem_id="score-banner", padding=False)
    summary = gr.Markdown(NO_GRID, elem_id="score-summary")
    table = gr.Dataframe(eval_view.columns_table(None), label="Scores per column", interactive=False,
                         elem_id="score-table", wrap=True)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            chart = gr.ScatterPlot(None, x=eval_view.CHART_X, y=eval_view.CHART_Y, color=eval_view.CHART_COLOR,
                                   label="Fidelity against prompt adherence", elem_id="score-chart",
                                   tooltip="all", height=320, colors_in_legend=[], **eval_view.chart_limits(None))
            legend = gr.HTML(elem_id="score-legend", padding=False)
            fidelity = gr.Radio(list(eval_view.FIDELITY), value="DINO", label="Fidelity axis",
                                info="Up is closer to the references; right follows the prompt better.")
        with gr.Column(scale=2, min_width=320):
            recommendation = gr.Markdown(elem_id="score-recommendation")
            gr.Markdown(eval_view.dreambooth_reference_md(), elem_classes="notice")
    with gr.Accordion("Scores per image", open=False):
        images = gr.Dataframe(eval_view.images_table(None), label="Scores per image", interactive=False, wrap=True)
    with gr.Accordion("Batch (synthetic set)", open=True):
        with gr.Row(equal_height=True):
            batch = gr.Dropdown([], value=None, label="Batch", allow_custom_value=True, scale=2,
                                info="Batches of the run (outputs/<run>/generated/), newest first.")
            inception = gr.Dropdown(eval_view.INCEPTION_OPTIONS, value=INCEPTION_DEFAULT, label="Inception backbone",
                                    allow_custom_value=True, scale=3,
                                    info="For FID and KID. Or the pt_inception weights file in the models folder.")
            score_batch = gr.Button("Score batch", variant="primary", scale=1, min_width=120)
        batch_summary = gr.Markdown(NO_BATCH, elem_id="batch-score-summary")
        batch_table = gr.Dataframe(eval_view.batch_table(None), label="Batch metrics", interactive=False,
                                   elem_id="batch-score-table", wrap=True)

    # 2. Events: the tab lists runs, grids and batches and shows their saved scores; Score recomputes.
    # A refusal (a broken scores.json, no grid, a backbone that cannot load, a busy accelerator) is one
    # line in the notice area, with the field at fault outlined.
    shown = [banner, summary, table, chart, legend, recommendation, images]
    show = dict(inputs=[run, grid, fidelity], **refusing(handlers.show_scores, shown, studio.notice))
    show_batch = dict(inputs=[run, batch], **refusing(handlers.show_batch, [batch_summary, batch_table], studio.notice))
    wire(functools.partial(gr.on, [grid.input, fidelity.input]), handlers.show_scores, [run, grid, fidelity], shown,
         studio.notice, fields=dict(grid=grid), api_name="show_scores")
    wire(batch.input, handlers.show_batch, [run, batch], [batch_summary, batch_table], studio.notice,
         fields=dict(batch=batch), api_name="show_batch_scores")
    listed = tab.select(handlers.list_runs, [run, grid, batch], [run, grid, batch, refs, clip, dino],
                        api_name="list_scored_runs")
    listed.then(**show, api_name="show_scores_of_tab", api_visibility="private")
    listed.then(**show_batch, api_name="show_batch_scores_of_tab", api_visibility="private")
    picked = run.input(handlers.list_grids, run, [grid, batch, clip, dino], api_name="list_grids")
    picked.then(**show, api_name="show_scores_of_run", api_visibility="private")
    picked.then(**show_batch, api_name="show_batch_scores_of_run", api_visibility="private")
    wire(score.click, handlers.score, [run, grid, clip, dino, refs, fidelity], [*shown, studio.notice], studio.notice,
         fields=dict(grid=grid, clip=clip, dino=dino), api_name="score_grid")
    wire(score_batch.click, handlers.score_batch, [run, batch, clip, dino, inception, refs],
         [batch_summary, batch_table, studio.notice], studio.notice,
         fields=dict(batch=batch, clip=clip, dino=dino, inception=inception), api_name="score_batch")

    # What the Compare tab's "Send to Score" and "Score this batch" fill in, and how it then shows them.
    sent_grid = refusing(handlers.show_sent, [*shown, clip, dino], studio.notice)
    sent_batch = refusing(handlers.show_sent_batch, [batch_summary, batch_table, clip, dino], studio.notice)
    studio.score = ScoreLink(
        run=run, grid=grid, batch=batch,
        show_grid=Step(sent_grid["fn"], [run, grid, fidelity], sent_grid["outputs"],
                       api_name="show_scores_of_sent_grid"),
        show_batch=Step(sent_batch["fn"], [run, batch], sent_batch["outputs"], api_name="show_scores_of_sent_batch"))
