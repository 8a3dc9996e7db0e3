"""Exposed mode: a login when --auth is given, a loud warning without it, files served only from
the outputs root, monitoring off, and handler calls that name paths outside the roots refused."""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from studio.config import load_config
from studio.engine.runs import RunFolder
from studio.ui.app import Settings, _header_html, launch_options, parse_auth, start_studio, warn_if_open
from studio.ui.login_guard import withhold_schema
from studio.ui.security import Roots

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")  # from gradio's queue internals
USER, PASSWORD = "ada", "lovelace-1843"
SECRET_RUN, SECRET_DATASET, SECRET_MODEL = "heron-secret-run", "heron-secret-photos", "heron-secret-model"
ENDPOINTS = ("send_to_train", "export_checkpoint", "delete_checkpoint", "make_grid")
"""api_names that show the API schema or the component config is in a page."""


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """The studio on all interfaces with a login, plus one file in each root."""
    base = tmp_path_factory.mktemp("exposed")
    roots = Roots.create(base / "datasets", base / "models", base / "outputs")
    files = {name: folder / "secret.png" for name, folder in
             (("datasets", roots.datasets), ("models", roots.models), ("outside", base))}
    files["outputs"] = roots.outputs / "run" / "samples" / "step-000001" / "p00-s1.png"
    files["outputs"].parent.mkdir(parents=True)
    for path in files.values():
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
    # user data a stranger must not learn: a run, a dataset folder and a local model, by name
    RunFolder.create(roots.outputs, SECRET_RUN, load_config("tiny-demo"))
    (roots.datasets / SECRET_DATASET).mkdir()
    (roots.models / f"{SECRET_MODEL}.safetensors").write_bytes(b"not a model")
    before = os.environ.get("GRADIO_TEMP_DIR")
    settings = Settings(roots=roots, host="0.0.0.0", auth=(USER, PASSWORD))
    app, studio = start_studio(settings, prevent_thread_lock=True)
    try:
        yield app.local_url.rstrip("/"), files, settings, app
    finally:
        app.close()
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before


@pytest.fixture
def session(exposed):
    url, *_ = exposed
    with httpx.Client(base_url=url) as http:
        assert http.post("/login", data={"username": USER, "password": PASSWORD}).status_code == 200
        yield http


def test_unauthenticated_requests_are_refused(exposed):
    url, files, *_ = exposed
    with httpx.Client(base_url=url) as http:
        assert http.get("/config").status_code == 401
        assert http.get("/gradio_api/info").status_code == 401
        assert http.get(f"/gradio_api/file={files['outputs']}").status_code == 401
        assert http.post("/gradio_api/call/start", json={"data": []}).status_code == 401
    with pytest.raises(Exception):
        Client(url, verbose=False)


def _route_urls(app) -> list[tuple[str, str]]:
    """(method, path) of every route the server has, path parameters filled with a harmless value."""
    import re

    def walk(routes, prefix: str):
        for route in routes:
            if getattr(route, "original_router", None) is not None:  # an included router (/gradio_api/…)
                yield from walk(route.original_router.routes, prefix)
                continue
            path = prefix + (getattr(route, "path", None) or "")
            if getattr(route, "routes", None):  # a mounted sub-app
                yield from walk(route.routes, path)
                continue
            methods = getattr(route, "methods", None) or {"GET"}
            yield "GET" if "GET" in methods else sorted(methods)[0], re.sub(r"\{[^}]*\}", "x", path) or "/"

    return sorted(set(walk(app.server_app.routes, "")))


def test_nothing_before_login_names_a_run_a_dataset_a_model_or_an_endpoint(exposed):
    url, _, _, app = exposed
    routes = _route_urls(app)
    assert ("GET", "/") in routes and ("GET", "/config") in routes and len(routes) > 30
    leaks = []
    with httpx.Client(base_url=url, timeout=5) as http:
        for method, path in routes:
            try:
                with http.stream(method, path, json={} if method != "GET" else None) as response:
                    body = b""
                    for chunk in response.iter_bytes():  # an event stream never ends: the first 256 KB do
                        body += chunk
                        if len(body) > 256_000:
                            break
            except httpx.ReadTimeout:
                continue  # a stream that sends nothing to a stranger
            text = body.decode("utf-8", "replace")
            for secret in (SECRET_RUN, SECRET_DATASET, SECRET_MODEL, *ENDPOINTS):
                if secret in text:
                    leaks.append(f"{method} {path} ({response.status_code}) names {secret}")
    assert not leaks, leaks
    with httpx.Client(base_url=url) as http:  # the login page itself still comes
        page = http.get("/")
        assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")


def test_the_live_feed_needs_the_login_too(exposed, session):
    url, *_ = exposed
    with httpx.Client(base_url=url) as http:
        refused = http.get("/studio/live")
        assert refused.status_code == 401 and "event-stream" not in refused.headers.get("content-type", "")
    with session.stream("GET", "/studio/live", timeout=30) as feed:
        assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in feed.iter_lines() if line.startswith("data: "))
    assert '"header"' in first and '"job"' in first and "status-badge" in first


def _call(http: httpx.Client, api_name: str, *data) -> str:
    """What the page gets from an event, as the raw event stream text (a dropdown's choices included)."""
    response = http.post(f"/gradio_api/call/{api_name}", json={"data": list(data)})
    assert response.status_code == 200, (api_name, response.status_code, response.text)
    return http.get(f"/gradio_api/call/{api_name}/{response.json()['event_id']}", timeout=120).text


def test_after_login_the_page_has_its_schema_and_lists_load_with_the_page(session):
    page = session.get("/").text
    assert "send_to_train" in page  # the schema is only withheld before login
    assert SECRET_DATASET not in page and SECRET_RUN not in page  # lists are filled when the page loads
    assert session.get("/config").status_code == 200
    # the lists the page loads (and refreshes) after login name the user's runs and datasets
    runs = _call(session, "list_runs", None)
    assert "event: complete" in runs and SECRET_RUN in runs, runs
    datasets = _call(session, "list_datasets", None)
    assert "event: complete" in datasets and SECRET_DATASET in datasets, datasets


def test_a_schema_in_an_unknown_shape_is_refused_not_sent():
    page = b'<script>window.gradio_api_info = {"named_endpoints": {"/start": {}}};</script><p>ok</p>'
    assert b"/start" not in withhold_schema(page) and b"<p>ok</p>" in withhold_schema(page)
    assert withhold_schema(b"<p>no schema here</p>") == b"<p>no schema here</p>"
    assert withhold_schema(b"<script>var gradio_api_info = 1</script>") is None


def test_a_wrong_password_is_refused(exposed):
    url, *_ = exposed
    with httpx.Client(base_url=url) as http:
        response = http.post("/login", data={"username": USER, "password": "wrong"})
        assert response.status_code == 400 and "Incorrect credentials" in response.text
        assert http.get("/config").status_code == 401
    with pytest.raises(Exception):
        Client(url, auth=(USER, "wrong"), verbose=False)


def test_only_the_outputs_root_is_served(exposed, session):
    _, files, *_ = exposed
    assert session.get(f"/gradio_api/file={files['outputs']}").status_code == 200
    for name in ("datasets", "models", "outside"):
        assert session.get(f"/gradio_api/file={files[name]}").status_code == 403, name
    outputs_dir = files["outputs"].parent
    for path in ("/etc/passwd", f"{outputs_dir}/../../../../secret.png",
                 f"{outputs_dir}%2F..%2F..%2F..%2F..%2Fsecret.png", "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd"):
        assert session.get(f"/gradio_api/file={path}").status_code == 403, path


def test_monitoring_is_off(session):
    assert session.get("/monitoring").status_code == 403
    assert session.get("/monitoring/summary").status_code == 403


def test_handler_calls_outside_the_roots_are_refused(exposed):
    url, files, *_ = exposed
    client = Client(url, auth=(USER, PASSWORD), verbose=False)
    for key, value in (("data.dir", "../models"), ("data.dir", str(files["outside"].parent)),
                       ("model.base", str(files["outside"])), ("model.vae", "../../outside")):
        notice = client.predict(api_name="/start", run_name="x", **{key: value})  # a refusal is a notice
        assert "⚠️ Cannot start" in notice and re.search("outside the (datasets|models) folder", notice)
    for run in ("../datasets", str(files["outside"].parent), "run/../../models"):
        *_, refused = client.predict(run, 1, "webui", api_name="/export_checkpoint")  # a refusal is a notice
        assert "⚠️" in refused and "run name" in refused
        refused = client.predict(run, 1, api_name="/delete_checkpoint")  # a refusal is a notice
        assert "⚠️" in refused and "run name" in refused
    assert files["outside"].exists() and files["models"].exists()


def test_launch_options_lock_the_studio_down(exposed):
    _, _, settings, _ = exposed
    options = launch_options(settings)
    assert options["allowed_paths"] == [str(settings.roots.outputs)]
    assert options["enable_monitoring"] is False and options["mcp_server"] is False
    assert options["show_error"] is False and options["auth"] == (USER, PASSWORD)
    assert Path(os.environ["GRADIO_TEMP_DIR"]).is_relative_to(settings.roots.outputs)  # uploads stay in a root


def test_exposed_without_a_password_warns_loudly(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    roots = Roots.create(tmp_path / "d", tmp_path / "m", tmp_path / "o")
    env = {"device": {"type": "cpu", "name": "cpu"}, "precision": {"precision": "fp32", "reason": "CPU"}}
    with caplog.at_level(logging.WARNING):
        warn_if_open(Settings(roots=roots, host="127.0.0.1"))
        assert not caplog.records
        warn_if_open(Settings(roots=roots, host="127.0.0.1", share=True))
    assert "WITHOUT A PASSWORD" in caplog.text and "share link" in caplog.text
    assert "exposed · no password" in _header_html(env, Settings(roots=roots, host="0.0.0.0"))
    assert "exposed · login required" in _header_html(env, Settings(roots=roots, host="0.0.0.0", auth=("a", "b")))
    assert ">local<" in _header_html(env, Settings(roots=roots))


def test_settings_from_the_command_line(tmp_path, monkeypatch):
    args = argparse.Namespace(host="127.0.0.1", port=7860, share=False, auth="ada:pa:ss", outputs=tmp_path / "o",
                              models=tmp_path / "m", datasets=tmp_path / "d")
    monkeypatch.delenv("SPACE_ID", raising=False)
    settings = Settings.from_args(args)
    assert settings.auth == ("ada", "pa:ss") and not settings.exposed
    assert settings.roots.datasets == (tmp_path / "d").resolve() and settings.roots.datasets.is_dir()
    monkeypatch.setenv("SPACE_ID", "someone/lora-studio")
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    space = Settings.from_args(args)
    assert space.host == "0.0.0.0" and space.exposed
    for bad in ("ada", ":pw", "ada:"):
        with pytest.raises(ValueError, match="USER:PASS"):
            parse_auth(bad)
