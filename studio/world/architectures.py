"""The shapes of the toy world's models: real diffusers / transformers / open_clip classes, small.

`toy-sd15` is an SD1.5 pipeline (AutoencoderKL, CLIPTextModel with CLIP's 49,408-token vocabulary,
UNet2DConditionModel, PNDM scheduler with SD1.5's beta schedule), so every SD1.5 code path of the
studio runs on it unchanged. Its autoencoder downsamples 4× rather than SD's 8×: 64 px pictures
become 16 × 16 latents, where a triangle is still a triangle (8 × 8 latents blurred shapes and
colours in the feasibility runs). `toy-clip` is an open_clip CLIP with a small ModifiedResNet image
tower (convolutions learn shapes far faster than a ViT this small) and the standard text tower.
"""

from __future__ import annotations

from typing import Any

VOCAB = 49408
POSITIONS = 77
TEXT_HIDDEN = 64
LATENT_SIZE = 16

SD15_SCHEDULER: dict[str, Any] = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)
"""stable-diffusion-v1-5's own scheduler config."""

CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": POSITIONS, "vocab_size": VOCAB, "width": 64, "heads": 4, "layers": 2},
}
"""open_clip model config of `toy-clip` (registered under `TOY_CLIP_CONFIG`)."""

TOY_CLIP_CONFIG = "lora-studio-toy-clip"


def build_vae(scaling_factor: float = 1.0):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        # 4-8 channels a group: with a group per channel (SD's 32 groups on these widths) every norm
        # erases a flat area's level, and flat backgrounds came back in the wrong colour
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
        # convolutions only: trained on 32 px crops, it then works at any size
        mid_block_add_attention=False,
    )


def build_text_encoder():
    """A `CLIPTextModel` of the shape of toy-clip's text tower (random init)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIP_CONFIG["text_cfg"]
    config = CLIPTextConfig(
        vocab_size=text["vocab_size"],
        max_position_embeddings=text["context_length"],
        hidden_size=text["width"],
        intermediate_size=4 * text["width"],
        num_hidden_layers=text["layers"],
        num_attention_heads=text["heads"],
        hidden_act="quick_gelu" if CLIP_CONFIG["quick_gelu"] else "gelu",
        projection_dim=CLIP_CONFIG["embed_dim"],
    )
    return CLIPTextModel(config)


def text_encoder_from_clip(clip) -> "CLIPTextModel":  # noqa: F821
    """toy-clip's text tower as a transformers `CLIPTextModel` (the same network: causal
    transformer, quick-GELU, final layer norm), as SD1.5 takes its text encoder from OpenAI CLIP."""
    import torch

    model = build_text_encoder()
    source = clip.state_dict()
    state = {"embeddings.token_embedding.weight": source["token_embedding.weight"],
             "embeddings.position_embedding.weight": source["positional_embedding"],
             "final_layer_norm.weight": source["ln_final.weight"], "final_layer_norm.bias": source["ln_final.bias"]}
    for i in range(CLIP_CONFIG["text_cfg"]["layers"]):
        block, layer = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = source[f"{block}attn.in_proj_{kind}"].chunk(3)
            state |= {f"{layer}self_attn.q_proj.{kind}": q, f"{layer}self_attn.k_proj.{kind}": k,
                      f"{layer}self_attn.v_proj.{kind}": v,
                      f"{layer}self_attn.out_proj.{kind}": source[f"{block}attn.out_proj.{kind}"],
                      f"{layer}layer_norm1.{kind}": source[f"{block}ln_1.{kind}"],
                      f"{layer}layer_norm2.{kind}": source[f"{block}ln_2.{kind}"],
                      f"{layer}mlp.fc1.{kind}": source[f"{block}mlp.c_fc.{kind}"],
                      f"{layer}mlp.fc2.{kind}": source[f"{block}mlp.c_proj.{kind}"]}
    missing, unexpected = model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=False)
    leftover = [k for k in missing if "position_ids" not in k]
    if leftover or unexpected:
        raise RuntimeError(f"toy-clip → CLIPTextModel left {leftover or unexpected} unmapped")
    return model.eval().requires_grad_(False).to(torch.float32)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(4, 4, 8),
        norm_num_groups=8,
        cross_attention_dim=TEXT_HIDDEN,
    )


def build_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(**SD15_SCHEDULER)


def register_clip_config() -> str:
    """Register `toy-clip`'s config with open_clip (once per process); returns its model name."""
    import open_clip

    from studio.core.atomic import write_json_atomic
    from studio.paths import cache_dir

    if TOY_CLIP_CONFIG not in open_clip.list_models():
        path = write_json_atomic(cache_dir() / "open_clip" / f"{TOY_CLIP_CONFIG}.json", CLIP_CONFIG)
        open_clip.add_model_config(path)
    return TOY_CLIP_CONFIG


def load_clip(folder) -> tuple:
    """A saved toy-clip (an open_clip `local-dir:` folder): model (eval mode), preprocessing, tokenizer."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def build_clip():
    """The toy CLIP (random init), its preprocessing, and its tokenizer."""
    import open_clip

    name = register_clip_config()
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return model, preprocess, open_clip.get_tokenizer(name)
