"""Run kohya sd-scripts' own `train_network.py` on a small SD1.5-shaped UNet (`bench --peers`).

kohya converts every diffusers UNet into its `library/original_unet.py`, whose widths are module constants
fixed at the real SD1.5's (320, 640, 1280, 1280), 2 layers per block; a smaller UNet's weights then do not
fit. This harness sets those constants from the model folder's `unet/config.json` before kohya builds its
UNet, then runs kohya's script unchanged (`runpy`, as `python train_network.py ...` would). It copies no
kohya code: it only calls it.

    python studio/engine/kohya_harness.py --kohya-repo DIR -- <train_network.py arguments>

It runs in kohya's own environment (its pinned transformers / diffusers), so it imports only the standard
library and kohya. The UNet must keep the SD1.5 layout kohya hard-codes (three cross-attention levels and one
plain level, a cross-attention mid block); only the widths and the layers per block may differ.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

SD15_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]


def unet_constants(unet_config: dict) -> dict:
    """kohya's `original_unet` module constants for the UNet described by a diffusers `unet/config.json`."""
    down = list(unet_config.get("down_block_types", SD15_DOWN))
    if down != SD15_DOWN:
        raise ValueError(f"kohya's UNet has the SD1.5 block layout {SD15_DOWN}; this model has {down}")
    channels = tuple(unet_config["block_out_channels"])
    layers = unet_config.get("layers_per_block", 2)
    return {"BLOCK_OUT_CHANNELS": channels, "TIMESTEP_INPUT_DIM": channels[0], "TIME_EMBED_DIM": channels[0] * 4,
            "LAYERS_PER_BLOCK": layers, "LAYERS_PER_BLOCK_UP": layers + 1,
            "NORM_GROUPS": unet_config.get("norm_num_groups", 32)}


def _model_dir(kohya_args: list[str]) -> Path:
    for i, arg in enumerate(kohya_args):
        if arg == "--pretrained_model_name_or_path":
            return Path(kohya_args[i + 1])
        if arg.startswith("--pretrained_model_name_or_path="):
            return Path(arg.split("=", 1)[1])
    raise SystemExit("kohya_harness: pass --pretrained_model_name_or_path DIR (a diffusers folder) to train_network.py")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kohya-repo", type=Path, required=True, help="a checkout of kohya-ss/sd-scripts")
    parser.add_argument("kohya_args", nargs=argparse.REMAINDER, help="-- then train_network.py's arguments")
    args = parser.parse_args(argv)
    kohya_args = args.kohya_args[1:] if args.kohya_args[:1] == ["--"] else args.kohya_args
    script = args.kohya_repo / "train_network.py"
    if not script.is_file():
        raise SystemExit(f"kohya_harness: {script} not found: --kohya-repo must be a kohya-ss/sd-scripts checkout")
    config_file = _model_dir(kohya_args) / "unet" / "config.json"
    if not config_file.is_file():
        raise SystemExit(f"kohya_harness: {config_file} not found: the model must be a diffusers folder")
    constants = unet_constants(json.loads(config_file.read_text(encoding="utf-8")))

    sys.path.insert(0, str(args.kohya_repo))
    from library import original_unet  # kohya's module, from its checkout

    for name, value in constants.items():
        setattr(original_unet, name, value)
    sys.argv = [str(script), *kohya_args]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
