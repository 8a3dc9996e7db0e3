"""Every format `export` writes, proven by a load: the diffusers-format LoRA (diffusers' own PEFT layout,
transformers-4 module paths, ComfyUI's key rules), and the merged `pipeline` / `checkpoint` exports,
whose images must equal base + LoRA at the same seed — for both families, on the tiny models."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

from studio.cli import main
from studio.config import load_config
from studio.engine.control import Control
from studio.engine.export import export_run
from studio.engine.ldm_convert import unet_ldm_module_names, unet_to_ldm
from studio.engine.lora import set_lora_scale
from studio.engine.models import load_pipeline
from studio.engine.runs import RunFolder
from studio.engine.sampling import generate
from studio.engine.tiny import tiny_model_dir
from studio.engine.train import Trainer

PARTS = {"sd15": ("unet", "text_encoder"), "sdxl": ("unet", "text_encoder", "text_encoder_2")}
TARGETS = {"sd15": "attention+ff+conv", "sdxl": "attention+ff"}  # conv layers on one family, both kept short
MERGE_SCALE = 0.5
SAME = 1.0
"""Largest pixel difference (0–255) that counts as the same image: fp32 rounding, never a real change."""


def _image(pipe) -> np.ndarray:
    image = generate(pipe, "a photo of ohwx toy robot", 7, steps=3, guidance=5.0, width=64, height=64)
    return np.asarray(image, dtype=np.float32)


def _pipeline_class(family: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _extra(family: str) -> dict:
    return {"safety_checker": None, "requires_safety_checker": False} if family == "sd15" else {}


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained(request, tmp_path_factory):
    """A finished tiny run (text-encoder LoRA, alpha 8 ≠ rank 4, fp32 files) and its in-process images
    at LoRA weight 1 and MERGE_SCALE, next to the base model's own image."""
    family = request.param
    config = load_config("tiny-demo", [
        f"model.family={family}", f"model.base=tiny-{family}", "train.max_steps=6", "optim.warmup_steps=0",
        "lora.rank=4", "lora.alpha=8", "lora.train_text_encoder=true", f"lora.targets={TARGETS[family]}",
        "optim.learning_rate=5e-3", "sample.every_steps=0", "save.every_steps=0", "save.dtype=fp32",
        "train.batch_size=2"])
    run = RunFolder.create(tmp_path_factory.mktemp(family), f"formats-{family}", config)
    trainer = Trainer(config, run, Control(), lambda e: None, None)
    trainer.setup(resume=False)
    trainer.fit()
    models = [getattr(trainer.pipe, part) for part in PARTS[family]]
    images = {1.0: _image(trainer.pipe)}
    set_lora_scale(models, MERGE_SCALE)
    images[MERGE_SCALE] = _image(trainer.pipe)
    set_lora_scale(models, 1.0)
    base = _image(load_pipeline(f"tiny-{family}", family=family))
    assert np.abs(base - images[1.0]).max() > 10 * SAME, "the LoRA changed nothing: the tests would prove nothing"
    assert np.abs(images[MERGE_SCALE] - images[1.0]).max() > 10 * SAME, "the weight changed nothing"
    return family, run, images


def _export(run: RunFolder, *args: str) -> int:
    return main(["--outputs", str(run.path.parent), "export", run.name, *args])


def _lora_modules(keys) -> set[str]:
    return {re.sub(r"\.lora_[AB]\.weight$", "", k) for k in keys}


# --- the diffusers-format LoRA --------------------------------------------------------------------

def test_diffusers_out_is_the_file_and_reproduces_the_image(trained, tmp_path, capsys):
    family, run, images = trained
    out = tmp_path / "mine.safetensors"
    assert _export(run, "--format", "diffusers", "--out", str(out)) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file(), "--out names the file, not a folder"
    with safe_open(str(out), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    prefixes = ["unet."] + [f"{part}.text_model.encoder.layers." for part in PARTS[family][1:]]
    assert {next(p for p in prefixes if k.startswith(p)) for k in keys} == set(prefixes)  # every key, every part
    adapter = json.loads(meta["lora_adapter_metadata"])
    assert {adapter[f"{part}.lora_alpha"] for part in PARTS[family]} == {8.0}
    assert {adapter[f"{part}.r"] for part in PARTS[family]} == {4}

    fresh = load_pipeline(f"tiny-{family}", family=family)
    fresh.load_lora_weights(str(out))
    assert np.abs(_image(fresh) - images[1.0]).max() <= SAME


def test_diffusers_keys_are_module_paths_in_transformers4_form(trained, tmp_path):
    """transformers 4 nests CLIPTextModel under `text_model`; transformers 5 flattened it. Every key
    must name a module of the transformers-4 model (and of diffusers' UNet)."""
    family, run, _ = trained
    path = export_run(run, "diffusers", out=tmp_path / "x.safetensors")
    fresh = load_pipeline(f"tiny-{family}", family=family)
    with safe_open(str(path), "pt") as f:
        modules = _lora_modules(f.keys())
    for part in PARTS[family]:
        model = getattr(fresh, part)
        names = {name for name, _ in model.named_modules()}
        if part != "unet" and not hasattr(model, "text_model"):  # transformers 5's flat CLIPTextModel
            names = {f"text_model.{name}" for name in names}
        ours = {m.removeprefix(f"{part}.") for m in modules if m.startswith(f"{part}.")}
        assert ours and ours <= names, f"{part}: {sorted(ours - names)[:3]}"


CLIP_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
UNET_ATTENTION = re.compile(r"\.(to_q|to_k|to_v|to_out\.0)$")


def comfyui_keys(pipe, family: str) -> set[str]:
    """The diffusers-format LoRA names ComfyUI maps (comfy/lora.py `model_lora_keys_unet` / `_clip`,
    restated): for every UNet weight in its diffusers ↔ LDM map, the module path with and without
    `unet.`, `.to_` written `.processor.to_` and `.to_out.0` written `.to_out` (the attention-processor
    names of older diffusers); for the text encoders `text_encoder[_2].text_model.encoder.layers.N.<layer>`."""
    ldm = unet_ldm_module_names(pipe.unet.config)
    keys = set()
    for name, module in pipe.unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            unet_to_ldm(name, ldm)  # a weight ComfyUI's map holds (raises otherwise)
            key = name.replace(".to_", ".processor.to_")
            key = key[:-2] if key.endswith(".to_out.0") else key
            keys |= {key, f"unet.{key}"}
    for part in PARTS[family][1:]:
        layers = getattr(pipe, part).config.num_hidden_layers
        keys |= {f"{part}.text_model.encoder.layers.{i}.{layer}" for i in range(layers) for layer in CLIP_LAYERS}
    return keys


def test_comfyui_maps_every_module_except_unet_attention(trained, tmp_path):
    """ComfyUI loads a `X.lora_A/B.weight` pair when X is one of its names. It maps every text-encoder
    module (they carry `text_model.`) and every UNet feed-forward, projection and conv module; for UNet
    attention it expects the old `….processor.to_q` names, so diffusers' own PEFT names
    (`….attn1.to_q`) are not mapped, and without `.alpha` tensors ComfyUI applies alpha = rank.
    The webui file is the one to use in ComfyUI (tests/test_export.py and FACTS.md)."""
    family, run, _ = trained
    path = export_run(run, "diffusers", out=tmp_path / "x.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    modules = _lora_modules(keys)
    known = comfyui_keys(load_pipeline(f"tiny-{family}", family=family), family)
    mapped = {m for m in modules if m in known and f"{m}.lora_B.weight" in keys}
    attention = {m for m in modules if m.startswith("unet.") and UNET_ATTENTION.search(m)}
    assert attention and modules - attention, "both kinds must be present for this to prove anything"
    assert modules - mapped == attention
    assert {m.split(".")[0] for m in mapped} == set(PARTS[family])


# --- merged exports ----------------------------------------------------------------------------------

def test_pipeline_export_equals_base_plus_lora(trained, tmp_path):
    family, run, images = trained
    out = tmp_path / "merged"
    assert _export(run, "--format", "pipeline", "--out", str(out), "--scale", str(MERGE_SCALE)) == 0
    merged = _pipeline_class(family).from_pretrained(out, local_files_only=True, **_extra(family))
    assert not any("lora" in k for k in merged.unet.state_dict())
    assert np.abs(_image(merged) - images[MERGE_SCALE]).max() <= SAME
    # transformers-4 loaders read the folder too: `text_model.` weight names, vocab.json and merges.txt
    for part in PARTS[family][1:]:
        with safe_open(str(out / part / "model.safetensors"), "pt") as f:
            assert all(k.startswith(("text_model.", "text_projection.")) for k in f.keys())
    for tokenizer in ("tokenizer", "tokenizer_2")[: len(PARTS[family]) - 1]:
        assert (out / tokenizer / "vocab.json").is_file() and (out / tokenizer / "merges.txt").is_file()


def test_checkpoint_export_loads_from_single_file_and_equals_base_plus_lora(trained, tmp_path):
    family, run, images = trained
    out = tmp_path / "merged.safetensors"
    assert _export(run, "--format", "checkpoint", "--out", str(out)) == 0
    with safe_open(str(out), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert not any("lora" in k for k in keys)
    assert meta["modelspec.architecture"] == {"sd15": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}[family]
    assert run.name in meta["modelspec.merged_from"] and "× 1.0" in meta["modelspec.merged_from"]
    merged = _pipeline_class(family).from_single_file(str(out), config=str(tiny_model_dir(f"tiny-{family}")),
                                                      local_files_only=True, **_extra(family))
    assert np.abs(_image(merged) - images[1.0]).max() <= SAME


def test_out_is_a_file_for_every_format_but_pipeline(trained, tmp_path, capsys):
    family, run, _ = trained
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    refused = [
        (["--format", "pipeline", "--out", str(tmp_path / "x.safetensors")], "writes a folder"),
        (["--format", "pipeline", "--out", str(tmp_path / "notes")], "is not a diffusers pipeline folder"),
        (["--format", "webui", "--out", str(tmp_path)], "is a folder"),
        (["--format", "checkpoint", "--out", str(tmp_path / "merged")], "ending in .safetensors"),
        (["--format", "webui", "--scale", "0.5"], "--scale applies to the merged formats"),
        (["--format", "pipeline", "--out", str(tiny_model_dir(f"tiny-{family}"))], "would replace the base model"),
    ]
    for args, message in refused:
        assert _export(run, *args) == 1, args
        assert message in capsys.readouterr().err, args
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x.safetensors").exists()


# --- the pretrained toy model ------------------------------------------------------------------------

def test_toy_sd15_merged_exports_equal_base_plus_lora(tmp_path):
    """The shipped toy-sd15 (fp16 files, its own block widths and norm groups) merges like the tiny models:
    the pipeline folder and the single file both draw what base + LoRA drew in process."""
    from studio.engine.builtin import builtin_model_dir

    config = load_config("tiny-demo", [
        "train.max_steps=6", "optim.warmup_steps=0", "lora.rank=4", "lora.alpha=8", "lora.train_text_encoder=true",
        "optim.learning_rate=5e-3", "sample.every_steps=0", "save.every_steps=0", "save.dtype=fp32",
        "train.batch_size=2"])
    assert config.model.base == "toy-sd15"
    run = RunFolder.create(tmp_path, "formats-toy", config)
    trainer = Trainer(config, run, Control(), lambda e: None, None)
    trainer.setup(resume=False)
    trainer.fit()
    models = [getattr(trainer.pipe, part) for part in PARTS["sd15"]]
    set_lora_scale(models, MERGE_SCALE)
    expected = _image(trainer.pipe)
    assert np.abs(_image(load_pipeline("toy-sd15", family="sd15")) - expected).max() > 10 * SAME

    folder, single = tmp_path / "merged", tmp_path / "merged.safetensors"
    assert _export(run, "--format", "pipeline", "--out", str(folder), "--scale", str(MERGE_SCALE)) == 0
    assert _export(run, "--format", "checkpoint", "--out", str(single), "--scale", str(MERGE_SCALE)) == 0
    from_folder = _pipeline_class("sd15").from_pretrained(folder, local_files_only=True, **_extra("sd15"))
    assert np.abs(_image(from_folder) - expected).max() <= SAME
    from_file = _pipeline_class("sd15").from_single_file(str(single), config=str(builtin_model_dir("toy-sd15")),
                                                        local_files_only=True, **_extra("sd15"))
    assert np.abs(_image(from_file) - expected).max() <= SAME
