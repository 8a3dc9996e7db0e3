"""Work done once per run instead of every step: VAE latents per image (and flip variant) and
caption embeddings when the text encoders are frozen. What this saves is the bench's speed-up."""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

from studio.engine.batches import Example, load_training_image, to_tensor
from studio.engine.conditioning import TextEmbedding, encode_images, encode_text

FLIP = Image.Transpose.FLIP_LEFT_RIGHT
LatentCache = dict[tuple[int, bool], torch.Tensor]
"""(example index, flipped) → latent (C, h, w)."""


def cache_latents(vae, examples: list[Example], flip: bool, encode: bool,
                  progress: Callable[[int, int], None] | None = None) -> tuple[LatentCache, dict[int, tuple[int, int]]]:
    """Each example's bucket crop (SDXL's crop ids need it) and, when `encode`, its latents."""
    latents: LatentCache = {}
    crops: dict[int, tuple[int, int]] = {}
    flips = (False, True) if flip else (False,)
    for n, ex in enumerate(examples):
        image, crops[ex.index] = load_training_image(ex)
        if encode:
            variants = [image] + ([image.transpose(FLIP)] if flip else [])
            batch = torch.stack([to_tensor(v) for v in variants])
            for flipped, latent in zip(flips, encode_images(vae, batch)):
                latents[(ex.index, flipped)] = latent
            if progress and ((n + 1) % 16 == 0 or n + 1 == len(examples)):
                progress(n + 1, len(examples))
    return latents, crops


@torch.no_grad()
def cache_text(pipe, family: str, captions: list[str], device: torch.device,
               chunk: int = 32) -> dict[str, TextEmbedding]:
    """Caption → its embedding (one row each), encoded in chunks."""
    cache: dict[str, TextEmbedding] = {}
    for i in range(0, len(captions), chunk):
        part = captions[i:i + chunk]
        emb = encode_text(pipe, family, part, device)
        for j, caption in enumerate(part):
            cache[caption] = TextEmbedding(emb.hidden[j], None if emb.pooled is None else emb.pooled[j])
    return cache


def lookup_text(cache: dict[str, TextEmbedding], captions: list[str]) -> TextEmbedding:
    embs = [cache[c] for c in captions]
    pooled = torch.stack([e.pooled for e in embs]) if embs[0].pooled is not None else None
    return TextEmbedding(torch.stack([e.hidden for e in embs]), pooled)
