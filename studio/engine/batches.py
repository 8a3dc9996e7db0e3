"""Training examples, aspect buckets and a data order that is a pure function of (seed, position).

Because the order of micro-batch `g` depends only on the seed and `g`, resuming at any step needs
no saved iterator: the checkpoint's step says where to continue, and the run is bit-identical.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from studio.config import RunConfig
from studio.data.buckets import assign_bucket, make_buckets
from studio.data.dataset import DatasetScan
from studio.data.images import load_image


@dataclass(frozen=True)
class Example:
    index: int
    path: Path
    caption: str
    bucket: tuple[int, int]
    """(width, height) the image is trained at."""
    original_size: tuple[int, int]
    """(height, width) of the source image: SDXL's size conditioning."""


def prepare_examples(scan: DatasetScan, config: RunConfig) -> list[Example]:
    """One Example per usable image; a missing caption becomes "<trigger> <class phrase>"."""
    d = config.data
    fallback = " ".join(x for x in (d.trigger_word, d.class_phrase) if x)
    if d.buckets:
        buckets = make_buckets(d.resolution, d.bucket_step)
    else:
        buckets = [(d.resolution, d.resolution)]
    return [
        Example(i, item.path, item.caption if item.caption is not None else fallback,
                assign_bucket(item.width, item.height, buckets), (item.height, item.width))
        for i, item in enumerate(scan.items)
    ]


def crop_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Resize to cover the bucket, centre-crop; returns the crop and its (top, left) in the resized image."""
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    size = (max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return resized.crop((left, top, left + width, top + height)), (top, left)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL → CHW float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_training_image(example: Example) -> tuple[Image.Image, tuple[int, int]]:
    return crop_to_bucket(load_image(example.path), example.bucket)


def augment(image: Image.Image, rng: random.Random, color_jitter: float, rotation: float) -> Image.Image:
    """The presets' per-step augmentations (flip is handled separately: it can be cached)."""
    if rotation:
        angle = rng.uniform(-rotation, rotation)
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    if color_jitter:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(1.0 + rng.uniform(-color_jitter, color_jitter))
    return image


class DataOrder:
    """Bucketed batches, reshuffled each epoch from (seed, epoch).

    Every epoch has the same number of batches, so micro-batch g is batch `g % n` of epoch `g // n`.
    """

    def __init__(self, examples: list[Example], batch_size: int, repeats: int, seed: int):
        self.examples = examples
        self.batch_size = batch_size
        self.repeats = repeats
        self.seed = seed
        self.batches_per_epoch = len(self._epoch(0))
        self._cache: tuple[int, list[list[int]]] | None = None

    def _epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}/epoch/{epoch}")
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for ex in self.examples:
            by_bucket.setdefault(ex.bucket, []).extend([ex.index] * self.repeats)
        batches = []
        for bucket in sorted(by_bucket):
            ids = by_bucket[bucket]
            rng.shuffle(ids)
            batches += [ids[i:i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def epoch_of(self, micro: int) -> int:
        return micro // self.batches_per_epoch

    def batch(self, micro: int) -> list[int]:
        epoch = self.epoch_of(micro)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._epoch(epoch))
        return self._cache[1][micro % self.batches_per_epoch]


def micro_rng(seed: int, micro: int) -> tuple[random.Random, torch.Generator]:
    """Randomness for one micro-batch (flips, dropout, noise, timesteps), from (seed, position)."""
    py = random.Random(f"{seed}/micro/{micro}")
    gen = torch.Generator().manual_seed(py.getrandbits(63))
    return py, gen
