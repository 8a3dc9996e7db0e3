"""Continue and extend: `resume --max-steps N` equals one N-step run bit for bit (the LR schedule rule
included), and `lora.init_from` starts a new run from a run, a checkpoint, or a webui / diffusers file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from studio.config import load_config
from studio.engine.checkpoints import load_checkpoint
from studio.engine.control import Control
from studio.engine.events import Log
from studio.engine.lora_init import InitFromError
from studio.engine.prepare import prepare_new_run
from studio.engine.runs import RunFolder
from studio.engine.runstate import NotResumable, extend_config, prepare_resume
from studio.engine.schedule import LRSchedule
from studio.engine.train import Trainer, run_training

BASE = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=2", "lora.targets=attention", "train.batch_size=2",
        "sample.every_steps=0", "sample.inference_steps=2", "save.every_steps=3", "save.keep_last=10"]


def tiny(*overrides: str):
    return load_config("tiny-demo", BASE + list(overrides))


def train(outputs, name, config):
    run = RunFolder.create(outputs, name, config)
    assert run_training(config, run) == "finished"
    return run


def extend(run: RunFolder, max_steps: int) -> str:
    """What `resume RUN --max-steps N` does (the CLI and the studio share prepare_resume)."""
    config, notices = prepare_resume(run, max_steps)
    assert notices and f"extended to {max_steps} steps" in notices[0]
    return run_training(config, run, resume=True)


def final_weights(run: RunFolder, step: int) -> dict[str, torch.Tensor]:
    weights, _, info = load_checkpoint(run.latest_checkpoint())
    assert info["step"] == step
    return weights.flat()


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:2]}"
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k), "the LoRA never trained"


# dropout, flips, caption dropout and accumulation: every source of randomness a resume must restore;
# the short run's final samples must not disturb the global RNG either
RANDOM = ["lora.dropout=0.1", "data.flip=true", "data.caption_dropout=0.2", "train.grad_accumulation=2"]


def test_extending_a_finished_run_equals_one_long_run_bit_for_bit(tmp_path):
    settings = RANDOM + ["optim.scheduler=constant", "optim.warmup_steps=4"]
    short = train(tmp_path, "short", tiny("train.max_steps=6", *settings))
    with pytest.raises(NotResumable, match="nothing to resume: it finished all 6 steps: to train more, extend it"):
        prepare_resume(short)
    assert extend(short, 12) == "finished"
    straight = train(tmp_path, "straight", tiny("train.max_steps=12", *settings))

    assert_identical(final_weights(short, 12), final_weights(straight, 12))
    assert [r["step"] for r in short.read_metrics()] == list(range(1, 13))
    assert short.config().train.max_steps == 12 and short.config().optim.horizons == []
    assert short.read_status()["status"] == "finished" and short.state().last_step == 12


def test_a_cosine_run_extended_keeps_its_rates_and_its_config_retrains_it_exactly(tmp_path):
    short = train(tmp_path, "cos", tiny("train.max_steps=6", "optim.scheduler=cosine", "optim.warmup_steps=2"))
    assert extend(short, 12) == "finished"
    config = short.config()
    assert config.optim.horizons == [(6, 6)]  # steps before 6 were trained as a 6-step run

    # the learning rates actually used: the 6-step cosine, then the 12-step one from step 6 on
    rates = [r["lr"] for r in short.read_metrics()]
    six, twelve = LRSchedule(config.optim.model_copy(update={"horizons": []}), 6), LRSchedule(config.optim, 12)
    plain_twelve = LRSchedule(config.optim.model_copy(update={"horizons": []}), 12)
    lr = config.optim.learning_rate
    assert rates[:6] == pytest.approx([lr * six.factor_at(s) for s in range(6)])
    assert rates[6:] == pytest.approx([lr * plain_twelve.factor_at(s) for s in range(6, 12)])
    assert rates == pytest.approx([lr * twelve.factor_at(s) for s in range(12)])

    # the extended run's config.yaml, trained from scratch in one go, gives the very same weights
    again = train(tmp_path, "again", config)
    assert_identical(final_weights(short, 12), final_weights(again, 12))


def test_extension_rules_for_stopped_runs_and_bad_lengths(tmp_path):
    config = tiny("train.max_steps=10", "optim.scheduler=linear")
    stopped_at_4 = extend_config(config, 30, 4)
    assert stopped_at_4.optim.horizons == [(4, 10)] and stopped_at_4.train.max_steps == 30
    schedule = LRSchedule(stopped_at_4.optim, 30)
    assert schedule.horizon(3) == 10 and schedule.horizon(4) == 30
    twice = extend_config(stopped_at_4, 50, 30)
    assert twice.optim.horizons == [(4, 10), (30, 30)]
    constant = tiny("train.max_steps=10", "optim.scheduler=constant")
    assert extend_config(constant, 20, 10).optim.horizons == []  # nothing to record

    run = train(tmp_path, "r", tiny("train.max_steps=6"))
    with pytest.raises(NotResumable, match="--max-steps 6 must be more than the step of its latest checkpoint"):
        prepare_resume(run, 6)


# --- lora.init_from ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run of rank 4, alpha 2 on attention + feed-forward layers."""
    outputs = tmp_path_factory.mktemp("init-from")
    return train(outputs, "source", tiny("train.max_steps=6", "lora.targets=attention+ff"))


def start_from(outputs, name, init_from, *overrides):
    """A new run from `init_from` set up (not trained): its trainer, notices and run folder."""
    config, notices = prepare_new_run(tiny("train.max_steps=4", "lora.rank=8", "lora.alpha=8",
                                           f"lora.init_from={init_from}", *overrides), outputs_dir=outputs)
    run = RunFolder.create(outputs, name, config)
    events = []
    trainer = Trainer(config, run, Control(), events.append, None)
    trainer.setup(resume=False)
    return trainer, [e.message for e in events if isinstance(e, Log) and e.notice], run


def test_a_run_starts_from_another_runs_latest_checkpoint_and_adopts_its_shape(source):
    outputs = source.path.parent
    trainer, notices, run = start_from(outputs, "from-run", "source")
    checkpoint = source.latest_checkpoint()
    assert_identical(trainer.lora_weights().flat(), load_checkpoint(checkpoint)[0].flat())
    assert any("lora.rank is 4" in n and "the config said 8" in n for n in notices)
    assert any("lora.alpha is 2.0" in n for n in notices) and any("lora.targets is attention+ff" in n for n in notices)
    saved = run.config()
    assert (saved.lora.rank, saved.lora.alpha, saved.lora.targets) == (4, 2.0, "attention+ff")
    assert saved.lora.init_from == str(checkpoint.path.resolve())  # config.yaml records the source, absolute

    older, _, _ = start_from(outputs, "from-step", "source@3")
    assert_identical(older.lora_weights().flat(), load_checkpoint(source.checkpoints()[0])[0].flat())
    with pytest.raises(InitFromError, match="no checkpoint at step 5 .available: 3, 6."):
        start_from(outputs, "nope", "source@5")


def test_a_run_starts_from_a_webui_file(source):
    trainer, notices, _ = start_from(source.path.parent, "from-webui", source.final_lora)
    webui = load_file(str(source.final_lora))  # fp16, kohya names
    ours = trainer.lora_weights().parts["unet"]
    expected = load_checkpoint(source.latest_checkpoint())[0].parts["unet"]
    assert ours.keys() == expected.keys() and len(webui) == 3 * len(expected) // 2
    for key, value in expected.items():
        assert torch.equal(ours[key], value.half().float()), key
    assert any("lora.rank is 4" in n for n in notices)


def test_a_run_starts_from_a_diffusers_file(source, tmp_path):
    from diffusers import StableDiffusionPipeline

    from studio.engine.lora import lora_config, unet_targets

    weights = load_checkpoint(source.latest_checkpoint())[0]
    meta = lora_config(source.config().lora, unet_targets("attention+ff")).to_dict()
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
    StableDiffusionPipeline.save_lora_weights(str(tmp_path), unet_lora_layers=weights.parts["unet"],
                                              unet_lora_adapter_metadata=meta, safe_serialization=True)
    trainer, notices, _ = start_from(source.path.parent, "from-diffusers", tmp_path / "pytorch_lora_weights.safetensors")
    assert_identical(trainer.lora_weights().flat(), weights.flat())
    assert any("lora.alpha is 2.0" in n for n in notices)  # alpha from the adapter metadata, not the rank


def test_a_lora_for_another_model_is_refused_with_the_layers_it_lacks(source, tmp_path):
    bogus = tmp_path / "other.safetensors"
    save_file({"lora_unet_foo_bar.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_foo_bar.lora_up.weight": torch.zeros(8, 4), "lora_unet_foo_bar.alpha": torch.tensor(4.0)},
              str(bogus))
    with pytest.raises(InitFromError, match="has 1 layers this sd15 model does not have .e.g. lora_unet_foo_bar"):
        start_from(source.path.parent, "bogus", bogus)
    with pytest.raises(InitFromError, match="neither a run"):
        prepare_new_run(tiny("lora.init_from=no-such-thing"), outputs_dir=source.path.parent)
