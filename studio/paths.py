"""Where the studio keeps things: the cache for built-in models and data, and default roots."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: builds are still atomic, only not serialised
    fcntl = None  # type: ignore[assignment]

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Folder for built-in tiny models and the demo dataset (`LORA_STUDIO_CACHE` overrides)."""
    env = os.environ.get("LORA_STUDIO_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "lora-studio"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_outputs_dir() -> Path:
    return Path(os.environ.get("LORA_STUDIO_OUTPUTS", REPO_ROOT / "outputs"))


def default_datasets_dir() -> Path:
    return Path(os.environ.get("LORA_STUDIO_DATASETS", REPO_ROOT / "datasets"))


def default_models_dir() -> Path:
    return Path(os.environ.get("LORA_STUDIO_MODELS", REPO_ROOT / "models"))


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive lock between processes (DDP ranks, a CLI beside the studio) building the same
    cached item; the second one waits, then finds the item complete."""
    path = cache_dir() / f".{name}.lock"
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def build_cached_dir(final: Path, is_complete: Callable[[Path], bool], build: Callable[[Path], object]) -> Path:
    """Return `final`, building it first if it is not complete.

    `build` fills a temporary folder beside `final`, which is then renamed into place (an
    incomplete or outdated `final` is set aside first), so a crashed or concurrent build never
    leaves a folder that passes for a finished one. Builders in other processes wait on a lock.
    """
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(final.name):  # DDP ranks or a CLI beside the studio may build at once
        if is_complete(final):  # built by another process while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
        try:
            build(tmp)
            if final.exists():
                stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale-", dir=final.parent))
                os.rename(final, stale / final.name)
                shutil.rmtree(stale)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return final
