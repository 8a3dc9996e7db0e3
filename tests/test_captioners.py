"""Auto-captioning: template captions, BLIP and Florence-2 through their real code path on tiny
random-weights models, all-or-nothing writes, offline errors, and the accelerator lock."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import studio.data.captioners as captioners
from studio.data.captioners import (
    TINY_RANDOM,
    CaptionerError,
    CaptionOptions,
    caption_dataset,
)
from studio.core.lock import ACCELERATOR, AcceleratorBusy
from studio.data.captioners.blip import BlipCaptioner, clean_blip_caption
from studio.data.captioners.florence2 import clean_florence2_caption
from studio.data.captioners.template import template_caption
from studio.data.captioners.text import collapse_repeats, with_trigger
from studio.data.captioners.tiny import tiny_captioner_dir

MODEL_CAPTIONERS = ["blip", "florence2"]


def make_dataset(folder: Path) -> Path:
    """Four small PNGs (one already captioned) and a .jpg that is really text."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.new("RGB", (64, 48), (60 * i, 120, 200 - 40 * i)).save(folder / f"img{i}.png")
    (folder / "img0.txt").write_text("a hand-written caption\n", encoding="utf-8")
    (folder / "broken.jpg").write_text("this is not a picture", encoding="utf-8")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def models_dir(tmp_path) -> Path:
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


# ---------------------------------------------------------------- template


def test_template_joins_the_non_empty_parts():
    full = CaptionOptions(trigger="aldar_kose_character", class_phrase="a man", description="wearing a striped robe")
    assert template_caption(full) == "aldar_kose_character, a man, wearing a striped robe"
    assert template_caption(CaptionOptions(trigger=" ohwx ", class_phrase="toy  robot")) == "ohwx, toy robot"
    assert template_caption(CaptionOptions(class_phrase="toy robot", description="")) == "toy robot"
    assert template_caption(CaptionOptions(trigger="ohwx")) == "ohwx"
    with pytest.raises(CaptionerError, match="needs a trigger word or a class phrase"):
        template_caption(CaptionOptions(description="wearing a hat"))


def test_template_fills_only_missing_captions(dataset):
    before = (dataset / "img0.txt").read_bytes()
    calls = []
    result = caption_dataset(dataset, "template", CaptionOptions(trigger="ohwx", class_phrase="toy robot"),
                             progress=lambda done, total: calls.append((done, total)))
    assert {p.name: text for p, text in result.captions.items()} == {
        "img1.png": "ohwx, toy robot", "img2.png": "ohwx, toy robot", "img3.png": "ohwx, toy robot"}
    assert result.kept == 1 and result.model == "template" and not result.random_weights
    assert [rel for rel, _ in result.skipped] == ["broken.jpg"] and "not an image" in result.skipped[0][1]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in result.written) == ["img1.txt", "img2.txt", "img3.txt"]
    assert (dataset / "img0.txt").read_bytes() == before
    assert (dataset / "img2.txt").read_text(encoding="utf-8") == "ohwx, toy robot\n"
    assert not (dataset / "broken.txt").exists()


def test_template_overwrite_replaces_every_caption(dataset):
    result = caption_dataset(dataset, "template", CaptionOptions(trigger="ohwx", class_phrase="toy robot",
                                                                overwrite=True))
    assert len(result.captions) == 4 and result.kept == 0
    assert all((dataset / f"img{i}.txt").read_text(encoding="utf-8") == "ohwx, toy robot\n" for i in range(4))


def test_write_false_returns_captions_and_touches_nothing(dataset):
    before = snapshot(dataset)
    result = caption_dataset(dataset, "template", CaptionOptions(trigger="ohwx", overwrite=True), write=False)
    assert len(result.captions) == 4 and result.written == []
    assert snapshot(dataset) == before


def test_existing_captions_from_the_editor_decide_what_is_missing(dataset):
    # the Dataset tab passes its unsaved edits: img0's caption was cleared, img1 got one
    existing = {dataset / "img0.png": "", dataset / "img1.png": "ohwx, edited by hand", dataset / "img2.png": "  "}
    result = caption_dataset(dataset, "template", CaptionOptions(trigger="ohwx"), write=False, existing=existing)
    assert sorted(p.name for p in result.captions) == ["img0.png", "img2.png", "img3.png"]
    assert result.kept == 1


def test_template_needs_no_accelerator(dataset):
    ACCELERATOR.acquire("training")
    try:
        result = caption_dataset(dataset, "template", CaptionOptions(trigger="ohwx"), write=False)
    finally:
        ACCELERATOR.release()
    assert len(result.captions) == 3


@pytest.mark.parametrize("captioner, options, message", [
    ("clip", CaptionOptions(trigger="ohwx"), "unknown captioner 'clip': choose one of template, blip, florence2"),
    ("template", CaptionOptions(), "needs a trigger word or a class phrase"),
    ("blip", CaptionOptions(max_length=0), "max length must be between 1 and 512"),
])
def test_bad_requests_are_refused_before_anything_runs(dataset, captioner, options, message):
    before = snapshot(dataset)
    with pytest.raises(CaptionerError, match=message):
        caption_dataset(dataset, captioner, options)
    assert snapshot(dataset) == before


def test_folders_that_are_not_datasets(tmp_path):
    with pytest.raises(CaptionerError, match="no-such-folder"):
        caption_dataset(tmp_path / "no-such-folder", "template", CaptionOptions(trigger="ohwx"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptionerError, match="no images found"):
        caption_dataset(tmp_path / "empty", "template", CaptionOptions(trigger="ohwx"))
    with pytest.raises(CaptionerError, match="copy it into the datasets folder"):
        caption_dataset(Path("builtin:demo"), "template", CaptionOptions(trigger="ohwx"))


# ---------------------------------------------------------------- model captioners on tiny-random


@pytest.mark.parametrize("captioner", MODEL_CAPTIONERS)
def test_tiny_random_captions_end_to_end(dataset, captioner):
    calls = []
    result = caption_dataset(dataset, captioner, CaptionOptions(trigger="ohwx", model=TINY_RANDOM, max_length=8),
                             progress=lambda done, total: calls.append((done, total)))
    assert sorted(p.name for p in result.captions) == ["img1.png", "img2.png", "img3.png"]
    for text in result.captions.values():
        assert isinstance(text, str) and text.startswith("ohwx, ") and len(text) > len("ohwx, ")
    assert result.model == TINY_RANDOM and result.random_weights and result.kept == 1
    assert [rel for rel, _ in result.skipped] == ["broken.jpg"]
    assert calls[-1] == (3, 3)
    for image, text in result.captions.items():
        assert image.with_suffix(".txt").read_text(encoding="utf-8") == text + "\n"
    assert (dataset / "img0.txt").read_text(encoding="utf-8") == "a hand-written caption\n"
    assert ACCELERATOR.holder is None


def test_tiny_random_models_are_the_real_classes():
    from transformers import AutoProcessor

    blip = AutoProcessor.from_pretrained(tiny_captioner_dir("blip"), local_files_only=True)
    florence = AutoProcessor.from_pretrained(tiny_captioner_dir("florence2"), local_files_only=True)
    assert type(blip).__name__ == "BlipProcessor" and type(blip.tokenizer).__name__ == "BertTokenizer"
    assert type(florence).__name__ == "Florence2Processor" and florence.image_token == "<image>"
    # common caption words are whole tokens of the tiny vocabularies, not letter soup
    assert blip.tokenizer.tokenize("a robot on the table") == ["a", "robot", "on", "the", "table"]
    assert len(florence.tokenizer.tokenize("a robot on the table")) == 5
    for name in ("blip", "florence2"):
        folder = tiny_captioner_dir(name)
        assert (folder / "model.safetensors").is_file()
        assert json.loads((folder / "config.json").read_text())["model_type"] == name


@pytest.mark.parametrize("captioner", MODEL_CAPTIONERS)
def test_max_length_caps_the_caption(dataset, captioner):
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_captioner_dir(captioner), local_files_only=True).tokenizer

    def lengths(max_length):
        options = CaptionOptions(model=TINY_RANDOM, max_length=max_length, overwrite=True)
        result = caption_dataset(dataset, captioner, options, write=False)
        return [len(tokenizer(text, add_special_tokens=False).input_ids) for text in result.captions.values()]

    assert max(lengths(3)) <= 3
    assert max(lengths(16)) > 3  # the short cap was binding: untouched, the model goes on


@pytest.mark.parametrize("captioner, default", [
    ("blip", "'Salesforce/blip-image-captioning-base'"),
    ("florence2", "'florence-community/Florence-2-base'"),
])
def test_offline_default_model_names_it_and_writes_nothing(dataset, models_dir, captioner, default):
    before = snapshot(dataset)
    with pytest.raises(CaptionerError) as caught:
        caption_dataset(dataset, captioner, CaptionOptions(trigger="ohwx"), models_dir=models_dir)
    message = str(caught.value)
    assert default in message and "can't be reached (offline)" in message
    folder = {"blip": "blip-base", "florence2": "florence2-base"}[captioner]
    assert str(models_dir / "captioners" / folder) in message and f"--model {folder}" in message
    assert "Run once with internet access" in message
    assert snapshot(dataset) == before
    assert ACCELERATOR.holder is None


def test_offline_other_hub_id_is_named(dataset, models_dir):
    with pytest.raises(CaptionerError, match="'someone/blip-finetuned' are not on this machine"):
        caption_dataset(dataset, "blip", CaptionOptions(model="someone/blip-finetuned"), models_dir=models_dir)


def test_a_failure_mid_way_leaves_every_caption_file_unchanged(dataset, monkeypatch):
    original = BlipCaptioner.caption
    seen = []

    def fail_on_third_image(self, images, max_new_tokens):
        seen.extend(images)
        if len(seen) == 3:
            raise RuntimeError("the model fell over")
        return original(self, images, max_new_tokens)

    monkeypatch.setattr(captioners, "BATCH_SIZE", 1)
    monkeypatch.setattr(BlipCaptioner, "caption", fail_on_third_image)
    before = snapshot(dataset)
    with pytest.raises(RuntimeError, match="fell over"):
        caption_dataset(dataset, "blip", CaptionOptions(trigger="ohwx", model=TINY_RANDOM, overwrite=True,
                                                        max_length=4))
    assert len(seen) == 3  # two images were captioned before the failure, and nothing was written
    assert snapshot(dataset) == before
    assert ACCELERATOR.holder is None


@pytest.mark.parametrize("captioner", MODEL_CAPTIONERS)
def test_busy_accelerator_is_refused(dataset, captioner):
    before = snapshot(dataset)
    ACCELERATOR.acquire("training")
    try:
        with pytest.raises(AcceleratorBusy, match="busy with training"):
            caption_dataset(dataset, captioner, CaptionOptions(trigger="ohwx", model=TINY_RANDOM))
    finally:
        ACCELERATOR.release()
    assert snapshot(dataset) == before


def test_nothing_to_caption_loads_no_model(dataset, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no model should load when every image has a caption")

    monkeypatch.setattr(BlipCaptioner, "__init__", refuse)
    existing = {dataset / f"img{i}.png": "done" for i in range(4)}
    result = caption_dataset(dataset, "blip", CaptionOptions(model=TINY_RANDOM), existing=existing)
    assert result.captions == {} and result.kept == 4 and result.written == []


# ---------------------------------------------------------------- model folders


def test_model_folder_under_models_captioners(dataset, models_dir):
    shutil.copytree(tiny_captioner_dir("blip"), models_dir / "captioners" / "my-blip")
    result = caption_dataset(dataset, "blip", CaptionOptions(trigger="ohwx", model="my-blip", max_length=4),
                             models_dir=models_dir, write=False)
    assert result.model == str(models_dir / "captioners" / "my-blip") and not result.random_weights
    assert len(result.captions) == 3
    with pytest.raises(CaptionerError, match="is a blip model, not a Florence-2 model: use the blip captioner"):
        caption_dataset(dataset, "florence2", CaptionOptions(model="my-blip"), models_dir=models_dir)


def test_model_folders_that_cannot_be_used(dataset, models_dir, tmp_path):
    pickled = models_dir / "captioners" / "old-blip"
    pickled.mkdir(parents=True)
    (pickled / "config.json").write_text(json.dumps({"model_type": "blip"}))
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CaptionerError, match=r"only pickle weights \(pytorch_model.bin\)"):
        caption_dataset(dataset, "blip", CaptionOptions(model="old-blip"), models_dir=models_dir)
    with pytest.raises(CaptionerError, match="'nope' was not found.*Folders in .*: old-blip; built in: tiny-random"):
        caption_dataset(dataset, "blip", CaptionOptions(model="nope"), models_dir=models_dir)
    outside = tmp_path / "outside"
    shutil.copytree(tiny_captioner_dir("blip"), outside)
    with pytest.raises(CaptionerError, match="'../../outside' was not found"):  # relative names stay in models/
        caption_dataset(dataset, "blip", CaptionOptions(model="../../outside"), models_dir=models_dir)
    with pytest.raises(CaptionerError, match="does not exist"):
        caption_dataset(dataset, "blip", CaptionOptions(model=str(tmp_path / "gone")), models_dir=models_dir)


# ---------------------------------------------------------------- caption clean-up


@pytest.mark.parametrize("raw, clean", [
    ("a picture of arafed man sitting on a a bench", "man sitting on a bench"),
    ("a picture of araffe woman with a dog", "woman with a dog"),
    ("a picture of there is a dog on on the grass the grass", "a dog on the grass"),
    ("a picture of a red robot standing on a table", "a red robot standing on a table"),
])
def test_blip_artefacts_are_cleaned(raw, clean):
    assert clean_blip_caption(raw) == clean


@pytest.mark.parametrize("raw, clean", [
    ("The image shows a toy robot standing on a wooden table.", "a toy robot standing on a wooden table."),
    ("In this image we can see a dog dog on the grass.", "a dog on the grass."),
    ("A robot with\x02 orange arms.\ufffd", "A robot with orange arms."),
])
def test_florence2_openings_are_cleaned(raw, clean):
    assert clean_florence2_caption(raw) == clean


def test_trigger_prefix_and_repeats():
    assert with_trigger("A robot on a table", "ohwx") == "ohwx, a robot on a table"
    assert with_trigger("NASA rocket on a pad", "ohwx") == "ohwx, NASA rocket on a pad"
    assert with_trigger("a robot", "") == "a robot" and with_trigger("", "ohwx") == "ohwx"
    assert collapse_repeats("with a hat with a hat in the in the sun") == "with a hat in the sun"
