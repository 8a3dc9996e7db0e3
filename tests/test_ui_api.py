"""The studio through its HTTP API (gradio_client) against a launched app: the endpoints a script
would use, a whole job (start, pause, resume, sample/save now, stop, resume from checkpoint),
refusals, failures shown with their traceback, and exports that download."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from gradio_client import Client
from safetensors import safe_open

from conftest import launched_studio
from studio.engine.runs import RunFolder

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")  # from gradio's queue internals

FAST = {"sample.inference_steps": 2, "train.batch_size": 2, "optim.warmup_steps": 0}
EXPECTED_ENDPOINTS = {
    "/start", "/pause", "/resume", "/stop", "/sample_now", "/save_now", "/live", "/poll", "/loss_chart", "/load_preset", "/resolve_config",
    "/pick_base", "/on_load", "/suggest_run_name", "/list_runs", "/show_run", "/pick_run_row", "/show_samples",
    "/export_checkpoint", "/resume_run", "/ask_delete", "/cancel_delete", "/delete_checkpoint", "/follow_job",
    "/test_setup", "/extend_run",
    # Dataset tab
    "/open_dataset", "/open_demo", "/create_dataset", "/add_to_dataset", "/list_datasets", "/filter_gallery",
    "/previous_page", "/next_page", "/select_image", "/apply_caption", "/add_trigger", "/add_prefix", "/add_suffix",
    "/replace_text", "/remove_tag", "/lowercase", "/undo_bulk_edit", "/revert_unsaved", "/save_captions",
    "/import_captions", "/refresh_report", "/pick_captioner", "/auto_caption", "/send_to_train", "/tensor_cache",
    "/ask_clear_cache", "/clear_cache",
    # Compare tab
    "/follow_job_compare", "/list_lora_runs", "/pick_compare_run", "/make_grid", "/open_grid", "/show_slider",
    "/generate_batch", "/stop_batch", "/send_to_score", "/add_external", "/clear_external", "/send_batch_to_score",
    # Score tab
    "/list_scored_runs", "/list_grids", "/show_scores", "/score_grid", "/show_batch_scores", "/score_batch",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with launched_studio(tmp_path_factory.mktemp("ui-api")) as (app, studio):
        yield Client(app.local_url, verbose=False), studio


def wait_for(condition, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def status(studio) -> str:
    return studio.runner.snapshot().status


def test_every_handler_has_an_api_name(server):
    client, _ = server
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == EXPECTED_ENDPOINTS
    assert not api["unnamed_endpoints"]
    params = {p["parameter_name"] for p in api["named_endpoints"]["/start"]["parameters"]}
    assert {"run_name", "lora.rank", "train.max_steps", "data.dir", "model.base"} <= params


def test_resolve_config_shows_yaml_and_the_cli_line(server):
    client, _ = server
    yaml_text, cli, check = client.predict("tiny-demo", "x", api_name="/resolve_config", **{"lora.rank": 16})
    assert check == "✓ Valid config" and "rank: 16" in yaml_text and "--set lora.rank=16" in cli
    *_, check = client.predict("tiny-demo", "x", api_name="/resolve_config", **{"data.dir": "/etc"})
    assert check.startswith("✗ data.dir") and "outside the datasets folder" in check


def test_bad_paths_are_refused(server):
    client, studio = server
    for key, value in (("data.dir", "../outputs"), ("data.dir", "/etc"), ("model.base", "/etc/passwd"),
                       ("model.base", "../../secret.safetensors")):
        notice = client.predict(api_name="/start", run_name="nope", **{key: value})  # a refusal is a notice
        assert "⚠️ Cannot start" in notice and re.search("outside the (datasets|models) folder", notice)
    for name in ("../outputs", "/tmp"):
        *_, refused = client.predict(name, api_name="/show_run")  # a refusal is a notice
        assert "⚠️" in refused and re.search("letters, digits|outside", refused)
        assert "⚠️" in client.predict(name, 1, api_name="/delete_checkpoint")  # a refusal is a notice
    assert not studio.runner.snapshot().active


def test_a_failure_shows_its_message_and_traceback(server):
    client, studio = server
    notice = client.predict(api_name="/start", run_name="broken", **{"data.dir": "empty"})
    assert "Started run **broken**" in notice
    wait_for(lambda: status(studio) == "failed", what="the run to fail")
    header, job, _chart, _scores, _gallery, error, traceback = client.predict(api_name="/poll")  # (buttons: none)
    assert "Failed" in header and "Training failed" in error and "no images found" in error and "Failed" in job
    assert "Traceback (most recent call last)" in traceback


def test_a_whole_job_through_the_api(server):
    client, studio = server
    settings = FAST | {"train.max_steps": 3000, "sample.every_steps": 0, "save.every_steps": 0}
    assert "Started" in client.predict(api_name="/start", run_name="api-job", **settings)
    wait_for(lambda: studio.runner.snapshot().step >= 5, what="training to begin")

    # one job at a time: a second start says why instead of waiting
    busy = client.predict(api_name="/start", run_name="second", **settings)
    assert "stop it first" in busy and "api-job" in busy

    assert "checkpoint" in client.predict(api_name="/save_now")
    wait_for(lambda: studio.runner.snapshot().checkpoints, what="save now")
    refused = client.predict("api-job", studio.runner.snapshot().checkpoints[0], api_name="/delete_checkpoint")
    assert "⚠️" in refused and "stop it first" in refused

    assert "Pausing" in client.predict(api_name="/pause")
    wait_for(lambda: status(studio) == "paused", what="pause")
    paused_at = studio.runner.snapshot().step
    time.sleep(1.0)
    assert studio.runner.snapshot().step == paused_at
    assert "⚠️" in client.predict(api_name="/save_now")  # not while paused
    assert client.predict(api_name="/resume").endswith("Resumed.")
    wait_for(lambda: studio.runner.snapshot().step > paused_at, what="resume")

    assert "Stopping" in client.predict(api_name="/stop")
    wait_for(lambda: status(studio) == "stopped", what="stop")
    header, job, *_ = client.predict(api_name="/poll")
    assert "Stopped" in header and "api-job" in job

    table, _ = client.predict(None, api_name="/list_runs")
    rows = {row[0]: row for row in table["data"]}
    assert rows["api-job"][1] == "stopped" and rows["broken"][1] == "failed"
    steps = [c for c in studio.runner.snapshot().checkpoints]
    assert len(steps) == 2  # save-now and the one written on stop

    # resume continues from the latest checkpoint only
    refused = client.predict("api-job", steps[0], api_name="/resume_run")
    assert "⚠️" in refused and f"latest checkpoint (step {steps[-1]})" in refused
    notice = client.predict("api-job", steps[-1], api_name="/resume_run")  # (the tab switch is no API value)
    assert f"from step {steps[-1]}" in notice
    wait_for(lambda: studio.runner.snapshot().step > steps[-1], what="the resumed run to train")
    client.predict(api_name="/stop")
    wait_for(lambda: status(studio) == "stopped", what="the resumed run to stop")

    # export and download a checkpoint; then delete the oldest one
    files, note, _ = client.predict("api-job", steps[0], "webui", api_name="/export_checkpoint")
    paths = [Path(f) for f in files]  # downloaded by the client
    assert note.startswith("✓ Exported: wrote `api-job/exports/")  # the notice beside Export
    assert [p.suffix for p in paths] == [".safetensors", ".json"]
    with safe_open(str(paths[0]), framework="pt") as f:
        assert f.metadata()["ss_network_module"] == "networks.lora"
    text, _ = client.predict("api-job", steps[0], api_name="/ask_delete")  # the question, and the notice
    assert f"step {steps[0]}" in text
    notice = client.predict("api-job", steps[0], api_name="/delete_checkpoint")
    assert "Deleted" in notice
    summary, _trace, _chart, _sample_step, _samples, ckpts, *_ = client.predict("api-job", api_name="/show_run")
    assert "Stopped" in summary
    assert steps[0] not in [row[0] for row in ckpts["data"]]

    # train N more steps: the stopped run continues from its latest checkpoint and finishes N steps later
    latest = RunFolder(studio.roots.outputs / "api-job").latest_checkpoint().step
    notice = client.predict("api-job", 3, api_name="/extend_run")
    assert f"from step {latest} up to step {latest + 3}" in notice
    wait_for(lambda: status(studio) == "finished", what="the extension to finish")
    assert RunFolder(studio.roots.outputs / "api-job").state().last_step == latest + 3
