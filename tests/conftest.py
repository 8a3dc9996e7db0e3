"""Shared test setup: offline, CPU, a throwaway cache for the built-in models and demo data."""

import os
import tempfile
from pathlib import Path

# Set before anything imports studio or gradio: no analytics, no Hub access, one cache per session.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("LORA_STUDIO_CACHE", tempfile.mkdtemp(prefix="lora-studio-cache-"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
