"""The caption linter: what in a set of captions will quietly make a LoRA worse, and how to fix it.

Each finding is a plain dict (`kind`, `severity`, `message`, `files`) so it can sit in the dataset
report (`dataset_report.json`), the `check` command's text and the Dataset tab's table alike.
Findings are advice: the trainer starts anyway. Kinds:

- `empty` — images with no caption train on an empty prompt;
- `missing_trigger` — captions without the trigger word don't teach it;
- `identical` — one caption shared by most images: the model can't tell them apart;
- `too_long` — captions over 77 CLIP tokens: the text encoder never sees the rest;
- `over_limit` — captions over 2,000 characters (`CAPTION_MAX_CHARS`): an essay or a pasted file,
  cut to that length for training;
- `trigger_splits` — a trigger word CLIP cuts into many pieces: a weak, diluted handle;
- `common_trigger` — a trigger word that is an everyday word: training overwrites that word.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from studio.data.captions import CAPTION_MAX_CHARS

CLIP_MAX_TOKENS = 77
"""CLIP's context length, start and end tokens included."""

IDENTICAL_MIN_CAPTIONS = 4
IDENTICAL_SHARE = 0.5
TRIGGER_MAX_PIECES = 3
"""A trigger word cut into this many BPE pieces or more gets a `trigger_splits` finding."""
COMMON_WORD_MAX_ID = 20_000
"""CLIP's BPE merges are ordered by how often the pair occurred in its training text, so a whole
word with a low vocabulary id is a frequent one ("dog" 1929, "robot" 8797); rare handles such as
"ohwx" (47993) or "sks" (48136) sit near the end. A heuristic, not a dictionary."""
SUGGESTED_TRIGGERS = ("ohwx", "sks")


def caption_token_counts(captions: list[str]) -> list[int]:
    """CLIP token count of each caption, start and end tokens included (the limit is 77). A caption over
    `CAPTION_MAX_CHARS` is counted on the part training uses: still far over 77, and a 10 MB caption
    then costs milliseconds, not minutes and gigabytes."""
    from studio.core.tokenizer import clip_tokenizer  # transformers: imported only when needed

    # the Rust tokenizer underneath: the same ids as __call__, in one batch, and without
    # transformers' "longer than the maximum sequence length" warning for each long caption
    encoded = clip_tokenizer().backend_tokenizer.encode_batch([c[:CAPTION_MAX_CHARS] for c in captions],
                                                              add_special_tokens=True)
    return [len(e.ids) for e in encoded]


def has_trigger_word(caption: str, trigger_word: str) -> bool:
    """Whether `trigger_word` appears in `caption` as a whole word (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(trigger_word)}(?!\w)", caption, re.IGNORECASE) is not None


def lint_captions(captions: dict[str, str | None], trigger_word: str) -> list[dict[str, Any]]:
    """Findings for `captions` (relative path → caption, None or "" for none): warnings about the
    captions first, then suggestions about the trigger word. Severity is "warning" or "suggestion".

    `trigger_word` may be empty: the trigger checks are then left out.
    """
    trigger = trigger_word.strip()
    texts = {rel: (text or "").strip() for rel, text in captions.items()}
    captioned = {rel: text for rel, text in texts.items() if text}
    findings: list[dict[str, Any]] = []

    empty = sorted(rel for rel, text in texts.items() if not text)
    if empty:
        findings.append(_finding(
            "empty", "warning", empty,
            f"{len(empty)} of {len(texts)} images have no caption: they train on an empty prompt, so "
            "the concept leaks into everything. Write a caption, or auto-caption them "
            "(Dataset tab, or `python studio.py caption`)."))

    if trigger:
        missing = sorted(rel for rel, text in captioned.items() if not has_trigger_word(text, trigger))
        if missing:
            findings.append(_finding(
                "missing_trigger", "warning", missing,
                f"{len(missing)} of {len(captioned)} captions lack the trigger word \"{trigger}\": those "
                "images don't teach it. Add it at the front (Dataset tab: Add trigger word)."))

    if len(captioned) >= IDENTICAL_MIN_CAPTIONS:
        text, n = Counter(captioned.values()).most_common(1)[0]
        if n >= 2 and n >= IDENTICAL_SHARE * len(captioned):
            same = sorted(rel for rel, other in captioned.items() if other == text)
            findings.append(_finding(
                "identical", "warning", same,
                f"{n} of {len(captioned)} captions are the same text (\"{_short(text)}\"): the model can't tell "
                "these images apart, so pose, background and lighting get baked into the trigger word. "
                "Describe what differs in each image."))

    if captioned:
        rels = sorted(captioned)
        counts = caption_token_counts([captioned[rel] for rel in rels])
        long = [(rel, n) for rel, n in zip(rels, counts) if n > CLIP_MAX_TOKENS]
        if long:
            worst = max(n for _, n in long)
            findings.append(_finding(
                "too_long", "warning", [rel for rel, _ in long],
                f"{_count(long, 'caption')} {'is' if len(long) == 1 else 'are'} longer than {CLIP_MAX_TOKENS} "
                f"CLIP tokens (longest {worst}): the text encoder never sees the words past the limit. "
                "Put the trigger word and what matters first, or shorten them."))

        over = sorted((rel for rel in rels if len(captioned[rel]) > CAPTION_MAX_CHARS),
                      key=lambda rel: -len(captioned[rel]))
        if over:
            longest = len(captioned[over[0]])
            findings.append(_finding(
                "over_limit", "warning", sorted(over),
                f"{_count(over, 'caption')} {'is' if len(over) == 1 else 'are'} longer than {CAPTION_MAX_CHARS:,} "
                f"characters (longest {longest:,}): training uses only the first {CAPTION_MAX_CHARS:,}. "
                "Is a file pasted into a caption? Write a short description instead."))

    if trigger:
        findings += _lint_trigger(trigger)
    return findings


def _lint_trigger(trigger: str) -> list[dict[str, Any]]:
    from studio.core.tokenizer import clip_tokenizer

    tokenizer = clip_tokenizer()
    suggestions = " or ".join(f'"{word}"' for word in SUGGESTED_TRIGGERS if word != trigger.lower())
    for word in trigger.split():
        pieces = tokenizer.tokenize(word)
        if len(pieces) >= TRIGGER_MAX_PIECES:
            shown = " + ".join(piece.removesuffix("</w>") for piece in pieces)
            return [_finding(
                "trigger_splits", "suggestion", [],
                f"CLIP reads the trigger word \"{word}\" as {len(pieces)} pieces ({shown}): the concept gets "
                "spread over several common fragments, which learns slower and bleeds into words that share "
                f"them. Pick a short rare word that is one token, such as {suggestions}.")]
    words = trigger.split()
    if len(words) == 1:
        pieces = tokenizer.tokenize(trigger)
        token_id = tokenizer.convert_tokens_to_ids(pieces[0])
        if len(pieces) == 1 and pieces[0].endswith("</w>") and token_id < COMMON_WORD_MAX_ID:
            return [_finding(
                "common_trigger", "suggestion", [],
                f"The trigger word \"{trigger}\" is an everyday word for CLIP (vocabulary id {token_id} of "
                f"49,408; low ids are frequent words): training rewrites what \"{trigger}\" means, and the "
                f"model's own idea of it fights the new one. Pick a rare token such as {suggestions}, and keep "
                f"\"{trigger}\" in the class phrase.")]
    return []


def _finding(kind: str, severity: str, files: list[str], message: str) -> dict[str, Any]:
    return {"kind": kind, "severity": severity, "message": message, "files": files}


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
