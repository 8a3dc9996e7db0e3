"""Validation samples scored while training (sample.score_backbone): CLIP-I / CLIP-T / DINO rows in
metrics.jsonl at sample steps equal to a direct computation, the Train tab's second chart, the stop at
train.stop_at_clip_i with a checkpoint and a status line that says why, exact resume with scoring on,
and, on the toy world, CLIP-I rising while the demo LoRA learns the robot."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from studio.config import ConfigError, load_config
from studio.data.demo import demo_dataset_dir
from studio.data.images import load_image
from studio.engine.checkpoints import load_checkpoint
from studio.engine.control import Control
from studio.engine.events import Metrics, StatusChanged
from studio.engine.runs import RunFolder
from studio.engine.train import run_training
from studio.eval.backbones import TINY_RANDOM, load_clip, load_dino
from studio.eval.metrics import mean_cosine
from studio.eval.scoring import clip_t_prompt
from studio.ui import live

TINY = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention", "train.batch_size=2",
        "optim.warmup_steps=0", "sample.inference_steps=2", "sample.every_steps=2", "save.every_steps=4",
        "save.keep_last=5", "train.max_steps=8"]
SCORED = ["sample.score_backbone=tiny-random", "sample.score_dino=tiny-random"]


def _train(outputs: Path, name: str, *overrides: str, control: Control | None = None, events=None):
    config = load_config("tiny-demo", [*TINY, *overrides])
    run = RunFolder.create(outputs, name, config)
    status = run_training(config, run, control, (events.append if events is not None else None))
    return run, status


def _weights(run: RunFolder) -> dict[str, torch.Tensor]:
    weights, _, info = load_checkpoint(run.latest_checkpoint())
    assert info["step"] == 8
    return weights.flat()


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    events = []
    run, status = _train(tmp_path_factory.mktemp("outputs"), "scored", *SCORED, events=events)
    assert status == "finished"
    return run, events


def test_sample_steps_get_validation_rows_equal_to_a_direct_computation(scored_run):
    run, events = scored_run
    rows = run.read_metrics()
    validation = [r for r in rows if "clip_i" in r]
    assert [r["step"] for r in validation] == [2, 4, 6, 8]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9)), "training rows unchanged"
    refs = sorted(demo_dataset_dir().glob("*.png"))
    clip, dino = load_clip(TINY_RANDOM), load_dino(TINY_RANDOM)
    ref_images = [load_image(p) for p in refs]
    ref_clip, ref_dino = clip.encode_images(ref_images), dino.encode_images(ref_images)
    for row in validation:
        entries = run.samples_at(row["step"])
        images = [load_image(run.samples_dir / f"step-{row['step']:06d}" / e["file"]) for e in entries]
        gen_clip = clip.encode_images(images)
        texts = clip.encode_texts([clip_t_prompt(e["prompt"], "ohwx", "toy robot") for e in entries])
        assert row["clip_i"] == pytest.approx(float(mean_cosine(gen_clip, ref_clip).mean()), abs=1e-6)
        assert row["dino"] == pytest.approx(float(mean_cosine(dino.encode_images(images), ref_dino).mean()), abs=1e-6)
        assert row["clip_t"] == pytest.approx(statistics.fmean((gen_clip.double() * texts.double()).sum(1).tolist()),
                                              abs=1e-6)
        assert row["validation"] == {"clip": TINY_RANDOM, "dino": TINY_RANDOM, "random_weights": True,
                                     "images": len(entries), "references": 16}
    emitted = [e.row for e in events if isinstance(e, Metrics) and "clip_i" in e.row]
    assert emitted == validation, "the Train tab sees the rows metrics.jsonl holds"


def test_the_train_tab_draws_the_scores_beside_the_loss(scored_run):
    run, _ = scored_run
    rows = run.read_metrics()
    frame = live.scores_frame(rows)
    assert sorted(set(frame["metric"])) == ["CLIP-I", "CLIP-T", "DINO"] and sorted(set(frame["step"])) == [2, 4, 6, 8]
    clip_i = frame[frame["metric"] == "CLIP-I"].set_index("step")["score"]
    assert clip_i[8] == pytest.approx(next(r["clip_i"] for r in rows if r.get("step") == 8 and "clip_i" in r))
    label = live.scores_label(rows)
    assert label.startswith("Validation scores (tiny-random + DINO tiny-random, 2 images vs 16 references)")
    assert "random weights" in label
    loss = live.loss_frame(rows)
    assert sorted(set(loss["step"])) == list(range(1, 9)), "the loss chart ignores the score rows"
    assert live.scores_frame([r for r in rows if "loss" in r]) is None, "no chart for a run that does not score"
    # the run's last row is step 8's scores: the Checkpoints tab still shows the final loss and epoch
    from studio.ui import runs_view

    assert "clip_i" in rows[-1] and "loss" not in rows[-1]
    last = runs_view.last_training_row(run)
    assert last["step"] == 8 and runs_view.final_loss(run) == last["loss_smoothed"] is not None


def test_the_terminal_prints_a_line_per_scored_step_and_the_rise_in_the_summary(scored_run, capsys):
    from studio.commands.train import ProgressPrinter, _summary

    run, events = scored_run
    printer = ProgressPrinter(8)
    for event in events:
        printer(event)
    printer.close()
    _summary(run, "finished", printer)
    out = capsys.readouterr()
    scores = [r for r in run.read_metrics() if "clip_i" in r]
    step4 = scores[1]
    assert (f"[scores] step 4: CLIP-I {step4['clip_i']:.3f}, CLIP-T {step4['clip_t']:.3f}, DINO {step4['dino']:.3f} "
            "(tiny-random, random weights)") in out.err
    assert f"validation CLIP-I {scores[0]['clip_i']:.3f} (step 2) → {scores[-1]['clip_i']:.3f} (step 8)" in out.out
    assert "loss (smoothed) " in out.out and "epoch " in out.out


def test_the_train_tab_poll_shows_the_validation_chart_of_the_studios_job(tmp_path):
    from studio.engine.runner import Runner
    from studio.ui.app import Studio
    from studio.ui.security import Roots
    from studio.ui.train_tab import TrainHandlers

    roots = Roots.create(tmp_path / "datasets", tmp_path / "models", tmp_path / "outputs")
    studio = Studio(runner=Runner(roots.outputs, roots.models), roots=roots)
    studio.runner.start(load_config("tiny-demo", [*TINY, *SCORED, "train.max_steps=4"]), "live")
    assert studio.runner.join(300)
    snap = studio.runner.snapshot()
    assert snap.status == "finished" and snap.last["step"] == 4 and "loss" in snap.last, "the job panel keeps the loss"
    out = TrainHandlers(studio).poll(None)
    chart, box = out[3], out[4]  # the chart, and the column that holds it with its legend
    assert box.constructor_args["visible"] is True
    assert sorted(set(chart.constructor_args["value"]["step"])) == [2, 4]
    assert chart.constructor_args["label"].startswith("Validation scores (tiny-random")


def test_scoring_changes_nothing_training_draws_and_resume_stays_exact(scored_run, tmp_path):
    scored, _ = scored_run
    plain, _ = _train(tmp_path, "plain")
    a, b = _weights(scored), _weights(plain)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0, "scoring must not touch the training RNG"

    # stop after step 4, resume: the same weights, and each score row once
    control = Control()

    def stop_at_4(event):
        if isinstance(event, Metrics) and event.row.get("step") == 4 and "loss" in event.row:
            control.stop()

    config = load_config("tiny-demo", [*TINY, *SCORED])
    run = RunFolder.create(tmp_path, "resumed", config)
    assert run_training(config, run, control, stop_at_4) == "stopped"
    assert run_training(run.config(), run, resume=True) == "finished"
    c = _weights(run)
    assert max((a[k] - c[k]).abs().max().item() for k in a) <= 1e-6
    assert [r["step"] for r in run.read_metrics() if "clip_i" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in run.read_metrics() if "loss" in r] == list(range(1, 9))


def test_the_run_stops_at_the_target_with_a_checkpoint_and_says_why(tmp_path):
    events = []
    # tiny-random CLIP-I sits near 0.9 for any image: a target of 0.5 is met at the first two sample steps
    run, status = _train(tmp_path, "target", *SCORED, "train.stop_at_clip_i=0.5", events=events)
    assert status == "stopped"
    assert [c.step for c in run.checkpoints()] == [4] and run.read_status()["status"] == "stopped"
    reason = run.read_status()["stop_reason"]
    assert reason.startswith("CLIP-I reached train.stop_at_clip_i 0.5 on 2 sample steps in a row (")
    assert "at step 2, " in reason and "at step 4, tiny-random)" in reason
    final = [e for e in events if isinstance(e, StatusChanged)][-1]
    assert final.status == "stopped" and final.message == f"stopped at step 4; checkpoint saved ({reason})"
    from html import escape

    from studio.engine.runner import Snapshot
    from studio.ui import runs_view

    assert f"Stopped because</span><span class=\"stat-value\">{escape(reason)}" in runs_view.run_summary_html(
        run, Snapshot()), "the Checkpoints tab says why too"
    # a target above anything the backbone gives: the run trains to the end
    _, status = _train(tmp_path, "unreached", *SCORED, "train.stop_at_clip_i=1.0")
    assert status == "finished"


def test_the_keys_need_each_other():
    with pytest.raises(ConfigError, match="train.stop_at_clip_i needs validation scores"):
        load_config("tiny-demo", ["train.stop_at_clip_i=0.8"])
    with pytest.raises(ConfigError, match="sample.score_dino is set but sample.score_backbone is empty"):
        load_config("tiny-demo", ["sample.score_dino=dino-vits16"])
    assert load_config("tiny-demo", []).sample.score_backbone is None, "off by default"


def test_toy_world_clip_i_rises_while_the_demo_lora_learns(tmp_path):
    """The demo preset on the pretrained toy-sd15, shortened to 100 steps, its samples scored by toy-clip every
    25 steps: as the robot appears, the samples come closer to the training images. The first sample step, when
    the LoRA has barely started, scores lowest, and the end of the run clearly above it (seen: about 0.14 at step
    25 against 0.33 at the end); 10 sampler steps instead of the preset's 20 keep it to ~45 CPU-s."""
    config = load_config("tiny-demo", ["train.max_steps=100", "save.every_steps=0", "sample.every_steps=25",
                                       "sample.seeds=[1, 2]", "sample.inference_steps=10",
                                       "sample.score_backbone=toy-clip"])
    run = RunFolder.create(tmp_path, "toy-demo", config)
    assert run_training(config, run) == "finished"
    rows = [r for r in run.read_metrics() if "clip_i" in r]
    curve = [(r["step"], r["clip_i"]) for r in rows]
    assert [step for step, _ in curve] == [25, 50, 75, 100]
    assert rows[-1]["validation"] == {"clip": "toy-clip", "dino": "none", "random_weights": False, "images": 4,
                                      "references": 16}
    first, last = curve[0][1], statistics.fmean(value for _, value in curve[-2:])
    assert last > first + 0.05, f"CLIP-I did not rise: {curve}"
    assert first == min(value for _, value in curve), f"CLIP-I was highest before the LoRA learned: {curve}"
