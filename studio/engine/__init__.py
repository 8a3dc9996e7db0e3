"""Training engine: devices, base models (Hub, local, single file, built-in tiny), LoRA, training."""
