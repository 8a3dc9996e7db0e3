"""`python studio.py bench --export`: time and peak memory of the merged exports, against only loading
the base model, each in a fresh child process: its peak resident memory (`VmHWM`, which, unlike
`ru_maxrss`, does not count the parent's pages a fork carried over) and its CPU seconds.

A LoRA is trained for a couple of steps on the preset's base model first. If the merged export held
two copies of the model, its peak would exceed the load-only peak by about the model's size; the
figures show what the merge and the streamed write add. Printed, never asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from studio.config import RunConfig
from studio.engine.runs import RunFolder


@dataclass
class ChildFigures:
    label: str
    wall_s: float
    cpu_s: float
    peak_rss: int
    written: int
    """Bytes on disk afterwards (0 for the reference children)."""


@dataclass
class ExportBench:
    base: str
    dtype: str
    model_bytes: int
    rows: list[ChildFigures]


_CHILD = textwrap.dedent("""\
    import resource
    import sys
    from pathlib import Path
    from studio.engine.export import DTYPES, export_run
    from studio.engine.models import load_pipeline
    from studio.engine.runs import RunFolder
    what, run_path, out, models = sys.argv[1:5]
    run = RunFolder(Path(run_path))
    config = run.config()
    models_dir = Path(models) if models else None
    if what == "load":  # and read every weight once, as an export does (mapped weights count once read)
        pipe = load_pipeline(config.model.base, family=config.model.family, dtype=DTYPES[config.save.dtype],
                             models_dir=models_dir, single_file_config=config.model.single_file_config)
        for module in pipe.components.values():
            for tensor in (module.state_dict().values() if hasattr(module, "state_dict") else ()):
                tensor.sum()
    elif what != "import":
        export_run(run, what, out=Path(out), models_dir=models_dir)
    peak = None
    try:
        with open("/proc/self/status") as status:
            peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except OSError:  # no /proc (macOS): ru_maxrss, in bytes there
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("PEAK", peak)
    """)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _child(label: str, what: str, run: RunFolder, out: Path, models_dir: Path | None) -> ChildFigures:
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, what, str(run.path), str(out), str(models_dir or "")],
                             env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                             stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"bench child '{label}' failed with exit code {child.returncode}")
    peak = int(output.rsplit("PEAK", 1)[1])
    return ChildFigures(label, wall, usage.ru_utime + usage.ru_stime, peak, _size(out))


def run_export_bench(config: RunConfig, models_dir: Path | None = None, steps: int = 2) -> ExportBench:
    from studio.engine.export import DTYPES
    from studio.engine.merge import estimate_merged_export
    from studio.engine.train import run_training

    config = config.with_overrides({"train.max_steps": steps, "sample.every_steps": 0, "save.every_steps": 0,
                                    "save.every_epochs": 0, "optim.warmup_steps": 0})
    dtype = DTYPES[config.save.dtype]
    with tempfile.TemporaryDirectory(prefix="lora-studio-export-bench-") as tmp:
        run = RunFolder.create(Path(tmp), "bench-export", config)
        run_training(config, run, models_dir=models_dir)
        rows = [
            _child("imports only", "import", run, Path(tmp) / "none", models_dir),
            _child("load and read base", "load", run, Path(tmp) / "none", models_dir),
            _child("pipeline export", "pipeline", run, Path(tmp) / "merged-pipeline", models_dir),
            _child("checkpoint export", "checkpoint", run, Path(tmp) / "merged.safetensors", models_dir),
        ]
    size = estimate_merged_export(config, dtype, models_dir).size_bytes or 0
    return ExportBench(config.model.base, config.save.dtype, size, rows)


def format_export_bench(bench: ExportBench) -> str:
    from studio.engine.environment import human_bytes

    load = next(r for r in bench.rows if r.label == "load and read base")
    lines = [f"bench --export: {bench.base}, merged weights {human_bytes(bench.model_bytes)} in {bench.dtype}",
             f"{'child process':<18} {'wall':>8} {'CPU':>8} {'peak RSS':>10} {'over load':>10} {'written':>10}"]
    for r in bench.rows:
        over = human_bytes(r.peak_rss - load.peak_rss) if r.written else ""
        lines.append(f"{r.label:<18} {r.wall_s:>7.1f}s {r.cpu_s:>7.1f}s {human_bytes(r.peak_rss):>10} {over:>10} "
                     f"{human_bytes(r.written) if r.written else '':>10}")
    lines.append("'over load': the export's peak above loading and reading the base alone; a second copy of the "
                 f"model in memory would add about {human_bytes(bench.model_bytes)}.")
    return "\n".join(lines)
