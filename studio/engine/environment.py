"""The environment report behind `python studio.py check`: versions, device, precision, models.

Collected as a plain dict (the UI shows the same facts) and formatted as text for the terminal.
`problems` lists what would stop training from starting; the CLI exits non-zero when it is not empty.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from studio import __version__
from studio.core.device import choose_precision, detect_device
from studio.engine.builtin import BUILTIN_MODELS

REQUIRED = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "open_clip_torch", "pillow")
OPTIONAL = ("gradio", "torchvision", "bitsandbytes", "timm", "xformers", "tensorboard")
MIN_FREE_DISK = 2 * 1024**3


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions(*packages: str) -> dict[str, str | None]:
    """Installed versions (None when missing); run.json records them for every run."""
    return {name: _version(name) for name in packages}


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} TB"


def environment_report(outputs_dir: Path, models_dir: Path, precision: str = "auto") -> dict[str, Any]:
    """Everything `check` prints, as JSON-friendly data."""
    from studio.engine.models import list_local_models

    problems: list[str] = []
    warnings: list[str] = []
    libraries = library_versions(*REQUIRED, *OPTIONAL)
    for name in REQUIRED:
        if libraries[name] is None:
            problems.append(f"{name} is not installed: run `pip install -r requirements.txt`")

    device = detect_device()
    try:
        choice = choose_precision(precision, device)
        precision_info = {"precision": choice.precision, "reason": choice.reason, "loss_scaling": choice.use_grad_scaler}
    except ValueError as err:
        precision_info = {"precision": None, "reason": str(err), "loss_scaling": False}
        problems.append(str(err))
    if device.type == "cpu":
        warnings.append("no GPU found: real SD1.5/SDXL training on a CPU takes seconds per step; "
                        "the built-in tiny models train fine")

    outputs_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(outputs_dir).free
    if free < MIN_FREE_DISK:
        problems.append(f"only {human_bytes(free)} free on the disk of {outputs_dir}: checkpoints need at least "
                        f"{human_bytes(MIN_FREE_DISK)}")
    try:
        probe = outputs_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        problems.append(f"cannot write to the outputs folder {outputs_dir}: {err}")

    models = [m.__dict__ | {"path": str(m.path)} for m in list_local_models(models_dir)] if models_dir.is_dir() else []
    return {
        "studio": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libraries,
        "device": {"type": device.type, "name": device.name, "memory_bytes": device.total_memory_bytes},
        "precision": precision_info,
        "outputs_dir": str(outputs_dir),
        "disk_free_bytes": free,
        "models_dir": str(models_dir),
        "models": models,
        "builtin_models": list(BUILTIN_MODELS),
        "warnings": warnings,
        "problems": problems,
    }


def format_environment(report: dict[str, Any]) -> str:
    lines = [f"LoRA Studio {report['studio']} — Python {report['python']} on {report['platform']}", "", "Libraries:"]
    for name, version in report["libraries"].items():
        required = name in REQUIRED
        lines.append(f"  {name:<16} {version or ('MISSING' if required else 'not installed (optional)')}")
    dev = report["device"]
    lines += ["", f"Device:     {dev['type']} — {dev['name']}, memory {human_bytes(dev['memory_bytes'])}"]
    prec = report["precision"]
    lines.append(f"Precision:  auto → {prec['precision'] or 'unavailable'} ({prec['reason']})")
    lines.append(f"Outputs:    {report['outputs_dir']} ({human_bytes(report['disk_free_bytes'])} free)")
    lines += ["", f"Models in {report['models_dir']}:"]
    if report["models"]:
        for m in report["models"]:
            lines.append(f"  {m['name']:<40} {m['kind']:<12} {m.get('family') or '?':<5} {human_bytes(m.get('size_bytes'))}")
    else:
        lines.append("  (none — put diffusers folders or .safetensors checkpoints here, or use a Hub id)")
    lines.append(f"  built in: {', '.join(report['builtin_models'])}")
    for w in report["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
