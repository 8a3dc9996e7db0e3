"""Files other tools load (DESIGN.md "LoRA files"); `export_run` writes a run's checkpoint as any of them.

| format       | what                                                                  | `--out`          |
|--------------|-----------------------------------------------------------------------|------------------|
| `webui`      | kohya `lora_unet_…` / `lora_te…` file, `<name>.json`, `.preview.png`  | FILE.safetensors |
| `diffusers`  | the PEFT layout `save_lora_weights` writes, with adapter metadata      | FILE.safetensors |
| `pipeline`   | a diffusers folder with the LoRA fused in (`merge.py`)                | DIR              |
| `checkpoint` | a single-file LDM checkpoint with the LoRA fused in, `.preview.png`   | FILE.safetensors |

webui names: `lora_unet_<diffusers path>` (SD1.5) or `lora_unet_<LDM path>` (SDXL, as kohya's SDXL
trainer names them), `lora_te_…` / `lora_te1_…` / `lora_te2_…` with the `text_model_` segment that
transformers 5 dropped from module paths; `.lora_down.weight`, `.lora_up.weight` and `.alpha` (the
trained alpha — diffusers' own converter writes the rank, which changes the strength); kohya's
metadata (`lora_metadata.py`). diffusers: `unet.…`, `text_encoder.text_model.…`,
`text_encoder_2.text_model.…` `.lora_A/.lora_B.weight`, adapter metadata so alpha survives a reload.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from safetensors.torch import save_file

from studio.config import RunConfig
from studio.core.atomic import write_json_atomic
from studio.engine.checkpoints import STATE_FILE, LoraWeights
from studio.engine.ldm_convert import text_model_path, unet_ldm_module_names, unet_to_ldm
from studio.engine.lora import TEXT_ENCODER, lora_config, unet_targets
from studio.engine.lora_metadata import ModelCard, kohya_hashes, webui_metadata
from studio.engine.previews import default_preview, place_preview, thumbnail_data_uri
from studio.engine.runs import Checkpoint, RunFolder

Format = Literal["webui", "diffusers", "pipeline", "checkpoint"]
FORMATS: tuple[Format, ...] = ("webui", "diffusers", "pipeline", "checkpoint")
MERGED_FORMATS: tuple[Format, ...] = ("pipeline", "checkpoint")
Preview = Path | Literal["auto", "none"]
"""A sample image for `<name>.preview.png` and `modelspec.thumbnail`: `auto` (the exported step's
first sample, or the nearest step's), `none`, or an image file."""

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
WEBUI_PREFIX = {("sd15", "unet"): "lora_unet", ("sd15", "text_encoder"): "lora_te",
                ("sdxl", "unet"): "lora_unet", ("sdxl", "text_encoder"): "lora_te1",
                ("sdxl", "text_encoder_2"): "lora_te2"}
UNET_CONFIG_FILE = "unet_config.json"
"""Saved in the run folder at the start: SDXL key names need the UNet layout, not the model."""
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"


def _module_and_kind(peft_key: str) -> tuple[str, str]:
    """`a.b.to_q.lora_A.weight` → ("a.b.to_q", "lora_down")."""
    for peft_name, kohya_name in ((".lora_A.weight", "lora_down"), (".lora_B.weight", "lora_up")):
        if peft_key.endswith(peft_name):
            return peft_key[: -len(peft_name)], kohya_name
    raise ValueError(f"not a LoRA weight: {peft_key!r}")


def webui_module_name(family: str, part: str, module: str, ldm_names: Mapping[str, str] | None) -> str:
    if part == "unet":
        path = unet_to_ldm(module, ldm_names) if family == "sdxl" else module
    else:
        path = text_model_path(module)
    return f"{WEBUI_PREFIX[(family, part)]}_{path.replace('.', '_')}"


def to_webui_state_dict(weights: LoraWeights, family: str, alpha: float, unet_config: Mapping[str, Any],
                        dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    ldm_names = unet_ldm_module_names(unet_config) if family == "sdxl" else None
    out: dict[str, torch.Tensor] = {}
    for part, state in weights.parts.items():
        for key, value in state.items():
            module, kind = _module_and_kind(key)
            name = webui_module_name(family, part, module, ldm_names)
            out[f"{name}.{kind}.weight"] = value.to(dtype).contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return out


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def preview_image(run: RunFolder, step: int, preview: Preview) -> Path | None:
    """The image `preview` names for a file of `step` (None: no preview)."""
    if preview == "none":
        return None
    if preview == "auto":
        sample = default_preview(run, step)
        return sample.path if sample else None
    path = Path(preview)
    if not path.is_file():
        raise FileNotFoundError(f"preview image {path} does not exist")
    return path


def save_webui_lora(path: Path, weights: LoraWeights, config: RunConfig, run: RunFolder, *, step: int,
                    preview: Preview = "auto", card: ModelCard | None = None,
                    saved_at: dt.datetime | None = None) -> Path:
    """The webui file of `run` at `step`, with kohya's metadata, its hashes and a preview beside it."""
    unet_config = json.loads((run.path / UNET_CONFIG_FILE).read_text(encoding="utf-8"))
    tensors = to_webui_state_dict(weights, config.model.family, config.lora.alpha, unet_config,
                                  DTYPES[config.save.dtype])
    image = preview_image(run, step, preview)
    thumbnail = thumbnail_data_uri(image) if image else None
    metadata = webui_metadata(config, run, name=run.name, step=step, saved_at=saved_at, thumbnail=thumbnail, card=card)
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = kohya_hashes(tensors, metadata)
    _save_atomic(tensors, path, metadata)
    place_preview(image, path)
    return path


def write_sidecar(lora_file: Path, config: RunConfig, step: int, preferred_weight: float = 1.0) -> Path:
    """AUTOMATIC1111's per-LoRA user metadata: activation text and preferred weight."""
    sidecar = lora_file.with_suffix(".json")
    write_json_atomic(sidecar, {
        "description": f"LoRA trained with LoRA Studio on {config.model.base}",
        "sd version": "SDXL" if config.model.family == "sdxl" else "SD1",
        "activation text": config.data.trigger_word,
        "preferred weight": preferred_weight,
        "negative text": config.sample.negative_prompt,
        "notes": f"step {step} of {config.train.max_steps}, rank {config.lora.rank}, alpha {config.lora.alpha}",
    })
    return sidecar


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}


def save_diffusers_lora(path: Path, weights: LoraWeights, config: RunConfig) -> Path:
    """The LoRA in the PEFT layout diffusers' `save_lora_weights` writes, at exactly `path`.

    Text-encoder keys get the `text_model.` level (`text_encoder.text_model.encoder.layers.…`) that
    transformers-4 loaders and ComfyUI expect; diffusers reads it with either transformers.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if config.model.family == "sdxl" else StableDiffusionPipeline
    unet_meta = lora_config(config.lora, unet_targets(config.lora.targets)).to_dict()
    te_meta = lora_config(config.lora, TEXT_ENCODER).to_dict()
    dtype = DTYPES[config.save.dtype]
    kwargs: dict[str, Any] = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        if part in weights.parts:
            name = (lambda k: k) if part == "unet" else text_model_path
            kwargs[f"{part}_lora_layers"] = {name(k): v.to(dtype) for k, v in weights.parts[part].items()}
            kwargs[f"{part}_lora_adapter_metadata"] = _jsonable(unet_meta if part == "unet" else te_meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        cls.save_lora_weights(str(tmp), safe_serialization=True, weight_name=path.name, **kwargs)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# --- export_run ------------------------------------------------------------------------------------

def find_checkpoint(run: RunFolder, step: int | None) -> Checkpoint:
    """Checkpoint `step` of `run` (None: the latest)."""
    ckpts = run.checkpoints()
    if not ckpts:
        raise FileNotFoundError(f"run {run.name} has no complete checkpoint to export")
    if step is None:
        return ckpts[-1]
    for ckpt in ckpts:
        if ckpt.step == step:
            return ckpt
    raise FileNotFoundError(f"run {run.name} has no checkpoint at step {step} "
                            f"(available: {', '.join(str(c.step) for c in ckpts)})")


def _scale_tag(scale: float) -> str:
    return "" if scale == 1.0 else f"-x{scale:g}"


def default_out(run: RunFolder, fmt: Format, step: int, scale: float = 1.0) -> Path:
    """Where an export goes without `--out`: `outputs/<run>/exports/…`."""
    stem = run.path / "exports" / f"{run.name}-step{step:06d}"
    return {"webui": stem.with_name(f"{stem.name}.safetensors"),
            "diffusers": stem.with_name(f"{stem.name}-diffusers") / DIFFUSERS_FILE,
            "pipeline": stem.with_name(f"{stem.name}-pipeline{_scale_tag(scale)}"),
            "checkpoint": stem.with_name(f"{stem.name}-merged{_scale_tag(scale)}.safetensors")}[fmt]


def check_out(fmt: str, out: Path) -> Path:
    """`--out` is the file for every file format and a folder only for `pipeline`."""
    out = Path(out).expanduser()
    if fmt == "pipeline":
        if out.suffix == ".safetensors":
            raise ValueError(f"--out {out}: --format pipeline writes a folder; give a folder path, "
                             "or use --format checkpoint for one .safetensors file")
        if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file()):
            raise ValueError(f"--out {out} already exists and is not a diffusers pipeline folder: "
                             "choose a new folder (an earlier pipeline export there is replaced)")
    elif out.is_dir():
        raise ValueError(f"--out {out} is a folder; --format {fmt} writes one file: give FILE.safetensors")
    elif out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: --format {fmt} writes one file; give a path ending in .safetensors")
    return out


def _saved_at(ckpt: Checkpoint) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(json.loads((ckpt.path / STATE_FILE).read_text(encoding="utf-8"))["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export_run(run: RunFolder, fmt: str = "webui", step: int | None = None, out: Path | None = None, *,
               scale: float = 1.0, preview: Preview = "auto", card: ModelCard | None = None,
               models_dir: Path | None = None, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write checkpoint `step` (default: the latest) of `run` in `fmt`; returns the file (or folder).

    `scale` is the LoRA weight fused into the merged formats; `preview` and `card` go into the
    webui and checkpoint files; `progress(what, done, total)` follows a merged export.
    """
    from studio.engine.checkpoints import load_checkpoint

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt not in MERGED_FORMATS and scale != 1.0:
        raise ValueError(f"--scale applies to the merged formats ({', '.join(MERGED_FORMATS)}); a {fmt} LoRA file "
                         "keeps its trained strength and takes a weight where it is loaded")
    ckpt = find_checkpoint(run, step)
    path = check_out(fmt, out) if out is not None else default_out(run, fmt, ckpt.step, scale)
    config = run.config()
    if fmt in MERGED_FORMATS:
        from studio.engine.merge import export_merged

        image = preview_image(run, ckpt.step, preview) if fmt == "checkpoint" else None
        return export_merged(run, ckpt, fmt, path, scale=scale, preview=image, card=card, models_dir=models_dir,
                             progress=progress)
    weights, _, _ = load_checkpoint(ckpt)
    if fmt == "webui":
        save_webui_lora(path, weights, config, run, step=ckpt.step, preview=preview, card=card,
                        saved_at=_saved_at(ckpt))
        write_sidecar(path, config, ckpt.step)
        return path
    return save_diffusers_lora(path, weights, config)
