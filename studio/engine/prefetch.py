"""Pixels for the coming micro-batches, made on a background thread while the training thread trains.

With `train.cache_latents` off, every micro-batch needs its images read, decoded, resized and cropped to the
bucket, flipped and augmented before the VAE encodes them. PIL does that work with the GIL released, so on
one background thread it overlaps with the step instead of adding to it; the VAE itself stays on the
training thread, beside the UNet on the device.

Order: the images, flips and augmented copies of micro-batch g are a pure function of (train.seed, g)
(`batches.py`), and a process trains micro-batches g, g + world size, g + 2 × world size … So the thread
makes exactly what the training thread asks for next, and a resumed run, whose first request starts the
thread at its first micro-batch, sees the batches of an uninterrupted one. A request off that sequence (an
evaluation with a seed of its own) is made in place, with the same code.

The queue holds at most `AHEAD` micro-batches: a paused run leaves the thread waiting after those, and a
stopped, finished or failed run ends it (`close`, from `Trainer.close`); the thread has no end of its own, so
a request past the planned steps (a dry run's) is served too. An image that no longer decodes
(it changed on disk after the scan) reaches the training thread as `ImageUnreadable`, naming the file,
when its micro-batch is due.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import Callable

import torch

from studio.engine.batches import (DataOrder, Example, ImageUnreadable, draw_variants, load_training_image,
                                   micro_rng, variant_tensor)

AHEAD = 2
"""Micro-batches made ahead: one ready while the next is made is enough to hide the decoding."""

Key = tuple[tuple[int, ...], tuple[bool, ...], tuple[int, ...]]
"""(example indices, flips, augmented copies): what a micro-batch's pixels are made of."""


class PixelFeed:
    """`take(micro, …)` returns micro-batch `micro`'s pixels, (B, 3, H, W) in [-1, 1] on the CPU."""

    def __init__(self, examples: list[Example], order: DataOrder,
                 augmentations: Callable[[Example], list], *, seed: int, flip: bool, copies: int, stride: int,
                 micro_per_step: int):
        self.examples, self.order, self.augmentations = examples, order, augmentations
        self.seed, self.flip, self.copies = seed, flip, copies
        self.stride, self.micro_per_step = stride, micro_per_step
        self.prefetched = 0
        self.made_in_place = 0
        """Micro-batches taken from the thread / made on the calling thread (off the training sequence)."""
        self._next: int | None = None
        self._queue: _Queue | None = None
        self._thread: threading.Thread | None = None

    def take(self, micro: int, ids: list[int], flips: list[bool], copies: list[int]) -> torch.Tensor:
        key = (tuple(ids), tuple(flips), tuple(copies))
        if key != self._plan(micro):
            self.made_in_place += 1
            return self._pixels(micro, key)
        if self._next != micro:  # the first request, or one after a jump: the thread starts here
            self._start(micro)
        made = self._queue.get()
        self._next = micro + self.stride
        if isinstance(made, BaseException):
            self._next = None  # the thread ended with it; a later request starts another
            raise made
        self.prefetched += 1
        return made

    def close(self) -> None:
        """End the thread (it finishes the image it is decoding) and drop what it made."""
        if self._queue is not None:
            self._queue.close()
        if self._thread is not None:
            self._thread.join()
        self._queue = self._thread = self._next = None

    # ------------------------------------------------------------------------------------------
    def _plan(self, micro: int) -> Key:
        """What training micro-batch `micro` is made of: as `Trainer._loss` draws it."""
        ids = self.order.batch(micro)
        py, _ = micro_rng(self.seed, micro)
        flips, copies = draw_variants(py, len(ids), self.flip, self.copies)
        return tuple(ids), tuple(flips), tuple(copies)

    def _pixels(self, micro: int, key: Key) -> torch.Tensor:
        pixels = []
        for index, flipped, copy in zip(*key):
            ex = self.examples[index]
            try:
                image, _ = load_training_image(ex)
            except ImageUnreadable as err:
                raise ImageUnreadable(f"at step {micro // self.micro_per_step + 1}: {err}") from err
            pixels.append(variant_tensor(image, flipped, self.augmentations(ex)[copy]))
        return torch.stack(pixels)

    def _start(self, micro: int) -> None:
        self.close()
        self._queue = queue = _Queue(AHEAD)
        self._thread = threading.Thread(target=self._work, args=(micro, queue), name="pixel-prefetch", daemon=True)
        self._thread.start()

    def _work(self, start: int, queue: _Queue) -> None:
        for micro in itertools.count(start, self.stride):
            try:
                made: torch.Tensor | BaseException = self._pixels(micro, self._plan(micro))
            except Exception as err:  # handed to the training thread, which raises it when this batch is due
                queue.put(err)
                return
            if not queue.put(made):
                return


class _Queue:
    """A bounded hand-over from one producer to one consumer that the consumer can close: `put` then returns
    False at once instead of waiting for room (a stopped run's thread ends without a timeout loop)."""

    def __init__(self, size: int):
        self.size = size
        self.items: deque = deque()
        self.closed = False
        self.changed = threading.Condition()

    def put(self, item) -> bool:
        with self.changed:
            self.changed.wait_for(lambda: self.closed or len(self.items) < self.size)
            if self.closed:
                return False
            self.items.append(item)
            self.changed.notify_all()
            return True

    def get(self):
        with self.changed:
            self.changed.wait_for(lambda: self.items)
            item = self.items.popleft()
            self.changed.notify_all()
            return item

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.items.clear()
            self.changed.notify_all()
