"""What to change when training runs out of memory: one list, for the dry run and for a real run.

Each line names the `--set` key (the UI labels its fields with the same keys) and what it saves,
from the biggest saving that applies to the config down.
"""

from __future__ import annotations

from studio.config import RunConfig


def memory_advice(config: RunConfig, device_type: str) -> list[str]:
    t, lines = config.train, []
    if not t.gradient_checkpointing:
        lines.append("train.gradient_checkpointing=true — recomputes activations: far less memory, ~25 % slower")
    if t.batch_size > 1:
        half = max(1, t.batch_size // 2)
        lines.append(f"train.batch_size={half} and train.grad_accumulation={t.grad_accumulation * t.batch_size // half}"
                     " — half the images per pass, the same effective batch")
    if config.lora.train_text_encoder:
        lines.append("lora.train_text_encoder=false — frozen text encoders are cached and leave the device")
    if not (t.cache_latents and t.cache_text_embeddings):
        lines.append("train.cache_latents=true and train.cache_text_embeddings=true — the VAE and text encoders "
                     "leave the device after caching")
    if device_type == "cuda" and config.optim.optimizer != "adamw8bit":
        lines.append("optim.optimizer=adamw8bit — 8-bit Adam states (CUDA, needs `pip install bitsandbytes`)")
    if device_type == "cuda" and t.precision == "fp32":
        lines.append("train.precision=auto — bf16/fp16 compute halves activation memory")
    step = config.data.bucket_step if config.data.buckets else 8
    lower = config.data.resolution * 3 // 4 // step * step  # 1024 → 768, 512 → 384
    if lower >= 64:
        lines.append(f"data.resolution={lower} — memory grows with the pixel count")
    return lines


def out_of_memory_message(config: RunConfig, device_type: str, where: str) -> str:
    """`where` ("at step 40", "in the trial steps") + the advice, as one message."""
    tips = memory_advice(config, device_type)
    advice = ("; ".join(tips)) if tips else "use a smaller model or a device with more memory"
    return f"out of memory on {device_type} {where}. Change, one at a time: {advice}"
