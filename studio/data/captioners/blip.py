"""BLIP captioner (BLIP base / large through transformers): processor → generate → decode → clean.

We caption *conditionally*, with the prompt "a picture of ", and strip the prompt from the result.
The Hub checkpoints are BLIP's COCO captioning models, which were fine-tuned with exactly that
prompt in front of every target caption (the BLIP repository's `caption_coco.yaml`,
`prompt: 'a picture of '`; its `generate` cuts the prompt off the same way). Unconditional
generation starts the decoder from [DEC] alone, which it never saw in fine-tuning; the made-up
"arafed" / "araffe" words and "there is a ..." openings are typical of that mode. What still slips
through is cleaned up by `clean_blip_caption`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from studio.data.captioners.loading import ModelSource, load_pretrained
from studio.data.captioners.text import collapse_repeats, tidy

if TYPE_CHECKING:
    from PIL import Image


PROMPT = "a picture of"
# Beam search as in the BLIP repository's captioning (3 beams, at least 5 tokens, so it does not stop
# at "a dog"). No repetition penalty: it would count the prompt's "a" against every later "a".
_NUM_BEAMS = 3
_MIN_NEW_TOKENS = 5

# "arafed", "araffe", "arafly", "arrafed", ...: made-up words BLIP emits for people and animals.
_ARTEFACT = re.compile(r"^ar+af+\w*$", re.IGNORECASE)
_OPENINGS = ("there is ", "there are ", "this is ", "an image of ", "a photo of ")


class BlipCaptioner:
    """A loaded BLIP model and its processor, on one device."""

    def __init__(self, source: ModelSource, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.processor, self.model = load_pretrained(source, BlipProcessor, BlipForConditionalGeneration, device, dtype)
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def caption(self, images: list[Image.Image], max_new_tokens: int) -> list[str]:
        inputs = self.processor(images=images, text=[PROMPT] * len(images), return_tensors="pt")
        output = self.model.generate(
            pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
            input_ids=inputs["input_ids"].to(self.device),
            attention_mask=inputs["attention_mask"].to(self.device),
            max_new_tokens=max_new_tokens,
            min_new_tokens=min(_MIN_NEW_TOKENS, max_new_tokens),
            num_beams=_NUM_BEAMS,
            do_sample=False,
        )
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        return [clean_blip_caption(text) for text in texts]


def clean_blip_caption(text: str) -> str:
    """Drop the prompt, BLIP's made-up words and filler openings, and repeated words:
    "a picture of arafed man sitting on a a bench" → "man sitting on a bench"."""
    text = tidy(text)
    if text.lower().startswith(PROMPT):
        text = text[len(PROMPT):].lstrip()
    for opening in _OPENINGS:
        if text.lower().startswith(opening):
            text = text[len(opening):]
    words = [word for word in text.split() if not _ARTEFACT.match(word.strip(",."))]
    return collapse_repeats(" ".join(words)).strip(" ,")
