"""The CLIP tokenizer, built offline from the BPE vocabulary that open_clip_torch ships.

The result is byte-for-byte the tokenizer of OpenAI CLIP / Stable Diffusion (49,408 entries,
same ids), so the built-in tiny models and the caption-length checks need no download.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path

from studio.paths import cache_dir

# lines 1 .. 48894 of the BPE file: 49152 - 256 - 2 merges (line 0 is a version header)
_N_MERGES = 49152 - 256 - 2


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed: `pip install -r requirements.txt`")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP byte-to-printable-character table, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer_files(folder: Path) -> Path:
    """Write `vocab.json` + `merges.txt` for the CLIP BPE into `folder` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(_bpe_file(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : _N_MERGES + 1]
    chars = _bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    files = {
        "vocab.json": json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
    }
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, folder / name)
    return folder


def tokenizer_dir() -> Path:
    """Cached folder holding the CLIP tokenizer files; built on first use."""
    folder = cache_dir() / "clip-tokenizer"
    if not (folder / "vocab.json").exists() or not (folder / "merges.txt").exists():
        write_tokenizer_files(folder)
    return folder


@functools.lru_cache(maxsize=2)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The CLIP tokenizer (SD1.5 and SDXL's first); SDXL's second one pads with `!`."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tokenizer_dir(), pad_token=pad_token, model_max_length=77)
