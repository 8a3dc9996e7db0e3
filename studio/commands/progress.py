"""The progress bar the image commands (caption, compare, generate, score) print on stderr."""

from __future__ import annotations

import sys


class ProgressBar:
    """A tqdm bar of images on stderr, called as `bar(done, total)`; it opens at the first report, so
    model-loading messages print before it rather than through it."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="image", file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
