"""Caption clean-up shared by the model captioners: stray characters, repeated words, the trigger prefix."""

from __future__ import annotations

import unicodedata

# Leading words that only start a sentence: lower-cased so that "ohwx, A robot" reads "ohwx, a robot".
# Other capitalised first words may be names and keep their case.
_SENTENCE_STARTERS = {"a", "an", "the", "this", "that", "these", "there", "two", "three", "four", "several",
                      "some", "many", "one", "it", "in", "on", "close-up"}
_LONGEST_REPEAT = 3


def tidy(text: str) -> str:
    """Drop control characters and U+FFFD (a byte-level decoder's broken UTF-8), collapse whitespace."""
    printable = "".join(" " if unicodedata.category(ch).startswith("C") or ch == "\ufffd" else ch for ch in text)
    return " ".join(printable.split())


def collapse_repeats(text: str, longest: int = _LONGEST_REPEAT) -> str:
    """Remove immediate repeats of a word or a run of up to `longest` words, ignoring case:
    "a a dog on on the grass the grass" → "a dog on the grass"."""
    words = text.split()
    changed = True
    while changed:
        changed = False
        for n in range(longest, 0, -1):
            kept: list[str] = []
            i = 0
            while i < len(words):
                run = [w.lower() for w in words[i:i + n]]
                if len(run) == n and len(kept) >= n and run == [w.lower() for w in kept[-n:]]:
                    i += n
                    changed = True
                    continue
                kept.append(words[i])
                i += 1
            words = kept
    return " ".join(words)


def lower_sentence_start(text: str) -> str:
    """Lower-case the first letter when the first word is an article or the like ("A dog" → "a dog")."""
    first = text.split(" ", 1)[0]
    acronym = len(first) > 1 and first.isupper()
    if first.lower() in _SENTENCE_STARTERS and first[:1].isupper() and not acronym:
        return text[:1].lower() + text[1:]
    return text


def with_trigger(caption: str, trigger: str) -> str:
    """`"<trigger>, <caption>"`; the caption alone without a trigger, the trigger alone without a caption."""
    trigger = trigger.strip()
    if not trigger:
        return caption
    if not caption:
        return trigger
    return f"{trigger}, {lower_sentence_start(caption)}"
