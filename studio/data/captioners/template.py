"""Template captioner: the trigger word, a class phrase and an optional fixed description; no model.

The kohya / DreamBooth habit for a single subject: every image says the same thing ("ohwx, toy
robot"), so the LoRA ties everything it sees to the trigger word. Example:
trigger "aldar_kose_character", class phrase "a man", description "wearing a striped robe" →
"aldar_kose_character, a man, wearing a striped robe".
"""

from __future__ import annotations

from studio.data.captioners.base import CaptionerError, CaptionOptions


def template_caption(options: CaptionOptions) -> str:
    """The caption every image gets: the non-empty parts of trigger, class phrase, description."""
    parts = [" ".join(part.split()).strip(" ,") for part in (options.trigger, options.class_phrase, options.description)]
    if not parts[0] and not parts[1]:
        raise CaptionerError(
            "the template captioner needs a trigger word or a class phrase: fill Trigger word (--trigger) "
            "and/or Class phrase (--class-phrase), e.g. trigger 'ohwx' and class phrase 'toy robot'")
    return ", ".join(part for part in parts if part)
