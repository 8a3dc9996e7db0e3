"""TensorBoard event files for a run (`log.tensorboard: true`): loss, smoothed loss, learning rate,
epoch and the validation samples, in `<run>/tensorboard/`. The package is optional
(`pip install tensorboard`); `prepare.require_tensorboard` says so before a run starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studio.engine.prepare import require_tensorboard


class TensorBoardLog:
    def __init__(self, folder: Path):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def metrics(self, row: dict[str, Any]) -> None:
        step = row["step"]
        for key, tag in (("loss", "loss/raw"), ("loss_smoothed", "loss/smoothed"), ("lr", "learning_rate"),
                         ("epoch", "epoch"), ("steps_per_s", "speed/steps_per_s")):
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], step)

    def samples(self, step: int, entries: list[dict[str, Any]], folder: Path) -> None:
        for i, entry in enumerate(entries):
            image = np.asarray(Image.open(folder / entry["file"]).convert("RGB"))
            self.writer.add_image(f"samples/{i:02d} seed {entry['seed']}", image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
