"""Find a captioning model and open it for `from_pretrained`, with errors that say what to do.

`options.model` names one of: nothing (the captioner's default Hub model), `tiny-random` (built in
code, see `tiny.py`), a folder (absolute, or a name under `<models_dir>/captioners/`, then
`<models_dir>`), or a Hub id (`owner/name`). Hub weights download on first use; offline, a model
that is not in the local Hugging Face cache fails with a message naming it and saying how to
provide it. Folders holding only pickle weights (.bin / .pt / .ckpt) are refused, as the engine
does for base models: unpickling can run code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from studio.core.hub import hub_offline, is_hub_id
from studio.data.captioners.base import TINY_RANDOM, CaptionerError

log = logging.getLogger(__name__)

LABELS = {"blip": "BLIP", "florence2": "Florence-2"}
DEFAULT_MODELS = {
    "blip": "Salesforce/blip-image-captioning-base",
    "florence2": "florence-community/Florence-2-base",
}
CAPTIONERS_SUBDIR = "captioners"

# config.json `model_type` each captioner runs.
_MODEL_TYPES = {"blip": "blip", "florence2": "florence2"}
# Folder names the offline message suggests for well-known models.
_FOLDER_NAMES = {
    "Salesforce/blip-image-captioning-base": "blip-base",
    "Salesforce/blip-image-captioning-large": "blip-large",
    "florence-community/Florence-2-base": "florence2-base",
    "florence-community/Florence-2-large": "florence2-large",
}
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt"}
_UI_HINT = "(Dataset tab: the Model field)"


@dataclass(frozen=True)
class ModelSource:
    """What `options.model` names for `captioner`; `location` is "tiny-random", a folder or a Hub id."""

    captioner: str
    kind: Literal["tiny", "folder", "hub"]
    location: str
    models_dir: Path

    @property
    def label(self) -> str:
        return LABELS[self.captioner]

    @property
    def random_weights(self) -> bool:
        return self.kind == "tiny"


def resolve_model(captioner: str, model: str | None, models_dir: Path) -> ModelSource:
    """Say what `model` names for `captioner` without loading anything (see the module docstring)."""
    name = (model or "").strip() or DEFAULT_MODELS[captioner]
    if name == TINY_RANDOM:
        return ModelSource(captioner, "tiny", name, models_dir)
    path = Path(name).expanduser()
    if path.is_absolute():
        if not path.is_dir():
            raise CaptionerError(f"{LABELS[captioner]} model folder {path} does not exist")
        return ModelSource(captioner, "folder", str(path), models_dir)
    root = Path(os.path.normpath(models_dir.absolute()))
    for candidate in (root / CAPTIONERS_SUBDIR / name, root / name):
        candidate = Path(os.path.normpath(candidate))
        # a relative name stays inside the models folder: "../x" is not a way out of it
        if candidate.is_relative_to(root) and candidate.is_dir():
            return ModelSource(captioner, "folder", str(candidate), models_dir)
    if is_hub_id(name):
        return ModelSource(captioner, "hub", name, models_dir)
    raise CaptionerError(
        f"{LABELS[captioner]} model {name!r} was not found: there is no folder {models_dir / CAPTIONERS_SUBDIR / name} "
        f"or {models_dir / name}, and it is not a Hugging Face Hub id (owner/name). "
        f"Folders in {models_dir / CAPTIONERS_SUBDIR}: {', '.join(list_captioner_folders(models_dir)) or 'none'}; "
        f"built in: {TINY_RANDOM}."
    )


def list_captioner_folders(models_dir: Path) -> list[str]:
    """Names of the model folders under `<models_dir>/captioners/` (what the Model field may name)."""
    folder = models_dir / CAPTIONERS_SUBDIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file())


def open_source(source: ModelSource) -> tuple[str, bool]:
    """(what to pass to `from_pretrained`, local_files_only) after checking that the model is there,
    is the captioner's kind of model, and has safetensors weights. Builds tiny-random on first use."""
    if source.kind == "tiny":
        from studio.data.captioners.tiny import tiny_captioner_dir

        return str(tiny_captioner_dir(source.captioner)), True
    if source.kind == "folder":
        folder = Path(source.location)
        _check_folder(source, folder)
        _check_config(source, _read_folder_config(source, folder))
        return source.location, True

    from transformers import PretrainedConfig

    offline = hub_offline()
    with hub_errors(source):
        config, _ = PretrainedConfig.get_config_dict(source.location, local_files_only=offline)
    _check_config(source, config)
    return source.location, offline


def load_pretrained(source: ModelSource, processor_class: Any, model_class: Any, device: Any,
                    dtype: Any) -> tuple[Any, Any]:
    """(processor, model in eval mode on `device`) of `source`, safetensors weights only."""
    where, local_only = open_source(source)
    log.info("loading %s weights %s on %s (%s)", source.label, source.location, device, dtype)
    with hub_errors(source):
        processor = processor_class.from_pretrained(where, local_files_only=local_only)
        model = model_class.from_pretrained(where, dtype=dtype, use_safetensors=True, local_files_only=local_only)
    return processor, model.to(device).eval()


@contextlib.contextmanager
def hub_errors(source: ModelSource) -> Iterator[None]:
    """Turn the `OSError` of a failed `from_pretrained` into a `CaptionerError` that says what to do."""
    try:
        yield
    except OSError as exc:
        if source.kind != "hub":
            raise CaptionerError(f"could not load the {source.label} model in {source.location}: {exc}") from exc
        raise _hub_error(source, exc) from exc


def _hub_error(source: ModelSource, exc: OSError) -> CaptionerError:
    repo = source.location
    folder_name = _FOLDER_NAMES.get(repo, repo.split("/")[-1])
    target = source.models_dir / CAPTIONERS_SUBDIR / folder_name
    provide = (f"download the model folder to {target} (`hf download {repo} --local-dir {target}`) "
               f"and pass --model {folder_name} {_UI_HINT}")
    if hub_offline() or _hub_unreachable(exc):
        # the library's own text ("couldn't connect to huggingface.co") hides which model was missing
        why = "offline" if hub_offline() else "no connection"
        return CaptionerError(
            f"{source.label} weights {repo!r} are not on this machine and the Hugging Face Hub can't be reached "
            f"({why}). Run once with internet access, or {provide}.")
    return CaptionerError(
        f"{source.label} weights {repo!r} could not be loaded from the Hugging Face Hub ({exc}). Check the model id "
        f"and the internet connection, or {provide}.")


def _hub_unreachable(exc: BaseException) -> bool:
    """True when the files are not cached and the Hub could not be asked (huggingface_hub's
    LocalEntryNotFoundError somewhere in the chain), as opposed to a wrong id or a refused file."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    link: BaseException | None = exc
    visited: set[int] = set()
    while link is not None and id(link) not in visited:
        if isinstance(link, LocalEntryNotFoundError):
            return True
        visited.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _check_folder(source: ModelSource, folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise CaptionerError(f"{folder} is not a {source.label} model folder (no config.json); "
                             f"download the whole model folder (config, processor and weights files)")
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise CaptionerError(
            f"{folder} has only pickle weights ({', '.join(pickles)}), which can run arbitrary code when loaded; "
            "LoRA Studio only loads .safetensors. Download the model's .safetensors files (Hub repositories of "
            f"{', '.join(DEFAULT_MODELS.values())} have them).")
    raise CaptionerError(f"{folder} has no .safetensors weights: download the whole model folder")


def _read_folder_config(source: ModelSource, folder: Path) -> dict:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CaptionerError(f"{path} is not valid JSON ({exc}); download the {source.label} model again") from exc


def _check_config(source: ModelSource, config: dict) -> None:
    expected = _MODEL_TYPES[source.captioner]
    found = config.get("model_type")
    if found != expected:
        other = next((name for name, kind in _MODEL_TYPES.items() if kind == found), None)
        hint = f": use the {other} captioner for it" if other else ""
        raise CaptionerError(f"{source.location} is a {found or 'unknown'} model, not a {source.label} model{hint}")
    if "auto_map" in config:
        # microsoft/Florence-2-* ship their own modelling code; transformers' built-in classes read the
        # converted checkpoints instead, and we never run code downloaded with a model.
        raise CaptionerError(
            f"{source.location} is a {source.label} checkpoint that needs its own Python code (trust_remote_code), "
            f"which LoRA Studio never runs: use the transformers-native version, e.g. {DEFAULT_MODELS[source.captioner]}")
