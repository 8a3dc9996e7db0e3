"""Talking to a training loop from another thread: commands in (`Control`); events out are
`studio.engine.events`."""

from __future__ import annotations

import threading


class Control:
    """Thread-safe commands for a running loop. The loop checks them between optimizer steps."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._lock = threading.Lock()
        self._sample_now = False
        self._save_now = False

    # --- called by the UI / CLI --------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused loop so it can stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def sample_now(self) -> None:
        with self._lock:
            self._sample_now = True

    def save_now(self) -> None:
        with self._lock:
            self._save_now = True

    # --- called by the loop ---------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, timeout: float = 0.2) -> None:
        while not self._running.wait(timeout):
            pass

    def take_sample_request(self) -> bool:
        with self._lock:
            requested, self._sample_now = self._sample_now, False
            return requested

    def take_save_request(self) -> bool:
        with self._lock:
            requested, self._save_now = self._save_now, False
            return requested
