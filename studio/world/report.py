"""`python studio.py bench --world`: measured quality of the toy world, through the studio's own code.

1. Prompt adherence of `toy-sd15`: `ADHERENCE_PAIRS` prompt × seed pairs rendered by the studio's
   sampler; background and object colour read back by the pixel rule (`judge`), the shape by
   `toy-clip` (the shape whose caption, with the prompt's colours, scores highest). Each with its
   chance level.
2. The LoRA effect: the `tiny-demo` preset trained as shipped, a grid of its own sample prompts at
   seeds 1–4 (prompt only against the final LoRA, the run's sampler settings), scored with
   toy-clip: CLIP-I of the LoRA column minus prompt only's.
3. The recommendation on a run trained from under- to over-fitted, every checkpoint in one grid: the
   demo robot's three blue-background pictures only, captioned without the background, as a
   DreamBooth user with too few, too similar photos would have; pushed on, the LoRA paints every robot on blue and stops following "on a
   green background" (CLIP-T falls) while CLIP-I keeps rising.
4. CPU time (process time, all threads) and wall time of each part and of the whole.

Figures are printed, never asserted; the tests assert the same things on smaller samples.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ADHERENCE_PAIRS = 48
CHANCE = {"background": 1 / 6, "colour": 1 / 5, "shape": 1 / 3}
"""Six background colours; five object colours (never the background's); three shapes."""

DEMO_SEEDS = [1, 2, 3, 4]
OVERFIT_BACKGROUND = "blue"
OVERFIT_PROMPTS = ["a photo of {trigger} toy robot on a green background",
                   "a photo of {trigger} toy robot on a black background"]
OVERFIT_OVERRIDES: dict[str, Any] = {
    "train.max_steps": 1000,
    "optim.learning_rate": 1e-3,
    "optim.scheduler": "constant",
    "data.caption_dropout": 0.0,
    "save.every_steps": 100,
    "save.keep_last": 100,
    "sample.every_steps": 0,
    "sample.prompts": OVERFIT_PROMPTS,
}
"""Pushed far past the point where the subject appears: checkpoints from under- to over-fitted."""


OVERFIT_CAPTION = "a photo of ohwx toy robot"
"""The over-trained run's captions name the subject but not the background, as a hasty DreamBooth
dataset does: the LoRA then learns the blue as part of the robot."""


def one_background_dataset(folder: Path, background: str = OVERFIT_BACKGROUND) -> Path:
    """The demo's pictures on `background` only, captioned `OVERFIT_CAPTION`."""
    import shutil

    from studio.data.demo import demo_caption, demo_dataset_dir

    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted(demo_dataset_dir().glob("*.png")):
        if image.with_suffix(".txt").read_text(encoding="utf-8").strip() == demo_caption(background):
            shutil.copyfile(image, folder / image.name)
            (folder / image.with_suffix(".txt").name).write_text(OVERFIT_CAPTION + "\n", encoding="utf-8")
    return folder


@dataclass
class Timed:
    cpu_s: float = 0.0
    wall_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


def _timed(fn: Callable[[], dict[str, Any]]) -> Timed:
    cpu, wall = time.process_time(), time.perf_counter()
    figures = fn()
    return Timed(time.process_time() - cpu, time.perf_counter() - wall, figures)


def adherence_scenes(count: int = ADHERENCE_PAIRS, seed: int = 0):
    """`count` (scene, sampler seed) pairs, spread evenly over colour pairs and shapes."""
    from studio.world.phases import eval_scenes

    return [(scene, 1 + i) for i, scene in enumerate(eval_scenes(seed, count, stream=4))]


def measure_adherence(pairs=None, *, steps: int = 20, guidance: float = 4.0) -> dict[str, Any]:
    """Render each (scene, seed) pair's phrase with toy-sd15 and read it back: the share of right
    backgrounds, object colours (pixel rule) and shapes (toy-clip)."""
    import torch

    from studio.engine.models import load_pipeline, quiet_progress_bars
    from studio.engine.sampling import generate
    from studio.eval.backbones import TOY_CLIP, load_clip
    from studio.world.judge import read_picture
    from studio.world.scene import SHAPES, phrase

    pairs = pairs if pairs is not None else adherence_scenes()
    quiet_progress_bars()
    pipe = load_pipeline("toy-sd15")
    pipe.set_progress_bar_config(disable=True)
    clip = load_clip(TOY_CLIP)
    right = {"background": 0, "colour": 0, "shape": 0}
    for scene, seed in pairs:
        image = generate(pipe, scene.phrase, seed, steps=steps, guidance=guidance, width=64, height=64)
        reading = read_picture(image)
        right["background"] += reading.background == scene.background
        right["colour"] += reading.colour == scene.colour
        texts = clip.encode_texts([phrase(scene.colour, s, scene.background) for s in SHAPES])
        picked = SHAPES[int(torch.argmax(texts @ clip.encode_images([image])[0]))]
        right["shape"] += picked == scene.shape
    n = len(pairs)
    return {"pairs": n, "steps": steps, "guidance": guidance,
            **{k: v / n for k, v in right.items()}, "chance": CHANCE}


def _train(outputs: Path, name: str, overrides: dict[str, Any]):
    from studio.config import load_config
    from studio.engine.runs import RunFolder
    from studio.engine.train import run_training

    config = load_config("tiny-demo", overrides)
    run = RunFolder.create(outputs, name, config)
    cpu, wall = time.process_time(), time.perf_counter()
    run_training(config, run)
    return run, time.process_time() - cpu, time.perf_counter() - wall


def _grid_scores(run, steps, seeds: list[int], name: str) -> dict[str, Any]:
    from studio.eval.backbones import DINO_NONE, TOY_CLIP
    from studio.eval.grids import grid_spec, make_grid, plan_columns
    from studio.eval.pipelines import PipelineCache
    from studio.eval.scoring import score_grid

    config = run.config()
    spec = grid_spec(run, config.sample.prompts, seeds, plan_columns(run, steps))
    grid = make_grid(run, spec, cache=PipelineCache(), name=name)
    scores = score_grid(run, grid.name, clip=TOY_CLIP, dino=DINO_NONE)
    scores["grid_png"] = str(grid.grid_png)
    return scores


def measure_lora_effect(outputs: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train tiny-demo (its defaults, unless `overrides`), then score prompt only against the final
    LoRA on the run's sample prompts at seeds 1–4."""
    run, train_cpu, train_wall = _train(outputs, "world-demo", overrides or {})
    scores = _grid_scores(run, "final", DEMO_SEEDS, "lora-effect")
    baseline, lora = scores["columns"][0], scores["columns"][-1]
    return {"run": str(run.path), "train_cpu_s": train_cpu, "train_wall_s": train_wall,
            "prompt_only_clip_i": baseline["clip_i"], "lora_clip_i": lora["clip_i"],
            "clip_i_gain": lora["clip_i"] - baseline["clip_i"],
            "prompt_only_clip_t": baseline["clip_t"], "lora_clip_t": lora["clip_t"],
            "images_per_column": lora["n"], "grid_png": scores["grid_png"]}


def measure_recommendation(outputs: Path) -> dict[str, Any]:
    """Train the demo far past its best point, score every checkpoint in one grid, and say whether
    the recommendation is a middle checkpoint and whether later checkpoints lose CLIP-T."""
    data = one_background_dataset(outputs / "datasets" / f"robot-on-{OVERFIT_BACKGROUND}")
    run, train_cpu, _ = _train(outputs, "world-overfit", OVERFIT_OVERRIDES | {"data.dir": str(data)})
    scores = _grid_scores(run, "all", DEMO_SEEDS[:2], "overfit")
    steps = [c for c in scores["columns"] if c["step"] is not None]
    rec = scores["recommendation"] or {}
    picked = rec.get("step")
    last = max(c["step"] for c in steps)
    later = [c for c in steps if picked is not None and c["step"] > picked]
    picked_t = next((c["clip_t"] for c in steps if c["step"] == picked), None)
    return {"run": str(run.path), "train_cpu_s": train_cpu,
            "columns": [{k: c[k] for k in ("label", "step", "clip_i", "clip_t")} for c in scores["columns"]],
            "recommended_step": picked, "reason": rec.get("reason"), "last_step": last,
            "middle": picked is not None and picked != last and picked != min(c["step"] for c in steps),
            "later_lose_clip_t": bool(later) and picked_t is not None
                                 and min(c["clip_t"] for c in later) < picked_t,
            "grid_png": scores["grid_png"]}


def world_report(outputs: Path | None = None, *, parts: tuple[str, ...] = ("adherence", "lora", "recommendation")
                 ) -> dict[str, Any]:
    """Every part's figures with its CPU and wall time; runs go to `outputs` (a temp folder by default)."""
    import torch

    torch.manual_seed(0)
    report: dict[str, Any] = {"threads": torch.get_num_threads()}
    total_cpu, total_wall = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lora-studio-world-") as tmp:
        where = Path(outputs) if outputs else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        jobs = {"adherence": measure_adherence, "lora": lambda: measure_lora_effect(where),
                "recommendation": lambda: measure_recommendation(where)}
        for part in parts:
            timed = _timed(jobs[part])
            report[part] = {**timed.figures, "cpu_s": timed.cpu_s, "wall_s": timed.wall_s}
    report["cpu_s"] = time.process_time() - total_cpu
    report["wall_s"] = time.perf_counter() - total_wall
    return report


def format_world_report(report: dict[str, Any]) -> str:
    lines = [f"toy world quality report (torch threads: {report['threads']})"]
    if "adherence" in report:
        a = report["adherence"]
        chance = a["chance"]
        lines += ["", f"1. toy-sd15 prompt adherence: {a['pairs']} prompt × seed pairs, {a['steps']} PNDM steps, "
                      f"guidance {a['guidance']}",
                  f"   background colour (pixel rule) {a['background']:6.1%}   chance {chance['background']:.0%}   "
                  "target ≥ 90 %",
                  f"   object colour (pixel rule)     {a['colour']:6.1%}   chance {chance['colour']:.0%}   "
                  "target ≥ 75 %",
                  f"   shape (toy-clip)               {a['shape']:6.1%}   chance {chance['shape']:.0%}   "
                  "target ≥ 50 %",
                  f"   {a['cpu_s']:.1f} CPU-s, {a['wall_s']:.1f} s wall"]
    if "lora" in report:
        lo = report["lora"]
        lines += ["", "2. LoRA effect: tiny-demo as shipped, its sample prompts × seeds 1–4 "
                      f"({lo['images_per_column']} images a column), toy-clip",
                  f"   training {lo['train_cpu_s']:.1f} CPU-s ({lo['train_wall_s']:.1f} s wall)   target ≤ 120 CPU-s",
                  f"   CLIP-I prompt only {lo['prompt_only_clip_i']:.3f} → LoRA {lo['lora_clip_i']:.3f}: "
                  f"gain {lo['clip_i_gain']:+.3f}   target ≥ +0.10",
                  f"   CLIP-T prompt only {lo['prompt_only_clip_t']:.3f}, LoRA {lo['lora_clip_t']:.3f}",
                  f"   grid: {lo['grid_png']}",
                  f"   {lo['cpu_s']:.1f} CPU-s, {lo['wall_s']:.1f} s wall"]
    if "recommendation" in report:
        r = report["recommendation"]
        lines += ["", f"3. Recommendation on an over-trained run: the demo robot on {OVERFIT_BACKGROUND} only, captioned "
                      f"'{OVERFIT_CAPTION}', "
                      f"{OVERFIT_OVERRIDES['train.max_steps']} steps at lr {OVERFIT_OVERRIDES['optim.learning_rate']:g}, "
                      "prompts asking for other backgrounds, toy-clip"]
        for c in r["columns"]:
            marker = "  ← recommended" if c["step"] is not None and c["step"] == r["recommended_step"] else ""
            lines.append(f"   {c['label']:<22} CLIP-I {c['clip_i']:.3f}  CLIP-T {c['clip_t']:.3f}{marker}")
        lines += [f"   recommended step {r['recommended_step']} of {r['last_step']}: "
                  f"{'a middle checkpoint' if r['middle'] else 'NOT a middle checkpoint'}; later checkpoints "
                  f"{'lose' if r['later_lose_clip_t'] else 'do not lose'} CLIP-T",
                  f"   reason: {r['reason']}",
                  f"   {r['cpu_s']:.1f} CPU-s, {r['wall_s']:.1f} s wall"]
    lines += ["", f"total: {report['cpu_s']:.1f} CPU-s, {report['wall_s']:.1f} s wall"]
    return "\n".join(lines)
