"""Validation images with the current LoRA: prompts × seeds, saved with a `prompts.json`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from studio.core.atomic import new_temp_dir, publish_dir, write_json_atomic


@contextlib.contextmanager
def components_on(pipe, device: torch.device) -> Iterator[None]:
    """Move every pipeline component to `device` for generation, then back where it was
    (the VAE and frozen text encoders live on the CPU while training uses cached latents)."""
    homes = {}
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            homes[name] = next(module.parameters()).device
            module.to(device)
    try:
        yield
    finally:
        for name, home in homes.items():
            getattr(pipe, name).to(home)


def fill_trigger(prompt: str, trigger: str) -> str:
    return prompt.replace("{trigger}", trigger).replace("  ", " ").strip()


@torch.no_grad()
def generate(pipe, prompt: str, seed: int, *, steps: int, guidance: float, width: int, height: int,
             negative_prompt: str = "", autocast_dtype: torch.dtype | None = None):
    """One image; the seed drives a CPU generator so a seed gives the same image on any device."""
    device = pipe.unet.device
    generator = torch.Generator("cpu").manual_seed(seed)
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                else contextlib.nullcontext())
    with autocast:
        return pipe(prompt, negative_prompt=negative_prompt or None, num_inference_steps=steps,
                    guidance_scale=guidance, width=width, height=height, generator=generator).images[0]


def render_samples(pipe, out_dir: Path, prompts: list[str], seeds: list[int], *, trigger: str, steps: int,
                   guidance: float, size: int, negative_prompt: str, device: torch.device,
                   autocast_dtype: torch.dtype | None, scale: float = 1.0) -> list[dict]:
    """Render prompts × seeds into `out_dir` (atomically); returns the prompts.json entries."""
    tmp = new_temp_dir(out_dir.parent, out_dir.name)
    entries = []
    was_training = pipe.unet.training
    pipe.unet.eval()
    try:
        with components_on(pipe, device):
            for p, raw in enumerate(prompts):
                prompt = fill_trigger(raw, trigger)
                for seed in seeds:
                    image = generate(pipe, prompt, seed, steps=steps, guidance=guidance, width=size, height=size,
                                     negative_prompt=negative_prompt, autocast_dtype=autocast_dtype)
                    name = f"p{p:02d}-s{seed}.png"
                    image.save(tmp / name)
                    entries.append({"file": name, "prompt": prompt, "seed": seed, "scale": scale,
                                    "steps": steps, "guidance": guidance, "width": size, "height": size})
        write_json_atomic(tmp / "prompts.json", entries)
        publish_dir(tmp, out_dir)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pipe.unet.train(was_training)
    return entries
