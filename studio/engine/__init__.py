"""Training engine: base models (Hub, local, single file, built-in), LoRA, the training loop, run folders
and their state. Devices, the accelerator lock and atomic writes live one floor down, in `studio.core`."""
