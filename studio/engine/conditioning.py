"""What the UNet is conditioned on: caption embeddings (one or two CLIP encoders), SDXL's pooled
embedding and size/crop ids, and VAE latents of the training images."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextEmbedding:
    hidden: torch.Tensor
    """(batch, 77, dim) token embeddings the UNet cross-attends to."""
    pooled: torch.Tensor | None = None
    """(batch, dim) SDXL's pooled text embedding; None for SD1.5."""


def tokenize(tokenizer, captions: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def encode_text(pipe, family: str, captions: list[str], device: torch.device) -> TextEmbedding:
    """SD1.5: the last layer of CLIP-L. SDXL: penultimate layers of both encoders, concatenated,
    plus the second encoder's pooled projection (as the SDXL pipeline does)."""
    if family == "sd15":
        ids = tokenize(pipe.tokenizer, captions, device)
        return TextEmbedding(pipe.text_encoder(ids)[0])
    ids1 = tokenize(pipe.tokenizer, captions, device)
    ids2 = tokenize(pipe.tokenizer_2, captions, device)
    out1 = pipe.text_encoder(ids1, output_hidden_states=True)
    out2 = pipe.text_encoder_2(ids2, output_hidden_states=True)
    hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    return TextEmbedding(hidden, out2.text_embeds)


def sdxl_time_ids(original_size: tuple[int, int], crop_top_left: tuple[int, int],
                  target_size: tuple[int, int]) -> torch.Tensor:
    """SDXL micro-conditioning: (orig h, orig w, crop top, crop left, target h, target w)."""
    return torch.tensor([*original_size, *crop_top_left, *target_size], dtype=torch.float32)


@torch.no_grad()
def encode_images(vae, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] → scaled latents (the distribution's mean: deterministic, cacheable)."""
    latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).float()
