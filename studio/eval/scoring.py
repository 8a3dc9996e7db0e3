"""CLIP-I, CLIP-T, DINO and consistency for a comparison grid, as in the DreamBooth paper, in scores.json.

CLIP-I and DINO: mean cosine between a generated image's features and each reference image's
(the run's training images unless told otherwise). CLIP-T: cosine between an image and its row's
prompt, with the trigger word replaced by the class phrase (CLIP has never seen `ohwx`); every
column of a row (baseline prompt and external images included) is scored against the same row
prompt, so their CLIP-T compare. Consistency: the share of a column's images whose fidelity
(DINO when scored, else CLIP-I) is at least the references' leave-one-out threshold
(`metrics.consistency_threshold`). Raw cosines; scores.json names the backbones beside the numbers.

The reference loading and encoding here are shared with batch scoring and validation scoring.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch
from PIL import Image

from studio.core.atomic import write_json_atomic
from studio.core.lock import ACCELERATOR
from studio.data.dataset import DatasetError, scan_dataset
from studio.data.images import ImageSkip, load_image
from studio.engine.runs import RunFolder, now_iso
from studio.eval.backbones import (CLIP_DEFAULT, DINO_DEFAULT, DINO_NONE, ClipBackbone, DinoBackbone, load_clip,
                                   load_dino)
from studio.eval.grids import load_grid
from studio.eval.metrics import Threshold, consistency_threshold, consistent, mean_cosine
from studio.eval.scorecard import recommend

SCORES_FILE = "scores.json"
_BATCH = 16
"""Images decoded at a time: bounds the memory of decoded references on big datasets."""
CONSISTENCY_RULE = ("share of images whose {metric} to the references is at least the lowest leave-one-out {metric} "
                    "among the references (each reference against the others)")


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
    return references(run, refs)[1]


def references(run: RunFolder, refs: Path | str | None) -> tuple[Path, list[Path]]:
    """(folder, usable images) of `refs`, or of the run's training images; ValueError naming the folder."""
    folder, items = reference_items(run, refs)
    return folder, [item.path for item in items]


def reference_items(run: RunFolder, refs: Path | str | None) -> tuple[Path, list]:
    """(folder, usable scanned images, captions attached) of `refs` or of the run's training images."""
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
    return scan.folder, scan.items


def image_counter(total: int, progress: Callable[[int, int], None] | None) -> Callable[[int], None]:
    """`tick(n)`: n more images encoded, reported as `progress(done, total)`."""
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return tick


def load_backbones(clip: str, dino: str) -> tuple[ClipBackbone, DinoBackbone | None]:
    return load_clip(clip), (None if dino == DINO_NONE else load_dino(dino))


def encode_files(paths: list[Path], clip: ClipBackbone, dino: DinoBackbone | None,
                 tick: Callable[[int], None] = lambda n: None, extra: Callable | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """CLIP (and DINO) features of image files, decoded a few at a time; `extra(images)` also runs on
    each chunk (the Inception features of a batch) and its outputs come third."""
    import torch

    clip_chunks, dino_chunks, extra_chunks = [], [], []
    for start in range(0, len(paths), _BATCH):
        images = [load_scored(p) for p in paths[start:start + _BATCH]]
        clip_chunks.append(clip.encode_images(images))
        if dino is not None:
            dino_chunks.append(dino.encode_images(images))
        if extra is not None:
            extra_chunks.append(extra(images))
        tick(len(images))
    return (torch.cat(clip_chunks), torch.cat(dino_chunks) if dino is not None else None,
            torch.cat(extra_chunks) if extra is not None else None)


def load_scored(path: Path) -> Image.Image:
    try:
        return load_image(path)
    except ImageSkip as skip:
        raise ValueError(f"cannot score {path}: {skip.reason}") from skip


def threshold_of(references: torch.Tensor) -> Threshold | None:
    """The consistency threshold of the references' features, None with fewer than 2 references."""
    return consistency_threshold(references) if len(references) >= 2 else None


def consistency_entry(metric: str, threshold: Threshold | None) -> dict[str, Any]:
    """scores.json's description of how consistency was measured."""
    name = {"dino": "DINO", "clip_i": "CLIP-I"}[metric]
    if threshold is None:
        return {"metric": metric, "threshold": None, "references": 1,
                "note": "consistency needs at least 2 reference images (one is compared with the others)"}
    return {"metric": metric, "threshold": threshold.value, "references": threshold.references,
            "reference_mean": threshold.mean, "rule": CONSISTENCY_RULE.format(metric=name)}


def score_grid(run: RunFolder, grid_name: str, *, refs: Path | str | None = None, clip: str = CLIP_DEFAULT,
               dino: str = DINO_DEFAULT, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score every image of grid `grid_name`, write `scores.json` beside it (atomic) and return it.

    `progress(done, total)` counts images encoded (references, then the grid's). Raises
    FileNotFoundError / ValueError for a missing or broken grid or reference folder, BackboneError
    for a model that cannot be loaded, AcceleratorBusy while training holds the device.
    """
    # 1. Check inputs: the grid, its images and the references, before any model loads
    grid = load_grid(run, grid_name)
    manifest = grid.manifest
    generated = [_grid_image_path(grid.folder, entry.file) for entry in manifest.images]
    ref_folder, ref_items = reference_items(run, refs)
    ref_paths = [item.path for item in ref_items]
    clip_prompts = [clip_t_prompt(entry.row_prompt, manifest.trigger_word, manifest.class_phrase)
                    for entry in manifest.images]
    # The references' own CLIP-T against their captions (trigger replaced as for the grid): how well
    # images of the subject can follow text at all, for the recommendation's prompt floor
    ref_prompts = [(i, clip_t_prompt(item.caption, manifest.trigger_word, manifest.class_phrase))
                   for i, item in enumerate(ref_items) if item.caption and item.caption.strip()]

    # 2. Features, on the accelerator
    tick = image_counter(len(ref_paths) + len(generated), progress)
    with ACCELERATOR.hold("scoring"):
        clip_model, dino_model = load_backbones(clip, dino)
        tick(0)
        ref_clip, ref_dino, _ = encode_files(ref_paths, clip_model, dino_model, tick)
        gen_clip, gen_dino, _ = encode_files(generated, clip_model, dino_model, tick)
        texts = sorted(set(clip_prompts))
        text_features = clip_model.encode_texts(texts)
        # a call of their own: the grid's CLIP-T stays bit-identical whatever the references say
        ref_texts = sorted({p for _, p in ref_prompts})
        ref_text_features = clip_model.encode_texts(ref_texts) if ref_texts else None

    # 3. Cosines (features are unit vectors: a dot product is the cosine), accumulated in fp64; consistency
    clip_i = mean_cosine(gen_clip, ref_clip).tolist()
    dino_s = mean_cosine(gen_dino, ref_dino).tolist() if dino_model is not None else [None] * len(generated)
    text_rows = text_features.double()[[texts.index(p) for p in clip_prompts]]
    clip_t = (gen_clip.double() * text_rows).sum(dim=1).tolist()
    ref_clip_t = None
    if ref_prompts:
        ref_text = ref_text_features.double()[[ref_texts.index(p) for _, p in ref_prompts]]
        ref_clip_t = float((ref_clip.double()[[i for i, _ in ref_prompts]] * ref_text).sum(dim=1).mean())
    metric = "dino" if dino_model is not None else "clip_i"
    threshold = threshold_of(ref_dino if dino_model is not None else ref_clip)
    fidelity = dino_s if dino_model is not None else clip_i
    hits = consistent(fidelity, threshold) if threshold else [None] * len(generated)

    # 4. Per image, per column, the recommendation; then scores.json
    rows = [{
        "file": entry.file, "column": entry.column, "label": entry.label, "kind": manifest.columns[entry.column].kind,
        "step": entry.step, "scale": entry.scale, "prompt": entry.prompt, "row_prompt": entry.row_prompt,
        "clip_prompt": clip_prompts[i], "seed": entry.seed, "clip_i": clip_i[i], "clip_t": clip_t[i],
        "dino": dino_s[i], "consistent": hits[i],
    } for i, entry in enumerate(manifest.images)]
    columns = [_column_scores(index, column.to_dict(), rows) for index, column in enumerate(manifest.columns)]
    random_weights = clip_model.random_weights or bool(dino_model and dino_model.random_weights)
    scores = {
        "grid": grid_name,
        "run": run.name,
        "created": now_iso(),
        "backbones": {"clip": {"name": clip_model.name, "random_weights": clip_model.random_weights},
                      "dino": {"name": dino_model.name if dino_model else DINO_NONE,
                               "random_weights": bool(dino_model and dino_model.random_weights)}},
        "references": {"folder": str(ref_folder), "count": len(ref_paths), "clip_t": ref_clip_t,
                       "captioned": len(ref_prompts)},
        "consistency": consistency_entry(metric, threshold),
        "baseline_prompts": manifest.baseline_prompts,
        "images": rows,
        "columns": columns,
        "recommendation": recommend(columns, random_weights=random_weights, reference_clip_t=ref_clip_t),
    }
    write_json_atomic(grid.folder / SCORES_FILE, scores)
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


def _grid_image_path(folder: Path, name: str) -> Path:
    if not (folder / name).is_file():
        raise FileNotFoundError(f"grid image {folder / name} is missing: make the grid again")
    return folder / name


def _column_scores(index: int, column: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    members = [r for r in rows if r["column"] == index]

    def mean(key: str) -> float | None:
        values = [r[key] for r in members]
        return statistics.fmean(values) if values and None not in values else None

    return {"column": index, "label": column.get("label"), "kind": column.get("kind"), "step": column.get("step"),
            "scale": column.get("scale"), "lora": column.get("lora"), "source": column.get("source"),
            "n": len(members), "clip_i": mean("clip_i"), "clip_t": mean("clip_t"), "dino": mean("dino"),
            "consistency": mean("consistent")}
