"""Names in diffusers form ↔ the original LDM ("single-file", A1111 / ComfyUI / kohya) form.

Used to write single-file checkpoints (`save_single_file`) and, for SDXL LoRA files, to name UNet
modules the way kohya's SDXL trainer does (`input_blocks_4_1_…`, `middle_block_1_…`). The key
layout mirrors what diffusers' `loaders/single_file_utils.py` reads back, so a file written here
loads with `from_single_file(path, config=<diffusers folder of the same architecture>)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from studio.engine.safetensors_stream import ByteProgress, write_safetensors
from studio.engine.tiny import Family

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TEXT_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_TEXT1_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."
TEXT_MODEL = "text_model."

# Inside a resnet the leaf layers are renamed; inside a transformer block the names are the same.
_UNET_RESNET_LEAVES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _add_resnet(names: dict[str, str], diffusers: str, ldm: str, shortcut: bool) -> None:
    names[diffusers] = ldm
    for d_leaf, l_leaf in _UNET_RESNET_LEAVES.items():
        if d_leaf != "conv_shortcut" or shortcut:
            names[f"{diffusers}.{d_leaf}"] = f"{ldm}.{l_leaf}"


def unet_ldm_module_names(unet_config: Mapping[str, Any]) -> dict[str, str]:
    """Diffusers UNet module path → LDM module path, for every block and every renamed layer.

    Computed from the UNet config (`block_out_channels`, `layers_per_block`, block types,
    `addition_embed_type`), so it holds for real SD1.5 / SDXL UNets and the tiny ones alike.
    Modules inside attention blocks keep their names under the mapped prefix (see `unet_to_ldm`).
    """
    channels = list(unet_config["block_out_channels"])
    per_block = unet_config["layers_per_block"]
    if not isinstance(per_block, int):
        raise ValueError(f"layers_per_block={per_block!r}: only one value for all blocks is supported")
    down_attn = ["CrossAttn" in t for t in unet_config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in unet_config["up_block_types"]]
    n = len(channels)

    names = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    if unet_config.get("addition_embed_type") == "text_time":
        names["add_embedding.linear_1"] = "label_emb.0.0"
        names["add_embedding.linear_2"] = "label_emb.0.2"

    # input_blocks: conv_in, then per level `layers_per_block` x (resnet[, attention]) and a downsampler.
    index = 1
    for i in range(n):
        for j in range(per_block):
            in_ch = channels[max(i - 1, 0)] if j == 0 else channels[i]
            _add_resnet(names, f"down_blocks.{i}.resnets.{j}", f"input_blocks.{index}.0", in_ch != channels[i])
            if down_attn[i]:
                names[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if i < n - 1:
            names[f"down_blocks.{i}.downsamplers.0"] = f"input_blocks.{index}.0"
            names[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1

    _add_resnet(names, "mid_block.resnets.0", "middle_block.0", shortcut=False)
    names["mid_block.attentions.0"] = "middle_block.1"
    _add_resnet(names, "mid_block.resnets.1", "middle_block.2", shortcut=False)

    # output_blocks: per level `layers_per_block + 1` x (resnet[, attention][, upsampler on the last]).
    # Every up resnet takes a skip connection concatenated to its input, so it always has a shortcut.
    index = 0
    for i in range(n):
        for j in range(per_block + 1):
            _add_resnet(names, f"up_blocks.{i}.resnets.{j}", f"output_blocks.{index}.0", shortcut=True)
            if up_attn[i]:
                names[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{index}.1"
            if j == per_block and i < n - 1:
                sampler = f"output_blocks.{index}.{2 if up_attn[i] else 1}"
                names[f"up_blocks.{i}.upsamplers.0"] = sampler
                names[f"up_blocks.{i}.upsamplers.0.conv"] = f"{sampler}.conv"
            index += 1
    return names


def unet_to_ldm(name: str, names: Mapping[str, str]) -> str:
    """A diffusers UNet parameter or module path → its LDM path (longest mapped prefix wins)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in names:
            return ".".join([names[prefix], *parts[cut:]])
    raise KeyError(f"UNet module {name!r} has no LDM name: not a module of an SD1.5 / SDXL UNet")


def _vae_to_ldm(state_dict: Mapping[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """Diffusers AutoencoderKL weights → LDM VAE weights (without the `first_stage_model.` prefix)."""
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state_dict.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = new.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        if ".mid_block.attentions.0." in new:
            part = new.split(".mid_block.attentions.0.")[1].rsplit(".", 1)[0]
            new = new.replace(f"mid_block.attentions.0.{part}", f"mid.attn_1.{attention[part]}")
            if new.endswith(".weight") and value.ndim == 2:  # LDM stores these as 1x1 convolutions
                value = value[:, :, None, None]
        if new.startswith("encoder.down_blocks."):
            i = new.split(".")[2]
            new = new.replace(f"down_blocks.{i}.resnets", f"down.{i}.block")
            new = new.replace(f"down_blocks.{i}.downsamplers.0", f"down.{i}.downsample")
        elif new.startswith("decoder.up_blocks."):
            i = new.split(".")[2]
            ldm_i = n_blocks - 1 - int(i)  # LDM numbers the decoder levels from the bottom
            new = new.replace(f"up_blocks.{i}.resnets", f"up.{ldm_i}.block")
            new = new.replace(f"up_blocks.{i}.upsamplers.0", f"up.{ldm_i}.upsample")
        out[new] = value
    return out


def text_model_path(path: str) -> str:
    """A CLIP text-encoder module or weight path in its transformers-4 form, `text_model.encoder.…`.

    transformers 5 dropped the `text_model.` level from `CLIPTextModel` (not from
    `CLIPTextModelWithProjection`); LoRA files, diffusers pipeline folders that transformers-4
    loaders read, and ComfyUI's key map all expect it.
    """
    return path if path.startswith((TEXT_MODEL, "text_projection")) else TEXT_MODEL + path


def _clip_to_ldm(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel weights → `<prefix>…` (transformers 5 dropped `text_model.`)."""
    return {prefix + k.removeprefix("text_model."): v for k, v in state_dict.items()}


def _open_clip_to_ldm(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModelWithProjection weights → open_clip names under `prefix`."""
    sd = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    out = {
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"),
        "ln_final.bias": sd.pop("final_layer_norm.bias"),
        # open_clip computes x @ text_projection: the transpose of a Linear weight
        "text_projection": sd.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            for d_name, l_name in (
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ):
                out[f"{dst}{l_name}.{kind}"] = sd.pop(f"{src}{d_name}.{kind}")
    if sd:
        raise ValueError(f"text_encoder_2 weights with no open_clip name: {sorted(sd)[:5]}")
    return {prefix + k: v for k, v in out.items()}


def single_file_state_dict(pipeline, family: Family) -> dict[str, torch.Tensor]:
    """All weights of an SD1.5 / SDXL pipeline under their original-LDM single-file names."""
    names = unet_ldm_module_names(pipeline.unet.config)
    out = {UNET_PREFIX + unet_to_ldm(k, names): v for k, v in pipeline.unet.state_dict().items()}
    n_vae_blocks = len(pipeline.vae.config.block_out_channels)
    out.update({VAE_PREFIX + k: v for k, v in _vae_to_ldm(pipeline.vae.state_dict(), n_vae_blocks).items()})
    if family == "sd15":
        out.update(_clip_to_ldm(pipeline.text_encoder.state_dict(), SD15_TEXT_PREFIX))
    elif family == "sdxl":
        out.update(_clip_to_ldm(pipeline.text_encoder.state_dict(), SDXL_TEXT1_PREFIX))
        out.update(_open_clip_to_ldm(pipeline.text_encoder_2.state_dict(), SDXL_TEXT2_PREFIX))
    else:
        raise ValueError(f"unknown model family {family!r}: expected 'sd15' or 'sdxl'")
    return out


def save_single_file(pipeline, path: Path, family: Family, *, metadata: Mapping[str, str] | None = None,
                     progress: ByteProgress | None = None) -> Path:
    """Write `pipeline` as one original-LDM-format `.safetensors` file (what A1111 / ComfyUI load).

    Streamed tensor by tensor in the pipeline's own dtype: no second copy of the model in memory.
    """
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a single-file checkpoint is written as .safetensors")
    architecture = {"sd15": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}[family]
    header = {"format": "pt", "modelspec.architecture": architecture} | dict(metadata or {})
    return write_safetensors(path, single_file_state_dict(pipeline, family), header, progress=progress)
