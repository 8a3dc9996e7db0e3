"""Compare and Score tab handlers without a server, on a real tiny run: make a prompt-only-vs-LoRA
grid, see its captioned images and the before/after pair, score it with the tiny random backbones,
read the scorecard, send a grid to Score, generate a resumable batch, and the refusals (accelerator
busy, bad fields, paths outside the roots, a backbone that cannot load offline)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import gradio as gr
import pytest

from conftest import train_tiny_run
from studio.core.lock import ACCELERATOR
from studio.engine.runner import Runner, Snapshot
from studio.eval.backbones import TINY_RANDOM
from studio.eval.parsing import prompt_lines
from studio.ui import eval_view
from studio.ui.app import Settings, Studio, build_app
from studio.ui.compare_tab import CompareHandlers
from studio.ui.notices import Refusal
from studio.ui.score_tab import NOT_SCORED, TRAINING_IMAGES, ScoreHandlers
from studio.ui.security import PathNotAllowed, Roots

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

RUN = "tiny-run"
PROMPT = "a photo of {trigger} toy robot"
# Small settings: 2 inference steps at 64 px keep a 4-image grid well under a second on a CPU.
GRID = dict(prompts=PROMPT, seeds="1,2", checkpoints=["final"], prompt_only=True, scales="1", inference_steps=2,
            guidance=7.5, width=64, height=64, negative_prompt="")
SAMPLER = (2, 7.5, 64, 64, "")
"""Inference steps, guidance, width, height, negative prompt: the Advanced fields."""
SHOWN = ["summary", "gallery", "row", "column", "slider", "grid_image", "download"]
SCORECARD = ["banner", "summary", "table", "chart", "legend", "recommendation", "images"]


class Progress:
    """Stands in for gr.Progress: records calls, and can run something after the first one."""

    def __init__(self, after_first=None):
        self.calls, self.after_first = [], after_first

    def __call__(self, value, desc=None, unit="steps", **_):
        self.calls.append(value)
        if self.after_first and value[0] >= 1:
            self.after_first()


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Studio:
    base = tmp_path_factory.mktemp("compare")
    roots = Roots.create(base / "datasets", base / "models", base / "outputs")
    train_tiny_run(roots.outputs, RUN)
    return Studio(runner=Runner(roots.outputs, roots.models), roots=roots)


@pytest.fixture(scope="module")
def compare(studio) -> CompareHandlers:
    return CompareHandlers(studio)


@pytest.fixture(scope="module")
def score(studio) -> ScoreHandlers:
    return ScoreHandlers(studio)


@pytest.fixture(scope="module")
def grid(compare) -> dict:
    """A 1 prompt × 2 seeds × (prompt only, final ×1) grid made through the handler."""
    progress = Progress()
    out = compare.make_grid(RUN, **GRID, grid_name="first", progress=progress)
    grids, *shown, notice = out
    assert progress.calls[-1] == (4, 4)
    return {"grids": grids, "notice": notice, **dict(zip(SHOWN, shown))}


def arg(update, name):
    return update.constructor_args[name]


# --- Compare -------------------------------------------------------------------------------------

def test_the_compare_tab_follows_the_job_without_clearing_the_picks_of_a_page_that_just_opened(studio):
    class Job:
        snap = Snapshot(status="finished", run=RUN, checkpoints=(4, 8))

        def snapshot(self):
            return self.snap

    job = Job()
    compare = CompareHandlers(Studio(runner=job, roots=studio.roots))
    skip = type(gr.skip())
    # a page that just opened: its picks, read before picking the run filled them in, are not sent back
    runs, checkpoints, batch, seen = compare.follow_job(RUN, [], None, {})
    assert arg(runs, "value") == RUN and "value" not in checkpoints.constructor_args
    assert "value" not in batch.constructor_args
    assert all(isinstance(v, skip) for v in compare.follow_job(RUN, ["final"], "final", seen)[:3])
    # the job saves a checkpoint: the picked run's checkpoints are listed again, the picks kept
    job.snap = dataclasses.replace(job.snap, checkpoints=(4, 8, 12))
    runs, checkpoints, batch, seen = compare.follow_job(RUN, ["4", "final"], "final", seen)
    assert arg(checkpoints, "choices") == ["4", "8", "final"] and "value" not in checkpoints.constructor_args


def test_the_run_picker_lists_runs_with_a_lora_and_fills_in_their_defaults(compare, studio):
    (studio.roots.outputs / "no-lora").mkdir()
    (studio.roots.outputs / "no-lora" / "config.yaml").write_text((studio.roots.outputs / RUN / "config.yaml")
                                                                  .read_text())
    assert compare.run_names() == [RUN]
    assert arg(compare.list_runs(None), "value") == RUN
    prompts, checkpoints, steps, guidance, width, height, negative, grids, batch_ckpt, batch_prompts, *shown = \
        compare.pick_run(RUN)
    config = studio.roots.run(RUN).config()
    assert prompts == "\n".join(config.sample.prompts) and "{trigger}" in prompts
    assert arg(checkpoints, "choices") == ["4", "8", "final"] and arg(checkpoints, "value") == ["final"]
    assert (steps, guidance, width, height) == (config.sample.inference_steps, config.sample.guidance_scale, 64, 64)
    assert arg(batch_ckpt, "value") == "final" and batch_prompts == prompts
    assert shown[0] == ""  # nothing shown until a grid is made or reopened


def test_make_grid_shows_four_captioned_images_a_slider_and_the_labelled_grid(grid, studio):
    items = arg(grid["gallery"], "value")
    assert len(items) == 4 and arg(grid["gallery"], "columns") == 2
    captions = [c for _, c in items]
    assert captions == ["prompt only · seed 1 · a photo of ohwx toy robot",  # column first: a cut caption
                        "final · ×1 · seed 1 · a photo of ohwx toy robot",   # still names the column
                        "prompt only · seed 2 · a photo of ohwx toy robot",
                        "final · ×1 · seed 2 · a photo of ohwx toy robot"]
    folder = studio.roots.outputs / RUN / "grids" / "first"
    assert all(path.startswith(str(folder)) and (folder / path.rsplit("/", 1)[1]).is_file() for path, _ in items)
    assert arg(grid["grids"], "value") == "first" and "first" in arg(grid["grids"], "choices")
    assert "2 rows (prompt × seed) × 2 columns, 4 images" in grid["summary"]
    left, right = arg(grid["slider"], "value")
    assert left == items[0][0] and right == items[1][0]
    assert arg(grid["slider"], "label") == "prompt only ⟷ final · ×1"
    assert grid["grid_image"] == str(folder / "grid.png") and (folder / "grid.png").is_file()
    assert arg(grid["download"], "value") == str(folder / "grid.png") and arg(grid["download"], "visible")
    assert "Made grid **first**" in grid["notice"]


def test_the_slider_switches_rows_and_an_earlier_grid_reopens(grid, compare):
    items = arg(grid["gallery"], "value")
    slider = compare.show_slider(RUN, "first", 1, 1)
    assert arg(slider, "value") == (items[2][0], items[3][0])
    reopened = compare.open_grid(RUN, "first")
    assert [c for _, c in arg(reopened[1], "value")] == [c for _, c in items]
    with pytest.raises(gr.Error, match="no grid|not found|No grid|nope"):
        compare.open_grid(RUN, "nope")


def test_the_pipeline_stays_loaded_between_grids(grid, compare, studio):
    cache = studio.eval_models.pipelines()
    assert cache.loaded
    out = compare.make_grid(RUN, **GRID | {"checkpoints": ["4", "final"], "scales": "0.5,1", "seeds": "3"},
                            grid_name="second", progress=Progress())
    assert studio.eval_models.pipelines() is cache and cache.loaded
    columns = [label for label, _ in arg(out[4], "choices")]
    assert columns == ["step 4 · ×0.5", "step 4 · ×1", "final · ×0.5", "final · ×1"]
    assert len(arg(out[2], "value")) == 5


@pytest.mark.parametrize("field, value, message", [
    ("seeds", "1,x", "seeds"), ("scales", "", "LoRA scales"), ("prompts", "  \n# comment", "Prompts is empty"),
    ("checkpoints", ["12"], "12"),
])
def test_bad_fields_are_refused_with_the_field_named(compare, field, value, message):
    with pytest.raises(gr.Error, match=message):
        compare.make_grid(RUN, **GRID | {field: value}, grid_name="", progress=Progress())


def test_a_grid_needs_a_column_and_a_run_inside_outputs(compare):
    with pytest.raises(gr.Error, match="no columns"):
        compare.make_grid(RUN, **GRID | {"checkpoints": [], "prompt_only": False}, grid_name="", progress=Progress())
    with pytest.raises(gr.Error, match="letters, digits"):
        compare.make_grid("../outputs", **GRID, grid_name="", progress=Progress())


def test_typed_prompts_are_never_read_as_a_file():
    assert prompt_lines("/etc/passwd") == ["/etc/passwd"]
    assert prompt_lines("a {trigger}\n\n# note\n b ") == ["a {trigger}", "b"]


def test_while_training_holds_the_accelerator_make_grid_is_refused_and_writes_nothing(compare, studio, grid, recwarn):
    before = sorted(p.name for p in (studio.roots.outputs / RUN / "grids").iterdir())
    with ACCELERATOR.hold("training tiny-run"), pytest.raises(Refusal, match="busy with training tiny-run"):
        compare.make_grid(RUN, **GRID, grid_name="busy", progress=Progress())
    assert not [w for w in recwarn if "busy" in str(w.message)], "a notice, not a toast"
    assert sorted(p.name for p in (studio.roots.outputs / RUN / "grids").iterdir()) == before


def test_send_to_score_picks_the_run_and_grid_and_selects_the_score_tab(compare, grid):
    run, grid_pick, tabs = compare.send_to_score(RUN, "first")
    assert arg(run, "value") == RUN and RUN in arg(run, "choices")
    assert arg(grid_pick, "value") == "first" and "first" in arg(grid_pick, "choices")
    assert arg(tabs, "selected") == "score"
    with pytest.raises(gr.Error, match="Make a grid"):
        compare.send_to_score(RUN, None)


# --- batches -------------------------------------------------------------------------------------

def test_a_batch_is_written_stops_on_request_and_resumes_where_it_stopped(compare, studio):
    folder = studio.roots.outputs / RUN / "generated" / "b1"
    prompts = "a {trigger}\nb {trigger}"
    gallery, status, _ = compare.generate_batch(RUN, prompts, None, 4, "final", 1.0, 0, "b1", *SAMPLER,
                                                progress=Progress(after_first=compare.stop_batch))
    written = sorted(folder.glob("*.png"))
    assert 1 <= len(written) < 4 and "Stopped early" in status
    with pytest.raises(gr.Error, match="other settings"):
        compare.generate_batch(RUN, prompts, None, 4, "4", 1.0, 0, "b1", *SAMPLER, progress=Progress())
    gallery, status, notice = compare.generate_batch(RUN, prompts, None, 4, "final", 1.0, 0, "b1", *SAMPLER,
                                                     progress=Progress())
    assert f"skipped {len(written)} already written" in status and "(4 of 4)" in status
    assert [Path(f).name for f in gallery] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert "Manifest: `tiny-run/generated/b1/manifest.json`" in status and (folder / "manifest.json").is_file()


def test_a_batch_reads_an_uploaded_prompt_list(compare, tmp_path):
    upload = tmp_path / "prompts.txt"
    upload.write_text("one {trigger}\n\ntwo\n", encoding="utf-8")
    gallery, status, _ = compare.generate_batch(RUN, "", str(upload), 2, "8", 0.5, 5, "from-file", *SAMPLER,
                                                progress=Progress())
    assert "Wrote 2 images, skipped 0" in status and len(gallery) == 2
    with pytest.raises(gr.Error, match="pick a checkpoint"):
        compare.generate_batch(RUN, "x", None, 1, "99", 1.0, 0, "bad", *SAMPLER, progress=Progress())
    with pytest.raises(gr.Error, match="Images is empty"):
        compare.generate_batch(RUN, "x", None, None, "8", 1.0, 0, "bad", *SAMPLER, progress=Progress())


# --- Score ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored(score, grid) -> dict:
    progress = Progress()
    *card, notice = score.score(RUN, "first", TINY_RANDOM, TINY_RANDOM, TRAINING_IMAGES, "DINO", progress=progress)
    assert progress.calls and progress.calls[-1][0] == progress.calls[-1][1]
    return {"notice": notice, **dict(zip(SCORECARD, card))}


def test_score_shows_numbers_with_the_backbones_named_and_the_baseline_marked(scored):
    table = scored["table"]
    assert list(table.columns)[:6] == ["Column", "Step", "Scale", "CLIP-I (tiny-random)", "DINO (tiny-random)",
                                       "CLIP-T (tiny-random)"]
    assert list(table["Column"]) == ["prompt only (baseline)", "final · ×1"]
    for header in ("CLIP-I (tiny-random)", "DINO (tiny-random)", "CLIP-T (tiny-random)"):
        assert all(math.isfinite(v) and -1 <= v <= 1 for v in table[header])
    assert list(table["Images"]) == [2, 2]
    assert table["CLIP-T vs baseline"][1].startswith(("+", "-"))
    assert len(scored["images"]) == 4
    assert "Scored grid **first**" in scored["notice"]


def test_random_backbones_get_a_banner_and_the_recommendation_says_why(scored):
    banner = scored["banner"]
    assert arg(banner, "visible") and "random weights — these numbers mean nothing" in arg(banner, "value")
    assert scored["recommendation"].startswith("**Recommended: final · ×1** — ")
    assert "random weights" in scored["recommendation"] and "CLIP-T" in scored["recommendation"]
    frame = arg(scored["chart"], "value")
    assert list(frame["column"]) == ["prompt only (baseline)", "final · ×1"]
    assert arg(scored["chart"], "y_title") == "fidelity: DINO (tiny-random)"
    assert "tiny-random" in scored["summary"] and "DINO 0.668" in eval_view.dreambooth_reference_md()


def test_a_scored_grid_reopens_from_scores_json_without_recomputing(score, scored, monkeypatch):
    import studio.ui.score_tab as score_tab

    monkeypatch.setattr(score_tab, "score_grid", lambda *a, **k: pytest.fail("recomputed"))
    banner, summary, table, chart, legend, recommendation, images = score.show_scores(RUN, "first", "CLIP-I")
    assert table.equals(scored["table"]) and recommendation == scored["recommendation"]
    assert arg(chart, "y_title") == "fidelity: CLIP-I (tiny-random)"
    _, summary, table, *_ = score.show_scores(RUN, "second", "DINO")
    assert summary == NOT_SCORED.format(grid="second") and table.empty


def test_a_grid_scored_without_dino_charts_clip_i_instead_of_nothing(scored, studio):
    import copy

    from studio.eval.scoring import load_scores

    scores = copy.deepcopy(load_scores(studio.roots.run(RUN), "first"))
    for column in scores["columns"]:
        column["dino"] = None  # as scored with the DINO backbone "none"
    frame = eval_view.chart_frame(scores, "DINO")
    assert frame is not None and list(frame["fidelity"]) == [c["clip_i"] for c in scores["columns"]]
    assert eval_view.chart_titles(scores, "DINO")[1] == "fidelity: CLIP-I (tiny-random, no DINO score)"
    assert eval_view.chart_titles(scores, "CLIP-I")[1] == "fidelity: CLIP-I (tiny-random)"


def test_the_score_pickers_list_runs_with_grids_newest_first(score, scored):
    run, grids, batches, refs, clip, dino = score.list_runs(None, None)
    assert arg(run, "value") == RUN and arg(grids, "choices")[:2] == ["second", "first"]
    assert arg(grids, "value") == "second"
    assert arg(clip, "value") == "ViT-B-32-quickgelu/openai", "the run's default backbones when the run is picked"
    assert arg(score.list_runs(RUN, "first")[1], "value") == "first"
    assert arg(refs, "choices") == [TRAINING_IMAGES]


def test_a_dataset_folder_can_be_the_references(score, scored, studio):
    from studio.data.demo import demo_dataset_dir

    refs = studio.roots.datasets / "refs"
    refs.mkdir()
    for image in sorted(demo_dataset_dir().glob("*.png"))[:3]:
        (refs / image.name).write_bytes(image.read_bytes())
    assert arg(score.list_runs(RUN, "first")[3], "choices") == [TRAINING_IMAGES, "refs"]
    _, summary, table, *_ = score.score(RUN, "second", TINY_RANDOM, TINY_RANDOM, "refs", "DINO", progress=Progress())
    assert "3 reference images from `refs`" in summary and len(table) == 5


def test_scoring_refusals(score, grid, studio):
    with ACCELERATOR.hold("training tiny-run"), pytest.raises(Refusal, match="busy"):
        score.score(RUN, "first", TINY_RANDOM, TINY_RANDOM, TRAINING_IMAGES, "DINO", progress=Progress())
    with pytest.raises(Refusal, match="ViT-B-32-quickgelu/openai") as offline:
        score.score(RUN, "first", "ViT-B-32-quickgelu/openai", TINY_RANDOM, TRAINING_IMAGES, "DINO",
                    progress=Progress())
    # one short line in the tab's words; the library's error (not the CLI's --clip help) in the details
    line, details = offline.value.line, offline.value.details
    assert line.startswith("Cannot load the CLIP backbone `ViT-B-32-quickgelu/openai`: pick another in the CLIP")
    assert len(line.split()) <= 30 and "--clip" not in line + details and "run the same command" not in line + details
    assert details and offline.value.field == "clip"  # the CLIP backbone box is outlined
    with pytest.raises(gr.Error, match="outside the datasets folder"):
        score.score(RUN, "first", TINY_RANDOM, TINY_RANDOM, "../outputs", "DINO", progress=Progress())
    with pytest.raises(PathNotAllowed):
        eval_view.clip_backbone(studio.roots, "ViT-B-32/../../etc/passwd")
    with pytest.raises(PathNotAllowed):
        eval_view.dino_backbone(studio.roots, "/etc/passwd")
    with pytest.raises(PathNotAllowed):
        eval_view.inception_backbone(studio.roots, "/etc/passwd")
    with pytest.raises(Refusal, match="Pick a grid"):
        score.score(RUN, "", TINY_RANDOM, TINY_RANDOM, TRAINING_IMAGES, "DINO", progress=Progress())


# --- the seeds' questions: a baseline prompt, another generator, a scored batch ----------------------

@pytest.fixture(scope="module")
def seed_grid(compare, tmp_path_factory) -> dict:
    """1 prompt × 2 seeds: baseline prompt, the final LoRA, and two uploaded 'Freepik' images."""
    from PIL import Image

    uploads = tmp_path_factory.mktemp("uploads")
    files = []
    for i, colour in enumerate([(240, 120, 20), (20, 120, 240)]):
        Image.new("RGB", (96, 96), colour).save(uploads / f"freepik-{i + 1}.png")
        files.append(str(uploads / f"freepik-{i + 1}.png"))
    external, listed, _, _ = compare.add_external("Freepik", files, [])
    out = compare.make_grid(RUN, **GRID, grid_name="seed-question", baseline_prompts="a small silver robot",
                            external=external, progress=Progress())
    grids, *shown, notice = out
    return {"external": external, "listed": listed, **dict(zip(SHOWN, shown))}


def test_a_grid_takes_a_baseline_prompt_and_another_generators_images(compare, seed_grid):
    assert seed_grid["listed"] == "Columns of the next grid:\n- **Freepik**: 2 files"
    captions = [c for _, c in arg(seed_grid["gallery"], "value")]
    assert captions[:3] == ["baseline prompt · seed 1 · a small silver robot",
                            "final · ×1 · seed 1 · a photo of ohwx toy robot", "Freepik · a photo of ohwx toy robot"]
    assert "the baseline column renders: a small silver robot" in seed_grid["summary"]
    assert "other generators: Freepik" in seed_grid["summary"]
    assert [label for label, _ in arg(seed_grid["column"], "choices")] == ["final · ×1", "Freepik"]
    with pytest.raises(gr.Error, match="already a column 'Freepik'"):
        compare.add_external("Freepik", ["x.png"], seed_grid["external"])
    with pytest.raises(gr.Error, match="Upload the generator's images first"):
        compare.add_external("Gemini", None, seed_grid["external"])
    with pytest.raises(gr.Error, match="no images among the files"):
        compare.add_external("Gemini", ["/tmp/notes.txt"], seed_grid["external"])
    assert compare.clear_external() == ([], "No other generator added.")
    with pytest.raises(gr.Error, match="3 prompts but 2 baseline prompts"):
        compare.make_grid(RUN, **GRID | {"prompts": "a\nb\nc"}, grid_name="", baseline_prompts="x\ny",
                          progress=Progress())


def test_the_scorecard_shows_consistency_for_every_column_and_the_external_point(score, seed_grid):
    banner, summary, table, chart, legend, recommendation, images = score.score(
        RUN, "seed-question", TINY_RANDOM, TINY_RANDOM, TRAINING_IMAGES, "DINO", progress=Progress())[:7]
    assert list(table["Column"]) == ["baseline prompt", "final · ×1", "Freepik (external)"]
    assert all(value.endswith(" %") for value in table["Consistent"])
    assert list(arg(chart, "value")["column"]) == ["baseline prompt", "final · ×1", "Freepik (external)"]
    assert "Consistent: the share of a column's images whose DINO" in summary
    assert set(images["Consistent"]) <= {"yes", "no"}
    assert recommendation.startswith("**Recommended: final · ×1**")


def test_a_batch_goes_to_score_and_is_scored_as_a_distribution(compare, score, studio):
    from studio.eval.inception import INCEPTION_NONE

    compare.generate_batch(RUN, "a {trigger}\nb {trigger}", None, 4, "final", 1.0, 0, "to-score", *SAMPLER,
                           progress=Progress())
    run, batch, tabs = compare.send_batch_to_score(RUN, "to-score")
    assert arg(run, "value") == RUN and arg(batch, "value") == "to-score" and arg(tabs, "selected") == "score"
    with pytest.raises(gr.Error, match="has no batch 'nope': generate it first"):
        compare.send_batch_to_score(RUN, "nope")
    summary, table = score.show_batch(RUN, "to-score")
    assert "is not scored yet" in summary and table.empty
    summary, table, notice = score.score_batch(RUN, "to-score", TINY_RANDOM, TINY_RANDOM, TINY_RANDOM,
                                               TRAINING_IMAGES, progress=Progress())
    assert "Batch **to-score**" in summary and "4 images against 16 reference images" in summary
    assert "random weights" in summary
    assert list(table["Metric"]) == ["CLIP-T", "CLIP-I", "DINO", "consistency", "diversity", "FID", "KID", "CMMD"]
    assert all(value != "–" for value in table["Value"])
    assert table.set_index("Metric").loc["FID", "Sample sizes · backbone"] == "N = 4 vs 16 refs · tiny-random"
    assert "biased" in table.set_index("Metric").loc["FID", "Caveat, or why it is missing"]
    reopened = score.show_batch(RUN, "to-score")
    assert reopened[1].equals(table)
    _, table, notice = score.score_batch(RUN, "to-score", TINY_RANDOM, "none", INCEPTION_NONE, TRAINING_IMAGES,
                                         progress=Progress())
    assert "no dino, fid, kid (see the table)" in notice
    assert table.set_index("Metric").loc["FID", "Value"] == "–"
    assert "--inception none" in table.set_index("Metric").loc["FID", "Caveat, or why it is missing"]
    listed = score.list_runs(RUN, "first", "to-score")
    assert arg(listed[2], "value") == "to-score" and "to-score" in arg(listed[2], "choices")


def test_the_train_form_confines_the_scoring_backbones(studio):
    from studio.config import load_config
    from studio.ui.form import form_config, form_values

    values = form_values(load_config("tiny-demo", ["model.base=tiny-sd15"]))
    config = form_config(values | {"sample.score_backbone": "tiny-random", "sample.every_steps": 100,
                                   "train.stop_at_clip_i": "0.8"}, studio.roots)
    assert (config.sample.score_backbone, config.train.stop_at_clip_i) == ("tiny-random", 0.8)
    with pytest.raises(PathNotAllowed):
        form_config(values | {"sample.score_backbone": "ViT-B-32/../../etc/passwd"}, studio.roots)
    with pytest.raises(PathNotAllowed):
        form_config(values | {"sample.score_backbone": "tiny-random", "sample.score_dino": "/etc/passwd"},
                    studio.roots)


# --- wiring --------------------------------------------------------------------------------------

def test_the_tabs_build_with_their_api_names(studio):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app, built = build_app(Settings(roots=studio.roots), studio.runner)
    names = {fn.api_name for fn in app.fns.values()}
    assert {"make_grid", "open_grid", "show_slider", "send_to_score", "generate_batch", "stop_batch",
            "pick_compare_run", "list_lora_runs", "follow_job_compare", "list_scored_runs", "list_grids",
            "show_scores", "score_grid", "add_external", "clear_external", "send_batch_to_score",
            "show_batch_scores", "score_batch"} <= names
    send = next(fn for fn in app.fns.values() if fn.api_name == "send_to_score")
    # then the notice (a refusal) and the Earlier grids field (outlined when no grid is picked)
    assert [o._id for o in send.outputs][:4] == [built.score.run._id, built.score.grid._id, built.tabs._id,
                                                 built.notice._id]
