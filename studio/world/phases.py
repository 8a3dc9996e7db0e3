"""The three pretraining phases of the toy world: autoencoder, text encoder + UNet, scorer.

Each step draws its batch from generators seeded by (plan seed, phase, step), so a resumed phase
repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from studio.core.atomic import write_json_atomic
from studio.world import architectures as arch
from studio.world.judge import read_picture
from studio.world.pretrain import Phase, Plan, lr_factor
from studio.world.scene import (COLOURS, SHAPES, Scene, all_captions, caption_parts, draw_clutter, draw_scene,
                                phrase, sample_scene, scene_rng)

# the scene streams of the phases and evaluations never overlap
_POOL_STREAM, _EVAL_STREAM, _CLIP_EVAL_STREAM = 1, 2, 3


def step_rngs(seed: int, phase: str, step: int) -> tuple[random.Random, torch.Generator]:
    """Python and torch generators of one step, from a stable hash of (seed, phase, step)."""
    digest = hashlib.sha256(f"{seed}:{phase}:{step}".encode()).digest()
    value = int.from_bytes(digest[:8], "little") >> 1
    return random.Random(value), torch.Generator().manual_seed(value)


def seeded(seed: int, build):
    """`build()` under a fixed torch seed, leaving the global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL images → (N, 3, H, W) in [-1, 1], as diffusers' VAEs take them."""
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_images(x: torch.Tensor) -> list[Image.Image]:
    array = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def set_lr(optimizer: torch.optim.Optimizer, base: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base * factor


def eval_scenes(seed: int, count: int, stream: int) -> list[Scene]:
    """`count` held-out scenes, spread evenly over colour pairs and shapes."""
    combos = [(c, b, s) for c in COLOURS for b in COLOURS if b != c for s in SHAPES]
    rng = random.Random(seed * 31 + stream)
    rng.shuffle(combos)
    picked = [combos[i % len(combos)] for i in range(count)]
    return [sample_scene(scene_rng(seed * 31 + stream, i), colour=c, background=b, shape=s)
            for i, (c, b, s) in enumerate(picked)]


# ---------------------------------------------------------------- autoencoder


class VaePhase(Phase):
    """AutoencoderKL on world scenes and clutter, 32 px crops: L1 + MSE + a colour term (L1 of
    4×4 block means, which keeps flat areas the right colour) + a tiny KL."""

    name = "vae"
    _KL = 1e-6

    def __init__(self, plan: Plan, workdir: Path):
        super().__init__(plan, workdir)
        self.steps = plan.vae_steps
        self.vae = seeded(plan.seed, arch.build_vae)
        self.opt = torch.optim.AdamW(self.vae.parameters(), lr=plan.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
        rng = random.Random(plan.seed * 31 + _EVAL_STREAM)
        scenes = [draw_scene(s) for s in eval_scenes(plan.seed, 32, _EVAL_STREAM)]
        self.eval_world = to_tensor(scenes)
        self.eval_clutter = to_tensor([draw_clutter(rng) for _ in range(32)])

    def modules(self):
        return {"vae": self.vae}

    def optimizer(self):
        return self.opt

    def _batch(self, k: int) -> torch.Tensor:
        rng, _ = step_rngs(self.plan.seed, self.name, k)
        crop = self.plan.vae_crop
        images = []
        for i in range(self.plan.vae_batch):
            image = draw_scene(sample_scene(rng)) if i % 2 == 0 else draw_clutter(rng)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x, y = rng.randrange(image.width - crop + 1), rng.randrange(image.height - crop + 1)
            images.append(image.crop((x, y, x + crop, y + crop)))
        return to_tensor(images)

    def step(self, k: int) -> dict[str, float]:
        _, gen = step_rngs(self.plan.seed, self.name, k)
        set_lr(self.opt, self.plan.vae_lr, lr_factor(k, self.steps, self.plan.warmup_steps))
        x = self._batch(k)
        posterior = self.vae.encode(x).latent_dist
        rec = self.vae.decode(posterior.sample(generator=gen)).sample
        l1 = (rec - x).abs().mean()
        mse = (rec - x).pow(2).mean()
        colour = (F.avg_pool2d(rec, 4) - F.avg_pool2d(x, 4)).abs().mean()
        kl = posterior.kl().mean()
        loss = l1 + mse + colour + self._KL * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {"loss": loss.item(), "l1": l1.item(), "kl": kl.item()}

    @torch.no_grad()
    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self.vae.encode(x).latent_dist.mean).sample

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.vae.eval()
        try:
            world, clutter = self._reconstruct(self.eval_world), self._reconstruct(self.eval_clutter)
        finally:
            self.vae.train()
        right = sum(_colours(read_picture(a)) == _colours(read_picture(b))
                    for a, b in zip(to_images(world), to_images(self.eval_world)))
        return {"eval_psnr_world": round(psnr(world, self.eval_world), 2),
                "eval_psnr_clutter": round(psnr(clutter, self.eval_clutter), 2),
                "eval_colours_kept": right / len(world)}

    @torch.no_grad()
    def finish(self) -> None:
        """Save the autoencoder with the scaling factor that gives its latents unit variance."""
        self.vae.eval()
        scenes = [draw_scene(s) for s in eval_scenes(self.plan.seed, 256, _POOL_STREAM)]
        latents = torch.cat([self.vae.encode(to_tensor(scenes[i:i + 64])).latent_dist.mean
                             for i in range(0, len(scenes), 64)])
        self.vae.register_to_config(scaling_factor=round(1.0 / latents.std().item(), 5))
        self.vae.save_pretrained(self.workdir / "model", safe_serialization=True)


def _colours(reading) -> tuple[str, str | None]:
    return reading.background, reading.colour


def load_vae(out: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(out / "vae" / "model", use_safetensors=True).eval()


# ---------------------------------------------------------------- text encoder + UNet


@torch.no_grad()
def encode_pool(vae, seed: int, size: int, path: Path) -> tuple[list[Scene], torch.Tensor]:
    """The UNet's training scenes and their latents (distribution means, unscaled), cached in
    `path`: encoding is a pure function of the seed and the autoencoder."""
    from safetensors.torch import load_file, save_file

    scenes = [sample_scene(scene_rng(seed * 31 + _POOL_STREAM, i)) for i in range(size)]
    if path.is_file():
        latents = load_file(path)["latents"]
        if len(latents) == size:
            return scenes, latents
    chunks = [vae.encode(to_tensor([draw_scene(s) for s in scenes[i:i + 128]])).latent_dist.mean
              for i in range(0, size, 128)]
    latents = torch.cat(chunks).contiguous()
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"latents": latents}, tmp)
    tmp.replace(path)
    return scenes, latents


class UnetPhase(Phase):
    """The UNet, ε-prediction with min-SNR weighting and classifier-free guidance dropout, an EMA
    of it (the EMA is what ships), conditioned on toy-clip's frozen text tower: every caption the
    world writes is encoded once, up front."""

    name = "unet"

    def __init__(self, plan: Plan, workdir: Path):
        from diffusers import DDPMScheduler

        from studio.core.tokenizer import clip_tokenizer

        super().__init__(plan, workdir)
        self.steps = plan.unet_steps
        workdir.mkdir(parents=True, exist_ok=True)
        self.vae = load_vae(workdir.parent)
        self.scaling = self.vae.config.scaling_factor
        self.scenes, self.latents = encode_pool(self.vae, plan.seed, plan.unet_pool, workdir / "pool.safetensors")
        self.clip, self.clip_preprocess, self.clip_tokenizer = arch.load_clip(workdir.parent / "clip" / "model")
        self.text_encoder = arch.text_encoder_from_clip(self.clip)
        self.tokenizer = clip_tokenizer()
        captions = ["", *all_captions()]
        self.caption_rows = {c: i for i, c in enumerate(captions)}
        with torch.no_grad():
            self.text_table = torch.cat([self.text_encoder(self._ids(captions[i:i + 128]))[0]
                                         for i in range(0, len(captions), 128)])
        self.unet = seeded(plan.seed + 2, arch.build_unet)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=plan.unet_lr, weight_decay=0.0)
        self.noise_scheduler = DDPMScheduler.from_config(arch.SD15_SCHEDULER)
        self.eval_targets = eval_scenes(plan.seed, plan.unet_eval_prompts, _EVAL_STREAM)

    def modules(self):
        return {"unet": self.unet, "ema_unet": self.ema_unet}

    def optimizer(self):
        return self.opt

    def _ids(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(captions, padding="max_length", max_length=arch.POSITIONS, truncation=True,
                              return_tensors="pt").input_ids

    def step(self, k: int) -> dict[str, float]:
        from studio.engine.loss import diffusion_loss

        plan = self.plan
        rng, gen = step_rngs(plan.seed, self.name, k)
        set_lr(self.opt, plan.unet_lr, lr_factor(k, self.steps, plan.warmup_steps))
        index = [rng.randrange(len(self.scenes)) for _ in range(plan.unet_batch)]
        captions = ["" if rng.random() < plan.unet_cfg_dropout else caption_parts(self.scenes[i], rng)[0]
                    for i in index]
        latents = self.latents[index] * self.scaling
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(index),), generator=gen)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        hidden = self.text_table[[self.caption_rows[c] for c in captions]]
        pred = self.unet(noisy, timesteps, hidden).sample
        loss = diffusion_loss(self.noise_scheduler, pred, latents, noise, timesteps, plan.unet_min_snr_gamma)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._update_ema(k)
        return {"loss": loss.item()}

    @torch.no_grad()
    def _update_ema(self, k: int) -> None:
        decay = min(self.plan.unet_ema_decay, (1 + k) / (10 + k))
        for e, p in zip(self.ema_unet.parameters(), self.unet.parameters()):
            e.lerp_(p, 1 - decay)

    def pipeline(self):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                       unet=self.ema_unet, scheduler=arch.build_scheduler(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Sample the held-out prompts with the EMA model (20 PNDM steps, guidance 7.5) and read
        the pictures back: colours by the pixel rule, shapes by the scorer."""
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        targets = self.eval_targets
        generators = [torch.Generator().manual_seed(i + 1) for i in range(len(targets))]
        images = pipe([t.phrase for t in targets], num_inference_steps=20, guidance_scale=7.5,
                      generator=generators).images
        readings = [read_picture(im) for im in images]
        shapes = zero_shot_accuracy(self.clip, self.clip_tokenizer, self.clip_preprocess, images, targets)["shape"]
        n = len(images)
        return {"eval_background": sum(r.background == t.background for r, t in zip(readings, targets)) / n,
                "eval_colour": sum(r.colour == t.colour for r, t in zip(readings, targets)) / n,
                "eval_shape": shapes}

    def finish(self) -> None:
        folder = self.workdir / "model"
        self.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
        self.ema_unet.save_pretrained(folder / "unet", safe_serialization=True)


# ---------------------------------------------------------------- the scorer


def encode_text_prefix(model, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's `encode_text` on the tokens up to the longest end-of-text only. The text tower
    is causal and pools at the end-of-text token, so the padding after it cannot change the result:
    the same embeddings at a fraction of the cost of all 77 positions."""
    eot = ids.argmax(dim=-1)  # the end-of-text token has the largest id
    length = int(eot.max()) + 1
    x = model.token_embedding(ids[:, :length]) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    return x[torch.arange(len(ids)), eot] @ model.text_projection


def _augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """Blur a little, sometimes: generated pictures are softer than drawn ones."""
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return image


class ClipPhase(Phase):
    """open_clip CLIP trained contrastively on (picture, caption) pairs. A batch holds many
    pictures that a caption describes equally well ("a circle on a blue background" fits every
    circle on blue), so the targets are spread evenly over all matching pairs instead of the
    diagonal alone."""

    name = "clip"

    def __init__(self, plan: Plan, workdir: Path):
        super().__init__(plan, workdir)
        self.steps = plan.clip_steps
        self.model, self.preprocess, self.tokenizer = seeded(plan.seed + 3, arch.build_clip)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=plan.clip_lr, weight_decay=0.0)
        self.eval_set = eval_scenes(plan.seed, 180, _CLIP_EVAL_STREAM)

    def modules(self):
        return {"clip": self.model}

    def optimizer(self):
        return self.opt

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess(im) for im in images])

    def step(self, k: int) -> dict[str, float]:
        plan = self.plan
        rng, gen = step_rngs(plan.seed, self.name, k)
        set_lr(self.opt, plan.clip_lr, lr_factor(k, self.steps, plan.warmup_steps))
        scenes = [sample_scene(rng) for _ in range(plan.clip_batch)]
        captions = [caption_parts(s, rng) for s in scenes]
        pixels = self._pixels([_augment(draw_scene(s), rng) for s in scenes])
        pixels = pixels + 0.05 * rng.random() * torch.randn(pixels.shape, generator=gen)
        image = F.normalize(self.model.encode_image(pixels), dim=-1)
        text = F.normalize(encode_text_prefix(self.model, self.tokenizer([c for c, _ in captions])), dim=-1)
        logits = self.model.logit_scale.exp().clamp(max=100) * image @ text.T
        match = torch.tensor([[all(getattr(s, f) == getattr(t, f) for f in mentions)
                               for t, (_, mentions) in zip(scenes, captions)] for s in scenes], dtype=torch.float32)
        # image i → every caption that describes it; caption j → every image it describes
        loss_images = -(match / match.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        loss_texts = -(match / match.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
        loss = (loss_images + loss_texts) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        try:
            accuracy = zero_shot_accuracy(self.model, self.tokenizer, self.preprocess,
                                          [draw_scene(s) for s in self.eval_set], self.eval_set)
        finally:
            self.model.train()
        return {f"eval_{k}": v for k, v in accuracy.items()}

    def finish(self) -> None:
        from safetensors.torch import save_file

        folder = self.workdir / "model"
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, folder / "open_clip_model.safetensors")
        write_json_atomic(folder / "open_clip_config.json", clip_folder_config())


def clip_folder_config() -> dict:
    """open_clip's `local-dir:` config of toy-clip: the model and its preprocessing."""
    return {"model_cfg": arch.CLIP_CONFIG,
            "preprocess_cfg": {"size": arch.CLIP_CONFIG["vision_cfg"]["image_size"], "mode": "RGB",
                               "mean": [0.48145466, 0.4578275, 0.40821073],
                               "std": [0.26862954, 0.26130258, 0.27577711],
                               "interpolation": "bicubic", "resize_mode": "shortest"}}


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, preprocess, images: list[Image.Image], scenes: list[Scene]
                       ) -> dict[str, float]:
    """For each picture, pick each attribute among the captions that differ only in it (the other
    two as in its scene): the share of pictures whose shape, colour and background CLIP names
    right. Chance: 1/3, 1/5, 1/5."""
    pixels = torch.stack([preprocess(im) for im in images])
    features = F.normalize(model.encode_image(pixels), dim=-1)
    right = {"shape": 0, "colour": 0, "background": 0}
    for feature, s in zip(features, scenes):
        options = {
            "shape": [(phrase(s.colour, x, s.background), x == s.shape) for x in SHAPES],
            "colour": [(phrase(c, s.shape, s.background), c == s.colour) for c in COLOURS if c != s.background],
            "background": [(phrase(s.colour, s.shape, b), b == s.background) for b in COLOURS if b != s.colour],
        }
        for attribute, choices in options.items():
            texts = F.normalize(encode_text_prefix(model, tokenizer([t for t, _ in choices])), dim=-1)
            right[attribute] += choices[int((texts @ feature).argmax())][1]
    return {k: v / len(scenes) for k, v in right.items()}
