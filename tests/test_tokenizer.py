"""The offline CLIP tokenizer gives the ids of OpenAI CLIP / Stable Diffusion."""

from __future__ import annotations

import json

import pytest

from studio.core import tokenizer as tokenizer_module
from studio.core.tokenizer import clip_tokenizer, tokenizer_dir


@pytest.fixture(scope="module", autouse=True)
def _offline_env(tmp_path_factory):
    """A private cache and no Hub access."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_STUDIO_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        clip_tokenizer.cache_clear()
        yield
        clip_tokenizer.cache_clear()


def test_known_ids():
    ids = clip_tokenizer()("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_vocabulary_size_and_special_tokens():
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407
    vocab = json.loads((tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    merges = (tokenizer_dir() / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894


def test_padding_sd15_with_eos_and_sdxl_second_with_bang():
    sd15 = clip_tokenizer()("a cat", padding="max_length", max_length=77).input_ids
    sdxl2 = clip_tokenizer(pad_token="!")("a cat", padding="max_length", max_length=77).input_ids
    assert len(sd15) == len(sdxl2) == 77
    assert sd15[:4] == sdxl2[:4] == [49406, 320, 2368, 49407]
    assert set(sd15[4:]) == {49407}
    assert set(sdxl2[4:]) == {0}  # "!" is token 0
    assert clip_tokenizer(pad_token="!").pad_token == "!"


def test_long_prompt_truncates_to_77():
    ids = clip_tokenizer()(" ".join(["cat"] * 100), truncation=True, max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_files_are_written_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path))
    folder = tokenizer_dir()
    assert folder.parent == tmp_path
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    assert tokenizer_module.write_tokenizer_files(tmp_path / "again") == tmp_path / "again"
    assert (tmp_path / "again" / "vocab.json").read_bytes() == (folder / "vocab.json").read_bytes()
