"""Command line: `python studio.py` launches the studio; subcommands run the same engine headless."""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
from pathlib import Path

from studio import __version__
from studio.paths import default_datasets_dir, default_models_dir, default_outputs_dir

log = logging.getLogger("studio")


def _config_keys_epilog() -> str:
    from studio.config import all_keys, field_help

    lines = ["config keys for --set (defaults ← preset ← --set):"]
    for key in all_keys():
        lines.append(f"  {key}")
        lines += textwrap.wrap(field_help(key), width=88, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio.py",
        description="LoRA Studio: train LoRA adapters for Stable Diffusion 1.5 and SDXL. "
                    "With no subcommand, launches the studio in your browser.",
    )
    parser.add_argument("--version", action="version", version=f"LoRA Studio {__version__}")
    parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"),
                        help="address to serve on (default 127.0.0.1; 0.0.0.0 exposes it to your network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "7860")), help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link (Colab)")
    parser.add_argument("--auth", default=os.environ.get("STUDIO_AUTH"), metavar="USER:PASS",
                        help="require a login (also from the STUDIO_AUTH environment variable)")
    parser.add_argument("--outputs", type=Path, default=default_outputs_dir(), help="runs folder (default ./outputs)")
    parser.add_argument("--models", type=Path, default=default_models_dir(), help="base models and LoRAs (default ./models)")
    parser.add_argument("--datasets", type=Path, default=default_datasets_dir(),
                        help="dataset folders (default ./datasets); the studio reads datasets only from here and "
                             "the built-in builtin:demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("train", help="train a LoRA headless", formatter_class=fmt, epilog=_config_keys_epilog())
    p.add_argument("--preset", required=True, metavar="NAME|FILE", help="built-in preset name or a YAML file")
    p.add_argument("--data", metavar="DIR", help="dataset folder (sets data.dir)")
    p.add_argument("--name", metavar="RUN", help="run name (default: preset + date)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set lora.rank=16 (repeatable)")

    p = sub.add_parser("resume", help="continue a run from its latest complete checkpoint (--max-steps: extend it)",
                       description="Continue RUN from its latest complete checkpoint, exactly. With --max-steps N, "
                                   "continue a finished or stopped run up to N steps in all: the same weights as one "
                                   "N-step run (cosine/linear schedules keep the rates already used and record them "
                                   "in optim.horizons).")
    p.add_argument("run", metavar="RUN", help="run name or folder")
    p.add_argument("--max-steps", type=int, metavar="N", help="train up to N steps in all (more than the latest "
                                                             "checkpoint's step)")

    p = sub.add_parser("runs", help="every run: state, steps, last checkpoint, resumable",
                       description="List every run in the outputs folder with its state (running, paused, "
                                   "stopping, finished, stopped, failed, interrupted), steps, latest checkpoint and "
                                   "whether it can be resumed, and why. Also removes temp folders killed runs left.")
    p.add_argument("--json", action="store_true", help="print a JSON list (name, state, last_step, last_checkpoint, "
                                                       "resumable, why, …)")

    from studio.commands.export import add_parser as add_export_parser

    add_export_parser(sub)

    p = sub.add_parser("caption", help="caption a dataset folder (writes .txt sidecars, all or nothing)",
                       description="Caption every image in DIR that has no caption yet (or all with --overwrite). "
                                   "Captions are written as .txt sidecars only when every image succeeded.")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--captioner", required=True, choices=("template", "blip", "florence2"),
                   help="template: trigger word + class phrase (+ description), no model; blip: BLIP through "
                        "transformers; florence2: Florence-2 detailed caption")
    p.add_argument("--model", metavar="ID|DIR",
                   help="captioner weights: a Hub id, a local folder, or tiny-random (a built-in random-weights "
                        "model for offline trials; its captions mean nothing). Default: the captioner's own")
    p.add_argument("--trigger", metavar="WORD", help="trigger word to start each caption with")
    p.add_argument("--class-phrase", metavar="TEXT", default="", help="template: what the subject is, e.g. 'toy robot'")
    p.add_argument("--description", metavar="TEXT", default="", help="template: a fixed description appended to each caption")
    p.add_argument("--max-length", type=int, default=77, metavar="N", help="model captioners: longest caption in tokens")
    p.add_argument("--overwrite", action="store_true", help="replace existing captions (default: only fill missing ones)")

    p = sub.add_parser("compare", help="prompt-only vs LoRA comparison grid (prompts × seeds × checkpoints × scales)",
                       description="Render a comparison grid of RUN into outputs/RUN/grids/NAME: a row per prompt × "
                                   "seed, a column per checkpoint × scale (scale 0 is the prompt-only column), "
                                   "each row on one seed, then a column per --external folder. Writes the images, a "
                                   "labelled grid.png and manifest.json.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prompts", metavar="FILE|TEXT",
                   help="a text file with one prompt per line, or the prompt itself; {trigger} is the trigger word "
                        "(default: the run's sample.prompts)")
    p.add_argument("--baseline-prompts", metavar="FILE|TEXT",
                   help="what the prompt-only column renders instead, one per prompt (or one for all), e.g. the long "
                        "descriptive prompt you would write without a LoRA")
    p.add_argument("--external", action="append", default=[], metavar="LABEL=DIR",
                   help="another generator's images as a column (repeatable): matched to rows by a prompts.json in "
                        "DIR ({file: prompt}), else in file-name order, one image per row")
    p.add_argument("--seeds", default="1", metavar="1,2", help="one row per prompt × seed (default: 1)")
    p.add_argument("--scales", default="1", metavar="0,0.5,1", help="LoRA scales for each checkpoint column")
    p.add_argument("--steps", default="final", metavar="N,M|all|final",
                   help="checkpoint steps to compare, 'final' among them if you like (default: the final LoRA, else "
                        "the latest checkpoint)")
    p.add_argument("--name", metavar="NAME", help="grid name (default: a dated name)")
    p.add_argument("--inference-steps", type=int, metavar="N", help="sampler steps (default: the run's sample.inference_steps)")
    p.add_argument("--guidance", type=float, metavar="G", help="guidance scale (default: the run's sample.guidance_scale)")
    p.add_argument("--size", type=int, metavar="PX", help="image size (default: the run's data.resolution)")

    p = sub.add_parser("score", help="score a grid (CLIP-I / CLIP-T / DINO / consistency, a recommended checkpoint) "
                                     "or a batch (also diversity, FID, KID, CMMD)",
                       description="Score a comparison grid of RUN: CLIP-I and DINO (fidelity to the reference "
                                   "images), CLIP-T (prompt adherence) and consistency per column, saved as "
                                   "scores.json next to the grid, printed as a scorecard with a recommended "
                                   "checkpoint and scale. With --batch, score a synthetic set written by generate "
                                   "as a distribution: CLIP-T, CLIP-I / DINO, consistency, diversity, FID and KID "
                                   "(Inception features) and CMMD (CLIP features) against the references, with "
                                   "sample sizes and caveats, saved as scores.json in the batch folder.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--refs", type=Path, metavar="DIR", help="reference images (default: the run's training images)")
    p.add_argument("--grid", metavar="NAME", help="grid to score (default: the newest)")
    p.add_argument("--batch", metavar="NAME|DIR", help="instead: a batch of the run (under outputs/RUN/generated/) or "
                                                      "a folder written by generate")
    p.add_argument("--clip", metavar="NAME", help="CLIP backbone (default ViT-B-32-quickgelu/openai; toy-clip for "
                                                  "toy-sd15 runs; tiny-random offline)")
    p.add_argument("--dino", metavar="NAME", help="DINO backbone (default dino-vits16; none for toy-sd15 runs, or "
                                                  "to skip DINO; tiny-random offline)")
    p.add_argument("--inception", metavar="NAME|FILE",
                   help="--batch: Inception for FID / KID (default pt_inception, downloaded on first use; a path to "
                        "pt_inception-2015-12-05-6726825d.pth offline; none to skip; tiny-random for trials)")
    p.add_argument("--json", action="store_true", help="print scores.json instead of the scorecard")

    p = sub.add_parser("generate", help="batch-generate images with a run's LoRA (resumable)",
                       description="Generate N images from a prompt list with one checkpoint of RUN into DIR "
                                   "(00000.png, … with their prompts as captions: 00000.txt and metadata.jsonl, so "
                                   "check and train take DIR as a dataset; and manifest.json). Run the same command "
                                   "again to continue a batch that was stopped; images already written are kept. "
                                   "Score it with: score RUN --batch DIR.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prompts", required=True, metavar="FILE|TEXT", help="a text file with one prompt per line, or one prompt")
    p.add_argument("--count", required=True, type=int, metavar="N", help="how many images in all (prompts are cycled)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--step", type=int, metavar="N", help="checkpoint step (default: the final LoRA, else the latest)")
    p.add_argument("--scale", type=float, default=1.0, metavar="S", help="LoRA scale (default 1.0; 0 = no LoRA)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the first image; image i uses seed + i")
    p.add_argument("--inference-steps", type=int, metavar="N", help="sampler steps (default: the run's sample.inference_steps)")
    p.add_argument("--guidance", type=float, metavar="G", help="guidance scale (default: the run's sample.guidance_scale)")
    p.add_argument("--size", type=int, metavar="PX", help="image size (default: the run's data.resolution)")

    p = sub.add_parser("check", help="environment and dataset report; non-zero exit if training can't start",
                       formatter_class=fmt)
    p.add_argument("--data", metavar="DIR", help="also scan this dataset folder and print its full report")
    p.add_argument("--preset", metavar="NAME|FILE", help="also check this preset's model, dataset and precision")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--clear-cache", action="store_true",
                   help="empty the disk cache of latents and caption embeddings that runs share "
                        "(~/.cache/lora-studio/tensors; LORA_STUDIO_TENSOR_CACHE moves it); the next run encodes again")
    p.add_argument("--dry-run", action="store_true",
                   help="with --preset: load the models, cache a few images and run a few real training steps; "
                        "report seconds per step, peak memory, the run's projected time and checkpoint disk use "
                        "(and what to change on out of memory)")

    p = sub.add_parser("bench", help="figures: our loop vs an uncached loop (--grids: cached grids; --cache: cold vs "
                                     "warm latent cache; --export: merged exports; --startup: time to the page; "
                                     "--world: the toy world's quality report; --augment: jitter + rotation "
                                     "against none; --dataset: the Dataset tab at scale; --live: what open pages "
                                     "cost a job; --peers: against diffusers' and kohya's scripts)")
    p.add_argument("--preset", default="tiny-demo")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--grids", action="store_true",
                   help="instead: comparison grids with the base model kept loaded against loaded per grid")
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="--grids: grids timed each way")
    p.add_argument("--world", action="store_true",
                   help="instead: the toy world's quality report (prompt adherence of toy-sd15, the demo LoRA's "
                        "CLIP-I gain, the recommendation on an over-trained run, CPU time); about 10 CPU-minutes")
    p.add_argument("--keep", type=Path, metavar="DIR", help="--world: keep its runs and grids in DIR")
    p.add_argument("--export", action="store_true",
                   help="instead: time and peak memory of the merged exports (pipeline, checkpoint) of a short "
                        "run on the preset's base model, against loading that model alone")
    p.add_argument("--startup", action="store_true",
                   help="instead: how long `python studio.py` takes to print its first line and to serve its page "
                        "(wall and the studio's CPU seconds, --repeats starts), beside bare `import gradio` / "
                        "`import torch`")
    p.add_argument("--cache", action="store_true",
                   help="instead: time to the first step with a cold and a warm disk cache of latents and caption "
                        "embeddings, and of a resume, on --images generated images at data.resolution (CPU and wall)")
    p.add_argument("--images", type=int, default=200, metavar="N",
                   help="--cache, --augment, --dataset: images in the generated set")
    p.add_argument("--dataset", action="store_true",
                   help="instead: the Dataset tab on --images generated 512 px images (try 2000): first open and "
                        "reopen (scan cache), CPU and bytes sent per caption edit and bulk edit")
    p.add_argument("--augment", action="store_true",
                   help="instead: steady CPU and wall time per step with colour jitter + rotation (cached augmented "
                        "copies, and uncached) against none, for the preset and sdxl-character on tiny models, and "
                        "the latent cache build each way")
    p.add_argument("--live", action="store_true",
                   help="instead: what open pages cost a training job on the server's side: server CPU and wall per "
                        "poll, and steps/s of a tiny job with 0 and --viewers simulated pages (a separate process), "
                        "--repeats rounds")
    p.add_argument("--viewers", type=int, default=5, metavar="N", help="--live: simulated pages")
    p.add_argument("--peers", action="store_true",
                   help="instead: our loop against the peers' own scripts side by side at the same settings (64 px, "
                        "batch 2, rank 4, fp32, constant LR; --set changes them): diffusers' "
                        "train_text_to_image_lora.py and kohya's train_network.py --cache_latents; steady CPU and wall "
                        "seconds per step, each loop its own process (OMP_NUM_THREADS=1), against the targets")
    p.add_argument("--diffusers-repo", type=Path, metavar="DIR",
                   help="--peers: a huggingface/diffusers checkout (its examples/text_to_image); omit to skip it")
    p.add_argument("--kohya-repo", type=Path, metavar="DIR", help="--peers: a kohya-ss/sd-scripts checkout; omit to skip it")
    p.add_argument("--diffusers-python", metavar="PYTHON",
                   help="--peers: the Python that runs diffusers' script (it needs `datasets`; default: this one)")
    p.add_argument("--kohya-python", metavar="PYTHON",
                   help="--peers: the Python of kohya's environment (its pinned requirements; default: this one)")
    p.add_argument("--peer-model", default="small", metavar="small|real-size|DIR",
                   help="--peers: `small` (the SD1.5 layout at widths 32-128, built in seconds), `real-size` (SD1.5 "
                        "at random init, minutes to build) or an SD1.5 diffusers folder")
    p.add_argument("--peer-steps", default="10,60", metavar="N1,N2",
                   help="--peers: steady cost per step = (CPU of an N2-step run - of an N1-step run) / (N2 - N1)")
    p.add_argument("--peer-images", type=int, default=16, metavar="N", help="--peers: images in the generated set")
    p.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="--peers: (N1, N2) run pairs per loop, the loops taking turns; the median is shown")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    from studio.commands.pretrain import add_parser as add_pretrain_parser

    add_pretrain_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        # Importing Gradio and PyTorch takes seconds (tens on a busy machine): say so before it starts.
        print(f"LoRA Studio {__version__}: starting (loading Gradio, then building the page; PyTorch loads "
              "once it is served)…", flush=True)
        from studio.ui.app import launch

        return launch(args)
    if args.command == "train":
        from studio.commands.train import run_train

        return run_train(args)
    if args.command == "resume":
        from studio.commands.train import run_resume

        return run_resume(args)
    if args.command == "runs":
        from studio.commands.train import run_runs

        return run_runs(args)
    if args.command == "export":
        from studio.commands.export import run_export

        return run_export(args)
    if args.command == "bench":
        from studio.commands.bench import run_bench_command

        return run_bench_command(args)
    if args.command == "caption":
        from studio.commands.caption import run_caption

        return run_caption(args)
    if args.command == "compare":
        from studio.commands.compare import run_compare

        return run_compare(args)
    if args.command == "generate":
        from studio.commands.compare import run_generate

        return run_generate(args)
    if args.command == "score":
        from studio.commands.score import run_score

        return run_score(args)
    if args.command == "pretrain-world":
        from studio.commands.pretrain import run_pretrain_world

        return run_pretrain_world(args)
    if args.command == "check":
        from studio.commands.check import run_check

        return run_check(args)
    parser.error(f"unknown command {args.command}")
    return 2
