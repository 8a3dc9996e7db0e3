"""One accelerator job per machine: training, captioning, grids, batches and scoring share this lock.

The lock is an OS file lock (`fcntl.flock`) on one file per user, shared by every process — the
studio, a `studio.py train` in a terminal, a second studio with another outputs folder — so two jobs
never fill one GPU at once. `acquire` never waits: it succeeds at once or raises `AcceleratorBusy`
naming the holder (what it does, which run, its process id and since when), read from the lock
file, so the UI and the CLI can say who has the device instead of hanging.

The kernel drops an flock when its process dies, however it dies (`kill -9` included): a lock
left by a killed process is free again, and the next job takes it over (and logs whose it was).

Where: `$LORA_STUDIO_LOCK_DIR/accelerator.lock`, by default `~/.cache/lora-studio/accelerator.lock`
(not the model cache: `LORA_STUDIO_CACHE` may differ between processes that share one GPU). Tests
point `LORA_STUDIO_LOCK_DIR` at a folder of their own. Without `fcntl` (Windows) the lock only
works inside one process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: in-process only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = "accelerator.lock"


def lock_dir() -> Path:
    env = os.environ.get("LORA_STUDIO_LOCK_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lora-studio"


def lock_path() -> Path:
    return lock_dir() / LOCK_NAME


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds the accelerator: written into the lock file while it is held."""

    who: str
    """What the job does, in words: "training run-a", "captioning", "comparison grid"."""
    run: str | None
    pid: int
    since: str
    """ISO time the job took the lock."""
    host: str

    def describe(self) -> str:
        when = dt.datetime.fromisoformat(self.since).strftime("%H:%M:%S") if self.since else "?"
        here = "this process" if self.pid == os.getpid() else f"process {self.pid}"
        return f"{self.who} ({here}, since {when})"

    @classmethod
    def read(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(**{k: data.get(k) for k in ("who", "run", "pid", "since", "host")})
        except (ValueError, TypeError):
            return None


class AcceleratorBusy(RuntimeError):
    """The accelerator is held by another job; `holder` says which (None when it could not be read)."""

    def __init__(self, holder: Holder | None):
        self.holder = holder
        what = holder.describe() if holder else "another process"
        super().__init__(f"the accelerator is busy with {what}; wait for it to finish or stop it, then try again")


class AcceleratorLock:
    """The machine-wide lock; `path=None` takes `lock_path()` at each acquire (tests move it)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._mutex = threading.Lock()  # one holder per process, before the file lock is tried
        self._file: IO[str] | None = None
        self._holder: Holder | None = None
        self._listeners: list[Callable[[], Callable[[Holder], None] | None]] = []

    def on_acquire(self, listener: Callable[[Holder], None]) -> None:
        """Call `listener(holder)` each time this process takes the lock, before the job starts: how what
        the job doesn't need is freed for it (the eval models). A bound method is held weakly, so an
        object that listens can still go away."""
        if hasattr(listener, "__self__"):
            self._listeners.append(weakref.WeakMethod(listener))  # type: ignore[arg-type]
        else:
            self._listeners.append(lambda: listener)

    def _notify(self, holder: Holder) -> None:
        self._listeners = [ref for ref in self._listeners if ref() is not None]
        for ref in list(self._listeners):
            listener = ref()
            if listener is not None:
                listener(holder)

    @property
    def holder(self) -> str | None:
        """What this process holds the lock for (None when it holds nothing)."""
        return self._holder.who if self._holder else None

    @property
    def path(self) -> Path:
        return self._path or lock_path()

    def current(self) -> Holder | None:
        """Who holds the lock now, in this process or another; None when it is free.

        Read without locking (a probe would make a concurrent `acquire` fail): a holder writes itself
        into the file and empties it on release, so an empty file, or one naming a process that is
        gone, is a free lock.
        """
        if self._holder:
            return self._holder
        try:
            holder = Holder.read(self.path.read_text(encoding="utf-8"))
        except OSError:
            return None
        if holder is None or (holder.host == socket.gethostname() and not pid_alive(holder.pid)):
            return None
        return holder

    def acquire(self, who: str, run: str | None = None) -> Holder:
        if not self._mutex.acquire(blocking=False):
            raise AcceleratorBusy(self._holder)
        try:
            holder = Holder(who, run, os.getpid(), dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                            socket.gethostname())
            self._file = self._lock_file(holder)
            self._holder = holder
        except BaseException:
            self._mutex.release()
            raise
        try:
            self._notify(holder)
        except BaseException:  # the job doesn't start: the lock goes back
            self.release()
            raise
        return holder

    def _lock_file(self, holder: Holder) -> IO[str] | None:
        if fcntl is None:
            return None
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            other = Holder.read(handle.read())
            handle.close()
            raise AcceleratorBusy(other) from None
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        left = Holder.read(handle.read())
        if left and left.pid != holder.pid:  # the kernel freed it: that process is gone
            log.info("took over the accelerator lock left by %s, which is no longer running", left.describe())
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(asdict(holder)))
        handle.flush()
        return handle

    def release(self) -> None:
        handle, self._file, self._holder = self._file, None, None
        try:
            if handle is not None:
                handle.seek(0)
                handle.truncate()
                handle.flush()
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
        finally:
            self._mutex.release()

    @contextlib.contextmanager
    def hold(self, who: str, run: str | None = None) -> Iterator[Holder]:
        holder = self.acquire(who, run)
        try:
            yield holder
        finally:
            self.release()


ACCELERATOR = AcceleratorLock()
"""The lock every job in this process takes."""
