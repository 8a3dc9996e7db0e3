"""What a webui LoRA file says about itself: kohya's full `ss_*` set in kohya's value formats, the
`sshs_*` hashes (checked against an independent computation), base-model hashes, `modelspec.*` from
what the run loaded, a bounded header, and the preview image beside the file and inside it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file

from studio.cli import main
from studio.config import load_config
from studio.engine import lora_metadata
from studio.engine.export import export_run
from studio.engine.ldm_convert import save_single_file
from studio.engine.lora_metadata import kohya_hashes, tag_frequency, webui_metadata
from studio.engine.previews import THUMBNAIL_MAX_CHARS
from studio.engine.runs import RunFolder
from studio.engine.tiny import build_tiny_pipeline, tiny_model_dir
from studio.engine.train import run_training

# Every `ss_*` key kohya-ss/sd-scripts' train_network.py writes (88), less the ones it writes only in
# situations LoRA Studio never has: `ss_datasets` (instead of the flat dataset keys, with a dataset
# config file), VAE file hashes (model.vae is a folder or a Hub id), and `ss_sd_scripts_commit_hash`.
# `ss_network_args` is checked separately (conv LoRA only), base-model hashes too (a file base only).
KOHYA_KEYS = """
ss_adaptive_noise_scale ss_base_model_version ss_batch_size_per_device ss_bucket_info ss_bucket_no_upscale
ss_cache_latents ss_caption_dropout_every_n_epochs ss_caption_dropout_rate ss_caption_tag_dropout_rate ss_clip_skip
ss_color_aug ss_dataset_dirs ss_debiased_estimation ss_enable_bucket ss_epoch ss_face_crop_aug_range ss_flip_aug
ss_fp8_base ss_fp8_base_unet ss_full_fp16 ss_gradient_accumulation_steps ss_gradient_checkpointing ss_huber_c
ss_huber_scale ss_huber_schedule ss_ip_noise_gamma ss_ip_noise_gamma_random_strength ss_keep_tokens
ss_learning_rate ss_loss_type ss_lowram ss_lr_scheduler ss_lr_warmup_steps ss_max_bucket_reso ss_max_grad_norm
ss_max_token_length ss_max_train_steps ss_max_validation_steps ss_min_bucket_reso ss_min_snr_gamma
ss_mixed_precision ss_multires_noise_discount ss_multires_noise_iterations ss_network_alpha ss_network_dim
ss_network_dropout ss_network_module ss_noise_offset ss_noise_offset_random_strength ss_num_batches_per_epoch
ss_num_epochs ss_num_reg_images ss_num_train_images ss_num_validation_images ss_optimizer ss_output_name
ss_prior_loss_weight ss_random_crop ss_reg_dataset_dirs ss_resize_interpolation ss_resolution
ss_scale_weight_norms ss_sd_model_name ss_seed ss_session_id ss_shuffle_caption ss_steps ss_tag_frequency
ss_text_encoder_lr ss_total_batch_size ss_training_comment ss_training_finished_at ss_training_started_at
ss_unet_lr ss_v2 ss_validate_every_n_epochs ss_validate_every_n_steps ss_validation_seed ss_validation_split
ss_zero_terminal_snr
""".split()
STEPS = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunFolder:
    """A finished tiny SD1.5 conv LoRA: checkpoints at every step, samples at steps 2, 4 and 5."""
    config = load_config("tiny-demo", [
        "model.base=tiny-sd15", "model.family=sd15", f"train.max_steps={STEPS}", "train.batch_size=2",
        "optim.warmup_steps=0", "lora.rank=4", "lora.alpha=8", "lora.targets=attention+ff+conv",
        "lora.train_text_encoder=false", "save.every_steps=1", "save.keep_last=10", "sample.every_steps=2",
        "sample.inference_steps=2", "sample.seeds=[1]", "data.trigger_word=ohwx", "data.class_phrase=toy robot",
        "sample.prompts=['a photo of {trigger} toy robot', '{trigger} on a white background']"])
    run = RunFolder.create(tmp_path_factory.mktemp("meta"), "meta-run", config)
    assert run_training(config, run) == "finished"
    return run


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_every_kohya_key_with_kohyas_value_formats(run):
    meta = _metadata(run.final_lora)
    assert not set(KOHYA_KEYS) - set(meta)
    status = run.read_status()
    images, per_epoch = status["dataset_images"], status["batches_per_epoch"]
    assert meta["ss_num_train_images"] == str(images) and meta["ss_num_batches_per_epoch"] == str(per_epoch)
    assert meta["ss_num_epochs"] == meta["ss_epoch"] == str(math.ceil(STEPS / per_epoch))
    assert meta["ss_steps"] == str(STEPS) and meta["ss_max_train_steps"] == str(STEPS)
    assert meta["ss_clip_skip"] == "None" and meta["ss_v2"] == "False" and meta["ss_mixed_precision"] == "no"
    assert meta["ss_resolution"] == "(64, 64)" and meta["ss_network_alpha"] == "8.0" and meta["ss_network_dim"] == "4"
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01)"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "8.0", "dropout": 0.0}
    (dirname, info), = json.loads(meta["ss_dataset_dirs"]).items()
    assert info == {"n_repeats": 1, "img_count": images}
    assert sum(b["count"] for b in json.loads(meta["ss_bucket_info"])["buckets"].values()) == images
    assert set(json.loads(meta["ss_tag_frequency"])) == {dirname}
    started, finished = float(meta["ss_training_started_at"]), float(meta["ss_training_finished_at"])
    assert started <= finished <= dt.datetime.now().timestamp()
    session = int(meta["ss_session_id"])
    assert 0 <= session < 2**32
    checkpoint = _metadata(run.checkpoints()[0].lora_file)
    assert checkpoint["ss_session_id"] == meta["ss_session_id"], "every file of one run names its session"
    assert checkpoint["ss_steps"] == "1" and checkpoint["ss_epoch"] == "1"
    assert "ss_sd_model_hash" not in meta, "a built-in base is not a file: no file hash to give"

    date = dt.datetime.fromisoformat(meta["modelspec.date"])
    assert "T" in meta["modelspec.date"] and date.tzinfo is not None, "a full timestamp, not just the day"
    assert meta["modelspec.sai_model_spec"] == "1.0.1" and meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.prediction_type"] == "epsilon" and meta["modelspec.resolution"] == "64x64"
    assert meta["modelspec.trigger_phrase"] == "ohwx" and "ohwx" in meta["modelspec.usage_hint"]
    assert meta["modelspec.tags"] == "ohwx, toy robot" and "tiny-sd15" in meta["modelspec.description"]
    assert "modelspec.author" not in meta and "modelspec.license" not in meta, "nothing is invented"


def test_sshs_hashes_match_an_independent_computation(run, tmp_path):
    raw = run.final_lora.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    meta = _metadata(run.final_lora)
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + header:]).hexdigest()
    only_ss = {k: v for k, v in meta.items() if k.startswith("ss_")}
    again = save(load_file(str(run.final_lora)), only_ss)
    assert meta["sshs_legacy_hash"] == hashlib.sha256(again[0x100000:0x110000]).hexdigest()[:8]

    # a file over 1 MiB, where the legacy hash covers real bytes (and only the ss_* header counts)
    tensors = {"lora_unet_x.lora_down.weight": torch.randn(512, 600), "lora_unet_x.alpha": torch.tensor(4.0)}
    metadata = {"ss_network_dim": "512", "ss_output_name": "big", "modelspec.title": "big " * 500}
    model_hash, legacy_hash = kohya_hashes(tensors, metadata)
    save_file(tensors, str(tmp_path / "big.safetensors"), metadata=metadata)
    raw = (tmp_path / "big.safetensors").read_bytes()
    assert len(raw) > 0x110000
    assert model_hash == hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()
    ss_only = save(tensors, {"ss_network_dim": "512", "ss_output_name": "big"})
    assert legacy_hash == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert legacy_hash != hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]


def test_base_model_hashes_when_the_base_is_a_file(run, tmp_path, monkeypatch):
    base = save_single_file(build_tiny_pipeline("sd15"), tmp_path / "my-base.safetensors", "sd15")
    copy = RunFolder(shutil.copytree(run.path, tmp_path / "copy"))
    config = copy.config().with_overrides({"model.base": str(base)})
    meta = webui_metadata(config, copy, name=copy.name, step=STEPS)
    raw = base.read_bytes()
    assert meta["ss_sd_model_name"] == "my-base.safetensors"
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(raw).hexdigest()
    assert meta["ss_sd_model_hash"] == hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]
    # hashed once per run: the next file of the run reads the run folder's cache
    monkeypatch.setattr(lora_metadata, "file_hashes", lambda path: pytest.fail("hashed the base model again"))
    assert webui_metadata(config, copy, name=copy.name, step=1)["ss_new_sd_model_hash"] == meta["ss_new_sd_model_hash"]


def test_prediction_type_is_the_one_the_run_loaded(tmp_path):
    base = shutil.copytree(tiny_model_dir("tiny-sd15"), tmp_path / "vpred-sd15")
    scheduler = base / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps(json.loads(scheduler.read_text()) | {"prediction_type": "v_prediction"}))
    config = load_config("tiny-demo", [f"model.base={base}", "model.family=sd15", "train.max_steps=2",
                                       "train.batch_size=2", "optim.warmup_steps=0", "sample.every_steps=0",
                                       "save.every_steps=0"])
    run = RunFolder.create(tmp_path / "outputs", "vpred", config)
    assert run_training(config, run) == "finished"
    assert run.read_status()["prediction_type"] == "v_prediction"
    assert _metadata(run.final_lora)["modelspec.prediction_type"] == "v"


def test_tag_frequency_is_kohyas_and_capped(run, tmp_path):
    assert tag_frequency(["Red Robot, blue", "red robot", " , "]) == {"red robot": 2, "blue": 1}
    copy = RunFolder(shutil.copytree(run.path, tmp_path / "copy"))
    copy.update_status(tag_frequency={f"tag{i}": i for i in range(1, 1201)})
    meta = webui_metadata(copy.config(), copy, name=copy.name, step=STEPS)
    (kept,) = json.loads(meta["ss_tag_frequency"]).values()
    assert len(kept) == 500 and min(kept.values()) == 701 and next(iter(kept)) == "tag1200"
    assert len(json.dumps(meta)) < 100_000


def test_previews_beside_the_files_and_inside_them(run, tmp_path):
    first = {step: run.samples_at(step)[0]["file"] for step in run.sample_steps()}
    assert sorted(first) == [2, 4, STEPS]
    # the final LoRA: <run>.preview.png, the sample of its own step
    assert (_pixels(run.path / f"{run.name}.preview.png") == _pixels(first[STEPS])).all()
    thumbnail = _metadata(run.final_lora)["modelspec.thumbnail"]
    assert thumbnail.startswith("data:image/") and len(thumbnail) <= THUMBNAIL_MAX_CHARS
    with Image.open(io.BytesIO(base64.b64decode(thumbnail.split(",", 1)[1]))) as img:
        assert max(img.size) <= 256
    # a step without samples takes the nearest (the earlier one on a tie: 3 → 2)
    path = export_run(run, "webui", 3, tmp_path / "three.safetensors")
    assert (_pixels(tmp_path / "three.preview.png") == _pixels(first[2])).all()
    # a chosen image, then none (which also removes the stale preview)
    other = run.samples_at(4)[1]["file"]
    export_run(run, "webui", 3, path, preview=other)
    assert (_pixels(tmp_path / "three.preview.png") == _pixels(other)).all()
    export_run(run, "webui", 3, path, preview="none")
    assert not (tmp_path / "three.preview.png").exists() and "modelspec.thumbnail" not in _metadata(path)
    # checkpoints written during training carry theirs too
    ckpt = run.checkpoint_dir(4) / run.lora_file_name(4)
    assert (_pixels(ckpt.with_suffix(".preview.png")) == _pixels(first[4])).all()


def test_sidecar_and_model_card_from_the_cli(run, tmp_path, capsys):
    out = tmp_path / "card.safetensors"
    assert main(["--outputs", str(run.path.parent), "export", run.name, "--step", "3", "--out", str(out),
                 "--author", "Ada", "--license", "CreativeML-OpenRAIL-M", "--description", "a robot",
                 "--tags", "robot, toy"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["notes"].startswith(f"step 3 of {STEPS}") and sidecar["activation text"] == "ohwx"
    meta = _metadata(out)
    assert (meta["modelspec.author"], meta["modelspec.license"]) == ("Ada", "CreativeML-OpenRAIL-M")
    assert (meta["modelspec.description"], meta["modelspec.tags"], meta["ss_steps"]) == ("a robot", "robot, toy", "3")
    saved = json.loads((run.checkpoint_dir(3) / "state.json").read_text())["time"]
    assert meta["modelspec.date"] == dt.datetime.fromisoformat(saved).astimezone().isoformat(timespec="seconds")
