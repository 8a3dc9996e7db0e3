"""Where a studio user may read and write, and when the studio counts as exposed.

Every path a user can type or pick is confined to the configured roots — datasets, models,
outputs — always, not only when exposed: relative paths are taken inside the root, and an
absolute path or a `..` that leads outside it (symlinks resolved) is refused with a message
that names the root. Runs are addressed by name only, never by path.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from studio.core.hub import is_hub_id
from studio.core.resolve import inside, resolve_path
from studio.data.dataset import BUILTIN_DEMO
from studio.engine.builtin import BUILTIN_MODELS
from studio.engine.runs import RunFolder, check_run_name


class PathNotAllowed(ValueError):
    """A typed or picked path that leads outside the studio's roots, or names nothing there."""


@dataclass(frozen=True)
class Roots:
    """The folders the studio reads and writes; everything a user names must be inside one."""

    datasets: Path
    models: Path
    outputs: Path

    @classmethod
    def create(cls, datasets: Path, models: Path, outputs: Path) -> Roots:
        roots = cls(*(Path(p).expanduser().resolve() for p in (datasets, models, outputs)))
        for folder in (roots.datasets, roots.models, roots.outputs):
            folder.mkdir(parents=True, exist_ok=True)
        return roots

    @property
    def workspace(self) -> Path:
        """Gradio's upload and serving cache, kept inside the outputs root (hidden from run lists)."""
        return self.outputs / ".workspace"

    def allowed_paths(self) -> list[str]:
        """What Gradio may serve by path: the outputs root (samples, checkpoints, exports).

        Base models and datasets are never shown in the studio, so they are not servable.
        """
        return [str(self.outputs)]

    # --- datasets --------------------------------------------------------------------------
    def dataset(self, text: str) -> str:
        """`data.dir` as the engine takes it: `builtin:demo`, or an existing folder inside the datasets root."""
        value = (text or "").strip()
        if value == BUILTIN_DEMO:
            return value
        folder = _confine(value, self.datasets, "data.dir", "datasets")
        if not folder.is_dir():
            names = ", ".join(self.dataset_folders()) or "none yet"
            raise PathNotAllowed(f"data.dir: there is no folder {value!r} in the datasets folder {self.datasets} "
                                 f"(folders there: {names}; or use {BUILTIN_DEMO})")
        return str(folder)

    def dataset_folders(self) -> list[str]:
        return sorted(p.name for p in self.datasets.iterdir() if p.is_dir() and not p.name.startswith("."))

    # --- models ----------------------------------------------------------------------------
    def model(self, text: str, key: str, *, hub: bool = True) -> str:
        """A model reference as the engine takes it: a built-in model's name, a path inside the models
        root (made absolute, so the engine never looks in the working directory), or a Hub id."""
        value = (text or "").strip()
        if value in BUILTIN_MODELS:
            return value
        if not value:
            raise PathNotAllowed(f"{key} is empty: pick a built-in model, a model in {self.models} or a Hub id")
        for name in (value, f"{value}.safetensors"):
            candidate = _resolve_in(name, self.models)
            if candidate is not None and candidate.exists():
                return str(candidate)
        looks_like_path = Path(value).is_absolute() or ".." in Path(value).parts or value.startswith("~")
        if hub and not looks_like_path and is_hub_id(value):
            if Path(value).exists():
                raise PathNotAllowed(f"{key}: {value!r} is a local path outside the models folder {self.models}; "
                                     f"move the model there")
            return value
        if looks_like_path or Path(value).suffix == ".safetensors":
            _confine(value, self.models, key, "models")  # raises when outside
        hint = " or a Hub id (owner/name)" if hub else ""
        raise PathNotAllowed(f"{key}: {value!r} is not in the models folder {self.models}{hint}")

    def lora_source(self, text: str) -> str:
        """`lora.init_from`: a run (`RUN`, `RUN@STEP`) in the outputs root as typed, or a LoRA file or
        checkpoint folder inside the models root (made absolute)."""
        value = (text or "").strip()
        run_name = value.split("@", 1)[0]
        try:
            if RunFolder(self.outputs / check_run_name(run_name)).exists():
                return value
        except ValueError:
            pass
        return self.model(value, "lora.init_from", hub=False)

    # --- runs ------------------------------------------------------------------------------
    def run(self, name: str) -> RunFolder:
        """An existing run in the outputs root, addressed by its name only."""
        value = (name or "").strip()
        if not value:
            raise PathNotAllowed("pick a run first")
        try:
            check_run_name(value)
        except ValueError as err:
            raise PathNotAllowed(str(err)) from None
        run = RunFolder(self.outputs / value)
        if not run.exists():
            raise PathNotAllowed(f"there is no run {value!r} in {self.outputs}")
        return run

    def check_deletable(self, path: Path) -> Path:
        """Deletions happen only inside the outputs root."""
        resolved = Path(path).resolve()
        if not inside(resolved, self.outputs) or resolved == self.outputs:
            raise PathNotAllowed(f"refusing to delete {path}: only things inside {self.outputs} can be deleted")
        return resolved


def _resolve_in(text: str, root: Path) -> Path | None:
    """`text` resolved inside `root` by the one resolver the CLI uses too (`studio.core.resolve`: the
    working directory, then the root, then the studio's folder); None when it leaves the root."""
    return resolve_path(text, [root], within=root)


def _confine(text: str, root: Path, key: str, root_name: str) -> Path:
    if not text:
        raise PathNotAllowed(f"{key} is empty")
    resolved = _resolve_in(text, root)
    if resolved is None:
        raise PathNotAllowed(f"{key}: {text!r} is outside the {root_name} folder {root}; the studio only reads "
                             f"from there (put it inside, or start the studio with --{root_name} DIR)")
    return resolved


# --- exposure --------------------------------------------------------------------------------

def running_on_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_exposed(host: str, share: bool) -> bool:
    """Reachable by others: a share link, a non-loopback address, or a Hugging Face Space."""
    return share or running_on_space() or not is_loopback(host)
