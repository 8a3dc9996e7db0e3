"""What a webui LoRA file says about itself: kohya's `ss_*` keys, its `sshs_*` file hashes and the
`modelspec.*` standard, taken from what the run folder recorded about the run.

kohya-ss/sd-scripts is the reference: `train_network.py` writes the `ss_*` keys (every value is
`str()` of the Python value, so `True`, `None`, `(512, 512)`, `8.0`; dicts are JSON), and
`library/train_util.py` / `library/sai_model_spec.py` compute the hashes and `modelspec.*`.
AUTOMATIC1111's metadata view, civitai and LoRA managers read these keys. Where LoRA Studio has no
such feature (regularisation images, multires noise, …) the value is the one kohya writes when
that feature is off. `ss_sd_scripts_commit_hash` is left out: these files do not come from sd-scripts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from studio import __version__
from studio.config import RunConfig
from studio.core.atomic import write_json_atomic
from studio.engine.prepare import epochs_in
from studio.engine.runs import RunFolder

BASE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURE = {"sd15": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}
FAMILY_LABEL = {"sd15": "SD 1.5", "sdxl": "SDXL"}
PREDICTION_TYPE = {"epsilon": "epsilon", "v_prediction": "v"}
"""Scheduler `prediction_type` → kohya's / ModelSpec's value."""
OPTIMIZER_CLASS = {"adamw": "torch.optim.adamw.AdamW", "adamw8bit": "bitsandbytes.optim.adamw.AdamW8bit"}
MIXED_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}
TAG_FREQUENCY_LIMIT = 500
"""Tags kept per dataset folder in `ss_tag_frequency` (the most frequent): bounds the header."""
TAG_MAX_CHARS = 200
"""Longest tag kept in `ss_tag_frequency` (a longer one is cut): tags, not essays, so 500 of them stay
within ~100 kB of header however long the captions are."""
BASE_HASH_FILE = "base_model_hash.json"
"""Run-folder cache of the base model file's hashes (hashing 7 GB takes a while; once per run)."""
SAI_MODEL_SPEC = "1.0.1"


@dataclass(frozen=True)
class ModelCard:
    """What the user says about an exported file (ModelSpec's author, license, description, tags).
    Empty fields are left out, except description and tags, which then describe the run."""

    author: str = ""
    license: str = ""
    description: str = ""
    tags: str = ""


def tag_frequency(captions: list[str]) -> dict[str, int]:
    """kohya's tag frequency: comma-separated tags, stripped and lower-cased, counted over captions; a tag
    over `TAG_MAX_CHARS` is counted by its first `TAG_MAX_CHARS` characters."""
    freq: dict[str, int] = {}
    for caption in captions:
        for tag in (t.strip().lower()[:TAG_MAX_CHARS].strip() for t in caption.split(",")):
            if tag:
                freq[tag] = freq.get(tag, 0) + 1
    return freq


def top_tags(freq: Mapping[str, int], limit: int = TAG_FREQUENCY_LIMIT) -> dict[str, int]:
    """The `limit` most frequent tags (ties by name), most frequent first."""
    return dict(sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


# --- hashes ------------------------------------------------------------------------------------

def kohya_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(`sshs_model_hash`, `sshs_legacy_hash`) as kohya's `precalculate_safetensors_hashes` computes them.

    Both are taken over a re-serialisation that holds only the `ss_*` metadata (so editing other
    metadata later keeps them valid): the model hash is the SHA-256 of everything after the 8-byte
    length and the JSON header (the tensor data, the same bytes as in the file written with any
    header); the legacy hash is the first 8 hex digits of the SHA-256 of the 0x10000 bytes at offset
    0x100000 (of nothing, for files smaller than 1 MiB: `e3b0c442`).
    """
    from safetensors.torch import save

    blob = memoryview(save(dict(tensors), {k: v for k, v in metadata.items() if k.startswith("ss_")}))
    header_len = int.from_bytes(blob[:8], "little")
    model_hash = hashlib.sha256(blob[8 + header_len:]).hexdigest()
    legacy_hash = hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def file_hashes(path: Path) -> tuple[str, str]:
    """(A1111's legacy 8-digit model hash, full SHA-256) of a model file, as kohya writes them for
    `ss_sd_model_hash` / `ss_new_sd_model_hash`."""
    full = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            full.update(chunk)
        f.seek(0x100000)
        legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    return legacy, full.hexdigest()


def base_model_hashes(run: RunFolder, base: Path) -> tuple[str, str]:
    """`file_hashes(base)`, computed once per run and kept in the run folder while the file is unchanged."""
    stat = base.stat()
    key = {"path": str(base.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = run.path / BASE_HASH_FILE
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if {k: cached.get(k) for k in key} == key:
            return cached["legacy"], cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    legacy, full = file_hashes(base)
    write_json_atomic(cache, key | {"legacy": legacy, "sha256": full})
    return legacy, full


# --- what the run recorded -----------------------------------------------------------------------

def _timestamp(iso: str | None) -> float | None:
    try:
        return dt.datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _session_id(run: RunFolder, started: str | None) -> int:
    """kohya draws a random 32-bit id per training session; ours is derived from (run, start time),
    so every file of one run names the same session."""
    return int(hashlib.sha256(f"{run.name}/{started}".encode()).hexdigest()[:8], 16)


def _read_report(run: RunFolder) -> dict[str, Any]:
    try:
        return json.loads(run.report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _bucket_info(config: RunConfig, report: Mapping[str, Any], images: int) -> dict[str, Any]:
    """kohya's `ss_bucket_info`: each bucket's resolution and how many (repeated) images it holds."""
    repeats = config.data.repeats
    if config.data.buckets and report.get("buckets"):
        sizes = [(tuple(int(x) for x in name.split("x")), count) for name, count in report["buckets"].items()]
    else:
        sizes = [((config.data.resolution, config.data.resolution), images)]
    return {"buckets": {str(i): {"resolution": list(size), "count": count * repeats}
                        for i, (size, count) in enumerate(sizes)}}


def _bucket_range(config: RunConfig) -> tuple[int | None, int | None]:
    if not config.data.buckets:
        return None, None
    from studio.data.buckets import make_buckets

    sides = [side for bucket in make_buckets(config.data.resolution, config.data.bucket_step) for side in bucket]
    return min(sides), max(sides)


def _lr_scheduler(config: RunConfig) -> str:
    """Our schedule in kohya's (diffusers') names: a warm-up before a constant rate is `constant_with_warmup`."""
    if config.optim.scheduler == "constant" and config.optim.warmup_steps:
        return "constant_with_warmup"
    return config.optim.scheduler


def _description(config: RunConfig, *, step: int, images: int | None) -> str:
    parts = [f"LoRA for {FAMILY_LABEL[config.model.family]} trained with LoRA Studio on {Path(config.model.base).name}"]
    if config.data.trigger_word:
        subject = f" ({config.data.class_phrase})" if config.data.class_phrase else ""
        parts.append(f"trigger word '{config.data.trigger_word}'{subject}")
    parts.append(f"step {step} of {config.train.max_steps}")
    if images:
        parts.append(f"{images} training images")
    parts.append(f"rank {config.lora.rank}, alpha {config.lora.alpha}")
    return ", ".join(parts)


def _usage_hint(config: RunConfig) -> str:
    if config.data.trigger_word:
        return f"Put '{config.data.trigger_word}' in the prompt; LoRA weight 1.0"
    return "LoRA weight 1.0"


def webui_metadata(config: RunConfig, run: RunFolder, *, name: str, step: int, saved_at: dt.datetime | None = None,
                   thumbnail: str | None = None, card: ModelCard | None = None) -> dict[str, str]:
    """The `ss_*` and `modelspec.*` metadata of a webui LoRA file of `run` at `step` (all strings).

    `saved_at` is when that step's weights were saved (default: now); `thumbnail` a data URI.
    """
    card = card or ModelCard()
    saved_at = (saved_at or dt.datetime.now(dt.timezone.utc)).astimezone()
    status = run.read_status()
    report = _read_report(run)
    family, res, cfg = config.model.family, config.data.resolution, config
    images = status.get("dataset_images") or (report.get("counts") or {}).get("usable")
    micro_per_step = cfg.train.grad_accumulation * int(status.get("world_size") or 1)
    batches_per_epoch = status.get("batches_per_epoch")

    def epochs(steps: int) -> int | None:  # the epoch a step falls in, counted from 1 (kohya's ss_epoch)
        return epochs_in(steps, batches_per_epoch, micro_per_step) if batches_per_epoch else None
    te_lr = cfg.optim.text_encoder_lr or cfg.optim.learning_rate / 2
    min_bucket, max_bucket = _bucket_range(cfg)
    dataset = Path(cfg.data.dir).name or "data"
    started = status.get("started")
    precision = status.get("precision") or cfg.train.precision

    ss: dict[str, Any] = {
        # the session and the run
        "ss_session_id": _session_id(run, started),
        "ss_training_started_at": _timestamp(started),
        "ss_training_finished_at": saved_at.timestamp(),
        "ss_output_name": name,
        "ss_training_comment": "trained with LoRA Studio",
        "ss_base_model_version": BASE_VERSION[family],
        "ss_v2": False,
        "ss_sd_model_name": Path(cfg.model.base).name if Path(cfg.model.base).exists() else cfg.model.base,
        # the network
        "ss_network_module": "networks.lora",
        "ss_network_dim": cfg.lora.rank,
        "ss_network_alpha": cfg.lora.alpha,
        "ss_network_dropout": cfg.lora.dropout,
        "ss_network_train_unet_only": not cfg.lora.train_text_encoder,
        # optimisation
        "ss_optimizer": f"{OPTIMIZER_CLASS[cfg.optim.optimizer]}(weight_decay={cfg.optim.weight_decay})",
        "ss_learning_rate": cfg.optim.learning_rate,
        "ss_unet_lr": cfg.optim.learning_rate,
        "ss_text_encoder_lr": te_lr if cfg.lora.train_text_encoder else 0,
        "ss_lr_scheduler": _lr_scheduler(cfg),
        "ss_lr_warmup_steps": cfg.optim.warmup_steps,
        "ss_max_grad_norm": cfg.optim.max_grad_norm,
        "ss_max_train_steps": cfg.train.max_steps,
        "ss_steps": step,
        "ss_epoch": epochs(step),
        "ss_num_epochs": epochs(cfg.train.max_steps) or status.get("epochs"),
        "ss_batch_size_per_device": cfg.train.batch_size,
        "ss_total_batch_size": cfg.train.batch_size * micro_per_step,
        "ss_gradient_accumulation_steps": cfg.train.grad_accumulation,
        "ss_gradient_checkpointing": cfg.train.gradient_checkpointing,
        "ss_mixed_precision": MIXED_PRECISION.get(precision, precision),
        "ss_full_fp16": False,
        "ss_fp8_base": False,
        "ss_fp8_base_unet": False,
        "ss_seed": cfg.train.seed,
        "ss_lowram": False,
        # the loss
        "ss_min_snr_gamma": cfg.train.min_snr_gamma,
        "ss_noise_offset": cfg.train.noise_offset,
        "ss_noise_offset_random_strength": False,
        "ss_adaptive_noise_scale": None,
        "ss_multires_noise_iterations": None,
        "ss_multires_noise_discount": 0.3,
        "ss_ip_noise_gamma": None,
        "ss_ip_noise_gamma_random_strength": False,
        "ss_zero_terminal_snr": False,
        "ss_debiased_estimation": False,
        "ss_scale_weight_norms": None,
        "ss_loss_type": "l2",
        "ss_huber_schedule": "snr",
        "ss_huber_scale": 1.0,
        "ss_huber_c": 0.1,
        "ss_prior_loss_weight": 1.0,
        # the text encoders
        "ss_clip_skip": None,
        "ss_max_token_length": None,
        # the data
        "ss_num_train_images": images * cfg.data.repeats if images else None,
        "ss_num_reg_images": 0,
        "ss_num_validation_images": 0,
        "ss_num_batches_per_epoch": batches_per_epoch,
        "ss_resolution": (res, res),
        "ss_enable_bucket": cfg.data.buckets,
        "ss_min_bucket_reso": min_bucket,
        "ss_max_bucket_reso": max_bucket,
        "ss_bucket_no_upscale": False,
        "ss_bucket_info": json.dumps(_bucket_info(cfg, report, images or 0)),
        "ss_dataset_dirs": json.dumps({dataset: {"n_repeats": cfg.data.repeats, "img_count": images or 0}}),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_tag_frequency": json.dumps({dataset: top_tags(status.get("tag_frequency") or {})}),
        "ss_cache_latents": cfg.train.cache_latents,
        "ss_flip_aug": cfg.data.flip,
        "ss_color_aug": cfg.data.color_jitter > 0,
        "ss_random_crop": False,
        "ss_shuffle_caption": False,
        "ss_keep_tokens": 0,
        "ss_caption_dropout_rate": cfg.data.caption_dropout,
        "ss_caption_dropout_every_n_epochs": None,
        "ss_caption_tag_dropout_rate": 0.0,
        "ss_face_crop_aug_range": None,
        "ss_resize_interpolation": "lanczos",
        # validation (kohya's held-out loss; LoRA Studio validates with sample images instead)
        "ss_validation_seed": None,
        "ss_validation_split": 0.0,
        "ss_max_validation_steps": None,
        "ss_validate_every_n_epochs": None,
        "ss_validate_every_n_steps": None,
    }
    if "conv" in cfg.lora.targets:  # kohya's LoRA-C3Lier arguments; conv layers share rank and alpha here
        ss["ss_network_args"] = json.dumps({"conv_dim": str(cfg.lora.rank), "conv_alpha": str(cfg.lora.alpha),
                                            "dropout": cfg.lora.dropout})
    base = Path(cfg.model.base)
    if base.is_file():
        ss["ss_sd_model_hash"], ss["ss_new_sd_model_hash"] = base_model_hashes(run, base)
    if cfg.model.vae:
        ss["ss_vae_name"] = Path(cfg.model.vae).name if Path(cfg.model.vae).exists() else cfg.model.vae
    meta = {k: str(v) for k, v in ss.items()}

    spec = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC,
        "modelspec.architecture": f"{ARCHITECTURE[family]}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl"
        else "diffusers",
        "modelspec.implementation_version": f"lora-studio/{__version__}",
        "modelspec.title": name,
        "modelspec.description": card.description or _description(cfg, step=step, images=images),
        "modelspec.author": card.author,
        "modelspec.license": card.license,
        "modelspec.date": saved_at.isoformat(timespec="seconds"),
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.prediction_type": PREDICTION_TYPE.get(status.get("prediction_type"), ""),
        "modelspec.trigger_phrase": cfg.data.trigger_word,
        "modelspec.usage_hint": _usage_hint(cfg),
        "modelspec.tags": card.tags or ", ".join(t for t in (cfg.data.trigger_word, cfg.data.class_phrase) if t),
        "modelspec.thumbnail": thumbnail or "",
    }
    return meta | {k: v for k, v in spec.items() if v}


def checkpoint_metadata(config: RunConfig, run: RunFolder, *, title: str, lora_name: str, scale: float,
                        thumbnail: str | None = None, card: ModelCard | None = None) -> dict[str, str]:
    """`modelspec.*` of a merged single-file checkpoint (kohya writes these for checkpoints too)."""
    card = card or ModelCard()
    prediction = PREDICTION_TYPE.get(run.read_status().get("prediction_type"), "")
    base = Path(config.model.base).name
    spec = {
        "format": "pt",
        "modelspec.sai_model_spec": SAI_MODEL_SPEC,
        "modelspec.architecture": ARCHITECTURE[config.model.family],
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.implementation_version": f"lora-studio/{__version__}",
        "modelspec.title": title,
        "modelspec.description": card.description or f"{base} with the LoRA {lora_name} merged in at weight {scale}",
        "modelspec.author": card.author,
        "modelspec.license": card.license,
        "modelspec.date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "modelspec.resolution": f"{config.data.resolution}x{config.data.resolution}",
        "modelspec.merged_from": f"{base}, {lora_name} × {scale}",
        "modelspec.prediction_type": prediction,
        "modelspec.trigger_phrase": config.data.trigger_word,
        "modelspec.usage_hint": f"Put '{config.data.trigger_word}' in the prompt" if config.data.trigger_word else "",
        "modelspec.tags": card.tags,
        "modelspec.thumbnail": thumbnail or "",
    }
    return {k: v for k, v in spec.items() if v}
