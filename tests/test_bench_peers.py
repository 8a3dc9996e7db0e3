"""`bench --peers` plumbing without the peers: their commands at our settings, the kohya harness's constants,
reading their progress output, measuring a process from outside, the report; and `train.compile`."""

import sys

import pytest
import torch

from studio.cli import build_parser
from studio.commands.peers_bench import parse_steps
from studio.config import load_config
from studio.engine import peers_bench as pb
from studio.engine.kohya_harness import unet_constants
from studio.engine.runs import RunFolder
from studio.engine.train import run_training


def peer_config(*overrides: str):
    return pb.peer_config(load_config("tiny-demo", [f"{k}={pb._yaml_value(v)}" for k, v in pb.PEER_SETTINGS.items()]
                                      + list(overrides)))


def fake_repos(tmp_path):
    diffusers = tmp_path / "diffusers"
    (diffusers / "examples" / "text_to_image").mkdir(parents=True)
    (diffusers / "examples" / "text_to_image" / "train_text_to_image_lora.py").write_text("")
    kohya = tmp_path / "sd-scripts"
    kohya.mkdir()
    (kohya / "train_network.py").write_text("")
    model = tmp_path / "model"
    (model / "tokenizer").mkdir(parents=True)
    return diffusers, kohya, model


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_peers_get_our_settings_as_their_own_flags(tmp_path):
    config = peer_config("train.gradient_checkpointing=true")
    diffusers, kohya, model = fake_repos(tmp_path)
    d = pb.diffusers_loop(config, diffusers, model, tmp_path / "data", tmp_path, python="py").command(60, "r1")
    assert d[0] == "py" and d[1].endswith("train_text_to_image_lora.py")
    assert (flag(d, "--resolution"), flag(d, "--train_batch_size"), flag(d, "--rank")) == ("64", "2", "4")
    assert (flag(d, "--lr_scheduler"), flag(d, "--mixed_precision"), flag(d, "--max_train_steps")) == ("constant", "no", "60")
    assert "--gradient_checkpointing" in d and flag(d, "--output_dir").endswith("r1")

    k = pb.kohya_loop(config, kohya, model, tmp_path / "data", tmp_path, python="py").command(10, "r2")
    assert k[1].endswith("kohya_harness.py") and flag(k, "--kohya-repo") == str(kohya)
    assert (flag(k, "--network_dim"), flag(k, "--network_alpha"), flag(k, "--train_batch_size")) == ("4", "4.0", "2")
    assert {"--cache_latents", "--network_train_unet_only", "--gradient_checkpointing", "--sdpa"} <= set(k)
    assert flag(k, "--max_train_steps") == "10"
    # offline, kohya reads its tokenizer from this layout
    assert (tmp_path / "kohya-tokenizer" / "openai_clip-vit-large-patch14").is_dir()


def test_our_loop_command_parses_back_into_the_same_settings(tmp_path):
    config = peer_config()
    loop = pb.ours_loop(config, "tiny-demo", tmp_path / "model", tmp_path / "data", tmp_path, "attention+ff")
    argv = loop.command(60, "ours-0-60")
    args = build_parser().parse_args(argv[2:])
    assert args.command == "train" and args.name == "ours-0-60" and args.outputs == tmp_path / "runs"
    ours = load_config(args.preset, args.overrides)
    assert ours.train.max_steps == 60 and ours.lora.targets == "attention+ff" and ours.model.base == str(tmp_path / "model")
    for key in pb.PEER_SETTINGS:
        assert pb._value(ours, key) == pb._value(config, key), key
    assert loop.env["OMP_NUM_THREADS"] == "1" and loop.env["LORA_STUDIO_TENSOR_CACHE"] == str(tmp_path / "tensors")


def test_wrong_repos_and_settings_the_peers_cannot_follow_are_refused(tmp_path):
    config = peer_config()
    with pytest.raises(ValueError, match="--diffusers-repo .*train_text_to_image_lora.py"):
        pb.diffusers_loop(config, tmp_path, tmp_path, tmp_path, tmp_path)
    with pytest.raises(ValueError, match="--kohya-repo .*train_network.py"):
        pb.kohya_loop(config, tmp_path, tmp_path, tmp_path, tmp_path)
    with pytest.raises(ValueError, match=r"lora.alpha \(8.0\) must equal lora.rank \(4\)"):
        peer_config("lora.alpha=8")
    assert parse_steps("10,60") == (10, 60)
    for bad in ("60,10", "10", "a,b"):
        with pytest.raises(ValueError, match="--peer-steps"):
            parse_steps(bad)


def test_kohya_harness_sizes_kohyas_unet_from_the_model_config():
    constants = unet_constants({"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "norm_num_groups": 32})
    assert constants["BLOCK_OUT_CHANNELS"] == (32, 64, 128, 128)
    assert (constants["TIMESTEP_INPUT_DIM"], constants["TIME_EMBED_DIM"]) == (32, 128)
    assert (constants["LAYERS_PER_BLOCK"], constants["LAYERS_PER_BLOCK_UP"]) == (2, 3)
    with pytest.raises(ValueError, match="SD1.5 block layout"):
        unet_constants({"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"]})


def test_the_last_step_is_read_from_the_peers_progress_bars():
    diffusers = ("Steps:  90%|█████████ | 9/10 [00:05<00:00,  2.49it/s, lr=0.0001, step_loss=1.23]"
                 "Steps: 100%|██████████| 10/10 [00:06<00:00,  2.32it/s, lr=0.0001, step_loss=1.06]")
    kohya = "steps:  20%|██        | 2/10 [00:01<00:06,  1.26it/s, avr_loss=1.17]\nsaving checkpoint"
    assert pb.steps_reported(diffusers) == 10 and pb.steps_reported(kohya) == 2
    assert pb.steps_reported("Traceback (most recent call last):") is None


def test_a_run_is_measured_from_outside_and_a_failure_keeps_its_log(tmp_path):
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('x: 100%|#| {steps}/{steps} [00:01<00:00]')"
    loop = pb.Loop("burner", "kohya", "attention", [sys.executable, "-c", burn], {"OMP_NUM_THREADS": "1"}, tmp_path)
    result = pb.run_once(loop, 7, tmp_path, tmp_path / "burn.log")
    assert result.cpu_s >= 0.3 and result.wall_s >= result.cpu_s * 0.5 and result.steps_seen == 7
    assert result.peak_rss > 1_000_000
    failing = pb.Loop("broken", "kohya", "attention", [sys.executable, "-c", "raise SystemExit('no model here')"],
                      {}, tmp_path)
    with pytest.raises(RuntimeError, match="(?s)broken exited with 1 .*no model here"):
        pb.run_once(failing, 1, tmp_path, tmp_path / "broken.log")


def test_the_report_shows_commands_steady_figures_and_the_targets(tmp_path):
    config = peer_config()
    diffusers, _, model = fake_repos(tmp_path)
    ours = pb.LoopResult(pb.ours_loop(config, "tiny-demo", model, tmp_path, tmp_path, "attention"))
    theirs = pb.LoopResult(pb.diffusers_loop(config, diffusers, model, tmp_path, tmp_path))
    ours.runs = [(pb.RunResult(10, 5.0, 8.0, 2**30, 10), pb.RunResult(60, 7.0, 11.0, 2**30, 60))]  # 0.04 s/step
    theirs.runs = [(pb.RunResult(10, 8.0, 9.0, 2**30, 10), pb.RunResult(60, 12.0, 14.0, 2**30, 60))]  # 0.08 s/step
    kohya = pb.LoopResult(pb.Loop("kohya train_network.py", "kohya", "attention+ff", ["x"], {}, tmp_path),
                          error="kohya train_network.py exited with 1 (log):\nImportError: einops")
    text = pb.format_peers_bench([ours, theirs, kohya], config, "small", (10, 60), 1, 16)
    assert "batch 2, rank 4 (alpha 4.0), fp32" in text and "(CPU of a 60-step run − CPU of a 10-step run) / 50" in text
    assert "--rank 4" in text and "--max_train_steps N" in text and "--set train.max_steps=N" in text
    assert "0.0400" in text and "25.00" in text and "0.0800" in text
    assert "ours vs diffusers: 2.00× less CPU per steady step (target ≥ 1.5×: reached)" in text
    assert "ours vs kohya" not in text and "ImportError: einops" in text


def test_train_compile_compiles_the_training_forward_only(tmp_path, monkeypatch):
    compiled = []

    def record(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", record)
    base = ["sample.every_steps=0", "save.every_steps=0", "optim.warmup_steps=0", "train.batch_size=2",
            "train.max_steps=2", "model.base=tiny-sd15"]
    config = load_config("tiny-demo", base + ["train.compile=true"])
    run = RunFolder.create(tmp_path, "compiled", config)
    assert run_training(config, run) == "finished"
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "UNet2DConditionModel"
    plain = load_config("tiny-demo", base)
    assert not plain.train.compile
    assert run_training(plain, RunFolder.create(tmp_path, "plain", plain)) == "finished" and len(compiled) == 1
