"""`python studio.py bench --peers`: our training loop against the peers' own scripts, side by side, at the
same settings: diffusers' `examples/text_to_image/train_text_to_image_lora.py` and kohya sd-scripts'
`train_network.py --cache_latents` (through `kohya_harness.py` on a small UNet). The peers are fetched
checkouts, run as they are; nothing of theirs is copied here.

Every loop runs as its own process with OMP_NUM_THREADS=1, and is measured from outside: process CPU time
(user + system, from `os.wait4`) and wall time. The steady cost of a step is the difference between an
N2-step and an N1-step run of the same loop, divided by N2 − N1: start-up, model loading and caching cancel,
whatever each loop does before its first step. Figures are printed, never asserted.

LoRA layers differ by peer, so we run our loop once per peer with that peer's layers: diffusers' script
puts LoRA on the attention projections (our `lora.targets=attention`), kohya's on every linear layer of
the transformer blocks (our `attention+ff`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from studio.config import RunConfig
from studio.engine.runs import RunFolder
from studio.paths import REPO_ROOT

# The settings of the comparison (the issue's): a preset's other values stay, `--set` overrides these.
PEER_SETTINGS: dict[str, object] = {
    "data.resolution": 64, "train.batch_size": 2, "train.grad_accumulation": 1, "lora.rank": 4, "lora.alpha": 4,
    "lora.dropout": 0.0, "train.precision": "fp32", "optim.optimizer": "adamw", "optim.learning_rate": 1e-4,
    "optim.scheduler": "constant", "optim.warmup_steps": 0, "optim.weight_decay": 0.01, "optim.max_grad_norm": 1.0,
    "train.min_snr_gamma": None, "train.noise_offset": 0.0, "train.seed": 0, "data.flip": False,
    "data.caption_dropout": 0.0, "data.color_jitter": 0.0, "data.rotation": 0.0, "data.repeats": 1,
    "train.cache_latents": True, "train.cache_text_embeddings": True, "lora.train_text_encoder": False,
    "sample.every_steps": 0, "sample.prompts": [], "sample.score_backbone": None, "save.every_steps": 0,
    "save.every_epochs": 0, "log.tensorboard": False,
}
TARGETS = {"diffusers": 1.5, "kohya": 1.3}
"""Our steady CPU time per step must be this many times lower than the peer's (the issue's targets)."""
PEER_TARGETS = {"diffusers": "attention", "kohya": "attention+ff"}
"""Our `lora.targets` that matches the LoRA layers each peer's script trains."""
TRIGGER = "ohwx"


@dataclass
class Loop:
    """One training loop to measure: a label, its command and environment. In an argument, `{steps}` stands for
    the run's step count and `{run}` for a name of the run's own."""

    name: str
    peer: Literal["ours", "diffusers", "kohya"]
    lora: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path

    def command(self, steps: int | str, run: str = "RUN") -> list[str]:
        return [arg.replace("{steps}", str(steps)).replace("{run}", run) for arg in self.argv]

    def shown(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"cd {shlex.quote(str(self.cwd))} && {env} {shlex.join(self.command('N'))}"


@dataclass
class RunResult:
    steps: int
    cpu_s: float
    wall_s: float
    peak_rss: int
    """Bytes (ru_maxrss of the process and its children)."""
    steps_seen: int | None
    """The last step the loop itself reported (its progress bar or metrics.jsonl)."""


@dataclass
class LoopResult:
    loop: Loop
    runs: list[tuple[RunResult, RunResult]] = field(default_factory=list)
    """(N1-step run, N2-step run) per round."""
    error: str | None = None

    @property
    def steady_cpu_s(self) -> float:
        return statistics.median((b.cpu_s - a.cpu_s) / (b.steps - a.steps) for a, b in self.runs)

    @property
    def steady_wall_s(self) -> float:
        return statistics.median((b.wall_s - a.wall_s) / (b.steps - a.steps) for a, b in self.runs)

    @property
    def startup_cpu_s(self) -> float:
        """CPU of the short run minus its steps at the steady rate: loading, caching, first-step work."""
        return statistics.median(a.cpu_s - a.steps * self.steady_cpu_s for a, _ in self.runs)

    @property
    def peak_rss(self) -> int:
        return max(max(a.peak_rss, b.peak_rss) for a, b in self.runs)


# --- inputs ---------------------------------------------------------------------------------------

def peer_config(config: RunConfig) -> RunConfig:
    """Check the settings every loop can follow: the diffusers script fixes alpha = rank and trains no
    text encoder; none of the peers' flags here does buckets, flips or augmentation."""
    problems = []
    if config.lora.alpha != config.lora.rank:
        problems.append(f"lora.alpha ({config.lora.alpha}) must equal lora.rank ({config.lora.rank}): "
                        "diffusers' script sets alpha = rank")
    if config.model.family != "sd15":
        problems.append(f"model.family is {config.model.family}: the peers' scripts compared here are the SD1.5 ones")
    if config.lora.train_text_encoder:
        problems.append("lora.train_text_encoder must be false: the comparison trains the UNet LoRA only")
    if problems:
        raise ValueError("bench --peers: " + "; ".join(problems))
    return config


def write_bench_model(folder: Path, size: Literal["small", "real-size"] = "small") -> Path:
    """An SD1.5-shaped diffusers folder all three loops load, at random init (fixed seed).

    `small`: the SD1.5 block layout (three cross-attention levels, one plain, 2 layers per block, 8 heads)
    at widths (32, 64, 128, 128), with tiny-sd15's VAE and text encoder (hidden 32): 8.5 M UNet parameters.
    `real-size`: diffusers' SD1.5 UNet, VAE and CLIP-L text encoder shapes (859.5 M UNet parameters; about
    4 minutes and 4 GB to build on a CPU).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from studio.core.tokenizer import tokenizer_dir
    from studio.engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd15")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if size == "small":
            pipe.unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64, 128, 128), layers_per_block=2,
                                             attention_head_dim=8, cross_attention_dim=32, norm_num_groups=32)
        else:
            from transformers import CLIPTextConfig, CLIPTextModel

            pipe.unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
            pipe.vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                     down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
            pipe.text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072,
                                                             num_hidden_layers=12, num_attention_heads=12,
                                                             projection_dim=768, hidden_act="quick_gelu"))
    pipe.save_pretrained(folder, safe_serialization=True)
    for file in ("vocab.json", "merges.txt"):  # transformers 5 saves only tokenizer.json; kohya's reads these
        shutil.copyfile(tokenizer_dir() / file, folder / "tokenizer" / file)
    return folder


def write_bench_data(root: Path, images: int, size: int) -> dict[str, Path]:
    """One generated image set in each loop's layout: ours (PNG + .txt), kohya's (`<repeats>_<name>/`
    subfolder) and diffusers' `imagefolder` (metadata.jsonl with file_name and text)."""
    from studio.data.synthetic import write_image_set

    ours = write_image_set(root / "ours", images, size)
    kohya = root / "kohya"
    shutil.copytree(ours, kohya / f"1_{TRIGGER}")
    diffusers = root / "diffusers"
    diffusers.mkdir(parents=True)
    with open(diffusers / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for image in sorted(ours.glob("*.png")):
            shutil.copyfile(image, diffusers / image.name)
            meta.write(json.dumps({"file_name": image.name, "text": image.with_suffix(".txt").read_text()}) + "\n")
    return {"ours": ours, "kohya": kohya, "diffusers": diffusers}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def ours_loop(config: RunConfig, preset: str, model: Path, data: Path, work: Path, lora_targets: str,
              python: str = sys.executable) -> Loop:
    """`python studio.py train` with the peer settings spelled out as `--set`s."""
    sets = {**{key: _value(config, key) for key in PEER_SETTINGS}, "model.base": str(model), "lora.targets": lora_targets, "train.max_epochs": None,
            "train.gradient_checkpointing": config.train.gradient_checkpointing}
    argv = [python, str(REPO_ROOT / "studio.py"), "--outputs", str(work / "runs"), "train", "--preset", preset,
            "--data", str(data), "--name", "{run}"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={_yaml_value(value)}"]
    argv += ["--set", "train.max_steps={steps}"]
    # the runs take a lock of their own: on a shared machine another user's job would refuse them (the bench
    # runs one loop at a time anyway)
    env = _env({"LORA_STUDIO_TENSOR_CACHE": str(work / "tensors"), "LORA_STUDIO_LOCK_DIR": str(work / "lock")})
    return Loop(f"ours ({lora_targets})", "ours", lora_targets, argv, env, REPO_ROOT)


def _value(config: RunConfig, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _yaml_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def diffusers_loop(config: RunConfig, repo: Path, model: Path, data: Path, work: Path,
                   python: str = sys.executable) -> Loop:
    script = repo / "examples" / "text_to_image" / "train_text_to_image_lora.py"
    if not script.is_file():
        raise ValueError(f"--diffusers-repo {repo}: no examples/text_to_image/train_text_to_image_lora.py in it "
                         "(a huggingface/diffusers checkout)")
    c = config
    argv = [python, str(script), "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data),
            "--resolution", str(c.data.resolution), "--train_batch_size", str(c.train.batch_size),
            "--rank", str(c.lora.rank), "--learning_rate", str(c.optim.learning_rate), "--lr_scheduler", "constant",
            "--lr_warmup_steps", "0", "--adam_weight_decay", str(c.optim.weight_decay),
            "--max_grad_norm", str(c.optim.max_grad_norm), "--mixed_precision", "no", "--seed", str(c.train.seed),
            "--dataloader_num_workers", "0", "--checkpointing_steps", "1000000", "--output_dir",
            str(work / "diffusers-out" / "{run}"), "--max_train_steps", "{steps}"]
    if c.train.gradient_checkpointing:
        argv.insert(-2, "--gradient_checkpointing")
    return Loop("diffusers train_text_to_image_lora.py", "diffusers", "attention", argv,
                _env({"HF_DATASETS_CACHE": str(work / "hf-datasets")}), work)


def kohya_loop(config: RunConfig, repo: Path, model: Path, data: Path, work: Path,
               python: str = sys.executable) -> Loop:
    if not (repo / "train_network.py").is_file():
        raise ValueError(f"--kohya-repo {repo}: no train_network.py in it (a kohya-ss/sd-scripts checkout)")
    # offline, kohya reads the CLIP tokenizer from <dir>/openai_clip-vit-large-patch14
    tokenizers = work / "kohya-tokenizer"
    if not (tokenizers / "openai_clip-vit-large-patch14").is_dir():
        shutil.copytree(model / "tokenizer", tokenizers / "openai_clip-vit-large-patch14")
    c = config
    argv = [python, str(Path(__file__).with_name("kohya_harness.py")), "--kohya-repo", str(repo), "--",
            "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data),
            "--caption_extension", ".txt", "--resolution", str(c.data.resolution),
            "--train_batch_size", str(c.train.batch_size), "--network_module", "networks.lora",
            "--network_dim", str(c.lora.rank), "--network_alpha", str(c.lora.alpha), "--network_train_unet_only",
            "--optimizer_type", "AdamW", "--optimizer_args", f"weight_decay={c.optim.weight_decay}",
            "--learning_rate", str(c.optim.learning_rate), "--lr_scheduler", "constant",
            "--max_grad_norm", str(c.optim.max_grad_norm), "--mixed_precision", "no", "--seed", str(c.train.seed),
            "--cache_latents", "--sdpa", "--max_data_loader_n_workers", "0", "--tokenizer_cache_dir", str(tokenizers),
            "--output_dir", str(work / "kohya-out" / "{run}"), "--output_name", "bench", "--save_model_as", "safetensors",
            "--max_train_steps", "{steps}"]
    if c.train.gradient_checkpointing:
        argv.insert(-2, "--gradient_checkpointing")
    return Loop("kohya train_network.py", "kohya", "attention+ff", argv, _env(), work)


# --- running --------------------------------------------------------------------------------------

_PROGRESS = re.compile(r"(\d+)/(\d+) \[")


def steps_reported(log_text: str) -> int | None:
    """The last step a tqdm progress bar in `log_text` reached (both peers draw one), or None."""
    found = _PROGRESS.findall(log_text)
    return int(found[-1][0]) if found else None


def _our_steps(work: Path, argv: list[str]) -> int | None:
    rows = RunFolder(work / "runs" / argv[argv.index("--name") + 1]).read_metrics()
    return max((r["step"] for r in rows if "loss" in r), default=None)


def run_once(loop: Loop, steps: int, work: Path, log_file: Path) -> RunResult:
    """One run of `loop` (named after its log file), measured from outside: CPU and peak RSS of the process
    (and of what it waited for)."""
    argv = loop.command(steps, log_file.stem)
    env = {**os.environ, **loop.env}
    with open(log_file, "w", encoding="utf-8") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=loop.cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log_file.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise RuntimeError(f"{loop.name} exited with {proc.returncode} ({log_file}):\n{tail}")
    seen = _our_steps(work, argv) if loop.peer == "ours" else steps_reported(text)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return RunResult(steps, usage.ru_utime + usage.ru_stime, wall, peak, seen)


def run_peers_bench(loops: list[Loop], work: Path, steps: tuple[int, int], rounds: int,
                    progress=lambda message: None) -> list[LoopResult]:
    """An untimed warm-up run of each loop, then `rounds` rounds of (N1, N2)-step runs, the loops taking
    turns within a round so that a busier minute of the machine falls on all of them alike."""
    short, long = steps
    results = [LoopResult(loop) for loop in loops]
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for result in results:
        progress(f"warm-up: {result.loop.name}")
        try:
            run_once(result.loop, short, work, logs / f"{_slug(result.loop)}-warm-up.log")
        except RuntimeError as err:
            result.error = str(err)
    for r in range(rounds):
        for result in results:
            if result.error:
                continue
            progress(f"round {r + 1}/{rounds}: {result.loop.name}")
            try:
                pair = tuple(run_once(result.loop, n, work, logs / f"{_slug(result.loop)}-{r}-{n}.log")
                             for n in (short, long))
            except RuntimeError as err:
                result.error = str(err)
                continue
            result.runs.append(pair)  # type: ignore[arg-type]
    return results


def _slug(loop: Loop) -> str:
    return f"{loop.peer}-{loop.lora.replace('+', '-')}"


def bench_work_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="lora-studio-peers-")


# --- report ---------------------------------------------------------------------------------------

def format_peers_bench(results: list[LoopResult], config: RunConfig, model: str, steps: tuple[int, int],
                       rounds: int, images: int) -> str:
    from studio.engine.environment import human_bytes

    c = config
    short, long = steps
    lines = [f"bench --peers: {model}; {images} images at {c.data.resolution} px, batch {c.train.batch_size}, "
             f"rank {c.lora.rank} (alpha {c.lora.alpha}), fp32, AdamW lr {c.optim.learning_rate:g} constant, "
             f"weight decay {c.optim.weight_decay:g}, clip {c.optim.max_grad_norm:g}, seed {c.train.seed}, no flip, "
             f"gradient checkpointing {'on' if c.train.gradient_checkpointing else 'off'}, OMP_NUM_THREADS=1",
             f"steady = (CPU of a {long}-step run − CPU of a {short}-step run) / {long - short}, "
             f"median of {rounds} round{'s' if rounds > 1 else ''}; each loop is its own process, measured from outside",
             "", "commands (N = steps):"]
    for r in results:
        lines.append(f"  {r.loop.name} [LoRA: {r.loop.lora}]:")
        lines.append(f"    {r.loop.shown()}")
    lines += ["", f"{'loop':<40} {'LoRA on':<13} {'CPU s/step':>10} {'steps/CPU-s':>11} {'wall s/step':>11} "
                  f"{'start-up CPU s':>14} {'peak RSS':>9}"]
    for r in results:
        if r.error or not r.runs:
            lines.append(f"{r.loop.name:<40} {r.loop.lora:<13} failed: {(r.error or 'no run').splitlines()[0]}")
            continue
        lines.append(f"{r.loop.name:<40} {r.loop.lora:<13} {r.steady_cpu_s:>10.4f} {1 / r.steady_cpu_s:>11.2f} "
                     f"{r.steady_wall_s:>11.4f} {r.startup_cpu_s:>14.2f} {human_bytes(r.peak_rss):>9}")
    short_runs = [f"{r.loop.name}: {a.steps_seen}/{a.steps}, {b.steps_seen}/{b.steps}"
                  for r in results for a, b in r.runs[:1] if (a.steps_seen, b.steps_seen) != (a.steps, b.steps)]
    if short_runs:
        lines.append("warning: steps reported differ from steps asked: " + "; ".join(short_runs))
    lines.append("")
    for peer, target in TARGETS.items():
        ours = next((r for r in results if r.loop.peer == "ours" and r.loop.lora == PEER_TARGETS[peer]
                     and r.runs and not r.error), None)
        theirs = next((r for r in results if r.loop.peer == peer and r.runs and not r.error), None)
        if ours is None or theirs is None:
            continue
        ratio = theirs.steady_cpu_s / ours.steady_cpu_s
        lines.append(f"ours vs {peer}: {ratio:.2f}× less CPU per steady step (target ≥ {target}×: "
                     f"{'reached' if ratio >= target else 'not reached'}); peak RSS {human_bytes(ours.peak_rss)} "
                     f"against {human_bytes(theirs.peak_rss)}")
    for r in results:
        if r.error:
            lines += ["", f"{r.loop.name} failed:", r.error]
    return "\n".join(lines)
