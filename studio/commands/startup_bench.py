"""`python studio.py bench --startup`: how long `python studio.py` takes to talk and to serve its page.

Each repeat starts the studio as a child process on a free port with empty folders, the way a user
does, and records when its first line appears, when it prints the ready line, and when `GET /`
first answers 200, with the child's own CPU seconds at that moment (from /proc, so the benchmark's
own polling is not counted). For scale it also times bare `import gradio` and `import torch` in
fresh interpreters: the floor any Gradio + PyTorch app pays before it can serve.
"""

from __future__ import annotations

import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ENTRY = Path(__file__).resolve().parents[2] / "studio.py"
READY = "LoRA Studio is ready"


@dataclass
class StartupRun:
    """One start of `python studio.py` (seconds since the process was spawned)."""

    first_line_s: float | None = None
    first_line: str = ""
    ready_s: float | None = None
    ready_line: str = ""
    page_s: float | None = None
    page_cpu_s: float | None = None
    """The child's CPU seconds (user + system) when the page first answered; None without /proc."""
    output: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImportCost:
    module: str
    wall_s: float
    cpu_s: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _process_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listening(port: int) -> bool:
    """Whether the port accepts a connection: cheap for the server, unlike rendering its page."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _child_env() -> dict[str, str]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env.pop("STUDIO_AUTH", None)
    return env


def time_one_start(timeout_s: float = 600.0, poll_s: float = 0.05) -> StartupRun:
    """Start the studio once, wait until its page answers (or it exits, or `timeout_s`), stop it."""
    run = StartupRun()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="studio-startup-") as tmp:
        folders = [f"--{name}={Path(tmp) / name}" for name in ("outputs", "models", "datasets")]
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, str(ENTRY), "--port", str(port), *folders], env=_child_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)

        def read_lines() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                at = time.perf_counter() - started
                line = line.rstrip("\n")
                run.output.append(line)
                if run.first_line_s is None and line.strip():
                    run.first_line_s, run.first_line = at, line
                if run.ready_s is None and line.startswith(READY):
                    run.ready_s, run.ready_line = at, line

        reader = threading.Thread(target=read_lines, daemon=True)
        reader.start()
        url = f"http://127.0.0.1:{port}/"
        try:
            while child.poll() is None and time.perf_counter() - started < timeout_s:
                if _listening(port) and _page_answers(url):
                    run.page_s = time.perf_counter() - started
                    run.page_cpu_s = _process_cpu_s(child.pid)
                    break
                time.sleep(poll_s)  # a benchmark's poll interval, not a test's wait
            # the ready line is printed right after the server answers: give the reader a moment to see it
            deadline = time.perf_counter() + 30
            while run.page_s is not None and run.ready_s is None and child.poll() is None \
                    and time.perf_counter() < deadline:
                time.sleep(poll_s)
        finally:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            reader.join(timeout=5)
    return run


def time_import(module: str) -> ImportCost:
    """Wall and CPU seconds of `import module` in a fresh interpreter (start-up of Python itself included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=_child_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ImportCost(module, wall, cpu)


def run_startup_bench(repeats: int = 3, timeout_s: float = 600.0) -> tuple[list[StartupRun], list[ImportCost]]:
    runs = [time_one_start(timeout_s) for _ in range(max(1, repeats))]
    imports = [time_import("gradio"), time_import("torch")]
    return runs, imports


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):6.2f}" if known else "   n/a"


def format_startup_bench(runs: list[StartupRun], imports: list[ImportCost]) -> str:
    lines = [f"start-up of `python studio.py` ({len(runs)} start(s), {os.cpu_count()} CPU core(s); "
             "seconds since the process started)", ""]
    lines.append(f"{'':34}{'median':>8}  each")
    rows = (("first line printed (wall)", [r.first_line_s for r in runs]),
            ("page answers GET / 200 (wall)", [r.page_s for r in runs]),
            ("page answers: studio's CPU-s", [r.page_cpu_s for r in runs]),
            ("ready line with the URL (wall)", [r.ready_s for r in runs]))
    for label, values in rows:
        each = "  ".join("n/a" if v is None else f"{v:.2f}" for v in values)
        lines.append(f"{label:34}{_median(values):>8}  {each}")
    lines.append("")
    for cost in imports:
        lines.append(f"for scale: `import {cost.module}` alone: {cost.wall_s:.2f} s wall, {cost.cpu_s:.2f} CPU-s")
    failed = [r for r in runs if r.page_s is None]
    if failed:
        lines += ["", f"{len(failed)} start(s) never served the page; the last output was:", *failed[-1].output[-15:]]
    elif runs:
        lines += ["", f"first line: {runs[-1].first_line}", f"ready line: {runs[-1].ready_line}"]
    return "\n".join(lines)
