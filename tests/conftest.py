"""Shared test setup: offline, CPU, a throwaway cache for the built-in models and demo data."""

import os
import tempfile
from pathlib import Path

# Set before anything imports studio or gradio: no analytics, no Hub access, one cache per session.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
# one torch thread per test process: on 2 shared cores more threads only fight each other
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("LORA_STUDIO_CACHE", tempfile.mkdtemp(prefix="lora-studio-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
