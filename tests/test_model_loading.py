"""Base models from every source (tiny, folder, single file, Hub), family checks, LDM names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_weights
import torch

from studio.engine.ldm_convert import save_single_file, single_file_state_dict, unet_ldm_module_names, unet_to_ldm
from studio.engine.models import (
    ModelLoadError,
    ModelSource,
    detect_family,
    list_local_models,
    load_pipeline,
    resolve_base,
)
from studio.engine.tiny import build_tiny_pipeline, tiny_model_dir

FAMILIES = ["sd15", "sdxl"]
NAMES = {"sd15": "tiny-sd15", "sdxl": "tiny-sdxl"}

# Real-size UNet configs, as dicts only (never instantiated).
SD15_UNET = {
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
SDXL_UNET = {
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "addition_embed_type": "text_time",
}


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: offline, one thread


@pytest.fixture(scope="module")
def single_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("single")
    return {f: save_single_file(build_tiny_pipeline(f), folder / f"{NAMES[f]}.safetensors", f) for f in FAMILIES}


@pytest.fixture
def models_dir(tmp_path) -> Path:
    """A models folder with a diffusers copy of tiny-sd15, a single-file tiny-sdxl and a LoRA."""
    from safetensors.torch import save_file

    root = tmp_path / "models"
    shutil.copytree(tiny_model_dir("tiny-sd15"), root / "my-sd15")
    save_single_file(build_tiny_pipeline("sdxl"), root / "my-sdxl.safetensors", "sdxl")
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}
    save_file(lora, str(root / "style.safetensors"), metadata={"ss_base_model_version": "sd_v1"})
    return root




def generate(pipe, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, generator=generator,
                output_type="np").images


# ---------------------------------------------------------------- LDM names


@pytest.mark.parametrize(
    ("diffusers", "ldm"),
    [
        ("down_blocks.1.attentions.0", "input_blocks.4.1"),
        ("down_blocks.0.downsamplers.0", "input_blocks.3.0"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("up_blocks.1.attentions.2", "output_blocks.5.1"),
        ("up_blocks.3.attentions.2", "output_blocks.11.1"),
        ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
        ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
        ("mid_block.attentions.0", "middle_block.1"),
        ("mid_block.resnets.1", "middle_block.2"),
        ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
        ("up_blocks.3.resnets.2.time_emb_proj", "output_blocks.11.0.emb_layers.1"),
        ("conv_in", "input_blocks.0.0"),
        ("time_embedding.linear_1", "time_embed.0"),
        ("conv_out", "out.2"),
    ],
)
def test_sd15_ldm_names(diffusers, ldm):
    assert unet_ldm_module_names(SD15_UNET)[diffusers] == ldm


@pytest.mark.parametrize(
    ("diffusers", "ldm"),
    [
        ("down_blocks.1.attentions.0", "input_blocks.4.1"),
        ("down_blocks.2.attentions.1", "input_blocks.8.1"),
        ("up_blocks.0.attentions.0", "output_blocks.0.1"),
        ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
    ],
)
def test_sdxl_ldm_names(diffusers, ldm):
    assert unet_ldm_module_names(SDXL_UNET)[diffusers] == ldm


def test_ldm_names_of_full_paths_and_absent_modules():
    sdxl = unet_ldm_module_names(SDXL_UNET)
    assert (
        unet_to_ldm("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", sdxl)
        == "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    )
    assert unet_to_ldm("mid_block.resnets.0.norm1.bias", sdxl) == "middle_block.0.in_layers.0.bias"
    assert "down_blocks.0.attentions.0" not in sdxl  # SDXL's first level has no attention
    assert "down_blocks.2.downsamplers.0" not in sdxl  # nor a downsampler on the last level
    assert "add_embedding.linear_1" not in unet_ldm_module_names(SD15_UNET)
    with pytest.raises(KeyError, match="foo"):
        unet_to_ldm("foo.bar", sdxl)


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_is_recognised_by_diffusers(family):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    keys = single_file_state_dict(build_tiny_pipeline(family), family)
    assert infer_diffusers_model_type(keys) == {"sd15": "v1", "sdxl": "xl_base"}[family]
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("first_stage_model.encoder.mid.attn_1.q.") for k in keys)
    assert keys["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4


# ---------------------------------------------------------------- resolving model.base


def test_resolve_tiny():
    assert resolve_base("tiny-sdxl") == ModelSource("builtin", "tiny-sdxl", "sdxl")


def test_resolve_local_folder_and_file(models_dir, monkeypatch):
    folder = str((models_dir / "my-sd15").resolve())
    assert resolve_base(str(models_dir / "my-sd15")) == ModelSource("folder", folder, "sd15")
    assert resolve_base("my-sd15", models_dir) == ModelSource("folder", folder, "sd15")
    monkeypatch.chdir(models_dir.parent)
    assert resolve_base("models/my-sd15") == ModelSource("folder", folder, "sd15")
    single = str((models_dir / "my-sdxl.safetensors").resolve())
    assert resolve_base("my-sdxl", models_dir) == ModelSource("single_file", single, "sdxl")
    assert resolve_base("my-sdxl.safetensors", models_dir) == ModelSource("single_file", single, "sdxl")


def test_resolve_hub_id(models_dir):
    assert resolve_base("stabilityai/stable-diffusion-xl-base-1.0", models_dir) == ModelSource(
        "hub", "stabilityai/stable-diffusion-xl-base-1.0", None
    )


def test_unknown_name_lists_available_models(models_dir):
    (models_dir / "old.ckpt").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError) as err:
        resolve_base("my-sd21", models_dir)
    message = str(err.value)
    assert "my-sd21" in message and str(models_dir / "my-sd21") in message
    assert "my-sd15" in message and "my-sdxl" in message and "tiny-sd15" in message
    assert "style" not in message, "a LoRA is not a base model"
    assert "old.ckpt" not in message, "a pickle checkpoint can't be loaded"


def test_missing_file_path_is_not_taken_for_a_hub_id(models_dir):
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_base("models/missing.safetensors", models_dir)


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_family(family, single_files):
    assert detect_family(tiny_model_dir(NAMES[family])) == family
    assert detect_family(single_files[family]) == family


def test_list_local_models(models_dir):
    (models_dir / "old.ckpt").write_bytes(b"not loaded")
    (models_dir / "notes").mkdir()  # not a model: ignored
    (models_dir / "broken").mkdir()
    (models_dir / "broken" / "model_index.json").write_text("{not json")
    found = {m.name: m for m in list_local_models(models_dir)}
    assert sorted(found) == ["broken", "my-sd15", "my-sdxl", "old.ckpt", "style"]
    assert "not valid JSON" in found["broken"].problem
    assert (found["my-sd15"].kind, found["my-sd15"].family, found["my-sd15"].problem) == ("folder", "sd15", None)
    assert (found["my-sdxl"].kind, found["my-sdxl"].family) == ("single_file", "sdxl")
    assert (found["style"].kind, found["style"].family) == ("lora", "sd15")
    assert "pickle" in found["old.ckpt"].problem
    assert found["my-sdxl"].size_bytes == (models_dir / "my-sdxl.safetensors").stat().st_size
    assert found["my-sd15"].size_bytes > 1_000_000
    assert list_local_models(models_dir / "absent") == []


# ---------------------------------------------------------------- loading


def test_load_tiny_and_local_folder(models_dir):
    tiny = load_pipeline("tiny-sd15")
    copy = load_pipeline("my-sd15", family="sd15", models_dir=models_dir)
    assert type(copy).__name__ == "StableDiffusionPipeline" and copy.safety_checker is None
    assert_same_weights(build_tiny_pipeline("sd15"), tiny, "sd15")
    assert_same_weights(tiny, copy, "sd15")


def test_load_in_half_precision():
    pipe = load_pipeline("tiny-sdxl", dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder_2.dtype == torch.float16


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_round_trip(family, single_files):
    original = build_tiny_pipeline(family)
    loaded = load_pipeline(
        str(single_files[family]), family=family, single_file_config=str(tiny_model_dir(NAMES[family]))
    )
    assert type(loaded) is type(original)
    assert_same_weights(original, loaded, family)
    assert loaded.vae.config.scaling_factor == original.vae.config.scaling_factor
    assert np.array_equal(generate(original), generate(loaded))


def test_pickle_checkpoint_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelLoadError, match=r"model\.ckpt.*pickle.*\.safetensors"):
        load_pipeline(str(ckpt))


def test_folder_without_safetensors_refused(tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir("tiny-sd15"), folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match=r"unet has no \.safetensors.*diffusion_pytorch_model\.bin"):
        load_pipeline(str(folder))


def test_folder_without_model_index_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"))


def test_lora_is_not_a_base_model(models_dir):
    with pytest.raises(ModelLoadError, match="is a LoRA"):
        load_pipeline("style", models_dir=models_dir)


def test_family_conflicts(single_files):
    with pytest.raises(ModelLoadError, match=r"model\.family is 'sd15'.*'sdxl'"):
        load_pipeline("tiny-sdxl", family="sd15")
    with pytest.raises(ModelLoadError, match=r"model\.family is 'sdxl'.*'sd15'"):
        load_pipeline(str(single_files["sd15"]), family="sdxl")
    with pytest.raises(ModelLoadError, match="same architecture"):
        load_pipeline(str(single_files["sd15"]), single_file_config=str(tiny_model_dir("tiny-sdxl")))
    with pytest.raises(ModelLoadError, match="'sd3' is not one of"):
        load_pipeline("tiny-sd15", family="sd3")


def _empty_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_hub_id_offline_gives_clear_error(tmp_path, monkeypatch):
    _empty_hub_cache(tmp_path, monkeypatch)
    with pytest.raises(ModelLoadError) as err:
        load_pipeline("lora-studio-tests/no-such-model", family="sd15")
    message = str(err.value)
    assert "'lora-studio-tests/no-such-model'" in message and "HF_HUB_OFFLINE" in message
    assert "models/" in message and "model.base" in message


def test_single_file_without_config_offline_explains_single_file_config(tmp_path, monkeypatch, single_files):
    _empty_hub_cache(tmp_path, monkeypatch)
    with pytest.raises(ModelLoadError, match=r"model\.single_file_config.*same architecture"):
        load_pipeline(str(single_files["sdxl"]))
