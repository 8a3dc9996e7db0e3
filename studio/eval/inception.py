"""The Inception-v3 features FID and KID are computed from, loaded once per process.

`pt_inception` is the network every FID number in the literature comes from: TensorFlow's 2015-12-05
Inception as pytorch-fid ports it (torchvision's Inception-v3 with pytorch-fid's FID blocks), its
2,048-d pool3 features, images resized to 299 × 299 (bilinear) and scaled to [−1, 1]. Its weights
(`pt_inception-2015-12-05-6726825d.pth`, 91 MB) download on first use from pytorch-fid's releases into
the torch hub cache (`$TORCH_HOME/hub/checkpoints`); a path to that file works offline.

`tiny-random` is the same network with random weights (fixed seed) at 75 × 75 px, the smallest input
it takes: for tests and offline trials. Its numbers are deterministic and mean nothing.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from studio.core.device import detect_device
from studio.eval.backbones import RANDOM_NOTE, TINY_RANDOM, BackboneError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INCEPTION_DEFAULT = "pt_inception"
INCEPTION_NONE = "none"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_CHOICES: dict[str, str] = {
    INCEPTION_DEFAULT: "FID Inception-v3 (pytorch-fid's port of TensorFlow's; 91 MB download on first use)",
    INCEPTION_NONE: "no FID / KID",
    TINY_RANDOM: f"the same network at 75 px, {RANDOM_NOTE}",
}
FULL_SIZE, TINY_SIZE = 299, 75
_BATCH = 16
_SEED = 0


@dataclass
class InceptionBackbone:
    name: str
    random_weights: bool
    model: torch.nn.Module
    size: int
    """Side the images are resized to."""
    device: torch.device

    @property
    def label(self) -> str:
        return f"{self.name} ({RANDOM_NOTE})" if self.random_weights else self.name

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, 2048] fp32 pool3 features (on the CPU), not normalised."""
        import torch
        import torch.nn.functional as F

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), _BATCH):
                pixels = [torch.from_numpy(_array(im)).permute(2, 0, 1).float().div(255)
                          for im in images[i:i + _BATCH]]
                # per image, as pytorch-fid does: bilinear to the network's size, then [0, 1] → [−1, 1]
                batch = torch.cat([F.interpolate(p[None], size=(self.size, self.size), mode="bilinear",
                                                 align_corners=False) for p in pixels]).to(self.device)
                out.append(self.model(2 * batch - 1).float().cpu())
        if not out:
            raise ValueError("nothing to encode: the list of images is empty")
        return torch.cat(out)


def _array(image: Image.Image):
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


_loaded: dict[str, InceptionBackbone] = {}
_lock = threading.Lock()


def load_inception(name: str = INCEPTION_DEFAULT) -> InceptionBackbone:
    """The Inception backbone `name` (cached per process): `pt_inception`, `tiny-random`, or a path to
    the pt_inception weights file. Raises `BackboneError` with what to do when it cannot be loaded."""
    with _lock:
        if name not in _loaded:
            _loaded[name] = _build(name)
        return _loaded[name]


def loaded_inception() -> list[str]:
    """The names of the loaded Inception networks."""
    with _lock:
        return list(_loaded)


def unload_inception() -> None:
    """Drop the loaded Inception networks (a training job wants the memory)."""
    with _lock:
        if not _loaded:
            return
        _loaded.clear()
    gc.collect()


def fid_network(weights: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """torchvision's Inception-v3 with pytorch-fid's FID blocks, returning pool3 features; `weights` the
    pt_inception state dict (None: random, seeded)."""
    import torch
    import torchvision
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                              init_weights=weights is None)
        for block, replacement in {"Mixed_5b": FIDInceptionA(192, pool_features=32),
                                   "Mixed_5c": FIDInceptionA(256, pool_features=64),
                                   "Mixed_5d": FIDInceptionA(288, pool_features=64),
                                   "Mixed_6b": FIDInceptionC(768, channels_7x7=128),
                                   "Mixed_6c": FIDInceptionC(768, channels_7x7=160),
                                   "Mixed_6d": FIDInceptionC(768, channels_7x7=160),
                                   "Mixed_6e": FIDInceptionC(768, channels_7x7=192),
                                   "Mixed_7b": FIDInceptionE_1(1280),
                                   "Mixed_7c": FIDInceptionE_2(2048)}.items():
            setattr(net, block, replacement)
    if weights is not None:
        net.load_state_dict(weights)
    net.fc = torch.nn.Identity()  # the 2,048 pooled features, not ImageNet logits
    return net.eval()


def _offline_help() -> str:
    import torch

    where = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    return (f"FID and KID use the pt_inception weights ({WEIGHTS_FILE}, 91 MB), downloaded from pytorch-fid's GitHub "
            f"releases on first use. Offline: copy that file to {where} (run once on a machine that is online and "
            "copy its torch hub cache, or point TORCH_HOME at one), or give --inception PATH to the file; "
            "--inception none skips FID and KID")


def _build(name: str) -> InceptionBackbone:
    import torch

    try:
        import pytorch_fid.inception as fid
    except ImportError:
        raise BackboneError("FID and KID need the pytorch-fid package: pip install pytorch-fid") from None
    device = detect_device().torch_device
    if name == TINY_RANDOM:
        log.info("building the random-weights Inception")
        return InceptionBackbone(name, True, fid_network(None).to(device), TINY_SIZE, device)
    if name == INCEPTION_DEFAULT:
        log.info("loading the FID Inception weights")
        try:
            weights = torch.hub.load_state_dict_from_url(fid.FID_WEIGHTS_URL, progress=False, map_location="cpu")
        except (OSError, RuntimeError) as err:  # no network: URLError is an OSError
            raise BackboneError(f"cannot download the Inception weights ({err}). {_offline_help()}") from err
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise BackboneError(f"Inception backbone {name!r}: not one of {', '.join(INCEPTION_CHOICES)} and no such "
                                f"file. {_offline_help()}")
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as err:
            raise BackboneError(f"Inception backbone {name!r}: cannot read {path} ({err}). {_offline_help()}") from err
    try:
        network = fid_network(weights)
    except RuntimeError as err:  # wrong keys or shapes: not the FID Inception's weights
        raise BackboneError(f"Inception backbone {name!r}: these are not the pt_inception weights ({err})") from err
    return InceptionBackbone(name, False, network.to(device), FULL_SIZE, device)
