"""Checkpoints that never lose work: written to a temp folder, renamed into place, pruned after.

`checkpoints/step-000500/` holds the webui LoRA file (what users take away), `adapter.safetensors`
(fp32 LoRA weights for an exact resume), `training_state.pt` (optimizer, loss scaler, RNG states)
and `state.json`, written last: a folder without it is incomplete and ignored.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from studio.engine.runs import Checkpoint, RunFolder, new_temp_dir, publish_dir

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
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: RunFolder, step: int, weights: LoraWeights, training_state: dict[str, Any],
                    info: dict[str, Any], write_lora_file: Callable[[Path], None], keep_last: int,
                    protect_step: int | None = None) -> Checkpoint:
    """Write checkpoint `step` atomically, then prune to the newest `keep_last` complete ones."""
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
    prune_checkpoints(run, keep_last, protect_step)
    return Checkpoint(step, final, final / run.lora_file_name(step))


def prune_checkpoints(run: RunFolder, keep_last: int, protect_step: int | None = None) -> list[int]:
    """Delete all but the newest `keep_last` complete checkpoints, and stale temp folders."""
    removed = []
    for ckpt in run.checkpoints()[:-keep_last]:
        if ckpt.step == protect_step:
            continue
        shutil.rmtree(ckpt.path)
        removed.append(ckpt.step)
    for stale in run.checkpoints_dir.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if removed:
        log.info("pruned checkpoints %s (keep_last=%d)", removed, keep_last)
    return removed


def load_checkpoint(ckpt: Checkpoint) -> tuple[LoraWeights, dict[str, Any], dict[str, Any]]:
    """(LoRA weights, training state, state.json) of a complete checkpoint."""
    weights = LoraWeights.from_flat(load_file(str(ckpt.path / ADAPTER_FILE)))
    # weights_only: our own file, but never unpickle arbitrary objects
    training_state = torch.load(ckpt.path / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
    info = json.loads((ckpt.path / STATE_FILE).read_text(encoding="utf-8"))
    return weights, training_state, info
