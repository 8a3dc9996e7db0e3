"""Run config: defaults, presets, overrides, and the messages users see when they get it wrong."""

import pytest
import yaml

from studio.config import (ConfigError, RunConfig, all_keys, build_config, field_help, list_presets, load_config,
                           load_run_config, parse_override)

CONTRACT_KEYS = [
    "model.family", "model.base", "data.dir", "data.resolution", "data.trigger_word", "lora.rank", "lora.alpha",
    "lora.dropout", "lora.train_text_encoder", "optim.learning_rate", "optim.scheduler", "optim.warmup_steps",
    "train.max_steps", "train.batch_size", "train.grad_accumulation", "train.seed", "train.precision",
    "train.gradient_checkpointing", "train.cache_latents", "train.cache_text_embeddings", "sample.prompts",
    "sample.every_steps", "save.every_steps", "save.keep_last",
]


def test_contract_keys_exist_and_every_field_has_help():
    keys = all_keys()
    for key in CONTRACT_KEYS:
        assert key in keys
    for key in keys:
        assert len(field_help(key)) > 15, f"{key} has no docstring"


def test_builtin_presets_are_listed_with_descriptions():
    presets = list_presets()
    assert set(presets) >= {"tiny-demo", "sd15-product-photo", "sdxl-character"}
    assert all(presets[name] for name in presets)


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_every_preset_loads_and_round_trips(name, tmp_path):
    config = load_config(name)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_run_config(path) == config


def test_preset_values_from_the_seeds():
    p = load_config("sd15-product-photo")
    assert (p.data.resolution, p.train.batch_size, p.train.grad_accumulation, p.train.max_steps) == (512, 2, 8, 3000)
    assert (p.lora.rank, p.lora.alpha, p.optim.learning_rate, p.train.seed) == (8, 16, 1e-4, 42)
    assert (p.sample.every_steps, p.save.every_steps, p.save.keep_last, p.save.keep_every_steps) == (500, 500, 2, 1000)
    assert p.train.gradient_checkpointing and p.optim.warmup_steps > 0
    c = load_config("sdxl-character")
    assert (c.model.family, c.data.resolution, c.train.batch_size, c.lora.rank, c.lora.alpha) == ("sdxl", 1024, 1, 16, 16)
    assert c.lora.dropout == 0.1 and c.data.trigger_word and c.data.flip
    assert c.data.color_jitter > 0 and c.data.rotation == 5
    assert c.save.every_epochs == 1 and c.save.keep_every_epochs == 20 and c.optim.scheduler == "plateau"
    t = load_config("tiny-demo")
    assert t.model.base == "toy-sd15" and t.data.dir == "builtin:demo"
    # device differences come from precision: auto, never from a duplicated preset
    assert {load_config(n).train.precision for n in list_presets()} == {"auto"}


def test_layering_defaults_preset_overrides():
    assert RunConfig().lora.rank == 8
    assert load_config("tiny-demo").optim.learning_rate == 3e-3 != RunConfig().optim.learning_rate
    config = load_config("tiny-demo", ["lora.rank=16", "sample.seeds=[3, 4]", "data.trigger_word=sks",
                                       "optim.text_encoder_lr=null"])
    assert config.lora.rank == 16 and config.sample.seeds == [3, 4] and config.data.trigger_word == "sks"
    assert config.optim.text_encoder_lr is None
    assert config.with_overrides({"train.max_steps": 70}).train.max_steps == 70


def test_override_parsing():
    assert load_config(None, ["optim.learning_rate=2e-4"]).optim.learning_rate == 2e-4
    assert parse_override("data.trigger_word=1990s") == ("data.trigger_word", "1990s")
    assert parse_override("model.vae=") == ("model.vae", None)
    assert parse_override("train.gradient_checkpointing=true") == ("train.gradient_checkpointing", True)
    assert parse_override("data.trigger_word=") == ("data.trigger_word", "")
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("lora.rank")


@pytest.mark.parametrize("override, expected", [
    ("lora.rnak=4", "`lora.rnak` is not a key of `lora`. Did you mean `lora.rank`?"),
    ("trian.seed=1", "`trian.seed` is not a section. Did you mean `train`? Allowed: model, data"),
    ("train.precision=fp8", "'auto', 'fp32', 'fp16' or 'bf16'"),
    ("lora.rank=0", "`lora.rank`: Input should be greater than or equal to 1"),
    ("data.resolution=100", "data.resolution must be a multiple of 8"),
    ("lora.alpha=-1", "lora.alpha must be > 0"),
    ("model.base=tiny-sdxl", "set model.family to `sdxl`"),
    ("save.keep_every_epochs=5", "save.every_epochs is 0"),
    ("optim.horizons=[[9, 5]]", "optim.horizons must be [[until_step, max_steps], …]"),
    ("optim.learning_rate=nan", "`optim.learning_rate` must be a finite number, e.g. 0.0001 (got 'nan'"),
    ("optim.learning_rate=inf", "`optim.learning_rate` must be a finite number"),
    ("lora.alpha=nan", "`lora.alpha` must be a finite number, e.g. 8 (got 'nan'"),
])
def test_bad_values_name_the_key_and_the_allowed_values(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config("tiny-demo", [override])
    assert expected in str(err.value)


def test_sdxl_bucket_resolution_must_fit_the_bucket_step():
    with pytest.raises(ConfigError, match="multiple of data.bucket_step"):
        load_config("sdxl-character", ["data.resolution=1000"])
    assert load_config("sdxl-character", ["data.resolution=1000", "data.buckets=false"]).data.resolution == 1000


def test_unknown_keys_in_a_preset_file_are_rejected(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"lora": {"rank": 4, "alpah": 2}}))
    with pytest.raises(ConfigError, match="lora.alpah"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="no preset `nope`"):
        load_config("nope")
    with pytest.raises(ConfigError, match="Did you mean"):
        build_config({"lora": {"rnak": 3}})


def test_a_warmup_as_long_as_the_run_is_clamped_never_refused():
    from studio.config import clamp_warmup

    config = load_config("sd15-product-photo", ["train.max_steps=100"])  # the seed's quick test
    assert config.optim.warmup_steps == 100
    clamped, notice = clamp_warmup(config)
    assert clamped.optim.warmup_steps == 10 and clamped.train.max_steps == 100
    assert notice == ("optim.warmup_steps 100 is not shorter than train.max_steps 100: clamped to 10 "
                      "(a tenth of the run)")
    assert clamp_warmup(load_config("sd15-product-photo")) == (load_config("sd15-product-photo"), None)


def test_the_run_length_is_steps_or_epochs():
    epochs = load_config("sdxl-character", ["train.max_epochs=90"])  # replaces the preset's max_steps
    assert epochs.train.max_epochs == 90
    with pytest.raises(ConfigError, match="set both train.max_steps .9. and train.max_epochs .3.: give one"):
        load_config("tiny-demo", ["train.max_epochs=3", "train.max_steps=9"])
    with pytest.raises(ConfigError, match=r"save.every_epochs \(5\) is more than train.max_epochs \(3\)"):
        load_config("tiny-demo", ["train.max_epochs=3", "save.every_epochs=5"])
    steps = load_config("tiny-demo", ["train.max_steps=9"])  # the overrides' steps replace nothing else
    assert (steps.train.max_steps, steps.train.max_epochs) == (9, None)
