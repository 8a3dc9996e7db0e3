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


CALL_SIZE = 2
"""Inputs per encoder call. CPU kernels pick their algorithm by batch size (a batch of one, or of sixteen,
rounds the last bit differently from a pair), so every caption and image goes through its encoder in a
call of exactly this many, the last one padded with a copy: an embedding or latent is then the same
whichever call it came from, and a run with `train.cache_latents: false` trains the weights a cached
run does."""


def _in_calls(items, encode):
    """`encode` over `items` (a list or a batch tensor) in calls of CALL_SIZE, outputs in order."""
    outputs, count = [], len(items)
    for start in range(0, count, CALL_SIZE):
        part = items[start:start + CALL_SIZE]
        short = CALL_SIZE - len(part)
        if short:
            part = part + [part[-1]] * short if isinstance(part, list) else torch.cat([part] + [part[-1:]] * short)
        outputs.append(encode(part))
    return outputs, count


def encode_text(pipe, family: str, captions: list[str], device: torch.device) -> TextEmbedding:
    """SD1.5: the last layer of CLIP-L. SDXL: penultimate layers of both encoders, concatenated,
    plus the second encoder's pooled projection (as the SDXL pipeline does)."""
    parts, count = _in_calls(list(captions), lambda part: _encode_text_call(pipe, family, part, device))
    hidden = torch.cat([p.hidden for p in parts])[:count]
    pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])[:count]
    return TextEmbedding(hidden, pooled)


def _encode_text_call(pipe, family: str, captions: list[str], device: torch.device) -> TextEmbedding:
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
    pixels = pixels.to(vae.device, vae.dtype)
    parts, count = _in_calls(pixels, lambda part: vae.encode(part).latent_dist.mean)
    latents = torch.cat(parts)[:count]
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).float()
