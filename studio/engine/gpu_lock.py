"""One accelerator user at a time: training, captioning, generation and scoring share this lock.

A request never waits silently: `acquire` either succeeds at once or raises `AcceleratorBusy`
saying who holds the device, so the UI can tell the user instead of hanging.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator


class AcceleratorBusy(RuntimeError):
    pass


class AcceleratorLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: str | None = None

    @property
    def holder(self) -> str | None:
        return self._holder

    def acquire(self, who: str) -> None:
        if not self._lock.acquire(blocking=False):
            raise AcceleratorBusy(f"the accelerator is busy with {self._holder}; wait for it to finish or stop it, "
                                  f"then try again")
        self._holder = who

    def release(self) -> None:
        self._holder = None
        self._lock.release()

    @contextlib.contextmanager
    def hold(self, who: str) -> Iterator[None]:
        self.acquire(who)
        try:
            yield
        finally:
            self.release()


ACCELERATOR = AcceleratorLock()
"""The process-wide lock."""
