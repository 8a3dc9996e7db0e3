"""Validation samples scored while training (`sample.score_backbone`): CLIP-I, CLIP-T and DINO per sample step.

The trainer builds one `ValidationScorer` per run, on the main process: the backbones load and the
training images are encoded once, then each sample step's images are scored against them. It runs
inside the training job, which already holds the accelerator, so it takes no lock; it runs in an RNG
fork of its own, so scoring changes nothing that training draws (exact resume holds with it on).
`train.stop_at_clip_i` is met when two consecutive sample steps reach the target; the history comes
back from metrics.jsonl on resume.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio.config import RunConfig
from studio.eval.backbones import DINO_NONE, ClipBackbone, DinoBackbone, load_clip, load_dino
from studio.eval.metrics import mean_cosine
from studio.eval.scoring import clip_t_prompt, encode_files

log = logging.getLogger(__name__)
SCORE_KEYS = ("clip_i", "clip_t", "dino")
CONSECUTIVE = 2
"""Sample steps in a row at or above train.stop_at_clip_i before the run stops."""


@dataclass
class ValidationScorer:
    clip: ClipBackbone
    dino: DinoBackbone | None
    ref_clip: torch.Tensor
    ref_dino: torch.Tensor | None
    trigger_word: str
    class_phrase: str
    history: list[tuple[int, float]] = field(default_factory=list)
    """(step, CLIP-I) of every scored sample step so far."""

    @classmethod
    def load(cls, config: RunConfig, references: list[Path], previous: list[dict[str, Any]] = ()) -> ValidationScorer:
        """Load the backbones of `sample.score_backbone` / `sample.score_dino` and encode the references once.
        `previous`: metrics.jsonl rows of this run so far (a resumed run keeps its CLIP-I history)."""
        sample = config.sample
        paths = list(dict.fromkeys(references))
        with torch.random.fork_rng(devices=_cuda_devices()):
            clip = load_clip(sample.score_backbone)
            dino = load_dino(sample.score_dino) if sample.score_dino and sample.score_dino != DINO_NONE else None
            ref_clip, ref_dino, _ = encode_files(paths, clip, dino)
        log.info("validation scoring with %s%s against %d training images", clip.label,
                 f" and {dino.label}" if dino else "", len(paths))
        history = [(int(r["step"]), float(r["clip_i"])) for r in previous if r.get("clip_i") is not None]
        return cls(clip, dino, ref_clip, ref_dino, config.data.trigger_word, config.data.class_phrase, history)

    def score(self, step: int, folder: Path, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """The metrics row of one sample step: step, clip_i, clip_t, dino (means over its images), and
        `validation` (backbones, images, references)."""
        with torch.random.fork_rng(devices=_cuda_devices()):
            gen_clip, gen_dino, _ = encode_files([folder / e["file"] for e in entries], self.clip, self.dino)
            prompts = [clip_t_prompt(e["prompt"], self.trigger_word, self.class_phrase) for e in entries]
            texts = self.clip.encode_texts(prompts)
        clip_i = statistics.fmean(mean_cosine(gen_clip, self.ref_clip).tolist())
        clip_t = statistics.fmean((gen_clip.double() * texts.double()).sum(dim=1).tolist())
        dino = statistics.fmean(mean_cosine(gen_dino, self.ref_dino).tolist()) if self.dino is not None else None
        self.history.append((step, clip_i))
        return {"step": step, "clip_i": clip_i, "clip_t": clip_t, "dino": dino,
                "validation": {"clip": self.clip.name, "dino": self.dino.name if self.dino else DINO_NONE,
                               "random_weights": self.clip.random_weights, "images": len(entries),
                               "references": len(self.ref_clip)}}

    def target_reached(self, target: float) -> str | None:
        """Why the run stops, once the last CONSECUTIVE sample steps all reached `target`; else None."""
        last = self.history[-CONSECUTIVE:]
        if len(last) < CONSECUTIVE or any(value < target for _, value in last):
            return None
        steps = ", ".join(f"{value:.3f} at step {step}" for step, value in last)
        return (f"CLIP-I reached train.stop_at_clip_i {target:g} on {CONSECUTIVE} sample steps in a row ({steps}, "
                f"{self.clip.name})")


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
