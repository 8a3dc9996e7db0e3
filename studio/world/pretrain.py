"""Pretrain the toy world's models: `python studio.py pretrain-world --out DIR [--minutes N]`.

Three phases, each a `Phase` (see `phases.py`): the autoencoder (`vae`) and the contrastive scorer
(`clip`), which are independent and can run in two processes at once (`--phases vae` beside
`--phases clip`); then the UNet (`unet`), which learns on the autoencoder's latents, conditioned by
the scorer's text tower converted to a `CLIPTextModel` and frozen, as SD1.5's UNet is by OpenAI
CLIP's. `ship` then writes the built-in folders `toy-sd15/` and `toy-clip/` with a
`provenance.json`.

Every phase is seeded and exactly resumable: the batch of step k is a pure function of (seed,
phase, k), and a checkpoint (weights, EMA, optimizer, step, CPU seconds so far) is written
atomically every `checkpoint_every` steps and when the time budget (`--minutes`) runs out, so a
killed or timed-out run continues where it stopped when started again. Losses and evaluations go
to `DIR/<phase>/log.jsonl`; a progress bar shows the step, loss and CPU time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from studio.core.atomic import write_json_atomic

log = logging.getLogger(__name__)

PHASES = ("vae", "clip", "unet")
"""In dependency order: the UNet learns on the autoencoder's latents and the scorer's text encoder."""


@dataclass(frozen=True)
class Plan:
    """How long and how wide each phase trains; fields are named after their phase. `FULL` made
    the shipped models."""

    seed: int = 0
    warmup_steps: int = 200
    vae_steps: int = 3000
    vae_batch: int = 16
    vae_crop: int = 32
    vae_lr: float = 1e-3
    clip_steps: int = 3000
    clip_batch: int = 128
    clip_lr: float = 1e-3
    unet_pool: int = 20000
    """World scenes encoded once by the trained autoencoder; the UNet learns from these latents."""
    unet_steps: int = 8000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    unet_cfg_dropout: float = 0.1
    """Share of captions replaced by "" so that classifier-free guidance works."""
    unet_min_snr_gamma: float = 5.0
    unet_ema_decay: float = 0.999
    unet_eval_prompts: int = 24
    """UNet evaluations sample this many prompts and read them with the pixel rule."""
    checkpoint_every: int = 250
    eval_every: int = 500

    def fields_of(self, phase: str) -> dict[str, Any]:
        """The fields that decide what `phase` computes (a checkpoint resumes only under the same)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k in ("seed", "warmup_steps") or k.startswith(phase + "_")}


FULL = Plan()
QUICK = Plan(vae_steps=3, vae_batch=4, unet_pool=16, unet_steps=3, unet_batch=4, clip_steps=3, clip_batch=8,
             warmup_steps=1, checkpoint_every=2, eval_every=2, unet_eval_prompts=2)
"""A few steps of everything: the tests' plan."""


def lr_factor(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to `floor` of the peak rate."""
    import math

    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Phase:
    """One model (or pair) being trained: subclasses build it, take a step and evaluate."""

    name: str
    steps: int

    def __init__(self, plan: Plan, workdir: Path):
        self.plan, self.workdir = plan, workdir

    def modules(self) -> dict[str, torch.nn.Module]:
        """Everything whose state a checkpoint holds (models, EMA copies)."""
        raise NotImplementedError

    def optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def step(self, k: int) -> dict[str, float]:
        """Train step k (0-based); returns its losses."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Quality figures for the log (e.g. PSNR, accuracy); cheap enough to run every eval_every steps."""
        return {}

    def finish(self) -> None:
        """After the last step: write the phase's products into its folder."""


# ---------------------------------------------------------------- checkpoints


def _checkpoint_path(folder: Path) -> Path:
    return folder / "checkpoint.pt"


def save_phase(phase: Phase, folder: Path, step: int, cpu_s: float, last: dict[str, float]) -> None:
    """Atomically write the phase's weights, optimizer and counters (torch.save, then rename)."""
    state = {"step": step, "cpu_s": cpu_s, "last": last, "plan": phase.plan.fields_of(phase.name),
             "modules": {n: m.state_dict() for n, m in phase.modules().items()},
             "optimizer": phase.optimizer().state_dict()}
    path = _checkpoint_path(folder)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_phase(phase: Phase, folder: Path) -> dict[str, Any] | None:
    """Restore a phase from its checkpoint; None when there is none. A checkpoint written with
    another plan is refused: resuming it would not reproduce either plan."""
    path = _checkpoint_path(folder)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["plan"] != phase.plan.fields_of(phase.name):
        raise RuntimeError(f"{path} was written with another plan; use another --out or delete {folder}")
    for name, module in phase.modules().items():
        module.load_state_dict(state["modules"][name])
    phase.optimizer().load_state_dict(state["optimizer"])
    return state


def read_done(folder: Path) -> dict[str, Any] | None:
    """The summary a finished phase wrote (steps, CPU seconds, final losses), or None."""
    path = folder / "done.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _append_log(folder: Path, row: dict[str, Any]) -> None:
    with open(folder / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_log(folder: Path, step: int) -> None:
    """Drop log rows after `step` (written after the checkpoint a resume starts from)."""
    path = folder / "log.jsonl"
    if not path.is_file():
        return
    rows = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------- the driver


def run_phase(phase: Phase, deadline: float | None, progress: Callable[[int, int, dict[str, float], float], None]
              ) -> bool:
    """Train `phase` from its checkpoint until done or `deadline` (time.time()); True when done."""
    folder = phase.workdir
    folder.mkdir(parents=True, exist_ok=True)
    if read_done(folder):
        return True
    state = load_phase(phase, folder)
    start = state["step"] if state else 0
    cpu_before = state["cpu_s"] if state else 0.0
    last: dict[str, float] = state["last"] if state else {}
    _truncate_log(folder, start)
    if start:
        log.info("%s: resuming at step %d (%.0f CPU-s so far)", phase.name, start, cpu_before)
    cpu0 = time.process_time()

    def cpu() -> float:
        return cpu_before + time.process_time() - cpu0

    plan = phase.plan
    for k in range(start, phase.steps):
        last = phase.step(k)
        done = k + 1
        row: dict[str, Any] = {"step": done, **last, "cpu_s": round(cpu(), 1)}
        evaluate = done % plan.eval_every == 0 or done == phase.steps
        if evaluate:
            row |= phase.evaluate()
        if evaluate or done % 25 == 0:
            _append_log(folder, row)
        progress(done, phase.steps, last, cpu())
        out_of_time = deadline is not None and time.time() > deadline
        if done % plan.checkpoint_every == 0 or done == phase.steps or out_of_time:
            save_phase(phase, folder, done, cpu(), last)
        if out_of_time and done < phase.steps:
            return False
    phase.finish()
    write_json_atomic(folder / "done.json", {"steps": phase.steps, "cpu_s": round(cpu(), 1),
                                             "final": {k: round(v, 5) for k, v in last.items()}})
    return True


def make_phase(name: str, plan: Plan, out: Path) -> Phase:
    from studio.world import phases

    classes = {"vae": phases.VaePhase, "unet": phases.UnetPhase, "clip": phases.ClipPhase}
    return classes[name](plan, out / name)


def run_pretraining(out: Path, plan: Plan = FULL, phases: tuple[str, ...] = PHASES, minutes: float | None = None,
                    progress: Callable[[str, int, int, dict[str, float], float], None] | None = None) -> bool:
    """Run `phases` in order into `out`; True when all of them are done. Stops cleanly (with a
    checkpoint) once `minutes` of wall time have passed; run it again to continue."""
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise ValueError(f"unknown phase {unknown[0]!r}: the phases are {', '.join(PHASES)}")
    for needed in ("vae", "clip"):
        if "unet" in phases and needed not in phases and not read_done(out / needed):
            raise RuntimeError(f"the unet phase needs a finished {needed} phase in {out / needed}: "
                               f"run --phases {needed} first")
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * minutes if minutes else None
    for name in [p for p in PHASES if p in phases]:
        phase = make_phase(name, plan, out)
        report = (lambda k, n, losses, cpu, _name=name: progress(_name, k, n, losses, cpu)) if progress else (
            lambda *_: None)
        if not run_phase(phase, deadline, report):
            return False
    return all(read_done(out / p) for p in phases)


# ---------------------------------------------------------------- shipping


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ship(out: Path, dest: Path, plan: Plan = FULL, command: str = "") -> Path:
    """Write `toy-sd15/` (a diffusers SD1.5 folder) and `toy-clip/` (an open_clip `local-dir:`
    folder) from the finished phases in `out` into `dest`, in fp16, with `provenance.json` listing
    the plan, steps, CPU time, final losses and evaluations, and the sha256 of every file."""
    import shutil
    import tempfile

    from studio.engine.environment import library_versions
    from studio.core.tokenizer import clip_tokenizer, tokenizer_dir
    from studio.world import architectures as arch
    from studio.world.phases import load_vae

    summaries = {p: read_done(out / p) for p in PHASES}
    missing = [p for p, s in summaries.items() if s is None]
    if missing:
        raise RuntimeError(f"phase {missing[0]} is not finished in {out}: run pretrain-world again to finish it")
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".toy-world-", dir=dest))
    try:
        pipe = StableDiffusionPipeline(
            vae=load_vae(out),
            text_encoder=CLIPTextModel.from_pretrained(out / "unet" / "model" / "text_encoder"),
            tokenizer=clip_tokenizer(),
            unet=UNet2DConditionModel.from_pretrained(out / "unet" / "model" / "unet"),
            scheduler=arch.build_scheduler(), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        pipe.to(torch.float16).save_pretrained(tmp / "toy-sd15", safe_serialization=True)
        for file in ("vocab.json", "merges.txt"):  # transformers 5 writes only tokenizer.json
            shutil.copyfile(tokenizer_dir() / file, tmp / "toy-sd15" / "tokenizer" / file)
        shutil.copytree(out / "clip" / "model", tmp / "toy-clip")
        _to_fp16(tmp / "toy-clip" / "open_clip_model.safetensors")
        for name in ("toy-sd15", "toy-clip"):
            if (dest / name).exists():
                shutil.rmtree(dest / name)
            os.replace(tmp / name, dest / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(p for name in ("toy-sd15", "toy-clip") for p in (dest / name).rglob("*") if p.is_file())
    evaluations = {p: _last_evaluation(out / p) for p in PHASES}
    provenance = {
        "script": "studio/world/pretrain.py (python studio.py pretrain-world)",
        "command": command,
        "seed": plan.seed,
        "plan": dataclasses.asdict(plan),
        "phases": {p: {**summaries[p], "evaluation": evaluations[p]} for p in PHASES},
        "cpu_s_total": round(sum(s["cpu_s"] for s in summaries.values()), 1),
        "versions": library_versions("torch", "diffusers", "transformers", "open_clip_torch"),
        "files": {str(p.relative_to(dest)): sha256_of(p) for p in files},
    }
    write_json_atomic(dest / "provenance.json", provenance)
    return dest


def _to_fp16(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(path).items()}
    save_file(tensors, path)


def _last_evaluation(folder: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    evaluated = [r for r in rows if any(k.startswith("eval_") for k in r)]
    return {k: v for k, v in evaluated[-1].items() if k.startswith("eval_") or k == "step"} if evaluated else {}
