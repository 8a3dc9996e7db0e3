"""Florence-2 captioner (transformers' built-in Florence-2), detailed-caption task.

`<DETAILED_CAPTION>` gives a few sentences about the subject, its look and the setting: detailed
enough for LoRA training without `<MORE_DETAILED_CAPTION>`'s paragraph, which runs past CLIP's 77
tokens (the trainer would cut it). The processor expands the task token into its instruction
("Describe in detail what is shown in the image."); the answer is decoded and passed through the
processor's own post-processing for the task, then the stock opening ("The image shows") is
dropped so that the caption starts with the subject.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from studio.data.captioners.loading import ModelSource, load_pretrained
from studio.data.captioners.text import collapse_repeats, tidy

if TYPE_CHECKING:
    from PIL import Image


TASK = "<DETAILED_CAPTION>"
_NUM_BEAMS = 3  # as in the Florence-2 model cards' examples

# Openings Florence-2 puts before almost every detailed caption; they tell a LoRA nothing.
_OPENING = re.compile(
    r"^(?:(?:the|this) (?:image|picture|photo|photograph|illustration|drawing) (?:shows|depicts|features|is of)"
    r"|in (?:this|the) (?:image|picture|photo),? (?:we can see|there is|there are|we see))\s+",
    re.IGNORECASE,
)


class Florence2Captioner:
    """A loaded Florence-2 model and its processor, on one device."""

    def __init__(self, source: ModelSource, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        self.processor, self.model = load_pretrained(source, AutoProcessor, Florence2ForConditionalGeneration, device, dtype)
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def caption(self, images: list[Image.Image], max_new_tokens: int) -> list[str]:
        inputs = self.processor(text=[TASK] * len(images), images=images, return_tensors="pt")
        output = self.model.generate(
            input_ids=inputs["input_ids"].to(self.device),
            pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
            attention_mask=inputs["attention_mask"].to(self.device),
            max_new_tokens=max_new_tokens,
            num_beams=_NUM_BEAMS,
            do_sample=False,
        )
        # Special tokens are skipped here: in a batch, shorter answers are padded with <pad>, which
        # the task's "pure_text" post-processing (it strips only <s> and </s>) would keep.
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        return [
            clean_florence2_caption(self.processor.post_process_generation(text, task=TASK, image_size=image.size)[TASK])
            for text, image in zip(texts, images)
        ]


def clean_florence2_caption(text: str) -> str:
    """Drop the stock opening and repeated words: "The image shows a robot robot." → "a robot."."""
    text = _OPENING.sub("", tidy(text))
    return collapse_repeats(text).strip(" ,")
