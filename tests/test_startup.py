"""A start that talks: `python studio.py` says it is starting at once and prints the address once the
page answers; building the page loads no model library (peft, transformers, diffusers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from studio.commands.startup_bench import format_startup_bench, time_one_start
from studio.ui.app import Settings, ready_line
from studio.ui.security import Roots

ROOT = Path(__file__).resolve().parents[1]


def test_the_studio_prints_a_line_at_once_and_its_address_when_the_page_answers():
    run = time_one_start(timeout_s=600)
    assert run.page_s is not None, "\n".join(run.output)
    assert run.first_line.startswith("LoRA Studio") and "starting" in run.first_line
    assert run.first_line_s is not None and run.first_line_s < run.page_s  # it talked before it could serve
    assert run.ready_s is not None and run.ready_line.startswith("LoRA Studio is ready: open http://127.0.0.1:")
    assert not any("share=True" in line for line in run.output)  # Gradio's own launch chatter is off
    report = format_startup_bench([run], [])
    assert "page answers GET / 200 (wall)" in report and f"{run.page_s:.2f}" in report


def test_building_the_page_loads_no_model_library(tmp_path):
    script = (
        "import json, sys, pathlib\n"
        "from studio.ui.app import Settings, build_app\n"
        "from studio.ui.security import Roots\n"
        f"base = pathlib.Path({str(tmp_path)!r})\n"
        "build_app(Settings(roots=Roots.create(base / 'd', base / 'm', base / 'o')))\n"
        "print(json.dumps(sorted(m for m in ('torch', 'peft', 'transformers', 'diffusers', 'open_clip') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_ready_line_names_the_address_to_open(tmp_path):
    roots = Roots.create(tmp_path / "d", tmp_path / "m", tmp_path / "o")
    local = ready_line(Settings(roots=roots), "http://127.0.0.1:7860/", None)
    assert local.splitlines()[0] == "LoRA Studio is ready: open http://127.0.0.1:7860"
    everywhere = ready_line(Settings(roots=roots, host="0.0.0.0"), "http://0.0.0.0:7861/", "https://abc.gradio.live")
    assert "open http://127.0.0.1:7861 (listening on 0.0.0.0" in everywhere
    assert "public link: https://abc.gradio.live" in everywhere
