"""LoRA adapters (peft) on the UNet and, optionally, the text encoder(s).

The adapters are named `default` (peft's name) and their weights are kept in fp32 whatever the
base model's dtype: low-precision LoRA weights lose small updates.
"""

from __future__ import annotations

from typing import Iterable

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from studio.config import LoraSection

# Suffixes of module names (peft matches a module whose name ends with one of them).
UNET_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
UNET_FEEDFORWARD = ["proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
UNET_CONV = ["conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"]
# kohya's text-encoder LoRA: attention and MLP of every CLIP layer
TEXT_ENCODER = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def unet_targets(targets: str) -> list[str]:
    modules = list(UNET_ATTENTION)
    if "ff" in targets:
        modules += UNET_FEEDFORWARD
    if "conv" in targets:
        modules += UNET_CONV
    return modules


def lora_config(cfg: LoraSection, target_modules: list[str]) -> LoraConfig:
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target_modules,
                      init_lora_weights="gaussian")


def add_lora(model: torch.nn.Module, cfg: LoraSection, target_modules: list[str]) -> list[torch.nn.Parameter]:
    """Freeze `model`, add a LoRA adapter, return its (fp32) trainable parameters."""
    model.requires_grad_(False)
    config = lora_config(cfg, target_modules)
    if _is_transformers_model(model):
        _inject_into_text_encoder(model, config)
    elif hasattr(model, "add_adapter"):
        model.add_adapter(config)
    else:  # pragma: no cover - every diffusers/transformers model we load has add_adapter
        raise TypeError(f"{type(model).__name__} cannot take a LoRA adapter")
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def _is_transformers_model(model: torch.nn.Module) -> bool:
    return any(cls.__module__.startswith("transformers.") for cls in type(model).__mro__)


def _inject_into_text_encoder(model: torch.nn.Module, config: LoraConfig) -> None:
    """What transformers' `add_adapter` does, without its peft version gate.

    transformers 5.24 refuses peft older than 0.22 in `add_adapter`, though injecting a LoRA needs
    nothing new; calling peft directly keeps text-encoder training working with either peft.
    """
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, model, adapter_name="default")  # also sets model.peft_config
    model._hf_peft_config_loaded = True


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights with peft's names (`….to_q.lora_A.weight`), detached, on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(model, state)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise ValueError(f"LoRA weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def set_lora_scale(models: Iterable[torch.nn.Module], scale: float) -> None:
    """Scale every LoRA layer's output (0 = the base model, 1 = as trained)."""
    from peft.tuners.lora import LoraLayer

    for model in models:
        for module in model.modules():
            if isinstance(module, LoraLayer):
                for adapter in module.scaling:
                    module.scaling[adapter] = scale * module.lora_alpha[adapter] / module.r[adapter]
