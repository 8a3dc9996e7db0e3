"""The proof of a LoRA file is a load: a fresh diffusers pipeline + `load_lora_weights(file)` must give
the in-process LoRA's image at a fixed seed — for both families, with text-encoder LoRA, alpha ≠ rank."""

import numpy as np
import pytest
from safetensors import safe_open

from studio.cli import main
from studio.config import load_config
from studio.engine.control import Control
from studio.engine.export import export_run
from studio.engine.models import load_pipeline
from studio.engine.runs import RunFolder
from studio.engine.sampling import generate
from studio.engine.train import Trainer


def _image(pipe) -> np.ndarray:
    image = generate(pipe, "a photo of ohwx toy robot", 7, steps=3, guidance=5.0, width=64, height=64)
    return np.asarray(image, dtype=np.float32)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained(request, tmp_path_factory):
    family = request.param
    config = load_config("tiny-demo", [
        f"model.family={family}", f"model.base=tiny-{family}", "train.max_steps=12", "optim.warmup_steps=0",
        "lora.rank=4", "lora.alpha=8", "lora.train_text_encoder=true", "lora.targets=attention+ff",
        "optim.learning_rate=5e-3", "sample.every_steps=0", "save.every_steps=0", "save.dtype=fp32"])
    run = RunFolder.create(tmp_path_factory.mktemp(family), f"export-{family}", config)
    trainer = Trainer(config, run, Control(), lambda e: None, None)
    trainer.setup(resume=False)
    trainer.fit()
    return family, run, _image(trainer.pipe)


def test_webui_file_loads_in_a_fresh_pipeline_with_the_same_image(trained):
    family, run, in_process = trained
    with safe_open(str(run.final_lora), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        alphas = {f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert alphas == {8.0}, "alpha must be the trained alpha, not the rank"
    te = ("lora_te_",) if family == "sd15" else ("lora_te1_", "lora_te2_")
    for prefix in te:
        assert any(k.startswith(prefix + "text_model_encoder_layers_") for k in keys)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "8.0"
    assert meta["modelspec.trigger_phrase"] == run.config().data.trigger_word

    fresh = load_pipeline(f"tiny-{family}", family=family)
    base = _image(fresh)
    fresh.load_lora_weights(str(run.final_lora))
    loaded = _image(fresh)
    assert np.abs(base - in_process).max() > 1.0, "the LoRA changed nothing: the test would prove nothing"
    assert np.abs(loaded - in_process).max() <= 1.0, "webui file does not reproduce the in-process image"


def test_diffusers_export_keeps_alpha_and_reproduces_the_image(trained):
    family, run, in_process = trained
    path = export_run(run, "diffusers")
    assert path.name == "pytorch_lora_weights.safetensors"
    fresh = load_pipeline(f"tiny-{family}", family=family)
    fresh.load_lora_weights(str(path.parent))
    assert np.abs(_image(fresh) - in_process).max() <= 1.0


def test_export_cli_writes_webui_file_with_sidecar(trained, tmp_path, capsys):
    family, run, _ = trained
    out = tmp_path / "mine.safetensors"
    assert main(["--outputs", str(run.path.parent), "export", run.name, "--format", "webui", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file() and out.with_suffix(".json").is_file()
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["ss_steps"] == "12"
    assert main(["--outputs", str(run.path.parent), "export", run.name, "--step", "999"]) == 1
    assert "no checkpoint at step 999 (available: 12)" in capsys.readouterr().err
