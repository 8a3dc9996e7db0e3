"""On the toy world a short demo LoRA teaches toy-sd15 the robot: toy-clip's CLIP-I rises over prompt only."""

import pytest

from studio.config import load_config
from studio.engine.runs import RunFolder
from studio.engine.train import run_training
from studio.eval.backbones import DINO_NONE, TOY_CLIP
from studio.eval.grids import grid_spec, make_grid, plan_columns
from studio.eval.pipelines import PipelineCache
from studio.eval.scoring import score_grid

SHORT = ["train.max_steps=150", "sample.every_steps=0", "save.every_steps=0"]
"""The shipped tiny-demo settings, stopped early: enough for the robot to start showing."""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    config = load_config("tiny-demo", SHORT)
    run = RunFolder.create(tmp_path_factory.mktemp("outputs"), "demo", config)
    assert run_training(config, run) == "finished"
    return run


def test_the_demo_lora_raises_clip_i_over_prompt_only(demo_run):
    spec = grid_spec(demo_run, ["a photo of {trigger} toy robot on a blue background"], [1],
                     plan_columns(demo_run, "final"))
    grid = make_grid(demo_run, spec, cache=PipelineCache(), name="check")
    scores = score_grid(demo_run, grid.name, clip=TOY_CLIP, dino=DINO_NONE)
    prompt_only, lora = scores["columns"]
    assert prompt_only["step"] is None and lora["step"] == 150
    assert lora["clip_i"] - prompt_only["clip_i"] > 0.05, scores["columns"]
    assert scores["recommendation"]["step"] == 150
