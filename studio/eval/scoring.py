"""CLIP-I, CLIP-T and DINO scores for a comparison grid, as in the DreamBooth paper, in scores.json.

CLIP-I and DINO: mean cosine between a generated image's features and each reference image's
(the run's training images unless told otherwise). CLIP-T: cosine between a generated image and its
prompt, with the trigger word replaced by the class phrase (CLIP has never seen `ohwx`). Raw
cosines; scores.json names the backbones beside the numbers.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from studio.data.atomic import write_json_atomic
from studio.data.dataset import DatasetError, scan_dataset
from studio.data.images import ImageSkip, load_image
from studio.engine.gpu_lock import ACCELERATOR
from studio.engine.runs import RunFolder, now_iso
from studio.eval.backbones import CLIP_DEFAULT, DINO_DEFAULT, ClipBackbone, DinoBackbone, load_clip, load_dino
from studio.eval.scorecard import recommend

MANIFEST_FILE = "manifest.json"
SCORES_FILE = "scores.json"
_BATCH = 16
"""Images decoded at a time: bounds the memory of decoded references on big datasets."""


def clip_t_prompt(prompt: str, trigger: str, class_phrase: str) -> str:
    """`prompt` with the trigger word (whole word, any case) replaced by the class phrase.

    "a photo of ohwx toy robot" with class phrase "toy robot" becomes "a photo of toy robot", not
    "… toy robot toy robot". Without a class phrase the trigger word is dropped and spaces tidied.
    """
    trigger, class_phrase = trigger.strip(), " ".join(class_phrase.split())
    if not trigger:
        return prompt
    word = rf"(?<!\w){re.escape(trigger)}(?!\w)"
    if not class_phrase:
        text = re.sub(word, "", prompt, flags=re.IGNORECASE)
        text = re.sub(r"\s+([,.;:!?)])", r"\1", re.sub(r"\s+", " ", text))
        return re.sub(r"^[\s,;:]+", "", text).strip()
    phrase = r"\s+".join(re.escape(w) for w in class_phrase.split())
    text = re.sub(rf"{word}\s+({phrase})(?!\w)", lambda m: m.group(1), prompt, flags=re.IGNORECASE)
    return re.sub(word, lambda m: class_phrase, text, flags=re.IGNORECASE)


def reference_images(run: RunFolder, refs: Path | str | None = None) -> list[Path]:
    """The usable images of `refs`, or by default of the run's training folder (`data.dir`)."""
    return _references(run, refs)[1]


def score_grid(run: RunFolder, grid_name: str, *, refs: Path | str | None = None, clip: str = CLIP_DEFAULT,
               dino: str = DINO_DEFAULT, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score every image of grid `grid_name`, write `scores.json` beside it (atomic) and return it.

    `progress(done, total)` counts images encoded (references, then the grid's). Raises
    FileNotFoundError / ValueError for a missing or broken grid or reference folder, BackboneError
    for a model that cannot be loaded, AcceleratorBusy while training holds the device.
    """
    # 1. Check inputs: the grid, its images and the references, before any model loads
    folder = grid_folder(run, grid_name)
    manifest = _read_manifest(folder)
    images = manifest["images"]
    generated = [_grid_image_path(folder, entry) for entry in images]
    ref_folder, ref_paths = _references(run, refs)
    trigger, class_phrase = manifest.get("trigger_word") or "", manifest.get("class_phrase") or ""
    clip_prompts = [clip_t_prompt(entry["prompt"], trigger, class_phrase) for entry in images]

    # 2. Features, on the accelerator
    total, done = len(ref_paths) + len(generated), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    with ACCELERATOR.hold("scoring"):
        clip_model, dino_model = load_clip(clip), load_dino(dino)
        tick(0)
        ref_clip, ref_dino = _encode_files(ref_paths, clip_model, dino_model, tick)
        gen_clip, gen_dino = _encode_files(generated, clip_model, dino_model, tick)
        texts = sorted(set(clip_prompts))
        text_features = clip_model.encode_texts(texts)

    # 3. Cosines (features are unit vectors: a dot product is the cosine), accumulated in fp64
    clip_i = (gen_clip.double() @ ref_clip.double().T).mean(dim=1).tolist()
    dino_s = (gen_dino.double() @ ref_dino.double().T).mean(dim=1).tolist()
    text_rows = text_features.double()[[texts.index(p) for p in clip_prompts]]
    clip_t = (gen_clip.double() * text_rows).sum(dim=1).tolist()

    # 4. Per image, per column, the recommendation; then scores.json
    rows = [{
        "file": entry["file"], "column": entry["column"], "label": entry.get("label"), "step": entry.get("step"),
        "scale": entry.get("scale"), "prompt": entry["prompt"], "clip_prompt": clip_prompts[i],
        "seed": entry.get("seed"), "clip_i": clip_i[i], "clip_t": clip_t[i], "dino": dino_s[i],
    } for i, entry in enumerate(images)]
    columns = [_column_scores(index, column, rows) for index, column in enumerate(manifest["columns"])]
    random_weights = clip_model.random_weights or dino_model.random_weights
    scores = {
        "grid": grid_name,
        "run": run.name,
        "created": now_iso(),
        "backbones": {"clip": {"name": clip_model.name, "random_weights": clip_model.random_weights},
                      "dino": {"name": dino_model.name, "random_weights": dino_model.random_weights}},
        "references": {"folder": str(ref_folder), "count": len(ref_paths)},
        "images": rows,
        "columns": columns,
        "recommendation": recommend(columns, random_weights=random_weights),
    }
    write_json_atomic(folder / SCORES_FILE, scores)
    return scores


def load_scores(run: RunFolder, grid_name: str) -> dict[str, Any] | None:
    """The grid's scores.json, or None when it has not been scored."""
    path = grid_folder(run, grid_name) / SCORES_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): score the grid again") from err


def grid_folder(run: RunFolder, grid_name: str) -> Path:
    """`outputs/<run>/grids/<grid_name>`; the name must be a plain folder name."""
    if not grid_name or Path(grid_name).name != grid_name or grid_name in (".", ".."):
        raise ValueError(f"grid name {grid_name!r} must be the name of a folder in {run.grids_dir}")
    return run.grids_dir / grid_name


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        grids = sorted(p.parent.name for p in folder.parent.glob(f"*/{MANIFEST_FILE}"))
        known = ", ".join(grids) or "none yet"
        raise FileNotFoundError(f"no grid {folder.name!r} in {folder.parent} (grids: {known})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): make the grid again") from err
    missing = [key for key in ("images", "columns") if not isinstance(manifest.get(key), list)]
    if missing or not manifest["images"]:
        raise ValueError(f"{path} lists no images (missing or empty: {', '.join(missing) or 'images'}): "
                         "make the grid again")
    for entry in manifest["images"]:
        lacking = [key for key in ("file", "column", "prompt") if key not in entry]
        if lacking or not 0 <= entry["column"] < len(manifest["columns"]):
            raise ValueError(f"{path}: image entry {entry} lacks {', '.join(lacking) or 'a valid column index'}: "
                             "make the grid again")
    return manifest


def _grid_image_path(folder: Path, entry: dict[str, Any]) -> Path:
    name = str(entry.get("file", ""))
    if not name or Path(name).name != name:
        raise ValueError(f"{folder / MANIFEST_FILE}: image file {name!r} must be a file name inside the grid folder")
    if not (folder / name).is_file():
        raise FileNotFoundError(f"grid image {folder / name} is missing: make the grid again")
    return folder / name


def _references(run: RunFolder, refs: Path | str | None) -> tuple[Path, list[Path]]:
    if refs is None:
        data_dir = run.config().data.dir
        if not data_dir:
            raise ValueError(f"run {run.name} names no training images (data.dir is empty): "
                             "choose a folder of reference images (--refs DIR)")
        source = f"the training images of run {run.name}"
    else:
        data_dir, source = refs, "the reference images"
    try:
        scan = scan_dataset(data_dir)
    except DatasetError as err:
        raise ValueError(f"cannot read {source}: {err}; choose another reference folder (--refs DIR)") from err
    return scan.folder, [item.path for item in scan.items]


def _encode_files(paths: list[Path], clip: ClipBackbone, dino: DinoBackbone,
                  tick: Callable[[int], None]) -> tuple[torch.Tensor, torch.Tensor]:
    clip_chunks, dino_chunks = [], []
    for start in range(0, len(paths), _BATCH):
        images = [_load(p) for p in paths[start:start + _BATCH]]
        clip_chunks.append(clip.encode_images(images))
        dino_chunks.append(dino.encode_images(images))
        tick(len(images))
    return torch.cat(clip_chunks), torch.cat(dino_chunks)


def _load(path: Path) -> Image.Image:
    try:
        return load_image(path)
    except ImageSkip as skip:
        raise ValueError(f"cannot score {path}: {skip.reason}") from skip


def _column_scores(index: int, column: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    members = [r for r in rows if r["column"] == index]

    def mean(key: str) -> float | None:
        return statistics.fmean(r[key] for r in members) if members else None

    return {"column": index, "label": column.get("label"), "step": column.get("step"),
            "scale": column.get("scale"), "lora": column.get("lora"), "n": len(members),
            "clip_i": mean("clip_i"), "clip_t": mean("clip_t"), "dino": mean("dino")}
