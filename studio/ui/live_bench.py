"""`python studio.py bench --live`: what open pages cost a training job, on the server's side.

The studio is served in this process with a tiny job training (tiny-sd15 unless `--set` says
otherwise); simulated pages (`live_viewers`, a separate, niced process, so their CPU is not the
server's) call what a page's timers call (the endpoints and intervals are read from the app itself).
Phases alternate, none then `--viewers` pages, `--repeats` times, on the same job. The pages open
before their phase starts (streams held open, each endpoint called once): a phase measures open
pages; what opening them cost is reported apart.

Per phase it records the job's steps/s and, from this process's CPU clock, the training thread's
CPU and the rest: the web server, the polls and the runner. The rest above the no-viewer baseline,
divided by the calls served, is the server's CPU per poll; that CPU per second, as a share of one
core, is the most the viewers can take from a job that needs a whole core (Python runs one thread at
a time), next to the measured change in steps/s.
"""

from __future__ import annotations

import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOB = ["model.base=tiny-sd15", "train.batch_size=2", "lora.rank=4", "train.max_steps=1000000",
       "sample.every_steps=0", "save.every_steps=0", "optim.warmup_steps=0"]
"""A job that trains until the bench stops it, fast, so that every poll finds a new step."""
WARMUP_STEPS = 100


@dataclass
class LivePhase:
    viewers: int
    wall_s: float
    steps: int
    train_cpu_s: float | None
    """The training thread's CPU seconds (None where the platform has no per-thread CPU clock)."""
    process_cpu_s: float
    calls: int = 0
    round_trips: list[float] = field(default_factory=list)
    updates: int = 0
    """What the pages' live streams and feeds delivered."""
    open_wall_s: float = 0.0
    open_rest_cpu_s: float = 0.0
    """Opening the pages, before the phase: its wall time and the server's CPU outside the training thread."""

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s

    @property
    def rest_cpu_s(self) -> float:
        """The server process's CPU outside the training thread (all of it without a thread clock)."""
        return self.process_cpu_s - (self.train_cpu_s or 0.0)


@dataclass
class LiveBench:
    viewers: int
    endpoints: list[tuple[str, float | str]]
    phases: list[LivePhase]
    metrics_rows: int
    base_model: str

    def group(self, viewers: int) -> list[LivePhase]:
        return [p for p in self.phases if p.viewers == viewers]

    def steps_per_s(self, viewers: int) -> float:
        group = self.group(viewers)
        return sum(p.steps for p in group) / sum(p.wall_s for p in group)

    def rest_cpu_per_s(self, viewers: int) -> float:
        group = self.group(viewers)
        return sum(p.rest_cpu_s for p in group) / sum(p.wall_s for p in group)

    @property
    def calls(self) -> int:
        """Requests and stream updates served to the viewers: each is one poll's worth of work."""
        return sum(p.calls + p.updates for p in self.group(self.viewers))

    @property
    def server_cpu_per_s(self) -> float:
        """CPU seconds per second that the viewers cost the server (above the no-viewer baseline)."""
        return max(0.0, self.rest_cpu_per_s(self.viewers) - self.rest_cpu_per_s(0))

    @property
    def open_cpu_per_page_s(self) -> float:
        """The server's CPU to open one page (above the no-viewer baseline for as long as it took)."""
        group = self.group(self.viewers)
        extra = sum(p.open_rest_cpu_s - self.rest_cpu_per_s(0) * p.open_wall_s for p in group)
        return max(0.0, extra) / max(1, self.viewers * len(group))

    @property
    def cpu_per_call_s(self) -> float:
        wall = sum(p.wall_s for p in self.group(self.viewers))
        return self.server_cpu_per_s * wall / max(1, self.calls)


def page_endpoints(app) -> list[tuple[str, float | str]]:
    """What an open page calls on its own: (api name, interval) of every event its timers trigger, or
    "stream" for the live view's stream (which the timer only restarts), "follow" for the Train tab's
    poll (called whenever the stream's view key changes), "feed" for the live feed (the page's
    EventSource) and "edition" for the loss chart (asked for whenever the feed names a new edition)."""
    import gradio as gr

    from studio.ui.live_feed import FEED_PATH

    out: list[tuple[str, float | str]] = [("/poll", "follow"), (FEED_PATH, "feed"), ("/loss_chart", "edition")]
    for fn in app.fns.values():
        for block_id, event in fn.targets:
            block = app.blocks.get(block_id)
            if event == "tick" and isinstance(block, gr.Timer) and fn.api_name:
                streams = inspect.isasyncgenfunction(fn.fn) or inspect.isgeneratorfunction(fn.fn)
                out.append((f"/{fn.api_name}", "stream" if streams else float(block.value)))
    return sorted(out, key=str)


def _thread_cpu(thread: threading.Thread | None):
    """A reader of `thread`'s CPU seconds, or None where the platform has no per-thread CPU clock."""
    if thread is None or not hasattr(time, "pthread_getcpuclockid"):
        return None
    clock = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock)


def _measure(runner, train_cpu, seconds: float, viewers: subprocess.Popen | None) -> LivePhase:
    """One phase: `seconds` of the job alone, or until the viewers' process reports."""
    step0, wall0, cpu0 = runner.snapshot().step, time.perf_counter(), time.process_time()
    train0 = train_cpu() if train_cpu else None
    report = {}
    if viewers is None:
        time.sleep(seconds)
    else:
        viewers.stdin.write("go\n")
        viewers.stdin.flush()
        report = json.loads(viewers.stdout.readline())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    train = train_cpu() - train0 if train_cpu else None
    phase = LivePhase(viewers=0, wall_s=wall, steps=runner.snapshot().step - step0, train_cpu_s=train,
                      process_cpu_s=cpu)
    if viewers is not None:
        viewers.wait(60)
        phase.calls, phase.round_trips, phase.updates = report["calls"], report["round_trips"], report["updates"]
    return phase


def _start_viewers(url: str, count: int, seconds: float, endpoints: list[tuple[str, float | str]],
                   rest_cpu) -> tuple[subprocess.Popen, float, float]:
    """The viewers' process once its pages are open, with the wall and server CPU (`rest_cpu`) that took."""
    args = [sys.executable, "-m", "studio.ui.live_viewers", url, str(count), str(seconds),
            *(f"{api}={interval}" for api, interval in endpoints)]
    wall0, cpu0 = time.perf_counter(), rest_cpu()
    proc = subprocess.Popen(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the simulated viewers did not start (said {line.strip()!r}); run "
                           f"`python -m studio.ui.live_viewers {url} 1 1 /poll=0.5` to see why")
    return proc, time.perf_counter() - wall0, rest_cpu() - cpu0


def run_live_bench(viewers: int = 5, rounds: int = 3, seconds: float = 8.0, preset: str = "tiny-demo",
                   overrides: list[str] | None = None) -> LiveBench:
    from studio.config import load_config
    from studio.ui.app import Settings, start_studio
    from studio.ui.security import Roots

    config = load_config(preset, [*JOB, *(overrides or [])])
    with tempfile.TemporaryDirectory(prefix="live-bench-") as tmp:
        base = Path(tmp)
        roots = Roots.create(base / "datasets", base / "models", base / "outputs")
        app, studio = start_studio(Settings(roots=roots), prevent_thread_lock=True)
        runner = studio.runner
        try:
            runner.start(config, "live-bench")
            while runner.snapshot().step < WARMUP_STEPS:  # models loaded, latents cached, steady steps
                if not runner.snapshot().active:
                    raise RuntimeError(f"the bench's job ended: {runner.snapshot().message}")
                time.sleep(0.2)
            thread = next((t for t in threading.enumerate() if t.name == "train-live-bench"), None)
            train_cpu = _thread_cpu(thread)
            endpoints = page_endpoints(app)

            def rest_cpu() -> float:
                return time.process_time() - (train_cpu() if train_cpu else 0.0)

            phases = []
            for _ in range(rounds):
                phases.append(_measure(runner, train_cpu, seconds, None))
                proc, open_wall, open_cpu = _start_viewers(app.local_url, viewers, seconds, endpoints, rest_cpu)
                phase = _measure(runner, train_cpu, seconds, proc)
                phase.viewers, phase.open_wall_s, phase.open_rest_cpu_s = viewers, open_wall, open_cpu
                phases.append(phase)
            rows = len(runner.snapshot().metrics)
        finally:
            if runner.snapshot().active:
                runner.stop()
            runner.join(120)
            app.close()
    return LiveBench(viewers=viewers, endpoints=endpoints, phases=phases, metrics_rows=rows,
                     base_model=config.model.base)


def format_live_bench(result: LiveBench) -> str:
    n = result.viewers
    calls = ", ".join(f"{api} open" if every in ("stream", "feed") else
                      f"{api} when the stream's key changes" if every == "follow" else
                      f"{api} for each new chart edition" if every == "edition" else f"{api} every {every:g} s"
                      for api, every in result.endpoints)
    lines = [f"Live view, the server's side: {n} simulated pages (a separate process, not counted) each calling "
             f"{calls}; a {result.base_model} job, phases of 0 and {n} pages alternating "
             f"({len(result.phases) // 2} rounds; {result.metrics_rows} metric rows by the end)",
             f"  {'pages':>5}  {'wall s':>6}  {'steps/s':>7}  {'train CPU-s/step':>16}  {'rest CPU-s/s':>12}  "
             f"{'calls':>5}  {'stream updates':>14}"]
    for p in result.phases:
        per_step = f"{p.train_cpu_s / p.steps:.4f}" if p.train_cpu_s is not None and p.steps else "—"
        lines.append(f"  {p.viewers:>5}  {p.wall_s:>6.1f}  {p.steps_per_s:>7.2f}  {per_step:>16}  "
                     f"{p.rest_cpu_s / p.wall_s:>12.4f}  {p.calls:>5}  {p.updates:>14}")
    trips = [t for p in result.group(n) for t in p.round_trips]
    sps0, spsn = result.steps_per_s(0), result.steps_per_s(n)
    share = result.server_cpu_per_s
    if result.phases[0].train_cpu_s is None:
        lines.append("  (no per-thread CPU clock here: the rest includes the training thread)")
    lines += [
        f"Server CPU per message or call: {result.cpu_per_call_s * 1000:.2f} CPU-ms "
        f"({result.calls} calls and stream updates; "
        "the process's CPU outside the training thread, above the 0-page baseline)",
        f"Wall per poll: {statistics.mean(trips) * 1000:.0f} ms mean round trip at a client, "
        f"p90 {statistics.quantiles(trips, n=10)[-1] * 1000:.0f} ms" if len(trips) >= 2 else "Wall per poll: no calls",
        f"Steps/s: {sps0:.2f} with 0 pages, {spsn:.2f} with {n} pages: {100 * (1 - spsn / sps0):+.1f} % cost "
        "(wall clock: noisy on a shared machine)",
        f"Server cost of {n} open pages: {share * 1000:.1f} CPU-ms per s = {100 * share:.1f} % of one core, the most "
        "they can take from a job that needs a whole core",
        f"Opening a page (once; its streams, feed and first calls): {result.open_cpu_per_page_s * 1000:.0f} "
        "server CPU-ms",
    ]
    return "\n".join(lines)
