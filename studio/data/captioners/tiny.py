"""`tiny-random` captioners: BLIP and Florence-2 at minimal width, built in code, cached on disk.

They are the real classes (model, image processor, tokenizer, processor) with random weights from
a fixed seed, saved once under `cache_dir()/captioners/<captioner>-tiny-random` and then loaded by
the same `from_pretrained` → processor → generate → decode path as the real models, so tests and
offline trials exercise that path. Their captions are meaningless.

Tokenizers are built offline from a small word list: BLIP gets a BERT WordPiece vocabulary
(special tokens, the words, letters and `##` letters, so any text tokenizes), Florence-2 a BART
byte-level BPE (the 256 byte symbols, merges learnt from the word list, `<image>` for image slots).
"""

from __future__ import annotations

import json
import logging
import string
from collections import Counter
from pathlib import Path

import torch

from studio.paths import build_cached_dir, cache_dir

log = logging.getLogger(__name__)

# Bump when a builder changes: cached folders with another version are rebuilt.
BUILDER_VERSION = 1
MARKER = "lora-studio-tiny-captioner.json"

_SEED = 0
_IMAGE_SIZE = 32
_HIDDEN = 32
_BPE_MERGES = 1000  # more than the word list needs to merge every word whole (~720)

# Words that captions are made of; both tiny vocabularies are built from them.
_WORDS = """
a an the of in on at with and or to from by for near next behind under over above below front back
side top bottom left right middle center background foreground is are was be has have it its this that
these there which who while very small large big little tall short long wide old new young
photo picture image drawing painting illustration render close up view shot portrait landscape
man woman person people boy girl child children baby face hair eyes nose mouth smile hand hands arm
arms leg legs head body shirt dress jacket coat hat robe shoes glasses wearing holding standing
sitting lying walking running looking smiling posing playing jumping flying floating
dog cat bird horse cow sheep fish animal toy robot car bus truck bike boat plane train
tree trees flower flowers grass field forest mountain mountains hill sky cloud clouds sun moon
water river lake sea ocean beach sand snow rock rocks road street city building house room wall
floor window door table chair bed sofa couch desk lamp book cup plate bowl bottle box ball
red orange yellow green blue purple pink brown black white gray grey silver gold golden
bright dark light colorful striped shiny metal wooden plastic glass paper soft round square
one two three four many several some group pair
""".split()


def tiny_captioner_dir(captioner: str) -> Path:
    """The model folder of `tiny-random` for `captioner` ("blip" or "florence2"), built on first use."""
    builders = {"blip": _save_blip, "florence2": _save_florence2}
    if captioner not in builders:
        raise ValueError(f"no tiny-random model for captioner {captioner!r}: expected one of {sorted(builders)}")
    final = cache_dir() / "captioners" / f"{captioner}-tiny-random"
    if not _is_complete(final, captioner):
        log.info("building the tiny-random %s captioner into %s", captioner, final)
    return build_cached_dir(final, lambda folder: _is_complete(folder, captioner),
                            lambda folder: _save(captioner, builders[captioner], folder))


def _is_complete(folder: Path, captioner: str) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    info = json.loads(marker.read_text(encoding="utf-8"))
    return info.get("captioner") == captioner and info.get("builder_version") == BUILDER_VERSION


def _save(captioner: str, builder, folder: Path) -> None:
    """Build with a fixed seed (leaving the caller's RNG alone), save, and write the marker last."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model, processor = builder()
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    info = {"captioner": captioner, "builder_version": BUILDER_VERSION, "random_weights": True}
    (folder / MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")


# ---------------------------------------------------------------- BLIP


def _wordpiece_vocab() -> list[str]:
    """BERT-style vocabulary: [PAD] first (id 0, as in BERT), the words, every letter alone and as a
    `##` continuation, punctuation, then BLIP's decoder-start `[DEC]` and `[ENC]` last (as in BLIP)."""
    symbols = list(string.ascii_lowercase + string.digits)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(dict.fromkeys(_WORDS + symbols + ["##" + s for s in symbols] + list(string.punctuation)))
    return tokens + ["[DEC]", "[ENC]"]


def _save_blip():
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = {token: i for i, token in enumerate(_wordpiece_vocab())}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", extra_special_tokens=["[ENC]"], model_max_length=512)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}), tokenizer=tokenizer)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=_HIDDEN, intermediate_size=2 * _HIDDEN, num_hidden_layers=2,
            num_attention_heads=2, projection_dim=_HIDDEN, max_position_embeddings=512,
            bos_token_id=vocab["[DEC]"], eos_token_id=vocab["[SEP]"], sep_token_id=vocab["[SEP]"],
            pad_token_id=vocab["[PAD]"],
        ),
        vision_config=dict(
            hidden_size=_HIDDEN, intermediate_size=2 * _HIDDEN, num_hidden_layers=2, num_attention_heads=2,
            image_size=_IMAGE_SIZE, patch_size=8, projection_dim=_HIDDEN,
        ),
        projection_dim=_HIDDEN,
        image_text_hidden_size=_HIDDEN,
    )
    return BlipForConditionalGeneration(config), processor


# ---------------------------------------------------------------- Florence-2


def _learn_merges(words: list[str], count: int) -> list[tuple[str, str]]:
    """Byte-pair merges learnt from `words` (already in byte-level symbols); ties go to the
    alphabetically first pair, so every build learns the same merges."""
    frequency = Counter(words)
    pieces = {word: list(word) for word in frequency}
    pairs: Counter[tuple[str, str]] = Counter()
    for word, symbols in pieces.items():
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += frequency[word]
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs = +pairs  # drop pairs that merging used up
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, symbols in pieces.items():
            merged = _merge(symbols, best)
            if len(merged) != len(symbols):
                for pair in zip(symbols, symbols[1:]):
                    pairs[pair] -= frequency[word]
                for pair in zip(merged, merged[1:]):
                    pairs[pair] += frequency[word]
                pieces[word] = merged
    return merges


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    if pair[0] not in symbols:
        return symbols
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def _bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BART layout: <s> <pad> </s> <unk> first, the byte alphabet, the merges, then <mask> and <image>."""
    from tokenizers.pre_tokenizers import ByteLevel

    # "Ġ" is the byte-level symbol of a leading space: words inside a sentence carry it
    words = _WORDS + ["Ġ" + word for word in _WORDS] * 2
    merges = _learn_merges(words, _BPE_MERGES)
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + sorted(ByteLevel.alphabet())
    tokens += [a + b for a, b in merges]
    tokens = list(dict.fromkeys(tokens)) + ["<mask>", "<image>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def _save_florence2():
    from transformers import (
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    vocab, merges = _bpe_vocab_and_merges()
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"},
                              model_max_length=1024)
    # Two vision stages of stride 4 and 2: a 32 px image becomes a 4 x 4 grid, and the projector adds
    # one pooled token, so each image fills 17 <image> slots in the prompt.
    grid = _IMAGE_SIZE // 8
    image_processor = CLIPImageProcessor(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}, do_center_crop=False, crop_size=None,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], image_seq_length=grid * grid + 1,
    )
    # Florence2PostProcessor only parses tasks named in this config; captions are "pure_text".
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                   post_processor_config={"pure_text": {}})
    config = Florence2Config(
        vision_config=dict(
            depths=(1, 1), patch_size=(7, 3), patch_stride=(4, 2), patch_padding=(3, 1),
            patch_prenorm=(False, True), embed_dim=(16, _HIDDEN), num_heads=(2, 4), num_groups=(2, 4),
            window_size=4, projection_dim=_HIDDEN, max_position_embeddings=grid * 2, drop_path_rate=0.0,
        ),
        text_config=dict(
            model_type="bart", vocab_size=len(vocab), d_model=_HIDDEN, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * _HIDDEN,
            decoder_ffn_dim=2 * _HIDDEN, max_position_embeddings=1024, bos_token_id=vocab["<s>"],
            pad_token_id=vocab["<pad>"], eos_token_id=vocab["</s>"], decoder_start_token_id=vocab["</s>"],
            forced_bos_token_id=vocab["<s>"],
        ),
        image_token_id=tokenizer.image_token_id,
    )
    return Florence2ForConditionalGeneration(config), processor
