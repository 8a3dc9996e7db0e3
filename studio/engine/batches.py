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
from studio.data.captions import training_caption
from studio.data.dataset import DatasetScan
from studio.data.images import ImageSkip, load_image

FLIP = Image.Transpose.FLIP_LEFT_RIGHT


@dataclass(frozen=True)
class Example:
    index: int
    path: Path
    caption: str
    bucket: tuple[int, int]
    """(width, height) the image is trained at."""
    original_size: tuple[int, int]
    """(height, width) of the source image: SDXL's size conditioning."""
    file_hash: str = ""
    """SHA-1 of the image file (the scan's): what the latent cache keys the image by."""

    @property
    def crop(self) -> tuple[int, int]:
        """(top, left) of the bucket crop in the resized image (SDXL's crop ids), without decoding it."""
        return crop_box(self.original_size[::-1], self.bucket)[1]


def prepare_examples(scan: DatasetScan, config: RunConfig) -> list[Example]:
    """One Example per usable image; a missing caption becomes "<trigger> <class phrase>", a caption
    over `CAPTION_MAX_CHARS` is cut to that length (the trainer says so)."""
    d = config.data
    fallback = " ".join(x for x in (d.trigger_word, d.class_phrase) if x)
    if d.buckets:
        buckets = make_buckets(d.resolution, d.bucket_step)
    else:
        buckets = [(d.resolution, d.resolution)]
    return [
        Example(i, item.path, training_caption(item.caption) if item.caption is not None else fallback,
                assign_bucket(item.width, item.height, buckets), (item.height, item.width), item.file_hash)
        for i, item in enumerate(scan.items)
    ]


def crop_box(image_size: tuple[int, int], bucket: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """For an image of (width, height) `image_size`: the (width, height) it is resized to so that it
    covers the bucket, and the (top, left) of the centre crop in it."""
    width, height = bucket
    scale = max(width / image_size[0], height / image_size[1])
    size = (max(width, math.ceil(image_size[0] * scale)), max(height, math.ceil(image_size[1] * scale)))
    return size, ((size[1] - height) // 2, (size[0] - width) // 2)


def crop_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Resize to cover the bucket, centre-crop; returns the crop and its (top, left) in the resized image."""
    size, (top, left) = crop_box(image.size, bucket)
    resized = image.resize(size, Image.Resampling.LANCZOS)
    width, height = bucket
    return resized.crop((left, top, left + width, top + height)), (top, left)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL → CHW float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class ImageUnreadable(RuntimeError):
    """A training image that decoded when the dataset was scanned no longer does."""


def load_training_image(example: Example) -> tuple[Image.Image, tuple[int, int]]:
    """The example's image cropped to its bucket; ImageUnreadable, naming the file, when it no longer decodes."""
    try:
        image = load_image(example.path)
    except (ImageSkip, OSError) as err:
        raise ImageUnreadable(
            f"training image {example.path} can no longer be read ({getattr(err, 'reason', None) or err}); it was "
            "readable when the dataset was scanned, so it changed on disk since. Put the original back (or fix the "
            "file), then start the run again or resume it.") from err
    return crop_to_bucket(image, example.bucket)


@dataclass(frozen=True)
class Augmentation:
    """One augmented copy of an image: a rotation in degrees and brightness / contrast / saturation factors."""

    angle: float
    brightness: float
    contrast: float
    saturation: float


def augmentation(seed: int, file_hash: str, variant: int, color_jitter: float, rotation: float) -> Augmentation | None:
    """Copy `variant` of an image, drawn from (seed, image content, variant) alone: the same in every run
    with this seed and on resume, so its latents can be cached. None when rotation and jitter are off."""
    if not (color_jitter or rotation):
        return None
    rng = random.Random(f"{seed}/augment/{file_hash}/{variant}")
    angle = rng.uniform(-rotation, rotation) if rotation else 0.0
    factors = [1.0 + rng.uniform(-color_jitter, color_jitter) if color_jitter else 1.0 for _ in range(3)]
    return Augmentation(angle, *factors)


def augment(image: Image.Image, aug: Augmentation | None) -> Image.Image:
    """`image` rotated and colour-changed as `aug` says (flip is applied before, separately)."""
    if aug is None:
        return image
    if aug.angle:
        image = image.rotate(aug.angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    for enhancer, factor in ((ImageEnhance.Brightness, aug.brightness), (ImageEnhance.Contrast, aug.contrast),
                             (ImageEnhance.Color, aug.saturation)):
        if factor != 1.0:
            image = enhancer(image).enhance(factor)
    return image


def variant_tensor(image: Image.Image, flipped: bool, aug: Augmentation | None) -> torch.Tensor:
    """One cached variant of a cropped training image as the VAE's input: flipped or not, then augmented."""
    return to_tensor(augment(image.transpose(FLIP) if flipped else image, aug))


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
        # read once into a local: the training thread and the pixel prefetch thread share this order
        epoch, cached = self.epoch_of(micro), self._cache
        if cached is None or cached[0] != epoch:
            cached = self._cache = (epoch, self._epoch(epoch))
        return cached[1][micro % self.batches_per_epoch]


def micro_rng(seed: int, micro: int) -> tuple[random.Random, torch.Generator]:
    """Randomness for one micro-batch (flips, dropout, noise, timesteps), from (seed, position)."""
    py = random.Random(f"{seed}/micro/{micro}")
    gen = torch.Generator().manual_seed(py.getrandbits(63))
    return py, gen


def draw_variants(py: random.Random, count: int, flip: bool, copies: int) -> tuple[list[bool], list[int]]:
    """Each image's flip and augmented copy (of `copies`) for a micro-batch of `count` images: the first draws
    from the micro-batch's RNG (`micro_rng`), so they are known before the step, to the prefetch thread too."""
    flips = [flip and py.random() < 0.5 for _ in range(count)]
    picks = [py.randrange(copies) if copies > 1 else 0 for _ in range(count)]
    return flips, picks
