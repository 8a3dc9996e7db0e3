"""Shared test setup: offline, CPU, a throwaway cache for the built-in models and demo data."""

import contextlib
import os
import tempfile
from pathlib import Path

# Set before anything imports studio or gradio: no analytics, no Hub access, one cache per session.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
# one torch thread per test process: on 2 shared cores more threads only fight each other
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("LORA_STUDIO_CACHE", tempfile.mkdtemp(prefix="lora-studio-cache-"))
# the machine-wide accelerator lock of this test session only (a studio running beside the tests, or
# another test session, holds its own)
os.environ.setdefault("LORA_STUDIO_LOCK_DIR", tempfile.mkdtemp(prefix="lora-studio-lock-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """A model/data cache of the module's own, for tests that check what gets built and when."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_STUDIO_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@contextlib.contextmanager
def launched_studio(base: Path):
    """The studio served on a free local port with datasets/models/outputs roots under `base`;
    yields (app, studio) and stops any job and the server afterwards."""
    from studio.ui.app import Settings, start_studio
    from studio.ui.security import Roots

    roots = Roots.create(base / "datasets", base / "models", base / "outputs")
    (roots.datasets / "empty").mkdir()
    before = os.environ.get("GRADIO_TEMP_DIR")
    app, studio = start_studio(Settings(roots=roots), prevent_thread_lock=True)
    try:
        yield app, studio
    finally:
        if studio.runner.snapshot().active:
            studio.runner.stop()
        studio.runner.join(60)
        app.close()
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before


def components(family: str) -> list[str]:
    """The model parts of a pipeline of `family` that hold weights."""
    return ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])


def assert_same_weights(a, b, family: str) -> None:
    """Two pipelines have bit-identical weights in every part."""
    for name in components(family):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        different = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not different, f"{name}: {different[:3]}"


def train_tiny_run(outputs: Path, name: str = "tiny-run", *overrides: str):
    """A finished tiny-sd15 run on the demo dataset with checkpoints at steps 4 and 8 (a few seconds)."""
    from studio.config import load_config
    from studio.engine.runs import RunFolder
    from studio.engine.train import run_training

    # the demo preset on the random-weights tiny-sd15 (the preset's toy-sd15 is for quality tests)
    config = load_config("tiny-demo", ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4",
                                       "lora.targets=attention", "train.max_steps=8", "train.batch_size=2",
                                       "save.every_steps=4",
                                       "save.keep_last=5", "sample.every_steps=0", "optim.warmup_steps=0",
                                       *overrides])
    run = RunFolder.create(outputs, name, config)
    assert run_training(config, run) == "finished"
    return run


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One finished tiny run shared by the evaluation tests (read it, don't change it: copy it first)."""
    return train_tiny_run(tmp_path_factory.mktemp("outputs"))


@pytest.fixture(scope="module")
def browser():
    """Debian chromium through Playwright, one per test module (see browser_support.py).

    Every `expect` waits up to TIMEOUT_MS for its state (Playwright's own default, 5 s, is shorter
    than a Start on a busy 2-core machine), and every page action likewise."""
    from playwright.sync_api import expect

    from browser_support import TIMEOUT_MS, launch_chromium

    expect.set_options(timeout=TIMEOUT_MS)
    with launch_chromium() as chromium:
        yield _PatientBrowser(chromium, TIMEOUT_MS)


class _PatientBrowser:
    """The browser, whose new pages wait `timeout_ms` for an element before an action fails."""

    def __init__(self, chromium, timeout_ms: int) -> None:
        self._chromium, self._timeout_ms = chromium, timeout_ms

    def new_page(self, **kwargs):
        page = self._chromium.new_page(**kwargs)
        page.set_default_timeout(self._timeout_ms)
        return page

    def __getattr__(self, name):
        return getattr(self._chromium, name)
