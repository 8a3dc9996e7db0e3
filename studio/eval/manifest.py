"""The manifests of grids and batches: typed, with one reader and one writer for both.

A grid folder (`outputs/<run>/grids/<name>/`) and a batch folder (written by `generate`) each hold a
`manifest.json`. Grids, scoring, batches and the tabs read it through `read_grid_manifest` /
`read_batch_manifest` and write it through `write_manifest`, so its fields are checked in one place.

Grid manifest, version 2 (version 1, written before the baseline prompts and external columns,
still loads: a column without `kind` is prompt only when it has no LoRA, and an image's `row_prompt`
is its `prompt`):

- the settings: `prompts` (raw, may hold `{trigger}`), `baseline_prompts` (one per prompt, or
  empty), `seeds`, sampler settings, base model, trigger word and class phrase;
- `columns`: `{kind, label, step, scale, lora, source}` — `kind` is `prompt_only` (no LoRA: the
  row's prompt, or its baseline prompt when the grid has them), `lora` (a LoRA file of the run at a
  scale) or `external` (another generator's images from `source`);
- `images`: one per cell, `{file, row, column, prompt, row_prompt, seed, step, scale, lora, label}`
  where `prompt` is what the cell shows (the baseline prompt in a baseline column), `row_prompt` the
  row's own prompt (what CLIP-T is scored against), `seed` null for external images, which also
  carry `source` (the file they came from).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from studio.core.atomic import write_json_atomic

MANIFEST_FILE = "manifest.json"
GRID_VERSION = 2
PROMPT_ONLY = "prompt only"
BASELINE = "baseline prompt"
ColumnKind = Literal["prompt_only", "lora", "external"]
COLUMN_KINDS: tuple[str, ...] = ("prompt_only", "lora", "external")


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class Column:
    kind: ColumnKind
    label: str
    """"prompt only", "baseline prompt", "step 4 · ×1", "final · ×0.5", or an external column's label."""
    step: int | None = None
    """The LoRA's step; None without a LoRA."""
    scale: float = 0.0
    """LoRA scale; 0.0 without a LoRA."""
    lora: str | None = None
    """LoRA file relative to the run folder ("<run>.safetensors" for the final LoRA)."""
    source: str | None = None
    """external: the folder (or "uploaded files") the images came from."""

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "label": self.label, "step": self.step, "scale": self.scale, "lora": self.lora}
        return out | ({"source": self.source} if self.kind == "external" else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Column:
        kind = data.get("kind") or ("prompt_only" if data.get("lora") is None and data.get("step") is None else "lora")
        if kind not in COLUMN_KINDS:
            raise ValueError(f"column kind {kind!r} is not one of {', '.join(COLUMN_KINDS)}")
        step = data.get("step")
        return cls(kind=kind, label=str(data["label"]), step=None if step is None else int(step),
                   scale=float(data.get("scale") or 0.0), lora=data.get("lora"), source=data.get("source"))


@dataclass(frozen=True)
class GridImage:
    file: str
    row: int
    column: int
    prompt: str
    """What the cell shows: the row's prompt, its baseline prompt, or (external) the row's prompt."""
    row_prompt: str
    """The row's own prompt, trigger word filled in: CLIP-T of every column in the row is scored against it."""
    seed: int | None
    """None for an external image."""
    label: str
    step: int | None = None
    scale: float = 0.0
    lora: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"file": self.file, "row": self.row, "column": self.column, "prompt": self.prompt,
               "row_prompt": self.row_prompt, "seed": self.seed, "step": self.step, "scale": self.scale,
               "lora": self.lora, "label": self.label}
        return out | ({"source": self.source} if self.source is not None else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any], columns: list[Column]) -> GridImage:
        column = int(data["column"])
        if not 0 <= column < len(columns):
            raise ValueError(f"column {column} is not one of the {len(columns)} columns")
        name = str(data["file"])
        if not name or Path(name).name != name:
            raise ValueError(f"image file {name!r} must be a file name inside the grid folder")
        seed = data.get("seed")
        return cls(file=name, row=int(data.get("row", 0)), column=column, prompt=str(data["prompt"]),
                   row_prompt=str(data.get("row_prompt") or data["prompt"]),
                   seed=None if seed is None else int(seed), label=str(data.get("label") or columns[column].label),
                   step=columns[column].step, scale=columns[column].scale, lora=columns[column].lora,
                   source=data.get("source"))


@dataclass
class GridManifest:
    name: str
    run: str
    prompts: list[str]
    seeds: list[int]
    columns: list[Column]
    images: list[GridImage]
    inference_steps: int
    guidance: float
    width: int
    height: int
    created: str = ""
    baseline_prompts: list[str] = field(default_factory=list)
    negative_prompt: str = ""
    trigger_word: str = ""
    class_phrase: str = ""
    base_model: str | None = None
    family: str | None = None
    vae: str | None = None
    sampler: str | None = None
    device: str | None = None
    dtype: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    version: int = GRID_VERSION

    @property
    def rows(self) -> int:
        return len({im.row for im in self.images})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["columns"] = [c.to_dict() for c in self.columns]
        data["images"] = [im.to_dict() for im in sorted(self.images, key=lambda im: (im.row, im.column))]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridManifest:
        columns = [Column.from_dict(c) for c in data["columns"]]
        known = {f.name for f in fields(cls)} - {"columns", "images"}
        values = {k: v for k, v in data.items() if k in known}
        values["baseline_prompts"] = list(data.get("baseline_prompts") or [])
        values["negative_prompt"] = data.get("negative_prompt") or ""
        values["trigger_word"] = data.get("trigger_word") or ""
        values["class_phrase"] = data.get("class_phrase") or ""
        values["versions"] = data.get("versions") or {}
        values["version"] = int(data.get("version") or 1)
        manifest = cls(**values, columns=columns, images=[GridImage.from_dict(im, columns) for im in data["images"]])
        manifest.prompts, manifest.seeds = list(manifest.prompts), [int(s) for s in manifest.seeds]
        manifest.inference_steps, manifest.guidance = int(manifest.inference_steps), float(manifest.guidance)
        manifest.width, manifest.height = int(manifest.width), int(manifest.height)
        return manifest


@dataclass(frozen=True)
class BatchImage:
    file: str
    index: int
    prompt: str
    """The prompt it was generated with, trigger word filled in (its caption too)."""
    seed: int
    step: int | None = None
    scale: float = 0.0
    lora: str | None = None


@dataclass
class BatchManifest:
    """A `generate` batch: the settings that must match for it to continue in its folder, then the rest."""

    run: str
    base_model: str
    family: str
    vae: str | None
    lora: str | None
    step: int | None
    scale: float
    seed: int
    prompts: list[str]
    inference_steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str
    trigger_word: str
    class_phrase: str = ""
    created: str = ""
    updated: str = ""
    count: int = 0
    images: list[BatchImage] = field(default_factory=list)
    sampler: str | None = None
    device: str | None = None
    dtype: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    SETTINGS = ("run", "base_model", "family", "vae", "lora", "step", "scale", "seed", "prompts", "inference_steps",
                "guidance", "width", "height", "negative_prompt", "trigger_word")
    """What must match for a batch to continue in a folder (the count may grow or shrink)."""

    def settings(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["images"] = [asdict(im) for im in self.images]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchManifest:
        known = {f.name for f in fields(cls)} - {"images"}
        values = {k: v for k, v in data.items() if k in known}
        values["class_phrase"] = data.get("class_phrase") or ""
        values["versions"] = data.get("versions") or {}
        images = [BatchImage(file=str(im["file"]), index=int(im["index"]), prompt=str(im["prompt"]),
                             seed=int(im["seed"]), step=im.get("step"), scale=float(im.get("scale") or 0.0),
                             lora=im.get("lora")) for im in data.get("images") or []]
        return cls(**values, images=images)


def _read_json(path: Path, remedy: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not valid JSON ({err}): {remedy}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a manifest (a JSON object): {remedy}")
    return data


def read_grid_manifest(folder: Path) -> GridManifest:
    """The grid in `folder`; FileNotFoundError when it has no manifest, ManifestError when it is broken."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no grid ({MANIFEST_FILE} is missing)")
    data = _read_json(path, "make the grid again")
    missing = [key for key in ("images", "columns") if not isinstance(data.get(key), list)]
    if missing or not data["images"]:
        raise ManifestError(f"{path} lists no images (missing or empty: {', '.join(missing) or 'images'}): "
                            "make the grid again")
    for entry in data["images"]:
        lacking = [key for key in ("file", "column", "prompt") if key not in entry] if isinstance(entry, dict) else ["all"]
        if lacking:
            raise ManifestError(f"{path}: image entry {entry} lacks {', '.join(lacking)}: make the grid again")
    try:
        return GridManifest.from_dict(data)
    except KeyError as err:
        raise ManifestError(f"{path} has no {err.args[0]!r}, so the grid cannot be read: make the grid again") from None
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{path} is malformed ({err}): make the grid again") from None


def read_batch_manifest(folder: Path) -> BatchManifest:
    """The batch in `folder`; FileNotFoundError when it has no manifest, ManifestError when it is broken."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no batch ({MANIFEST_FILE} is missing): give a folder written by "
                                "generate")
    data = _read_json(path, "move the folder away or choose another one")
    try:
        return BatchManifest.from_dict(data)
    except KeyError as err:
        raise ManifestError(f"{path} has no {err.args[0]!r}: it is not a batch written by generate") from None
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{path} is not a batch manifest ({err}): choose another folder") from None


def write_manifest(folder: Path, manifest: GridManifest | BatchManifest) -> Path:
    """`folder/manifest.json`, atomically."""
    return write_json_atomic(Path(folder) / MANIFEST_FILE, manifest.to_dict())
