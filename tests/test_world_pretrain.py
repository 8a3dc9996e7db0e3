"""The toy world's pretraining script: a few steps of each phase, exact resume, loadable folders."""

import json

import pytest
import torch

from studio.cli import main
from studio.world import architectures as arch
from studio.world.phases import encode_text_prefix, seeded
from studio.world.pretrain import QUICK, read_done, run_pretraining, ship


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """QUICK pretraining stopped after the first step of a phase, then continued to the end, and shipped."""
    out = tmp_path_factory.mktemp("pretrain")
    assert run_pretraining(out, QUICK, minutes=1e-9) is False, "out of time at once: stops after one step"
    state = torch.load(out / "vae" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 1 and read_done(out / "vae") is None
    assert run_pretraining(out, QUICK) is True
    return out, ship(out, out / "ship", QUICK, command="test")


def test_each_phase_runs_logs_and_records_cpu_time(pretrained):
    out, _ = pretrained
    for phase, steps in (("vae", QUICK.vae_steps), ("clip", QUICK.clip_steps), ("unet", QUICK.unet_steps)):
        done = read_done(out / phase)
        assert done["steps"] == steps and done["cpu_s"] > 0 and "loss" in done["final"]
        rows = [json.loads(line) for line in (out / phase / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == sorted({r["step"] for r in rows}), "no duplicated steps after the resume"
        assert any(k.startswith("eval_") for k in rows[-1]), f"{phase} ends with an evaluation"


def test_a_resumed_phase_equals_an_uninterrupted_one(pretrained, tmp_path):
    out, _ = pretrained
    assert run_pretraining(tmp_path, QUICK, phases=("vae", "clip")) is True
    for phase, module in (("vae", "vae"), ("clip", "clip")):
        resumed = torch.load(out / phase / "checkpoint.pt", weights_only=True)["modules"][module]
        straight = torch.load(tmp_path / phase / "checkpoint.pt", weights_only=True)["modules"][module]
        assert all(torch.equal(resumed[k], straight[k]) for k in straight), phase


def test_the_unet_phase_needs_the_autoencoder_and_the_scorer(tmp_path):
    with pytest.raises(RuntimeError, match="needs a finished vae phase"):
        run_pretraining(tmp_path, QUICK, phases=("unet",))


def test_shipped_folders_load_with_the_libraries_own_loaders(pretrained):
    import open_clip
    from diffusers import StableDiffusionPipeline

    _, dest = pretrained
    from safetensors import safe_open

    with safe_open(dest / "toy-sd15" / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, "shipped in fp16"
    pipe = StableDiffusionPipeline.from_pretrained(dest / "toy-sd15", safety_checker=None, requires_safety_checker=False,
                                                   dtype=torch.float32)
    assert pipe.vae_scale_factor == 4
    image = pipe("a red circle on a blue background", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{dest / 'toy-clip'}")
    assert preprocess.transforms[0].size == 32, "toy-clip looks at 32 px"
    provenance = json.loads((dest / "provenance.json").read_text())
    assert provenance["plan"]["vae_steps"] == QUICK.vae_steps and provenance["cpu_s_total"] > 0
    assert set(provenance["phases"]) == {"vae", "clip", "unet"}
    assert "toy-sd15/unet/diffusion_pytorch_model.safetensors" in provenance["files"]


def test_the_clip_text_tower_becomes_an_identical_clip_text_model():
    from studio.core.tokenizer import clip_tokenizer

    clip, _, tokenizer = seeded(5, arch.build_clip)
    text_encoder = arch.text_encoder_from_clip(clip)
    captions = ["a red circle on a blue background", "a square", ""]
    ids = clip_tokenizer()(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        ours = text_encoder(ids)[0]
        x = clip.ln_final(clip.transformer(clip.token_embedding(ids) + clip.positional_embedding,
                                           attn_mask=clip.attn_mask))
        torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)
        # and the shortened text pass used in training gives open_clip's own embeddings
        torch.testing.assert_close(encode_text_prefix(clip, tokenizer(captions)), clip.encode_text(tokenizer(captions)),
                                   rtol=0, atol=1e-5)


def test_the_command_line_runs_and_ships(tmp_path, capsys):
    assert main(["pretrain-world", "--out", str(tmp_path / "w"), "--quick", "--threads", "1",
                 "--ship", str(tmp_path / "ship")]) == 0
    assert "wrote toy-sd15, toy-clip and provenance.json" in capsys.readouterr().out
    assert (tmp_path / "ship" / "toy-sd15" / "model_index.json").is_file()
    assert main(["pretrain-world", "--out", str(tmp_path / "w"), "--phases", "nope"]) == 2
