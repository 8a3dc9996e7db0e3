"""The run-config form, generated from the schema: one component per `section.key`.

Each field's label is its key (the name `--set` and the YAML use) and its help is the field's
docstring. The main settings are laid out in rows; the rest sit in one collapsed accordion per
config section. Values go from config to form (`form_values`) and back (`form_config`), where the
paths are confined to the studio's roots before the config is validated.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, get_args

import gradio as gr
import yaml

from studio.config import (SECTIONS, ConfigError, RunConfig, all_keys, field_help, field_name, literal_choices,
                           load_config)
from studio.data.dataset import BUILTIN_DEMO
from studio.engine.builtin import BUILTIN_MODELS
from studio.engine.environment import human_bytes
from studio.engine.models import list_local_models
from studio.ui.security import PathNotAllowed, Roots

MAIN_ROWS: tuple[tuple[str, ...], ...] = (
    ("model.base", "model.family"),
    ("data.dir", "data.trigger_word"),
    ("data.resolution", "train.max_steps"),
    ("train.batch_size", "optim.learning_rate"),
    ("lora.rank", "lora.alpha"),
    ("optim.scheduler", "sample.every_steps"),
    ("save.every_steps", "save.keep_last"),
)
MAIN_KEYS = frozenset(k for row in MAIN_ROWS for k in row)
SECTION_TITLES = {"model": "Model", "data": "Data", "lora": "LoRA", "optim": "Optimizer", "train": "Training",
                  "sample": "Samples", "save": "Checkpoints", "log": "Logging"}
ADVANCED: dict[str, list[str]] = {
    section: [k for k in all_keys() if k.startswith(f"{section}.") and k not in MAIN_KEYS] for section in SECTIONS
}
FIELD_ORDER: tuple[str, ...] = (*(k for row in MAIN_ROWS for k in row),
                                *(k for keys in ADVANCED.values() for k in keys))
"""Every key, in the order the form lays the fields out (handlers return values in this order)."""
PATH_KEYS = {"model.base", "model.vae", "model.single_file_config", "data.dir", "lora.init_from"}


def _info(key: str) -> Any:
    section, name = key.split(".")
    return SECTIONS[section].model_fields[name]


def _annotation(key: str) -> Any:
    return _info(key).annotation


def _kind(key: str) -> str:
    """bool · int · float · str · choice · list_str · list_int · pairs (optional ones accept empty)."""
    if literal_choices(key):
        return "choice"
    annotation = _annotation(key)
    if getattr(annotation, "__origin__", None) is list:
        inner = get_args(annotation)[0]
        if getattr(inner, "__origin__", None) is tuple:
            return "pairs"
        return "list_int" if inner is int else "list_str"
    base = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return {bool: "bool", int: "int", float: "float"}.get(base[0], "str")


def _optional(key: str) -> bool:
    return type(None) in get_args(_annotation(key))


# --- choices for the two pickers ---------------------------------------------------------------

def base_model_choices(roots: Roots | None) -> list[tuple[str, str]]:
    """The built-in models, then (given the roots) the local ones: the page fills those in when it loads,
    so no user data is baked into the page before login."""
    choices = [(f"{m.name} (built in, {m.family}{'' if m.pretrained else ', random weights'})", m.name)
               for m in BUILTIN_MODELS.values()]
    for model in list_local_models(roots.models) if roots else []:
        if model.kind != "lora" and model.problem is None:
            choices.append((f"{model.name} ({model.family or '?'}, {human_bytes(model.size_bytes)})", model.name))
    return choices


def model_family(roots: Roots, base: str) -> str | None:
    """The family of a picked built-in or local model (None for a Hub id or an unknown name)."""
    if base in BUILTIN_MODELS:
        return BUILTIN_MODELS[base].family
    for model in list_local_models(roots.models):
        if base in (model.name, str(model.path)):
            return model.family
    return None


def dataset_choices(roots: Roots | None) -> list[tuple[str, str]]:
    """The demo, then (given the roots) the dataset folders, which the page fills in when it loads."""
    folders = roots.dataset_folders() if roots else []
    return [("builtin:demo (16 toy robots)", BUILTIN_DEMO)] + [(name, name) for name in folders]


# --- building ----------------------------------------------------------------------------------

def _component(key: str, value: Any, roots: Roots) -> gr.Component:
    kind = _kind(key)
    # a dropdown shows its choices; everything else gets the docstring with its allowed values
    help_text = " ".join((_info(key).description or "").split()) if kind == "choice" else field_help(key)
    if key == "model.base":
        return gr.Dropdown(base_model_choices(None), value=value, label=key, info=help_text, allow_custom_value=True)
    if key == "data.dir":
        return gr.Dropdown(dataset_choices(None), value=value, label=key, info=help_text, allow_custom_value=True)
    if kind == "choice":
        return gr.Dropdown(list(literal_choices(key)), value=value, label=key, info=help_text)
    if kind == "bool":
        return gr.Checkbox(value=value, label=key, info=help_text)
    if kind in ("int", "float") and _optional(key):  # a Number can't hold "empty" as a default value
        return gr.Textbox(value=value, label=key, info=help_text, placeholder="empty")
    if kind in ("int", "float"):
        return gr.Number(value=value, label=key, info=help_text, precision=0 if kind == "int" else None)
    if kind == "list_str":
        return gr.Textbox(value=value, label=key, info=help_text + " One per line.", lines=2, max_lines=8)
    if kind == "pairs":
        return gr.Textbox(value=value, label=key, info=help_text + " As until_step:max_steps, comma-separated.")
    return gr.Textbox(value=value, label=key, info=help_text + (" Comma-separated." if kind == "list_int" else ""))


def build_form(config: RunConfig, roots: Roots) -> dict[str, gr.Component]:
    """Main fields in rows, then one collapsed accordion per section; returns key → component."""
    values = form_values(config)
    fields: dict[str, gr.Component] = {}
    for row in MAIN_ROWS:
        with gr.Row(equal_height=True):
            for key in row:
                fields[key] = _component(key, values[key], roots)
    for section, advanced in ADVANCED.items():
        if not advanced:
            continue
        with gr.Accordion(f"{SECTION_TITLES.get(section, section)} · advanced", open=False):
            for i in range(0, len(advanced), 2):
                with gr.Row(equal_height=True):
                    for key in advanced[i:i + 2]:
                        fields[key] = _component(key, values[key], roots)
    return fields


# --- config ↔ form values ----------------------------------------------------------------------

def form_values(config: RunConfig) -> dict[str, Any]:
    """Every key's value as its component shows it."""
    data = config.model_dump(mode="json")
    out = {}
    for key in all_keys():
        section, name = key.split(".")
        value, kind = data[section][name], _kind(key)
        if kind == "list_str":
            value = "\n".join(value)
        elif kind == "list_int":
            value = ", ".join(str(v) for v in value)
        elif kind == "pairs":
            value = ", ".join(f"{a}:{b}" for a, b in value)
        elif value is None:
            value = ""
        out[key] = value
    return out


def job_form_values(config: RunConfig, roots: Roots) -> dict[str, Any]:
    """A running job's config as the form shows it: its paths (absolute once the run resolved them) as
    the names the pickers list when they lie inside the studio's roots."""
    values = form_values(config)
    for key in PATH_KEYS:
        root = roots.datasets if key == "data.dir" else roots.models
        path = Path(str(values[key]))
        if values[key] and path.is_absolute() and path.is_relative_to(root):
            values[key] = path.relative_to(root).as_posix()
    return values


def _parse(key: str, raw: Any) -> Any:
    kind = _kind(key)
    if kind in ("bool", "choice"):
        return raw
    if kind == "list_str":
        return [line.strip() for line in str(raw or "").splitlines() if line.strip()]
    if kind == "list_int":
        parts = [p.strip() for p in str(raw or "").replace(";", ",").split(",") if p.strip()]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"`{key}`: expected whole numbers separated by commas, got {raw!r}",
                              [f"{field_name(key)} takes whole numbers separated by commas ({key})."]) from None
    if kind == "pairs":
        try:
            return [[int(x) for x in p.split(":")] for p in str(raw or "").replace(";", ",").split(",") if p.strip()]
        except ValueError:
            raise ConfigError(f"`{key}`: expected until_step:max_steps pairs separated by commas, got {raw!r}",
                              [f"{field_name(key)} takes until_step:max_steps pairs separated by commas ({key})."]
                              ) from None
    if kind == "str":
        text = str(raw or "").strip() if key in PATH_KEYS else str(raw or "")
        return None if _optional(key) and not text.strip() else text
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if _optional(key):
            return None
        raise ConfigError(f"`{key}` is empty: enter a number", [f"{field_name(key)} is empty: enter a number ({key})."])
    try:
        return int(raw) if kind == "int" else float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"`{key}`: {raw!r} is not a number",
                          [f"{field_name(key)} must be a number, not {raw!r} ({key})."]) from None


def form_config(values: dict[str, Any], roots: Roots) -> RunConfig:
    """Validate the form into a RunConfig; paths are confined to the roots first.

    Raises ConfigError (bad value, naming the key) or PathNotAllowed (a path outside the roots).
    """
    overrides = {key: _parse(key, values[key]) for key in all_keys() if key in values}
    overrides["data.dir"] = roots.dataset(overrides.get("data.dir") or "")
    overrides["model.base"] = roots.model(overrides.get("model.base") or "", "model.base")
    if overrides.get("model.vae"):
        overrides["model.vae"] = roots.model(overrides["model.vae"], "model.vae")
    if overrides.get("model.single_file_config"):
        overrides["model.single_file_config"] = roots.model(overrides["model.single_file_config"],
                                                            "model.single_file_config", hub=False)
    if overrides.get("lora.init_from"):
        overrides["lora.init_from"] = roots.lora_source(overrides["lora.init_from"])
    _confine_backbones(overrides, roots)
    if overrides.get("train.max_epochs") is not None:
        overrides.pop("train.max_steps", None)  # the epochs decide the length (config.load_config)
    return load_config(None, overrides)


def _confine_backbones(overrides: dict[str, Any], roots: Roots) -> None:
    """sample.score_backbone / sample.score_dino as the Score tab takes them: listed names, open_clip tags,
    weights files only inside the models root."""
    from studio.ui.eval_view import clip_backbone, dino_backbone

    for key, confine in (("sample.score_backbone", clip_backbone), ("sample.score_dino", dino_backbone)):
        if overrides.get(key):
            try:
                overrides[key] = confine(roots, overrides[key])
            except PathNotAllowed:
                raise
            except ValueError as err:
                raise ConfigError(f"`{key}`: {err}") from None


def cli_command(preset: str, config: RunConfig, run_name: str) -> str:
    """The `python studio.py train` line that trains the same config from a terminal."""
    base, mine = load_config(preset).model_dump(mode="json"), config.model_dump(mode="json")
    parts = ["python studio.py train", f"--preset {shlex.quote(preset)}"]
    if run_name.strip():
        parts.append(f"--name {shlex.quote(run_name.strip())}")
    for key in all_keys():
        section, name = key.split(".")
        value = mine[section][name]
        if key == "train.max_steps" and mine["train"]["max_epochs"] is not None:
            continue  # worked out from train.max_epochs
        if value != base[section][name]:
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)
            text = text if isinstance(value, str) else text.strip().removesuffix("...").strip()
            parts.append(f"--set {shlex.quote(f'{key}={text}')}")
    return " \\\n  ".join(parts)
