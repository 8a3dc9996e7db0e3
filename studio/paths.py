"""Where the studio keeps things: the cache for built-in models and data, and default roots."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Folder for built-in tiny models and the demo dataset (`LORA_STUDIO_CACHE` overrides)."""
    env = os.environ.get("LORA_STUDIO_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "lora-studio"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_outputs_dir() -> Path:
    return Path(os.environ.get("LORA_STUDIO_OUTPUTS", REPO_ROOT / "outputs"))


def default_models_dir() -> Path:
    return Path(os.environ.get("LORA_STUDIO_MODELS", REPO_ROOT / "models"))
