"""LoRA files other tools load (DESIGN.md "LoRA files").

webui / kohya `.safetensors` — read by AUTOMATIC1111, ComfyUI, kohya tools and diffusers:
  `lora_unet_<diffusers path>` (SD1.5) or `lora_unet_<LDM path>` (SDXL, as kohya's SDXL trainer
  names them), `lora_te_…` / `lora_te1_…` / `lora_te2_…` with the `text_model_` segment that
  transformers 5 dropped from module paths; `.lora_down.weight`, `.lora_up.weight` and `.alpha`
  (the trained alpha — diffusers' own converter writes the rank, which changes the strength);
  `ss_*` and `modelspec.*` metadata; and an AUTOMATIC1111 sidecar `<name>.json`.
diffusers / PEFT — `pytorch_lora_weights.safetensors` with adapter metadata so alpha survives.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from studio.config import RunConfig
from studio.data.atomic import write_json_atomic
from studio.engine.checkpoints import LoraWeights
from studio.engine.ldm_convert import unet_ldm_module_names, unet_to_ldm
from studio.engine.lora import TEXT_ENCODER, lora_config, unet_targets

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
WEBUI_PREFIX = {("sd15", "unet"): "lora_unet", ("sd15", "text_encoder"): "lora_te",
                ("sdxl", "unet"): "lora_unet", ("sdxl", "text_encoder"): "lora_te1",
                ("sdxl", "text_encoder_2"): "lora_te2"}
ARCHITECTURE = {"sd15": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora"}
BASE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
UNET_CONFIG_FILE = "unet_config.json"
"""Saved in the run folder at the start: SDXL key names need the UNet layout, not the model."""


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
        path = module if module.startswith("text_model.") else f"text_model.{module}"
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


def tag_frequency(captions: list[str]) -> dict[str, int]:
    """kohya's `ss_tag_frequency`: how often each comma-separated tag appears in the captions."""
    freq: dict[str, int] = {}
    for caption in captions:
        for tag in (t.strip() for t in caption.split(",")):
            if tag:
                freq[tag] = freq.get(tag, 0) + 1
    return freq


def webui_metadata(config: RunConfig, *, name: str, step: int, tag_frequency: Mapping[str, int]) -> dict[str, str]:
    """kohya's `ss_*` keys (what A1111 / civitai show) and the `modelspec.*` standard."""
    family, res = config.model.family, config.data.resolution
    te_lr = config.optim.text_encoder_lr or config.optim.learning_rate / 2
    meta = {
        "ss_base_model_version": BASE_VERSION[family],
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.lora.rank),
        "ss_network_alpha": str(config.lora.alpha),
        "ss_network_dropout": str(config.lora.dropout),
        "ss_output_name": name,
        "ss_sd_model_name": config.model.base,
        "ss_tag_frequency": json.dumps({Path(config.data.dir).name or "data": dict(tag_frequency)}),
        "ss_resolution": f"({res}, {res})",
        "ss_learning_rate": str(config.optim.learning_rate),
        "ss_unet_lr": str(config.optim.learning_rate),
        "ss_text_encoder_lr": str(te_lr if config.lora.train_text_encoder else 0),
        "ss_network_train_unet_only": str(not config.lora.train_text_encoder),
        "ss_lr_scheduler": config.optim.scheduler,
        "ss_lr_warmup_steps": str(config.optim.warmup_steps),
        "ss_max_train_steps": str(config.train.max_steps),
        "ss_steps": str(step),
        "ss_batch_size_per_device": str(config.train.batch_size),
        "ss_gradient_accumulation_steps": str(config.train.grad_accumulation),
        "ss_mixed_precision": config.train.precision,
        "ss_seed": str(config.train.seed),
        "ss_min_snr_gamma": str(config.train.min_snr_gamma),
        "ss_noise_offset": str(config.train.noise_offset),
        "ss_training_comment": "trained with LoRA Studio",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE[family],
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl"
        else "diffusers",
        "modelspec.title": name,
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.date": dt.date.today().isoformat(),
        "modelspec.prediction_type": "epsilon",
    }
    if config.data.trigger_word:
        meta["modelspec.trigger_phrase"] = config.data.trigger_word
    return meta


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


def save_webui_lora(path: Path, weights: LoraWeights, config: RunConfig, unet_config: Mapping[str, Any], *,
                    name: str, step: int, tag_frequency: Mapping[str, int]) -> Path:
    tensors = to_webui_state_dict(weights, config.model.family, config.lora.alpha, unet_config,
                                  DTYPES[config.save.dtype])
    _save_atomic(tensors, path, webui_metadata(config, name=name, step=step, tag_frequency=tag_frequency))
    return path


def write_sidecar(lora_file: Path, config: RunConfig, preferred_weight: float = 1.0) -> Path:
    """AUTOMATIC1111's per-LoRA user metadata: activation text and preferred weight."""
    sidecar = lora_file.with_suffix(".json")
    write_json_atomic(sidecar, {
        "description": f"LoRA trained with LoRA Studio on {config.model.base}",
        "sd version": "SDXL" if config.model.family == "sdxl" else "SD1",
        "activation text": config.data.trigger_word,
        "preferred weight": preferred_weight,
        "negative text": config.sample.negative_prompt,
        "notes": f"rank {config.lora.rank}, alpha {config.lora.alpha}, {config.train.max_steps} steps",
    })
    return sidecar


def save_diffusers_lora(folder: Path, weights: LoraWeights, config: RunConfig) -> Path:
    """`pytorch_lora_weights.safetensors` in diffusers' layout, with adapter metadata (keeps alpha)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if config.model.family == "sdxl" else StableDiffusionPipeline
    unet_meta = lora_config(config.lora, unet_targets(config.lora.targets)).to_dict()
    te_meta = lora_config(config.lora, TEXT_ENCODER).to_dict()
    dtype = DTYPES[config.save.dtype]
    kwargs: dict[str, Any] = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        if part in weights.parts:
            kwargs[f"{part}_lora_layers"] = {k: v.to(dtype) for k, v in weights.parts[part].items()}
            kwargs[f"{part}_lora_adapter_metadata"] = _jsonable(unet_meta if part == "unet" else te_meta)
    folder.mkdir(parents=True, exist_ok=True)
    cls.save_lora_weights(str(folder), safe_serialization=True, **kwargs)
    return folder / "pytorch_lora_weights.safetensors"


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}


def export_run(run, fmt: str = "webui", step: int | None = None, out: Path | None = None) -> Path:
    """Write a run's LoRA (a checkpoint's, or the latest) in `webui` or `diffusers` format; returns the file."""
    from studio.engine.checkpoints import load_checkpoint

    ckpts = run.checkpoints()
    if not ckpts:
        raise FileNotFoundError(f"run {run.name} has no complete checkpoint to export")
    if step is None:
        ckpt = ckpts[-1]
    else:
        matches = [c for c in ckpts if c.step == step]
        if not matches:
            raise FileNotFoundError(f"run {run.name} has no checkpoint at step {step} "
                                    f"(available: {', '.join(str(c.step) for c in ckpts)})")
        ckpt = matches[0]
    weights, _, _ = load_checkpoint(ckpt)
    config = run.config()
    if fmt == "webui":
        path = Path(out) if out else run.path / "exports" / f"{run.name}-step{ckpt.step:06d}.safetensors"
        unet_config = json.loads((run.path / UNET_CONFIG_FILE).read_text(encoding="utf-8"))
        save_webui_lora(path, weights, config, unet_config, name=run.name, step=ckpt.step,
                        tag_frequency=run.read_status().get("tag_frequency", {}))
        write_sidecar(path, config)
        return path
    if fmt == "diffusers":
        folder = Path(out) if out else run.path / "exports" / f"{run.name}-step{ckpt.step:06d}-diffusers"
        return save_diffusers_lora(folder, weights, config)
    raise ValueError(f"format must be webui or diffusers, got {fmt!r}")
