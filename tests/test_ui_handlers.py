"""Studio handlers without a server: the schema form, path confinement, the live view, and the
Train / Checkpoints handlers on a real tiny run."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import socket
import time
from pathlib import Path

import gradio as gr
import pytest

from studio.config import ConfigError, all_keys, list_presets, load_config, parse_override
from studio.core.atomic import write_json_atomic
from studio.core.lock import AcceleratorLock
from studio.engine.control import Control
from studio.engine.runner import Runner, Snapshot
from studio.engine.runs import RunFolder
from studio.engine.train import run_training
from studio.ui import live
from studio.ui.app import Studio
from studio.ui.checkpoints_tab import CheckpointHandlers
from studio.ui.form import FIELD_ORDER, cli_command, form_config, form_values
from studio.ui.notices import Refusal
from studio.ui.security import PathNotAllowed, Roots, is_exposed
from studio.ui.train_tab import BUTTONS, TrainHandlers


@pytest.fixture
def roots(tmp_path) -> Roots:
    return Roots.create(tmp_path / "datasets", tmp_path / "models", tmp_path / "outputs")


class FakeRunner:
    """Hands out whatever snapshot the test sets."""

    def __init__(self, snap: Snapshot | None = None):
        self.snap = snap or Snapshot()

    def snapshot(self) -> Snapshot:
        return self.snap


# --- the form ----------------------------------------------------------------------------------

def test_every_config_key_is_a_field_in_layout_order():
    assert sorted(FIELD_ORDER) == sorted(all_keys())
    assert FIELD_ORDER[:2] == ("model.base", "model.family")


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_form_round_trips_every_preset(preset, roots, monkeypatch):
    monkeypatch.chdir(roots.datasets.parent)  # presets name their datasets relative to the repo: datasets/NAME
    config = load_config(preset)
    if config.data.dir != "builtin:demo":
        (roots.datasets.parent / config.data.dir).mkdir(parents=True)
    result = form_config(form_values(config), roots)
    assert result.data.dir in ("builtin:demo", str(roots.datasets.parent / config.data.dir))
    assert result.with_overrides({"data.dir": config.data.dir}) == config


def test_form_errors_name_the_key(roots):
    values = form_values(load_config("tiny-demo"))
    with pytest.raises(ConfigError, match="lora.rank"):
        form_config(values | {"lora.rank": 0}, roots)
    with pytest.raises(ConfigError, match="sample.seeds"):
        form_config(values | {"sample.seeds": "1, x"}, roots)
    with pytest.raises(ConfigError, match="optim.text_encoder_lr"):
        form_config(values | {"optim.text_encoder_lr": "fast"}, roots)
    assert form_config(values | {"optim.text_encoder_lr": "5e-5"}, roots).optim.text_encoder_lr == 5e-5


def test_cli_command_reproduces_the_form_config(roots):
    edits = {"lora.rank": 16, "sample.seeds": "1, 2", "data.trigger_word": "zk w"}
    values = form_values(load_config("tiny-demo")) | edits
    config = form_config(values, roots)
    command = cli_command("tiny-demo", config, "my-run")
    args = shlex.split(command.replace("\\\n", " "))
    assert args[:6] == ["python", "studio.py", "train", "--preset", "tiny-demo", "--name"]
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert load_config("tiny-demo", overrides) == config
    assert dict(parse_override(o) for o in overrides).keys() == {"lora.rank", "sample.seeds", "data.trigger_word"}


# --- confinement -------------------------------------------------------------------------------

def test_dataset_paths_stay_inside_the_datasets_root(roots, tmp_path):
    (roots.datasets / "cats").mkdir()
    assert roots.dataset("builtin:demo") == "builtin:demo"
    assert roots.dataset("cats") == str(roots.datasets / "cats")
    assert roots.dataset(str(roots.datasets / "cats")) == str(roots.datasets / "cats")
    for bad in ("../outputs", "/etc", str(tmp_path), "cats/../../models", "~"):
        with pytest.raises(PathNotAllowed, match="outside the datasets folder|no folder"):
            roots.dataset(bad)
    (roots.datasets / "escape").symlink_to(tmp_path / "outputs")
    with pytest.raises(PathNotAllowed, match="outside the datasets folder"):
        roots.dataset("escape")
    with pytest.raises(PathNotAllowed, match="no folder 'dogs'.*cats"):
        roots.dataset("dogs")


def test_model_references(roots):
    (roots.models / "mine.safetensors").write_bytes(b"x")
    assert roots.model("tiny-sdxl", "model.base") == "tiny-sdxl"
    assert roots.model("mine", "model.base") == str(roots.models / "mine.safetensors")
    assert roots.model("stable-diffusion-v1-5/stable-diffusion-v1-5", "model.base").startswith("stable-diffusion")
    for bad in ("/etc/passwd", "../outputs/x.safetensors", "../../x"):
        with pytest.raises(PathNotAllowed, match="outside the models folder"):
            roots.model(bad, "model.base")
    with pytest.raises(PathNotAllowed, match="not in the models folder"):
        roots.model("owner/name", "model.single_file_config", hub=False)


def test_runs_are_addressed_by_name_only(roots):
    for bad in ("../outputs", "/tmp", ".workspace", "a/b", ""):
        with pytest.raises(PathNotAllowed):
            roots.run(bad)
    with pytest.raises(PathNotAllowed, match="no run 'nope'"):
        roots.run("nope")
    with pytest.raises(PathNotAllowed, match="only things inside"):
        roots.check_deletable(roots.outputs.parent / "models")
    with pytest.raises(PathNotAllowed):
        roots.check_deletable(roots.outputs)


def test_exposure(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not is_exposed("127.0.0.1", False) and not is_exposed("localhost", False) and not is_exposed("::1", False)
    assert is_exposed("0.0.0.0", False) and is_exposed("192.168.1.5", False) and is_exposed("127.0.0.1", True)
    monkeypatch.setenv("SPACE_ID", "me/studio")
    assert is_exposed("127.0.0.1", False)


# --- the live view -----------------------------------------------------------------------------

def test_loss_frame_downsamples_long_runs_to_about_2000_points():
    rows = [{"step": i, "loss": 1.0 + (i % 2), "loss_smoothed": 1.5} for i in range(1, 10_001)]
    frame = live.loss_frame(rows)
    assert len(frame) <= 2000
    raw = frame[frame.series == "raw"]
    assert raw.step.max() == 10_000 and raw.loss.between(1.49, 1.51).all()  # bucket means, not aliasing
    assert live.loss_frame([]) is None
    assert len(live.loss_frame(rows[:50])) == 100


def test_buttons_follow_the_job_state():
    def states(status):
        return live.button_states(Snapshot(status=status, run="r"), can_sample=True)

    assert states("idle") == {"start": True, "pause": False, "resume": False, "stop": False, "sample": False,
                              "save": False}
    assert states("training") == {"start": False, "pause": True, "resume": False, "stop": True, "sample": True,
                                  "save": True}
    assert states("paused") == {"start": False, "pause": False, "resume": True, "stop": True, "sample": False,
                                "save": False}
    assert states("failed")["start"] and not states("failed")["stop"]
    assert not live.button_states(Snapshot(status="training", run="r"), can_sample=False)["sample"]


def test_job_html_escapes_and_shows_live_numbers():
    snap = Snapshot(status="training", run="r", step=4, total=10, message="step 0 of 10",
                    metrics=({"step": 4, "loss": 0.5, "loss_smoothed": 0.6, "lr": 1e-4, "steps_per_s": 2.0,
                              "memory": 2**30},))
    page = live.job_html(snap)
    assert "step 4 of 10" in page and "0.5000" in page and "1.0e-04" in page and "1.0 GB" in page
    assert "3s" in page  # ETA: 6 steps at 2 steps/s
    assert "&lt;script&gt;" in live.error_html("<script>alert(1)</script>")


def test_poll_sends_only_what_changed(roots):
    runner = FakeRunner(Snapshot(status="training", run="r", step=1, total=10, version=1,
                                 metrics=({"step": 1, "loss": 1.0, "loss_smoothed": 1.0},)))
    handlers = TrainHandlers(Studio(runner=runner, roots=roots))
    first = handlers.poll({})
    seen = first[-2]  # (the last output is the job the form follows)
    assert first[2] is not None and len(first[2]) == 2  # the chart: raw + smoothed
    again = handlers.poll(seen)
    assert all(isinstance(v, type(gr.skip())) for v in again[:-1])
    runner.snap = dataclasses.replace(runner.snap, message="saving", version=2)
    third = handlers.poll(seen)
    assert "saving" in third[1]
    skip = type(gr.skip())
    assert isinstance(third[2], skip), "the chart is not resent when no metrics arrived"
    assert isinstance(third[3], skip), "no validation chart without scores"
    assert all(isinstance(v, skip) for v in third[8:8 + len(BUTTONS)]), "buttons unchanged for the same status"


# --- handlers on a real run --------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run with checkpoints at steps 2 and 4 and samples at both."""
    base = tmp_path_factory.mktemp("ui-handlers")
    roots = Roots.create(base / "datasets", base / "models", base / "outputs")
    config = load_config("tiny-demo", ["train.max_steps=4", "save.every_steps=2", "sample.every_steps=2",
                                       "optim.warmup_steps=0", "train.batch_size=2", "sample.inference_steps=2"])
    run = RunFolder.create(roots.outputs, "done", config)
    assert run_training(config, run, Control()) == "finished"
    return roots


@pytest.fixture
def handlers(trained):
    studio = Studio(runner=Runner(trained.outputs, trained.models, lock=AcceleratorLock()), roots=trained)
    return CheckpointHandlers(studio), TrainHandlers(studio), studio


def test_show_run_lists_checkpoints_samples_and_curve(handlers):
    ckpt, _, _ = handlers
    table, picker = ckpt.list_runs(None)
    assert table.Run.tolist() == ["done"] and table.Status.tolist() == ["finished"] and picker.value == "done"
    summary, _, _, chart, steps, gallery, ckpts, pick, note, *_ = ckpt.show_run("done")
    assert "Finished" in summary and "toy-sd15" in summary  # tiny-demo trains the toy world's model
    assert chart.step.max() == 4
    assert [v for _, v in steps.choices] == [2, 4] and steps.value == 4 and len(gallery.value) == 2
    assert gallery.label == "Samples"  # a pretrained base: no noise label
    assert ckpts.Step.tolist() == [4, 2] and pick.value == 4
    assert note == ("Resume continues from the run's **latest** checkpoint (step 4), with its optimizer state and "
                    "data order. It finished all 4 steps: to train more, extend it (`resume done --max-steps N`, or "
                    "Train N more steps).")


def test_export_gives_downloadable_files(handlers):
    ckpt, _, _ = handlers
    files, note = ckpt.export_checkpoint("done", 2, "webui")
    assert [Path(f).suffix for f in files] == [".safetensors", ".json", ".png"]  # + A1111 sidecar and preview
    assert all(Path(f).is_relative_to(ckpt.studio.roots.outputs / "done" / "exports") for f in files)
    assert note.startswith("✓ Exported: wrote `done/exports/")  # beside the Export button
    (diffusers,), _ = ckpt.export_checkpoint("done", 4, "diffusers")
    assert Path(diffusers).name == "pytorch_lora_weights.safetensors"
    with pytest.raises(gr.Error, match="no checkpoint at step 3"):
        ckpt.export_checkpoint("done", 3, "webui")
    with pytest.raises(gr.Error, match="format"):
        ckpt.export_checkpoint("done", 2, "ckpt")


def test_resume_refuses_older_checkpoints_and_finished_runs(handlers):
    ckpt, _, _ = handlers
    with pytest.raises(gr.Error) as err:
        ckpt.resume_run("done", 2)
    assert "latest checkpoint (step 4)" in err.value.message and "delete the newer checkpoints (4)" in err.value.message
    with pytest.raises(gr.Error, match="nothing to resume"):
        ckpt.resume_run("done", 4)
    with pytest.raises(gr.Error, match="outside|letters, digits"):
        ckpt.resume_run("../done", 4)


def test_delete_is_refused_for_the_training_run_and_works_otherwise(handlers, trained):
    ckpt, _, studio = handlers
    studio.runner = FakeRunner(Snapshot(status="training", run="done", step=3, total=4))
    with pytest.raises(gr.Error, match="stop it first"):
        ckpt.ask_delete("done", 2)
    with pytest.raises(gr.Error, match="stop it first"):
        ckpt.delete_checkpoint("done", 2)
    studio.runner = FakeRunner()
    box, text = ckpt.ask_delete("done", 2)
    assert box.visible and "step 2" in text
    notice, _ = ckpt.delete_checkpoint("done", 2)
    assert "Deleted" in notice and [c.step for c in RunFolder(trained.outputs / "done").checkpoints()] == [4]


def test_start_reports_bad_input_and_a_busy_accelerator(handlers, trained):
    _, train, studio = handlers
    values = form_values(load_config("tiny-demo"))
    with pytest.raises(gr.Error) as err:
        train.start("x", **(values | {"data.dir": "../../etc"}))
    assert "outside the datasets folder" in err.value.message
    with pytest.raises(gr.Error, match="already exists"):
        train.start("done", **values)
    studio.runner.lock.acquire("captioning")
    try:
        with pytest.raises(Refusal, match="busy with captioning"):
            train.start("fresh", **values)
    finally:
        studio.runner.lock.release()
    assert not (trained.outputs / "fresh").exists()


def test_a_started_job_frees_what_evaluation_kept_loaded(handlers):
    from studio.eval.backbones import TINY_RANDOM, load_clip, load_dino, loaded_backbones

    _, train, studio = handlers
    cache = studio.eval_models.pipelines()
    cache.pipeline(load_config("tiny-demo", ["model.base=tiny-sd15"]))
    load_clip(TINY_RANDOM), load_dino(TINY_RANDOM)
    values = form_values(load_config("tiny-demo", ["model.base=tiny-sd15", "train.max_steps=2",
                                                  "sample.every_steps=0", "optim.warmup_steps=0"]))

    studio.runner.lock.acquire("scoring")  # an evaluation job keeps them, and a refused start needs nothing
    try:
        with pytest.raises(Refusal, match="busy with scoring"):
            train.start("refused", **values)
    finally:
        studio.runner.lock.release()
    assert cache.loaded and {f"clip:{TINY_RANDOM}", f"dino:{TINY_RANDOM}"} <= set(loaded_backbones())

    # the lock frees them as the job takes it, before the job loads its own models
    seen: list[list[str]] = []
    studio.runner.lock.on_acquire(recorder := lambda holder: seen.append(studio.eval_models.loaded))
    assert "Started run" in train.start("frees-memory", **values)
    freed = not cache.loaded and loaded_backbones() == [] and seen == [[]]
    assert studio.runner.join(timeout=120)  # before the verdict: no training thread outlives the test
    assert freed
    shutil.rmtree(studio.roots.outputs / "frees-memory")  # the module's other tests expect one run


def test_preset_fills_every_field(handlers):
    _, train, _ = handlers
    out = train.load_preset("sdxl-character")
    values = dict(zip(FIELD_ORDER, out[1:1 + len(FIELD_ORDER)]))
    assert values["model.family"] == "sdxl" and values["model.base"] == load_config("sdxl-character").model.base
    assert out[1 + len(FIELD_ORDER)].startswith("sdxl-character-")
    assert out[-1].startswith("✗ data.dir: there is no folder 'datasets/character'")  # not made yet
    assert train.load_preset("tiny-demo")[-1] == "✓ Valid config"
    assert train.pick_base("tiny-sdxl", "sd15") == "sdxl" and train.pick_base("owner/model", "sd15") == "sd15"


def test_a_run_another_process_is_training_is_left_alone(handlers, trained):
    import subprocess
    import sys

    from studio.engine.runstate import process_start

    ckpt, _, _ = handlers
    shutil.copytree(trained.outputs / "done", trained.outputs / "cli-run")
    run = RunFolder(trained.outputs / "cli-run")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # what a CLI training process leaves while it trains: run.json running, its heartbeat
        run.update_status(status="running")
        beat = {"pid": other.pid, "pid_start": process_start(other.pid), "host": socket.gethostname(),
                "unix": time.time(), "status": "training", "step": 3}
        write_json_atomic(run.heartbeat_path, beat)
        table, _ = ckpt.list_runs(None)
        assert dict(zip(table.Run, table.Status))["cli-run"] == "running (other process)"
        for action in (lambda: ckpt.ask_delete("cli-run", 4), lambda: ckpt.resume_run("cli-run", 4),
                       lambda: ckpt.extend_run("cli-run", 10)):
            with pytest.raises(gr.Error, match=f"another process \\({other.pid}"):
                action()
    finally:
        other.kill()
        other.wait()
    table, _ = ckpt.list_runs(None)  # its process is gone: at once, whatever the heartbeat's age
    assert dict(zip(table.Run, table.Status))["cli-run"] == "interrupted"
    shutil.rmtree(run.path)


def test_the_checkpoints_tab_follows_the_job_only_when_it_changes(handlers):
    ckpt, _, studio = handlers
    studio.runner = FakeRunner(Snapshot(status="training", run="done", step=3, total=4, checkpoints=(2,)))
    table, summary, ckpts, pick, seen = ckpt.follow_job("done", {})
    assert "training" in table.Status.tolist() and "Training" in summary and pick.choices
    assert all(isinstance(v, type(gr.skip())) for v in ckpt.follow_job("done", seen)[:4])
    studio.runner.snap = dataclasses.replace(studio.runner.snap, status="stopped")
    table, summary, *_ = ckpt.follow_job("other", seen)  # not the picked run: only the table is redrawn
    assert table.Status.tolist() == ["finished"] and isinstance(summary, type(gr.skip()))
