"""LoRA Studio: train, browse, compare and score LoRA adapters for SD1.5 and SDXL."""

__version__ = "0.1.0"
