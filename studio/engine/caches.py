"""Work done once instead of every step, and kept on disk for every later run on the same data and model:
VAE latents per image (and flip, and augmented copy) and caption embeddings when the text encoders are frozen.

Where: one folder per user, `tensor_cache_dir()` = `<LORA_STUDIO_CACHE or ~/.cache/lora-studio>/tensors`
(`LORA_STUDIO_TENSOR_CACHE` puts it elsewhere, e.g. on a bigger disk). Every run, resume and extension
reads the same folder, so a second start on the same images and model encodes nothing.

Each entry is one safetensors file named by the SHA-256 of everything that determines its tensors: for a
latent the image file's hash, its bucket and crop, the flip, the augmentation, the VAE (its weights and
config) and the dtype; for a caption embedding its token ids and the text encoders. A changed input is a
different name, so nothing ever needs invalidating, and datasets or models never collide.

Safe under concurrency and kill -9: an entry is written to a temp file and renamed into place, so a reader
sees a whole file or none; an entry that still does not load (a torn disk, a file copied in part) is
deleted and rebuilt. Two processes building the same entry write the same bytes; the last rename wins.
A cache write that fails (a full disk) costs only the reuse: training goes on from memory.

In memory the tensors stay on the CPU and move to the device one batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import safetensors
import safetensors.torch
import torch

from studio.core.atomic import write_bytes_atomic
from studio.engine.batches import Augmentation, Example, load_training_image, variant_tensor
from studio.engine.conditioning import TextEmbedding, encode_images, encode_text, tokenize

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Part of every key: raise it when what an entry holds changes for the same inputs (the resize filter,
the latent scaling, the tensor layout), so older entries are simply never read again."""
STALE_TEMP_S = 3600
"""A temp file this old is a writer's leftover (killed mid-write), not a write in progress."""
VAE_BATCH_PIXELS = 8 * 512 * 512
"""Pixels loaded and encoded as one batch (8 images at 512 px, 2 at 1024 px), in encoder calls of
`conditioning.CALL_SIZE`."""

LatentKey = tuple[int, bool, int]
"""(example index, flipped, augmented copy) → latent (C, h, w)."""
LatentCache = dict[LatentKey, torch.Tensor]
Augmentations = Callable[[Example], list[Augmentation | None]]
"""An example's augmented copies (`[None]`: the image as it is)."""


def tensor_cache_dir() -> Path:
    """The per-user folder of cached latents and text embeddings."""
    from studio.paths import cache_dir

    env = os.environ.get("LORA_STUDIO_TENSOR_CACHE")
    return Path(env).expanduser() if env else cache_dir() / "tensors"


def module_identity(*modules: torch.nn.Module) -> str:
    """SHA-256 of what makes these modules compute what they do: class, config (without paths and
    versions) and every weight's name, dtype, shape and bytes. ~0.25 s for the SD VAE's 335 MB."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(type(module).__name__.encode())
        config = getattr(module, "config", None)
        if config is not None:
            items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            kept = {k: v for k, v in items.items()
                    if not k.startswith("_") and k not in ("transformers_version", "torch_dtype", "dtype")}
            digest.update(json.dumps(kept, sort_keys=True, default=str).encode())
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def entry_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT} | fields, sort_keys=True).encode()).hexdigest()


@dataclass
class CacheStats:
    """What one cache phase did: entries read from disk, entries computed (and how many of those could
    not be written)."""

    reused: int = 0
    encoded: int = 0
    unsaved: int = 0

    @property
    def total(self) -> int:
        return self.reused + self.encoded


class TensorStore:
    """Entries of one kind (`latents`, `text`) under `root/<kind>/<key[:2]>/<key>.safetensors`."""

    def __init__(self, root: Path, kind: str):
        self.folder = Path(root) / kind
        self.write_errors: list[str] = []

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def load(self, key: str, names: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, or None when it is absent or unreadable (then it is deleted, to be rebuilt)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("cannot read cache entry %s (%s): computing it again", path, err)
            return None
        try:
            if len(data) < 8:
                raise ValueError("the file is shorter than a safetensors header")
            length = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + length])
            if header.get("__metadata__", {}).get("key") != key:
                raise ValueError("the entry's key does not match its name")
            tensors = safetensors.torch.load(data)
            if not all(n in tensors for n in names):
                raise ValueError(f"the entry lacks {', '.join(n for n in names if n not in tensors)}")
        except (ValueError, safetensors.SafetensorError) as err:
            log.warning("cache entry %s is damaged (%s): computing it again", path, err)
            path.unlink(missing_ok=True)
            return None
        return tensors

    def save(self, key: str, tensors: dict[str, torch.Tensor]) -> bool:
        """Write the entry atomically; False (and a note in `write_errors`) when the disk refuses."""
        data = safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()}, metadata={"key": key})
        try:
            write_bytes_atomic(self.path(key), data)
        except OSError as err:
            self.write_errors.append(f"{self.path(key)}: {err}")
            return False
        return True

    def sweep_temp_files(self, older_than_s: float = STALE_TEMP_S) -> int:
        """Delete temp files that writers killed mid-write left behind; returns how many."""
        removed, cutoff = 0, time.time() - older_than_s
        for tmp in _temp_files(self.folder):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def _temp_files(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        yield from folder.glob("*/.*.tmp")


# --- latents -----------------------------------------------------------------------------------

def latent_entry(vae_id: str, ex: Example, flipped: bool, aug: Augmentation | None) -> str:
    return entry_key({"kind": "latent", "image": ex.file_hash or _file_sha1(ex.path), "bucket": list(ex.bucket),
                      "crop": list(ex.crop), "flip": flipped, "augment": asdict(aug) if aug else None,
                      "vae": vae_id, "dtype": "float32"})


def cache_latents(vae, examples: list[Example], *, flip: bool, augmentations: Augmentations, store: TensorStore,
                  vae_id: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[LatentCache, CacheStats]:
    """Every example's latents (each flip and augmented copy) on the CPU: read from `store`, and the
    missing ones encoded in batched VAE calls and written to it. Each image with a missing entry is
    decoded once, on a prefetch thread, while the VAE encodes the previous batch.

    `progress(done, total)` counts the entries to encode."""
    vae_id = vae_id or module_identity(vae)
    flips = (False, True) if flip else (False,)
    latents: LatentCache = {}
    stats = CacheStats()
    missing: dict[int, list[tuple[LatentKey, str, bool, Augmentation | None]]] = {}
    for ex in examples:
        for v, aug in enumerate(augmentations(ex)):
            for flipped in flips:
                key = latent_entry(vae_id, ex, flipped, aug)
                found = store.load(key, ("latent",))
                if found is not None:
                    latents[(ex.index, flipped, v)] = found["latent"]
                    stats.reused += 1
                else:
                    missing.setdefault(ex.index, []).append(((ex.index, flipped, v), key, flipped, aug))
    todo = sum(len(m) for m in missing.values())
    if not todo:
        return latents, stats

    store.sweep_temp_files()
    by_index = {ex.index: ex for ex in examples}
    # same-shaped tensors batch together: the missing images sorted by bucket
    order = sorted(missing, key=lambda i: (by_index[i].bucket, i))

    def pixels(index: int) -> list[tuple[LatentKey, str, torch.Tensor]]:
        image, _ = load_training_image(by_index[index])
        return [(lkey, key, variant_tensor(image, flipped, aug))
                for lkey, key, flipped, aug in missing[index]]

    batch: list[tuple[LatentKey, str, torch.Tensor]] = []

    def encode_batch() -> None:
        tensors = torch.stack([t for _, _, t in batch])
        encoded = encode_images(vae, tensors).cpu()  # in calls of one size: an entry is the same whatever else was missing
        for (lkey, key, _), latent in zip(batch, encoded):
            latents[lkey] = latent.clone()
            stats.encoded += 1
            if not store.save(key, {"latent": latents[lkey]}):
                stats.unsaved += 1
        batch.clear()
        if progress:
            progress(stats.encoded, todo)

    for index, entries in _prefetched(pixels, order, ahead=4):
        w, h = by_index[index].bucket
        if batch and batch[0][2].shape[-2:] != (h, w):
            encode_batch()
        for entry in entries:
            batch.append(entry)
            if len(batch) >= max(2, VAE_BATCH_PIXELS // (w * h)):
                encode_batch()
    if batch:
        encode_batch()
    return latents, stats


def _prefetched(work: Callable[[int], list], items: list[int], ahead: int) -> Iterator[tuple[int, list]]:
    """`(item, work(item))` in order, with up to `ahead` items worked on by a background thread (PIL decodes and
    resizes without the GIL, so this overlaps with the VAE)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="latent-prefetch") as pool:
        queue: deque[tuple[int, Future]] = deque()
        pending = iter(items)
        for item in pending:
            queue.append((item, pool.submit(work, item)))
            if len(queue) >= ahead:
                break
        while queue:
            item, future = queue.popleft()
            nxt = next(pending, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(work, nxt)))
            yield item, future.result()


def _file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- caption embeddings --------------------------------------------------------------------------

def text_encoders_identity(pipe, family: str) -> str:
    return module_identity(pipe.text_encoder, *([pipe.text_encoder_2] if family == "sdxl" else []))


@torch.no_grad()
def cache_text(pipe, family: str, captions: list[str], device: torch.device, *, store: TensorStore,
               encoder_id: str | None = None, chunk: int = 32) -> tuple[dict[str, TextEmbedding], CacheStats]:
    """Caption → its embedding (one row each, on the CPU): read from `store` by the caption's token ids, the
    missing ones encoded in chunks on `device` and written to it."""
    encoder_id = encoder_id or text_encoders_identity(pipe, family)
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if family == "sdxl" else [])
    ids = [tokenize(t, captions, torch.device("cpu")).tolist() for t in tokenizers]
    keys = {c: entry_key({"kind": "text", "family": family, "encoders": encoder_id,
                          "ids": [per_tokenizer[i] for per_tokenizer in ids]})
            for i, c in enumerate(captions)}
    names = ("hidden", "pooled") if family == "sdxl" else ("hidden",)
    cache: dict[str, TextEmbedding] = {}
    stats = CacheStats()
    missing = []
    for caption in captions:
        found = store.load(keys[caption], names)
        if found is None:
            missing.append(caption)
        else:
            cache[caption] = TextEmbedding(found["hidden"], found.get("pooled"))
            stats.reused += 1
    for i in range(0, len(missing), chunk):
        part = missing[i:i + chunk]
        emb = encode_text(pipe, family, part, device)
        for j, caption in enumerate(part):
            entry = {"hidden": emb.hidden[j].cpu().clone()}
            if emb.pooled is not None:
                entry["pooled"] = emb.pooled[j].cpu().clone()
            cache[caption] = TextEmbedding(entry["hidden"], entry.get("pooled"))
            stats.encoded += 1
            if not store.save(keys[caption], entry):
                stats.unsaved += 1
    return cache, stats


def lookup_text(cache: dict[str, TextEmbedding], captions: list[str], device: torch.device) -> TextEmbedding:
    """A batch of cached embeddings, moved to `device` (the cache itself stays on the CPU)."""
    embs = [cache[c] for c in captions]
    pooled = torch.stack([e.pooled for e in embs]).to(device) if embs[0].pooled is not None else None
    return TextEmbedding(torch.stack([e.hidden for e in embs]).to(device), pooled)


# --- size and clearing ---------------------------------------------------------------------------

@dataclass
class CacheUsage:
    folder: str
    entries: dict[str, int] = field(default_factory=dict)
    """Entries per kind (`latents`, `text`)."""
    bytes: int = 0
    temp_files: int = 0
    """Leftovers of writers killed mid-write (never read; `clear_tensor_cache` removes them)."""


def tensor_cache_usage(root: Path | None = None) -> CacheUsage:
    """How many entries, and how many bytes, the cache folder holds."""
    root = Path(root) if root else tensor_cache_dir()
    usage = CacheUsage(str(root))
    for kind in ("latents", "text"):
        folder = root / kind
        count = 0
        for entry in folder.glob("*/*.safetensors") if folder.is_dir() else ():
            try:
                usage.bytes += entry.stat().st_size
                count += 1
            except FileNotFoundError:
                pass
        usage.entries[kind] = count
        for tmp in _temp_files(folder):
            usage.temp_files += 1
            try:
                usage.bytes += tmp.stat().st_size
            except FileNotFoundError:
                pass
    return usage


def clear_tensor_cache(root: Path | None = None) -> CacheUsage:
    """Delete every cached latent and text embedding; returns what there was. A run in progress keeps its
    tensors in memory and is not disturbed (its later writes just start the cache again)."""
    root = Path(root) if root else tensor_cache_dir()
    before = tensor_cache_usage(root)
    for kind in ("latents", "text"):
        if not (root / kind).is_dir():
            continue
        # renamed first: from this moment no reader finds an entry, and writers start a fresh folder
        doomed = root / f".{kind}.clearing-{os.getpid()}-{time.time_ns()}"
        os.replace(root / kind, doomed)
        try:
            shutil.rmtree(doomed)
        except OSError:  # a writer that was mid-rename into the old folder: once more, then it is empty
            shutil.rmtree(doomed)
    return before
