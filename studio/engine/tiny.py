"""The built-in `tiny-sd15` and `tiny-sdxl`: the real SD1.5 / SDXL architectures at minimal width.

They are built in code from fixed seeds (every build gives the same weights), saved once as a
diffusers folder under `cache_dir()/models/<name>`, and then load like any other local model. They
exist so that the whole flow (train, sample, export, reload) runs offline, in tests and in demos.

Sizes (chosen to keep every architectural constraint of the real models):
- UNet: block channels (32, 64), 1 layer per block, 2 / 4 attention heads (head dim 16), 32 norm
  groups. Block layout follows the real models truncated to two levels: SD1.5 has attention at the
  high-resolution level, SDXL at the low-resolution one (its first level has none); both have the
  cross-attention mid block.
- Text encoders: 49,408-token vocabulary, 77 positions. SD1.5 / SDXL first encoder: CLIP-L shape,
  hidden 32, 2 layers, quick-GELU. SDXL second encoder (OpenCLIP bigG shape): hidden 64, 10
  layers, GELU, projection 32. Its width must differ from the first encoder's (diffusers tells the
  two apart by it when reading a single-file checkpoint) and it needs 10 layers because diffusers
  recognises an SDXL single file by `...resblocks.9...`.
- VAE: 4 blocks (8x downscale), channels (32, 32, 64, 64), 4 latent channels; scaling factor
  0.18215 (SD1.5) / 0.13025 (SDXL), as in the real VAEs.
- Schedulers: the real models' own: PNDM for SD1.5, Euler for SDXL, same beta schedule.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from studio.core.tokenizer import clip_tokenizer, tokenizer_dir
from studio.engine.builtin import BUILTIN_MODELS, Family
from studio.paths import build_cached_dir, cache_dir

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

log = logging.getLogger(__name__)

TINY_MODELS: dict[str, Family] = {m.name: m.family for m in BUILTIN_MODELS.values() if not m.pretrained}

# Bump when the builder changes: cached folders with another version are rebuilt.
BUILDER_VERSION = 1
MARKER = "lora-studio-tiny.json"

_SEED = 0
_VOCAB = 49408
_POSITIONS = 77

# The real models' scheduler configs (stable-diffusion-v1-5 / stable-diffusion-xl-base-1.0).
_SD15_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)
_SDXL_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    interpolation_type="linear",
    timestep_spacing="leading",
    steps_offset=1,
    use_karras_sigmas=False,
)


def _text_config(hidden: int, layers: int, heads: int, act: str, projection_dim: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=_VOCAB,
        max_position_embeddings=_POSITIONS,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        hidden_act=act,
        projection_dim=projection_dim,
    )


def _vae(scaling_factor: float, force_upcast: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
    )


def _build_sd15():
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        norm_num_groups=32,
        cross_attention_dim=32,
    )
    torch.manual_seed(_SEED + 1)
    vae = _vae(scaling_factor=0.18215, force_upcast=True)
    torch.manual_seed(_SEED + 2)
    text_encoder = CLIPTextModel(_text_config(32, 2, 2, "quick_gelu", projection_dim=32))
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=PNDMScheduler(**_SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    te1_hidden, te2_hidden, projection_dim, time_embed_dim = 32, 64, 32, 8
    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        norm_num_groups=32,
        transformer_layers_per_block=1,
        use_linear_projection=True,
        cross_attention_dim=te1_hidden + te2_hidden,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # pooled text embedding + 6 size/crop ids (original h, w, crop top, left, target h, w)
        projection_class_embeddings_input_dim=projection_dim + 6 * time_embed_dim,
    )
    torch.manual_seed(_SEED + 1)
    vae = _vae(scaling_factor=0.13025, force_upcast=True)
    torch.manual_seed(_SEED + 2)
    text_encoder = CLIPTextModel(_text_config(te1_hidden, 2, 2, "quick_gelu", projection_dim=te1_hidden))
    torch.manual_seed(_SEED + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(te2_hidden, 10, 4, "gelu", projection_dim))
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=EulerDiscreteScheduler(**_SDXL_SCHEDULER),
    )


def build_tiny_pipeline(family: Family) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """Build the tiny pipeline of `family` in memory; the same weights on every call.

    The global torch RNG is seeded for the build and restored afterwards.
    """
    builders = {"sd15": _build_sd15, "sdxl": _build_sdxl}
    if family not in builders:
        raise ValueError(f"unknown model family {family!r}: expected one of {sorted(builders)}")
    with torch.random.fork_rng(devices=[]):
        return builders[family]()


def _is_complete(folder: Path, name: str) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    info = json.loads(marker.read_text(encoding="utf-8"))
    return info.get("name") == name and info.get("builder_version") == BUILDER_VERSION


def _save(name: str, folder: Path) -> None:
    """Save the tiny pipeline `name` into `folder`, writing the completion marker last."""
    family = TINY_MODELS[name]
    build_tiny_pipeline(family).save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves only tokenizer.json; single-file loaders and other tools read the BPE files.
    for sub in ("tokenizer", "tokenizer_2") if family == "sdxl" else ("tokenizer",):
        for file in ("vocab.json", "merges.txt"):
            shutil.copyfile(tokenizer_dir() / file, folder / sub / file)
    info = {"name": name, "family": family, "builder_version": BUILDER_VERSION}
    (folder / MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")


def tiny_model_dir(name: str) -> Path:
    """The diffusers folder of the built-in model `name`, built and cached on first use.

    Built atomically (see `build_cached_dir`); a changed builder version rebuilds it.
    """
    if name not in TINY_MODELS:
        raise ValueError(f"{name!r} is not a built-in model: expected one of {sorted(TINY_MODELS)}")
    final = cache_dir() / "models" / name
    if not _is_complete(final, name):
        log.info("building built-in model %s into %s", name, final)
    return build_cached_dir(final, lambda folder: _is_complete(folder, name), lambda folder: _save(name, folder))

