"""The built-in tiny models: real SD1.5 / SDXL architectures, deterministic, cached on disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import assert_same_weights
import torch

from studio.engine import tiny
from studio.engine.tiny import TINY_MODELS, build_tiny_pipeline, tiny_model_dir

FAMILIES = ["sd15", "sdxl"]
NAMES = {family: name for name, family in TINY_MODELS.items()}


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: offline, one thread




def generate(pipe, seed: int = 0, prompt: str = "a photo of a cat") -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    out = pipe(prompt, num_inference_steps=2, height=64, width=64, generator=generator, output_type="np")
    return out.images


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_deterministic(family):
    torch.manual_seed(1)
    a = build_tiny_pipeline(family)
    torch.manual_seed(2)  # the caller's RNG state must not matter
    expected_next = torch.rand(3)
    torch.manual_seed(2)
    b = build_tiny_pipeline(family)
    assert torch.equal(torch.rand(3), expected_next), "building must not consume the caller's RNG"
    assert_same_weights(a, b, family)


def test_families_differ():
    sd15, sdxl = build_tiny_pipeline("sd15"), build_tiny_pipeline("sdxl")
    assert type(sd15).__name__ == "StableDiffusionPipeline"
    assert type(sdxl).__name__ == "StableDiffusionXLPipeline"
    with pytest.raises(ValueError, match="sd3"):
        build_tiny_pipeline("sd3")


def test_sd15_architecture():
    pipe = build_tiny_pipeline("sd15")
    unet = pipe.unet.config
    assert tuple(unet.block_out_channels) == (32, 64) and unet.layers_per_block == 1
    assert "CrossAttnDownBlock2D" in unet.down_block_types and "CrossAttnUpBlock2D" in unet.up_block_types
    assert unet.cross_attention_dim == pipe.text_encoder.config.hidden_size == 32
    assert unet.addition_embed_type is None
    te = pipe.text_encoder.config
    assert (te.vocab_size, te.max_position_embeddings, te.num_hidden_layers) == (49408, 77, 2)
    assert len(pipe.vae.config.block_out_channels) == 4 and pipe.vae_scale_factor == 8
    assert pipe.vae.config.latent_channels == 4 and pipe.vae.config.scaling_factor == 0.18215
    sched = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert (sched.beta_schedule, sched.beta_start, sched.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert (sched.num_train_timesteps, sched.prediction_type) == (1000, "epsilon")
    assert pipe.safety_checker is None and pipe.feature_extractor is None


def test_sdxl_architecture():
    pipe = build_tiny_pipeline("sdxl")
    unet = pipe.unet.config
    te1, te2 = pipe.text_encoder.config, pipe.text_encoder_2.config
    assert tuple(unet.block_out_channels) == (32, 64) and unet.layers_per_block == 1
    assert unet.addition_embed_type == "text_time" and unet.use_linear_projection
    assert unet.cross_attention_dim == te1.hidden_size + te2.hidden_size
    assert unet.projection_class_embeddings_input_dim == te2.projection_dim + 6 * unet.addition_time_embed_dim
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert te1.vocab_size == te2.vocab_size == 49408
    assert pipe.vae.config.scaling_factor == 0.13025 and len(pipe.vae.config.block_out_channels) == 4
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer_2.pad_token == "!"


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_folder_reloads_identical(family):
    from diffusers import DiffusionPipeline

    folder = tiny_model_dir(NAMES[family])
    assert folder.parent.name == "models" and folder.name == NAMES[family]
    for sub in ("tokenizer", "tokenizer_2") if family == "sdxl" else ("tokenizer",):
        assert (folder / sub / "vocab.json").is_file() and (folder / sub / "merges.txt").is_file()
    assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    loaded = DiffusionPipeline.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    assert_same_weights(build_tiny_pipeline(family), loaded, family)
    assert loaded.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("family", FAMILIES)
def test_two_step_generation_is_reproducible(family):
    pipe = build_tiny_pipeline(family)
    first, second = generate(pipe), generate(pipe)
    assert first.shape == (1, 64, 64, 3)
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    assert first.std() > 0.01, "a constant image means the pipeline is broken"
    assert not np.array_equal(first, generate(pipe, seed=1))


def test_cached_folder_is_reused(monkeypatch):
    folder = tiny_model_dir("tiny-sd15")
    stamp = (folder / tiny.MARKER).stat().st_mtime_ns

    def no_build(family):
        raise AssertionError("a complete cached model must not be rebuilt")

    monkeypatch.setattr(tiny, "build_tiny_pipeline", no_build)
    assert tiny_model_dir("tiny-sd15") == folder
    assert (folder / tiny.MARKER).stat().st_mtime_ns == stamp


def test_incomplete_or_outdated_folder_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path))
    half = tmp_path / "models" / "tiny-sd15"
    (half / "unet").mkdir(parents=True)
    (half / "unet" / "config.json").write_text("{}")  # a crashed writer: no marker
    folder = tiny_model_dir("tiny-sd15")
    assert folder == half and (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((folder / tiny.MARKER).read_text())["builder_version"] == tiny.BUILDER_VERSION

    info = json.loads((folder / tiny.MARKER).read_text())
    (folder / tiny.MARKER).write_text(json.dumps({**info, "builder_version": tiny.BUILDER_VERSION - 1}))
    (folder / "stale.txt").write_text("from the old builder")
    tiny_model_dir("tiny-sd15")
    assert not (folder / "stale.txt").exists()
    assert json.loads((folder / tiny.MARKER).read_text())["builder_version"] == tiny.BUILDER_VERSION
    assert sorted(os.listdir(tmp_path / "models")) == ["tiny-sd15"], "temporary folders must be cleaned up"


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path))

    def broken(family):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "build_tiny_pipeline", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_model_dir("tiny-sdxl")
    assert os.listdir(tmp_path / "models") == []


def test_unknown_name():
    with pytest.raises(ValueError, match="tiny-sd15"):
        tiny_model_dir("tiny-sd3")
