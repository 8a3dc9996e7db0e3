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

import functools
import re
import unicodedata
from collections import Counter
from typing import Any

import regex

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
    then costs milliseconds, not minutes and gigabytes.

    Exactly what the tokenizer counts, faster: CLIP normalises a caption (NFC, lower case; runs of
    whitespace to one space), splits it into words, numbers and runs of punctuation, and runs BPE on each piece
    alone, so a caption's count is 2 + the sum of its pieces' counts. Each distinct piece goes through the
    tokenizer once per process; a bulk edit of 2,000 captions then costs a regex pass, not 2,000
    tokenisations. A caption that names a special token (`<|endoftext|>`) goes through the tokenizer whole.
    (tests/test_data_lint.py checks the sum against the tokenizer on random unicode captions.)"""
    cut = [c[:CAPTION_MAX_CHARS] for c in captions]
    whole = [i for i, c in enumerate(cut) if "<|" in c]
    pieces = [_ASCII_PIECE.findall(c.lower()) if c.isascii() else
              _PIECE.findall(unicodedata.normalize("NFC", c).lower()) for c in cut]
    new = list(dict.fromkeys(p for ps in pieces for p in ps if p not in _piece_tokens))
    if len(_piece_tokens) + len(new) > _PIECES_KEPT:  # bounded: start again with this call's pieces
        _piece_tokens.clear()
        new = list(dict.fromkeys(p for ps in pieces for p in ps))
    if new:
        _piece_tokens.update(zip(new, (len(e.ids) for e in _clip_encode(new, add_special_tokens=False))))
    counts = [2 + sum(map(_piece_tokens.__getitem__, ps)) for ps in pieces]
    for i, encoded in zip(whole, _clip_encode([cut[i] for i in whole], add_special_tokens=True) if whole else []):
        counts[i] = len(encoded.ids)
    return counts


_PIECE = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
"""CLIP's pre-tokenizer split (the tokenizer's own pattern, less its special tokens)."""
_ASCII_PIECE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\t\n\x0b\x0c\r a-z0-9]+")
"""The same split on ASCII text (lower-cased), by the faster `re`; spelled out, as `re`'s \\s also takes
\\x1c-\\x1f, which Unicode's White_Space does not. Whitespace never belongs to a piece, so the tokenizer's
collapsing of runs of it changes no count."""
_PIECES_KEPT = 200_000
_piece_tokens: dict[str, int] = {}
"""BPE tokens per normalised piece, for this process."""


def _clip_encode(texts: list[str], add_special_tokens: bool):
    from studio.core.tokenizer import clip_tokenizer  # transformers: imported only when needed

    # the Rust tokenizer underneath: the same ids as __call__, in one batch, and without
    # transformers' "longer than the maximum sequence length" warning for each long caption
    return clip_tokenizer().backend_tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)


def has_trigger_word(caption: str, trigger_word: str) -> bool:
    """Whether `trigger_word` appears in `caption` as a whole word (case-insensitive)."""
    return _whole_word(trigger_word).search(caption) is not None


@functools.lru_cache(maxsize=64)
def _whole_word(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)


def lint_captions(captions: dict[str, str | None], trigger_word: str) -> list[dict[str, Any]]:
    """Findings for `captions` (relative path → caption, None or "" for none): warnings about the
    captions first, then suggestions about the trigger word. Severity is "warning" or "suggestion".

    `trigger_word` may be empty: the trigger checks are then left out.
    """
    return CaptionFacts(captions, trigger_word).findings()


class CaptionFacts:
    """What the linter and the dataset report know about a set of captions, kept up to date one caption
    at a time: `update` costs the work of the captions it changes (one tokenisation each), and `findings`
    / `report_part` the size of what they list, never a pass over the whole dataset. The Dataset tab keeps
    one per open dataset, so an edit at 2,000 images costs what it costs at 20."""

    def __init__(self, captions: dict[str, str | None], trigger_word: str = "",
                 sources: dict[str, str | None] | None = None):
        self.trigger = trigger_word.strip()
        self.order = {rel: i for i, rel in enumerate(captions)}
        """Folder order, for the report's lists."""
        self.texts: dict[str, str] = {rel: "" for rel in captions}
        self.sources: dict[str, str | None] = {rel: None for rel in captions}
        self.source_counts: Counter[str | None] = Counter({None: len(captions)})
        self.tokens: dict[str, int] = {}
        """CLIP tokens of each caption (captioned images only)."""
        self.token_counts: Counter[int] = Counter()
        self.token_sum = 0
        self.empty: set[str] = set(captions)
        self.missing_trigger: set[str] = set()
        self.long: set[str] = set()
        self.over_limit: set[str] = set()
        self.by_text: dict[str, set[str]] = {}
        """Captioned images per caption text, and the texts per number of images (for `identical`)."""
        self._texts_by_count: dict[int, set[str]] = {}
        self._top = 0
        self._trigger_findings: list[dict[str, Any]] | None = None
        self.update(captions, sources)

    @property
    def captioned(self) -> int:
        return len(self.tokens)

    def update(self, captions: dict[str, str | None], sources: dict[str, str | None] | None = None) -> None:
        """Take new captions (and, where given, caption sources) for some of the images."""
        sources = sources or {}
        fresh = {rel: (text or "").strip() for rel, text in captions.items()}
        fresh = {rel: text for rel, text in fresh.items() if text != self.texts[rel]}
        for rel, text in fresh.items():
            self._forget(rel)
        tokenised = [(rel, text) for rel, text in fresh.items() if text]
        counts = caption_token_counts([text for _, text in tokenised]) if tokenised else []
        for (rel, text), n in zip(tokenised, counts):
            self._learn(rel, text, n)
        for rel in fresh:
            self.texts[rel] = fresh[rel]
            if not fresh[rel]:
                self.empty.add(rel)
        for rel, source in sources.items():
            self.source_counts[self.sources[rel]] -= 1
            self.sources[rel] = source
            self.source_counts[source] += 1

    def _forget(self, rel: str) -> None:
        text = self.texts[rel]
        self.empty.discard(rel)
        if not text:
            return
        n = self.tokens.pop(rel)
        self.token_counts[n] -= 1
        if not self.token_counts[n]:
            del self.token_counts[n]
        self.token_sum -= n
        for group in (self.missing_trigger, self.long, self.over_limit):
            group.discard(rel)
        same = self.by_text[text]
        self._texts_by_count[len(same)].discard(text)
        same.discard(rel)
        if same:
            self._texts_by_count.setdefault(len(same), set()).add(text)
        else:
            del self.by_text[text]
        while self._top and not self._texts_by_count.get(self._top):
            self._top -= 1

    def _learn(self, rel: str, text: str, n: int) -> None:
        self.tokens[rel] = n
        self.token_counts[n] += 1
        self.token_sum += n
        if self.trigger and not has_trigger_word(text, self.trigger):
            self.missing_trigger.add(rel)
        if n > CLIP_MAX_TOKENS:
            self.long.add(rel)
        if len(text) > CAPTION_MAX_CHARS:
            self.over_limit.add(rel)
        same = self.by_text.setdefault(text, set())
        if same:
            self._texts_by_count[len(same)].discard(text)
        same.add(rel)
        self._texts_by_count.setdefault(len(same), set()).add(text)
        self._top = max(self._top, len(same))

    def in_order(self, rels: set[str]) -> list[str]:
        return sorted(rels, key=self.order.__getitem__)

    def most_shared(self) -> tuple[str, int] | None:
        """The caption text the most images share (the earliest in folder order on a tie), and how many."""
        if not self._top:
            return None
        texts = self._texts_by_count[self._top]
        text = min(texts, key=lambda t: min(self.order[rel] for rel in self.by_text[t])) if len(texts) > 1 \
            else next(iter(texts))
        return text, self._top

    def token_stats(self) -> dict[str, float] | None:
        """min, mean, median and max CLIP tokens of the captions, as `statistics` gives them."""
        n = self.captioned
        if not n:
            return None
        values = sorted(self.token_counts)
        lower, upper, seen = (n - 1) // 2, n // 2, 0
        at: dict[int, int] = {}
        for value in values:
            for position in (lower, upper):
                if seen <= position < seen + self.token_counts[value]:
                    at[position] = value
            seen += self.token_counts[value]
        median = at[lower] if n % 2 else (at[lower] + at[upper]) / 2
        return {"min": values[0], "mean": round(self.token_sum / n, 1), "median": median, "max": values[-1]}

    def findings(self) -> list[dict[str, Any]]:
        """The lint findings, in the order of the module docstring."""
        findings: list[dict[str, Any]] = []
        total, captioned = len(self.texts), self.captioned
        if self.empty:
            findings.append(_finding(
                "empty", "warning", sorted(self.empty),
                f"{len(self.empty)} of {total} images have no caption: they train on an empty prompt, so "
                "the concept leaks into everything. Write a caption, or auto-caption them "
                "(Dataset tab, or `python studio.py caption`)."))
        if self.missing_trigger:
            missing = sorted(self.missing_trigger)
            findings.append(_finding(
                "missing_trigger", "warning", missing,
                f"{len(missing)} of {captioned} captions lack the trigger word \"{self.trigger}\": those "
                "images don't teach it. Add it at the front (Dataset tab: Add trigger word)."))
        shared = self.most_shared()
        if captioned >= IDENTICAL_MIN_CAPTIONS and shared and shared[1] >= 2 and shared[1] >= IDENTICAL_SHARE * captioned:
            text, n = shared
            findings.append(_finding(
                "identical", "warning", sorted(self.by_text[text]),
                f"{n} of {captioned} captions are the same text (\"{_short(text)}\"): the model can't tell "
                "these images apart, so pose, background and lighting get baked into the trigger word. "
                "Describe what differs in each image."))
        if self.long:
            long = sorted(self.long)
            worst = max(self.tokens[rel] for rel in long)
            findings.append(_finding(
                "too_long", "warning", long,
                f"{_count(long, 'caption')} {'is' if len(long) == 1 else 'are'} longer than {CLIP_MAX_TOKENS} "
                f"CLIP tokens (longest {worst}): the text encoder never sees the words past the limit. "
                "Put the trigger word and what matters first, or shorten them."))
        if self.over_limit:
            over = sorted(self.over_limit)
            longest = max(len(self.texts[rel]) for rel in over)
            findings.append(_finding(
                "over_limit", "warning", over,
                f"{_count(over, 'caption')} {'is' if len(over) == 1 else 'are'} longer than {CAPTION_MAX_CHARS:,} "
                f"characters (longest {longest:,}): training uses only the first {CAPTION_MAX_CHARS:,}. "
                "Is a file pasted into a caption? Write a short description instead."))
        if self.trigger:
            if self._trigger_findings is None:  # the trigger word's own checks: once per word, not per edit
                self._trigger_findings = _lint_trigger(self.trigger)
            findings += self._trigger_findings
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
