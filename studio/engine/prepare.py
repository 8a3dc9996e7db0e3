"""A new run's config, resolved once before its folder is made (CLI and studio alike).

- Paths become absolute (`studio.core.resolve`'s one search order), so config.yaml reloads the same
  from any working directory: `data.dir`, `model.base` / `model.vae` / `model.single_file_config`
  when they name files, and `lora.init_from` (a run name becomes its checkpoint's folder).
- A warm-up as long as the run is clamped, with a notice (config.clamp_warmup).
- `log.tensorboard` without the package is refused here, before anything is loaded.

What needs the dataset — `train.max_epochs` into steps — is resolved by the trainer once it has
scanned it (`plan_length`), and written back to config.yaml there.
"""

from __future__ import annotations

import math
from pathlib import Path

from studio.config import RunConfig, clamp_warmup
from studio.core.hub import is_hub_id
from studio.core.resolve import find_existing, resolve_path
from studio.data.dataset import BUILTIN_DEMO
from studio.engine.builtin import BUILTIN_MODELS


def _model_path(text: str | None, models_dir: Path | None, builtin: bool) -> str | None:
    """A model reference as config.yaml keeps it: a built-in name or a Hub id as typed, a file or
    folder as its absolute path."""
    if not text:
        return text
    value = text.strip()
    if builtin and value in BUILTIN_MODELS:
        return value
    roots = [models_dir] if models_dir else []
    found = find_existing([value, f"{value}.safetensors"], roots)
    if found is not None:
        return str(found)
    if is_hub_id(value) and Path(value).suffix != ".safetensors":
        return value
    return str(resolve_path(value, roots))


def resolve_config_paths(config: RunConfig, *, outputs_dir: Path, models_dir: Path | None = None,
                         datasets_dir: Path | None = None) -> RunConfig:
    from studio.engine.lora_init import resolve_init_from

    overrides: dict[str, object] = {}
    data_dir = config.data.dir.strip()
    if data_dir != BUILTIN_DEMO:
        overrides["data.dir"] = str(resolve_path(data_dir, [datasets_dir] if datasets_dir else []))
    overrides["model.base"] = _model_path(config.model.base, models_dir, builtin=True)
    overrides["model.vae"] = _model_path(config.model.vae, models_dir, builtin=False)
    overrides["model.single_file_config"] = _model_path(config.model.single_file_config, models_dir, builtin=False)
    if config.lora.init_from:
        overrides["lora.init_from"] = resolve_init_from(config.lora.init_from, outputs_dir, models_dir)
    return config.with_overrides(overrides)


class TensorBoardMissing(RuntimeError):
    """`log.tensorboard` is on but the package is not installed."""


def require_tensorboard() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise TensorBoardMissing("log.tensorboard is on, but the tensorboard package is not installed: "
                                 "`pip install tensorboard`, or set log.tensorboard=false") from None


def prepare_new_run(config: RunConfig, *, outputs_dir: Path, models_dir: Path | None = None,
                    datasets_dir: Path | None = None) -> tuple[RunConfig, list[str]]:
    """The config a new run folder stores, and the notices to show the user."""
    config = resolve_config_paths(config, outputs_dir=outputs_dir, models_dir=models_dir, datasets_dir=datasets_dir)
    notices = []
    if config.train.max_epochs is None:
        config, notice = clamp_warmup(config)
        notices += [notice] if notice else []
    if config.log.tensorboard:
        require_tensorboard()
    return config, notices


def steps_per_epoch(batches_per_epoch: int, micro_per_step: int) -> float:
    """Optimizer steps in one pass over the data (an epoch may end inside a step)."""
    return batches_per_epoch / micro_per_step


def epochs_in(max_steps: int, batches_per_epoch: int, micro_per_step: int) -> int:
    return math.ceil(max_steps * micro_per_step / batches_per_epoch)


def plan_length(config: RunConfig, batches_per_epoch: int, micro_per_step: int) -> tuple[RunConfig, list[str]]:
    """`train.max_epochs` as steps (rounded up to whole steps), then the warm-up clamp on that length."""
    if config.train.max_epochs is None:
        return config, []
    epochs = config.train.max_epochs
    steps = math.ceil(epochs * batches_per_epoch / micro_per_step)
    notices = []
    if steps != config.train.max_steps:
        config = config.with_overrides({"train.max_steps": steps})
        notices.append(f"train.max_epochs {epochs} = {steps} steps "
                       f"({steps_per_epoch(batches_per_epoch, micro_per_step):g} per epoch): train.max_steps={steps}")
    config, notice = clamp_warmup(config)
    return config, notices + ([notice] if notice else [])
