"""Score tab: CLIP-I, CLIP-T and DINO for a comparison grid, the scorecard and a recommended checkpoint.

Numbers are raw cosines with the backbone named in every header; a grid scored before shows its
scores.json at once, without recomputing. Backbones are chosen from a list (`tiny-random` ones are
labelled as random weights, and their scores carry a banner saying the numbers mean nothing); a
typed backbone path and a reference folder are confined to the models and datasets roots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from studio.engine.gpu_lock import AcceleratorBusy
from studio.eval.backbones import CLIP_CHOICES, CLIP_DEFAULT, DINO_CHOICES, DINO_DEFAULT, BackboneError
from studio.eval.grids import list_grids
from studio.eval.scoring import load_scores, score_grid
from studio.ui import eval_view, live

if TYPE_CHECKING:
    from studio.ui.app import Studio

TITLE, TAB_ID = "Score", "score"
TRAINING_IMAGES = "the run's training images"
NOT_SCORED = "Grid **{grid}** is not scored yet: choose the backbones and the references, then press **Score**."
NO_GRID = "Pick a run and one of its grids (make one in the **Compare** tab)."


class ScoreHandlers:
    """The Score tab's event handlers; they read grids and scores and call the scoring engine."""

    def __init__(self, studio: Studio):
        self.studio = studio

    # --- picking -----------------------------------------------------------------------------------
    def run_names(self) -> list[str]:
        return eval_view.runs_with_grids(self.studio.roots.outputs)

    def reference_choices(self) -> list[str]:
        return [TRAINING_IMAGES, *self.studio.roots.dataset_folders()]

    def list_runs(self, run: str | None, grid: str | None) -> tuple[Any, Any, Any]:
        """Runs that have grids and the picked run's grids (keeping both picks while they exist), and
        the reference folders."""
        names = self.run_names()
        run = run if run in names else (names[0] if names else None)
        grids = list_grids(self.studio.run(run)) if run else []
        grid = grid if grid in grids else (grids[0] if grids else None)
        return (gr.Dropdown(choices=names, value=run), gr.Dropdown(choices=grids, value=grid),
                gr.Dropdown(choices=self.reference_choices()))

    def list_grids(self, run: str | None) -> Any:
        """The run's grids, newest first (the newest picked)."""
        grids = list_grids(self.studio.run(run)) if run else []
        return gr.Dropdown(choices=grids, value=grids[0] if grids else None)

    # --- showing -----------------------------------------------------------------------------------
    def show_scores(self, run: str | None, grid: str | None, fidelity: str) -> tuple[Any, ...]:
        """The grid's scores.json as the scorecard, without recomputing; a prompt to score when it has none."""
        if not run or not grid:
            return self._scorecard(None, fidelity, NO_GRID)
        try:
            scores = load_scores(self.studio.run(run), grid)
        except ValueError as err:
            raise gr.Error(str(err), title="Cannot read the scores") from None
        return self._scorecard(scores, fidelity, NOT_SCORED.format(grid=grid))

    def _scorecard(self, scores: dict[str, Any] | None, fidelity: str, empty_note: str) -> tuple[Any, ...]:
        x_title, y_title = eval_view.chart_titles(scores, fidelity)
        return (
            gr.HTML(eval_view.random_banner(scores), visible=bool(scores and eval_view.random_weights(scores))),
            eval_view.scores_summary(scores) if scores else empty_note,
            eval_view.columns_table(scores),
            gr.ScatterPlot(eval_view.chart_frame(scores, fidelity), x_title=x_title, y_title=y_title),
            eval_view.recommendation_md(scores) if scores else "",
            eval_view.images_table(scores),
        )

    # --- scoring -----------------------------------------------------------------------------------
    def score(self, run: str, grid: str, clip: str, dino: str, refs: str, fidelity: str,
              progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Score every image of the grid (writes scores.json) and show the scorecard."""
        folder = self.studio.run(run)
        if not grid:
            raise gr.Error(f"pick a grid of {folder.name} first (make one in the Compare tab)", title="No grid picked")
        try:
            clip_name, dino_name = self.clip_backbone(clip), self.dino_backbone(dino)
            references = None if not refs or refs == TRAINING_IMAGES else self.studio.roots.dataset(refs)
            scores = score_grid(folder, grid, refs=references, clip=clip_name, dino=dino_name,
                                progress=lambda done, total: progress((done, total), desc="Scoring images",
                                                                      unit="images"))
        except AcceleratorBusy as err:
            gr.Warning(str(err))
            return (*[gr.skip()] * 6, live.notice(f"⚠️ {err}"))
        except BackboneError as err:
            raise gr.Error(str(err), title="Cannot load the backbone") from None
        except (ValueError, FileNotFoundError) as err:
            raise gr.Error(str(err), title="Cannot score") from None
        rec = scores.get("recommendation")
        tail = f"; recommended: {rec['label']}" if rec else ""
        return (*self._scorecard(scores, fidelity, ""), live.notice(f"Scored grid **{grid}** of **{folder.name}**{tail}."))

    def clip_backbone(self, text: str) -> str:
        """A listed CLIP backbone as is; `MODEL/TAG` with an open_clip pretrained tag; a weights file or
        `local-dir:` folder only inside the models root; `hf-hub:ORG/REPO` as a Hub id."""
        value = (text or "").strip() or CLIP_DEFAULT
        if value in CLIP_CHOICES or value.startswith("hf-hub:"):
            return value
        if value.startswith("local-dir:"):
            return "local-dir:" + self.studio.roots.model(value.removeprefix("local-dir:"), "CLIP backbone", hub=False)
        model, sep, weights = value.partition("/")
        if not sep:
            raise ValueError(f"CLIP backbone {value!r}: give MODEL/TAG (e.g. {CLIP_DEFAULT}), MODEL/FILE with a "
                             f"weights file in {self.studio.roots.models}, or one of {', '.join(CLIP_CHOICES)}")
        import open_clip  # only for a typed backbone: importing it takes seconds

        if weights in open_clip.list_pretrained_tags_by_model(model):
            return value
        return f"{model}/{self.studio.roots.model(weights, 'CLIP backbone weights', hub=False)}"

    def dino_backbone(self, text: str) -> str:
        """A listed DINO backbone as is; anything else is a weights file or folder inside the models root."""
        value = (text or "").strip() or DINO_DEFAULT
        if value in DINO_CHOICES:
            return value
        return self.studio.roots.model(value, "DINO backbone", hub=False)


def build(studio: Studio, tab: gr.Tab) -> None:
    handlers = ScoreHandlers(studio)

    # 1. Components: what to score and with what; then the scorecard.
    with gr.Row(equal_height=True):
        run = gr.Dropdown([], value=None, label="Run", allow_custom_value=True, scale=2,
                          info="Runs with a comparison grid.")
        grid = gr.Dropdown([], value=None, label="Grid", allow_custom_value=True, scale=2,
                           info="Grids of the run, newest first.")
        refs = gr.Dropdown(handlers.reference_choices(), value=TRAINING_IMAGES, label="References",
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
                                   tooltip="all", height=320)
            fidelity = gr.Radio(list(eval_view.FIDELITY), value="DINO", label="Fidelity axis",
                                info="Up is closer to the references; right follows the prompt better.")
        with gr.Column(scale=2, min_width=320):
            recommendation = gr.Markdown(elem_id="score-recommendation")
            gr.Markdown(eval_view.dreambooth_reference_md(), elem_classes="notice")
    with gr.Accordion("Scores per image", open=False):
        images = gr.Dataframe(eval_view.images_table(None), label="Scores per image", interactive=False, wrap=True)

    # 2. Events: the tab lists runs and grids and shows a grid's saved scores; Score recomputes.
    shown = [banner, summary, table, chart, recommendation, images]
    show = dict(fn=handlers.show_scores, inputs=[run, grid, fidelity], outputs=shown)
    gr.on([grid.input, fidelity.input], **show, api_name="show_scores")
    tab.select(handlers.list_runs, [run, grid], [run, grid, refs], api_name="list_scored_runs").then(
        **show, api_name="show_scores_of_tab", api_visibility="private")
    run.input(handlers.list_grids, run, grid, api_name="list_grids").then(
        **show, api_name="show_scores_of_run", api_visibility="private")
    score.click(handlers.score, [run, grid, clip, dino, refs, fidelity], [*shown, studio.notice],
                api_name="score_grid")

    # What the Compare tab's "Send to Score" fills in, and how it then shows the grid.
    studio.parts["score.run"], studio.parts["score.grid"] = run, grid
    studio.parts["score.show"] = dict(show, api_name="show_scores_of_sent_grid", api_visibility="private")
