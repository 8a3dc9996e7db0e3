"""The disk cache of latents and caption embeddings (engine/caches.py): a second start, a resume and an
extension encode nothing; a changed VAE, resolution, flip or augmented copy is encoded again; a torn entry
or a writer killed with SIGKILL is never read; and the bounded inputs (a 10 MB caption) stay bounded."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from studio.config import load_config
from studio.data.captions import CAPTION_MAX_CHARS, training_caption
from studio.data.dataset import scan_dataset
from studio.data.demo import demo_dataset_dir
from studio.data.lint import lint_captions
from studio.engine import caches
from studio.engine.batches import Augmentation, ImageUnreadable, prepare_examples
from studio.engine.conditioning import CALL_SIZE
from studio.engine.caches import TensorStore, cache_latents, module_identity, tensor_cache_usage
from studio.engine.events import Log
from studio.engine.lora_metadata import TAG_MAX_CHARS
from studio.engine.runs import RunFolder
from studio.engine.runstate import prepare_resume
from studio.engine.train import run_training

REPO = Path(__file__).resolve().parent.parent
BASE = ["model.base=tiny-sd15", "lora.rank=4", "lora.alpha=4", "lora.targets=attention", "train.batch_size=2",
        "train.max_steps=2", "sample.every_steps=0", "save.every_steps=2", "optim.warmup_steps=0", "data.flip=true"]
NO_AUGMENT = lambda ex: [None]  # noqa: E731


@pytest.fixture
def tensor_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "tensors"
    monkeypatch.setenv("LORA_STUDIO_TENSOR_CACHE", str(root))
    return root


@pytest.fixture
def encodes(monkeypatch) -> dict[str, int]:
    """Images through the VAE encoder and captions through the text encoders, counted at the model calls."""
    from diffusers import AutoencoderKL

    counts = {"vae_calls": 0, "images": 0, "captions": 0}
    vae_encode, text_encode = AutoencoderKL.encode, caches.encode_text

    def counting_vae(self, x, *args, **kwargs):
        counts["vae_calls"] += 1
        counts["images"] += x.shape[0]
        return vae_encode(self, x, *args, **kwargs)

    def counting_text(pipe, family, captions, device):
        counts["captions"] += len(captions)
        return text_encode(pipe, family, captions, device)

    monkeypatch.setattr(AutoencoderKL, "encode", counting_vae)
    monkeypatch.setattr(caches, "encode_text", counting_text)
    return counts


def _train(outputs: Path, name: str, data: Path, *overrides: str, events: list | None = None) -> RunFolder:
    config = load_config("tiny-demo", BASE + [f"data.dir={data}", *overrides])
    run = RunFolder.create(outputs, name, config)
    assert run_training(config, run, emit=events.append if events is not None else None) == "finished"
    return run


def _weights(run: RunFolder) -> dict[str, torch.Tensor]:
    from studio.engine.checkpoints import load_checkpoint

    return load_checkpoint(run.latest_checkpoint())[0].flat()


def test_a_second_run_a_resume_and_an_extension_encode_nothing(tmp_path, tensor_cache, encodes, capsys):
    data = shutil.copytree(demo_dataset_dir(), tmp_path / "data")
    # one pasted essay of a caption (200 kB; 10 MB behave the same, slower), also one huge comma-free "tag"
    long = "ohwx toy robot, " + "essay " * 35_000
    (data / "robot_00.txt").write_text(long, encoding="utf-8")
    scan = scan_dataset(data)
    images, captions = len(scan.items), len({training_caption(i.caption) for i in scan.items} | {""})
    events: list = []
    first = _train(tmp_path / "outputs", "first", data, events=events)
    # flips: 32 latents, in encoder calls of CALL_SIZE
    assert encodes["images"] == images * 2 and encodes["vae_calls"] == math.ceil(images * 2 / CALL_SIZE)
    assert encodes["captions"] == captions  # the distinct captions and "" (caption dropout)
    status = first.read_status()
    assert status["cache"]["latents"] == {"reused": 0, "encoded": images * 2}

    # bounded inputs: the caption trains at its first 2,000 characters, with a notice; run.json, the
    # dataset report's linter and the LoRA's ss_tag_frequency stay small
    notices = [e.message for e in events if isinstance(e, Log) and e.notice]
    assert any("1 caption longer than 2,000 characters cut" in n and "robot_00.png" in n for n in notices), notices
    assert first.status_path.stat().st_size < 20_000
    assert all(len(tag) <= TAG_MAX_CHARS for tag in status["tag_frequency"])
    report = json.loads(first.report_path.read_text())
    (over,) = [f for f in report["lint"] if f["kind"] == "over_limit"]
    assert over["files"] == ["robot_00.png"] and f"longest {len(long.strip()):,}" in over["message"]
    with safe_open(str(first.final_lora), "pt") as f:
        tags = json.loads(f.metadata()["ss_tag_frequency"])
    assert len(json.dumps(tags)) < 5_000

    # a second run on the same data and model: nothing goes through the VAE or the text encoder
    for key in encodes:
        encodes[key] = 0
    second = _train(tmp_path / "outputs", "second", data)
    assert encodes == {"vae_calls": 0, "images": 0, "captions": 0}
    assert second.read_status()["cache"]["latents"] == {"reused": images * 2, "encoded": 0}
    a, b = _weights(first), _weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a), "latents read back from disk train other weights"

    # extending the first run (resume --max-steps) reads the cache too
    config, _ = prepare_resume(first, 3)
    assert run_training(config, first, resume=True) == "finished"
    assert encodes["images"] == 0 and encodes["captions"] == 0

    # `check` reports the cache's size, and `check --clear-cache` empties it
    from studio.cli import main

    outputs = ["--outputs", str(tmp_path / "outputs")]
    main([*outputs, "check", "--json"])
    usage = json.loads(capsys.readouterr().out)["cache"]
    assert usage["entries"] == {"latents": images * 2, "text": captions} and usage["bytes"] > 0
    assert usage["folder"] == str(tensor_cache)
    main([*outputs, "check", "--clear-cache"])
    assert "Cache:      cleared" in capsys.readouterr().out
    assert tensor_cache_usage().entries == {"latents": 0, "text": 0}


@pytest.fixture(scope="module")
def small_set():
    """The tiny VAE and four demo examples at 64 px."""
    from studio.engine.models import load_vae
    from studio.engine.tiny import tiny_model_dir

    vae = load_vae(str(tiny_model_dir("tiny-sd15") / "vae"), None)
    scan = scan_dataset(demo_dataset_dir())
    scan.items = scan.items[:4]
    return vae, scan


def _examples(scan, *overrides: str):
    return prepare_examples(scan, load_config("tiny-demo", list(overrides)))


def test_a_changed_vae_resolution_flip_or_copy_is_encoded_again(tmp_path, small_set):
    vae, scan = small_set
    store = TensorStore(tmp_path, "latents")
    examples = _examples(scan)

    def encoded(vae_=vae, examples_=examples, flip=False, augmentations=NO_AUGMENT) -> tuple[int, int]:
        _, stats = cache_latents(vae_, examples_, flip=flip, augmentations=augmentations, store=store)
        return stats.reused, stats.encoded

    assert encoded() == (0, 4)
    assert encoded() == (4, 0)
    assert encoded(examples_=_examples(scan, "data.resolution=96", "data.bucket_step=32")) == (0, 4)
    assert encoded(flip=True) == (4, 4)
    jitter = Augmentation(angle=3.0, brightness=1.1, contrast=0.9, saturation=1.0)
    assert encoded(augmentations=lambda ex: [None, jitter]) == (4, 4)
    changed = copy.deepcopy(vae)
    with torch.no_grad():
        next(changed.parameters()).mul_(1.01)
    assert encoded(vae_=changed) == (0, 4)
    # the same weights loaded from another folder are the same VAE (a copied model shares the cache)
    moved = tmp_path / "copied-vae"
    vae.save_pretrained(moved, safe_serialization=True)
    from studio.engine.models import load_vae

    assert module_identity(load_vae(str(moved), None)) == module_identity(vae)


def test_a_torn_entry_and_a_temp_leftover_are_never_read(tmp_path, small_set):
    vae, scan = small_set
    store = TensorStore(tmp_path, "latents")
    examples = _examples(scan)
    reference, _ = cache_latents(vae, examples, flip=False, augmentations=NO_AUGMENT, store=store)
    key = caches.latent_entry(module_identity(vae), examples[1], False, None)
    entry = store.path(key)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a file cut short on disk
    leftover = entry.parent / f".{entry.name}.x1y2.tmp"  # what a writer killed mid-write leaves
    leftover.write_bytes(b"\0" * 100)
    os.utime(leftover, (time.time() - 2 * caches.STALE_TEMP_S,) * 2)

    latents, stats = cache_latents(vae, examples, flip=False, augmentations=NO_AUGMENT, store=store)
    assert (stats.reused, stats.encoded) == (3, 1)
    assert all(torch.equal(latents[k], reference[k]) for k in reference)
    assert store.load(key, ("latent",)) is not None and not leftover.exists()


def test_an_image_that_breaks_before_the_cache_build_fails_it_naming_the_file(tmp_path, small_set):
    vae, _ = small_set
    data = tmp_path / "data"
    data.mkdir()
    for name in ("robot_00.png", "robot_01.png"):
        shutil.copy(demo_dataset_dir() / name, data)
    examples = _examples(scan_dataset(data))
    (data / "robot_01.png").write_bytes(b"\0" * 64)  # after the scan: a sync client that half-wrote it
    with pytest.raises(ImageUnreadable, match=r"robot_01\.png can no longer be read"):
        cache_latents(vae, examples, flip=False, augmentations=NO_AUGMENT, store=TensorStore(tmp_path, "latents"))


CHILD = """
import sys
from pathlib import Path
from studio.config import load_config
from studio.data.dataset import scan_dataset
from studio.engine import caches
from studio.engine.batches import prepare_examples
from studio.engine.models import load_vae
from studio.engine.tiny import tiny_model_dir

caches.VAE_BATCH_PIXELS = 2 * 128 * 128  # two images per call: many writes, one after another
data, root = Path(sys.argv[1]), Path(sys.argv[2])
examples = prepare_examples(scan_dataset(data), load_config("tiny-demo", ["data.resolution=128", "data.buckets=false"]))
vae = load_vae(str(tiny_model_dir("tiny-sd15") / "vae"), None)
print("encoding", flush=True)
caches.cache_latents(vae, examples, flip=False, augmentations=lambda ex: [None],
                     store=caches.TensorStore(root, "latents"))
"""


def test_a_cache_build_killed_with_sigkill_leaves_only_whole_entries(tmp_path):
    data = tmp_path / "noise"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(data / f"{i:02d}.png")
    root = tmp_path / "tensors"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(root)], cwd=REPO,
                             env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = TensorStore(root, "latents")
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if store.folder.is_dir() and len(list(store.folder.glob("*/*.safetensors"))) >= 4:
            break
        time.sleep(0.005)
    assert child.poll() is None, f"the cache build ended before it could be killed:\n{child.stdout.read()}"
    child.send_signal(signal.SIGKILL)
    child.wait()
    written = list(store.folder.glob("*/*.safetensors"))
    assert 4 <= len(written) < 40

    from studio.engine.models import load_vae
    from studio.engine.tiny import tiny_model_dir

    vae = load_vae(str(tiny_model_dir("tiny-sd15") / "vae"), None)
    examples = prepare_examples(scan_dataset(data), load_config("tiny-demo", ["data.resolution=128",
                                                                              "data.buckets=false"]))
    latents, stats = cache_latents(vae, examples, flip=False, augmentations=NO_AUGMENT, store=store)
    # every entry the killed build left is whole (none was deleted as damaged), and the rest were encoded
    assert (stats.reused, stats.encoded) == (len(written), 40 - len(written))
    # and what it left is what encoding now gives
    vae_id = module_identity(vae)
    reused = [ex for ex in examples if store.path(caches.latent_entry(vae_id, ex, False, None)) in set(written)]
    fresh, _ = cache_latents(vae, reused[:2], flip=False, augmentations=NO_AUGMENT, store=TensorStore(tmp_path, "x"))
    assert all(torch.equal(fresh[(ex.index, False, 0)], latents[(ex.index, False, 0)]) for ex in reused[:2])


def test_the_linter_flags_captions_over_the_limit_quickly():
    long = "ohwx " + "word " * 2_000_000  # 10 MB: tokenising it whole took minutes and gigabytes
    findings = lint_captions({"a.png": long, "b.png": "ohwx toy robot on a table", "c.png": "x" * CAPTION_MAX_CHARS},
                             "ohwx")
    (over,) = [f for f in findings if f["kind"] == "over_limit"]
    assert over["files"] == ["a.png"] and "1 caption is longer than 2,000 characters" in over["message"]
    (too_long,) = [f for f in findings if f["kind"] == "too_long"]
    assert "a.png" in too_long["files"]
