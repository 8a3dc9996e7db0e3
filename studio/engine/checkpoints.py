"""Checkpoints that never lose work: written to a temp folder, renamed into place, pruned after.

`checkpoints/step-000500/` holds the webui LoRA file (what users take away), `adapter.safetensors`
(fp32 LoRA weights for an exact resume), `training_state.pt` (optimizer, loss scaler, RNG states)
and `state.json`, written last: a folder without it is incomplete and ignored.

Retention (`save.keep_last`, `save.keep_every_steps`, `save.keep_every_epochs`): after a new
checkpoint is complete, the ones no rule keeps are deleted. A rule keeps the newest `keep_last`,
every checkpoint whose step is a multiple of `keep_every_steps`, every epoch-end checkpoint whose
epoch is a multiple of `keep_every_epochs`, and every Save-now checkpoint (`manual`), always.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

from studio.config import SaveSection
from studio.core.atomic import new_temp_dir, publish_dir
from studio.engine.runs import Checkpoint, RunFolder

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"
TRAINING_STATE_FILE = "training_state.pt"
STATE_FILE = "state.json"


@dataclass
class LoraWeights:
    """fp32 LoRA weights per model part (`unet`, `text_encoder`, `text_encoder_2`), peft key names."""

    parts: dict[str, dict[str, torch.Tensor]]

    def flat(self) -> dict[str, torch.Tensor]:
        return {f"{part}.{k}": v.contiguous() for part, sd in self.parts.items() for k, v in sd.items()}

    @classmethod
    def from_flat(cls, flat: dict[str, torch.Tensor]) -> LoraWeights:
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            part, _, name = key.partition(".")
            parts.setdefault(part, {})[name] = value
        return cls(parts)


def rng_state() -> dict[str, Any]:
    """The global torch RNG (LoRA dropout draws from it); data order and noise use their own
    generators seeded from (seed, position), so they need no saved state."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_file(tensors: dict[str, torch.Tensor], path: str) -> None:
    """safetensors' `save_file`, imported on first use (it imports PyTorch, which the page does not need)."""
    from safetensors.torch import save_file as write

    write(tensors, path)


def save_checkpoint(run: RunFolder, step: int, weights: LoraWeights, training_state: dict[str, Any],
                    info: dict[str, Any], write_lora_file: Callable[[Path], None], save: SaveSection,
                    protect_step: int | None = None) -> Checkpoint:
    """Write checkpoint `step` atomically, then prune what `save`'s retention no longer keeps.

    `info` goes into state.json: `epoch` (epochs done), `epoch_end`, `manual` (Save now), `time`.
    """
    import torch

    final = run.checkpoint_dir(step)
    tmp = new_temp_dir(run.checkpoints_dir, final.name)
    try:
        write_lora_file(tmp / run.lora_file_name(step))
        save_file(weights.flat(), str(tmp / ADAPTER_FILE))
        torch.save(training_state, tmp / TRAINING_STATE_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **info}, indent=2), encoding="utf-8")
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_checkpoints(run, save, protect_step)
    return Checkpoint(step, final, final / run.lora_file_name(step))


@dataclass(frozen=True)
class Kept:
    """One checkpoint as retention sees it (from its state.json)."""

    step: int
    epoch: int = 0
    epoch_end: bool = False
    manual: bool = False

    @classmethod
    def of(cls, ckpt: Checkpoint) -> Kept:
        info = ckpt.info()
        return cls(ckpt.step, int(info.get("epoch") or 0), bool(info.get("epoch_end")), bool(info.get("manual")))


def retention(checkpoints: list[Kept], save: SaveSection, protect_step: int | None = None) -> dict[int, list[str]]:
    """Step → the reasons it is kept (an empty list: pruned), for checkpoints oldest first."""
    newest = {c.step for c in checkpoints[-save.keep_last:]}
    out = {}
    for c in checkpoints:
        reasons = []
        if c.manual:
            reasons.append("Save now")
        if c.step in newest:
            reasons.append(f"newest {save.keep_last}")
        if save.keep_every_steps and c.step % save.keep_every_steps == 0:
            reasons.append(f"every {save.keep_every_steps} steps")
        if save.keep_every_epochs and c.epoch_end and c.epoch and c.epoch % save.keep_every_epochs == 0:
            reasons.append(f"every {save.keep_every_epochs} epochs")
        if c.step == protect_step:
            reasons.append("the run continues from it")
        out[c.step] = reasons
    return out


def next_save_prunes(run: RunFolder, save: SaveSection) -> set[int]:
    """Steps the next checkpoint of `run` would prune (a newer one pushes them out of `keep_last`)."""
    kept = [Kept.of(c) for c in run.checkpoints()]
    future = kept + [Kept(kept[-1].step + 1 if kept else 1)]
    return {step for step, reasons in retention(future, save).items() if not reasons and step != future[-1].step}


def prune_checkpoints(run: RunFolder, save: SaveSection, protect_step: int | None = None) -> list[int]:
    """Delete the complete checkpoints no retention rule keeps, and stale temp folders."""
    checkpoints = run.checkpoints()
    reasons = retention([Kept.of(c) for c in checkpoints], save, protect_step)
    removed = []
    for ckpt in checkpoints:
        if not reasons[ckpt.step]:
            shutil.rmtree(ckpt.path)
            removed.append(ckpt.step)
    for stale in run.checkpoints_dir.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if removed:
        log.info("pruned checkpoints %s (keep_last=%d, keep_every_steps=%d, keep_every_epochs=%d)", removed,
                 save.keep_last, save.keep_every_steps, save.keep_every_epochs)
    return removed


def load_checkpoint(ckpt: Checkpoint) -> tuple[LoraWeights, dict[str, Any], dict[str, Any]]:
    """(LoRA weights, training state, state.json) of a complete checkpoint."""
    import torch
    from safetensors.torch import load_file

    weights = LoraWeights.from_flat(load_file(str(ckpt.path / ADAPTER_FILE)))
    # weights_only: our own file, but never unpickle arbitrary objects
    training_state = torch.load(ckpt.path / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
    info = json.loads((ckpt.path / STATE_FILE).read_text(encoding="utf-8"))
    return weights, training_state, info
