"""How a training run fails in words a user can act on: every message names what to change, or the
folder that could not be written, and ends with where the safe work is (the last good checkpoint)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from safetensors import SafetensorError

from studio.config import RunConfig
from studio.core.device import is_out_of_memory
from studio.engine.advice import out_of_memory_message


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingOutOfMemory(RuntimeError):
    """The device ran out of memory; the message says which settings to change."""


class RunWriteError(OSError):
    """A file of the run could not be written (disk full, permissions); the message names the folder
    and the last good checkpoint."""


WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)
"""What a failed write raises: OSError, safetensors' "I/O error", torch.save's "failed writing file"."""


@contextlib.contextmanager
def writing(what: str, folder: Path, last_good: str, run_name: str) -> Iterator[None]:
    """Turn a failed write (disk full, permissions, a vanished folder) into one RunWriteError that names
    `folder` and ends with `last_good`."""
    try:
        yield
    except WRITE_ERRORS as err:
        if is_out_of_memory(err) or not (isinstance(err, (OSError, SafetensorError)) or "writ" in str(err)):
            raise
        detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise RunWriteError(f"could not write {what} in {folder}: {detail}. {last_good} Free space there (or fix "
                            f"the folder), then `python studio.py resume {run_name}`.") from err


def as_failure(err: BaseException, config: RunConfig, device_type: str, step: int, last_good: str,
               run_name: str) -> BaseException:
    """The error a user sees for `err`: out of memory becomes TrainingOutOfMemory with advice, and how to
    go on from the checkpoint with the changed settings (a new run that starts from it)."""
    if is_out_of_memory(err):
        return TrainingOutOfMemory(f"{out_of_memory_message(config, device_type, f'at step {step}')}. {last_good} "
                                   f"To go on from it with changed settings, start a new run with "
                                   f"--set lora.init_from={run_name}.")
    return err
