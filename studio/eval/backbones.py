"""CLIP and DINO feature extractors for scoring, loaded once per process.

CLIP comes from open_clip, DINO from timm; each uses the model's own preprocessing, runs in eval
mode without gradients, and returns L2-normalised fp32 features, so a cosine is a dot product.
`tiny-random` builds both in code with random weights (fixed seed) for tests and offline trials:
their numbers are deterministic but mean nothing.

open_clip and timm are imported inside the loaders: importing them takes seconds, and the studio
should not pay that at start-up when nobody scores.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from PIL import Image

from studio.core.atomic import write_json_atomic
from studio.core.device import detect_device
from studio.paths import cache_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CLIP_DEFAULT = "ViT-B-32-quickgelu/openai"
DINO_DEFAULT = "dino-vits16"
TINY_RANDOM = "tiny-random"
TOY_CLIP = "toy-clip"
DINO_NONE = "none"
RANDOM_NOTE = "random weights — numbers mean nothing"

CLIP_CHOICES: dict[str, str] = {
    CLIP_DEFAULT: "OpenAI CLIP ViT-B/32 (open_clip, ~600 MB download on first use)",
    "ViT-L-14-quickgelu/openai": "OpenAI CLIP ViT-L/14 (open_clip, ~1.7 GB download on first use)",
    TOY_CLIP: "built-in CLIP trained on the toy world: scores toy-sd15 runs, offline",
    TINY_RANDOM: f"tiny built-in CLIP, {RANDOM_NOTE}",
}
DINO_CHOICES: dict[str, str] = {
    DINO_DEFAULT: "DINO ViT-S/16 (timm vit_small_patch16_224.dino, ~90 MB download on first use)",
    DINO_NONE: "no DINO score: DINO needs the real dino-vits16 weights (the toy world has no DINO model)",
    TINY_RANDOM: f"tiny built-in ViT, {RANDOM_NOTE}",
}
DINO_TIMM_MODEL = "vit_small_patch16_224.dino"
TINY_CLIP_CONFIG = "lora-studio-tiny-clip"
"""open_clip config name of the tiny CLIP; `TINY_CLIP_CONFIG/<weights file>` loads saved tiny weights."""

_TINY_SEED = 0
_BATCH = 32
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")

_OFFLINE_HELP = (
    "Weights download from the Hugging Face Hub on first use. Offline: run the same command once on a "
    "machine that is online and copy its Hugging Face cache here (point HF_HOME at it), or give a local file")
CLIP_OFFLINE_HELP = (
    f"{_OFFLINE_HELP}: --clip MODEL/PATH, e.g. ViT-B-32-quickgelu/models/clip/open_clip_pytorch_model.bin "
    "(from the timm/vit_base_patch32_clip_224.openai repository), or --clip local-dir:FOLDER for a folder with "
    "open_clip_config.json and its weights.")
DINO_OFFLINE_HELP = (
    f"{_OFFLINE_HELP}: --dino PATH to the model.safetensors of timm/{DINO_TIMM_MODEL} (or a folder holding it), "
    "or to the original dino_deitsmall16_pretrain.pth.")


class BackboneError(RuntimeError):
    """A scoring model that cannot be loaded; the message names it and says how to provide it."""


@dataclass
class ClipBackbone:
    name: str
    random_weights: bool
    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device

    @property
    def label(self) -> str:
        return _label(self.name, self.random_weights)

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, D] L2-normalised fp32 image embeddings (on the CPU)."""
        return _encode_images(images, self.preprocess, self.model.encode_image, self.device)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """[N, D] L2-normalised fp32 text embeddings (on the CPU); long texts are cut at 77 tokens."""
        import torch

        with torch.inference_mode():
            out = [self.model.encode_text(self.tokenizer(texts[i:i + _BATCH]).to(self.device))
                   for i in range(0, len(texts), _BATCH)]
            return _normalise(out)


@dataclass
class DinoBackbone:
    name: str
    random_weights: bool
    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    device: torch.device

    @property
    def label(self) -> str:
        return _label(self.name, self.random_weights)

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, D] L2-normalised fp32 CLS embeddings (on the CPU)."""
        # timm's ViT with num_classes=0 and global_pool="token" returns the final-norm CLS token: the
        # ViT-S/16 DINO embedding the DreamBooth paper's DINO metric uses.
        return _encode_images(images, self.preprocess, self.model, self.device)


_loaded: dict[tuple[str, str], ClipBackbone | DinoBackbone] = {}
_load_lock = threading.Lock()


def load_clip(name: str = CLIP_DEFAULT) -> ClipBackbone:
    """The CLIP backbone `name` (cached per process).

    Names: `tiny-random`; `MODEL/TAG` (an open_clip model and pretrained tag, e.g. the default);
    `MODEL/PATH` (that model with a local weights file); `local-dir:FOLDER` or `hf-hub:ORG/REPO`
    (open_clip's own schemes). Raises `BackboneError` naming the model when it cannot be loaded.
    """
    with _load_lock:
        if ("clip", name) not in _loaded:
            _loaded[("clip", name)] = _build_clip(name)
        return _loaded[("clip", name)]  # type: ignore[return-value]


def default_backbones(base_model: str | None) -> tuple[str, str]:
    """The CLIP and DINO backbones a run is scored with unless told otherwise: toy-clip (and no DINO)
    for runs on the toy world's `toy-sd15`, whose pictures the real backbones have never seen."""
    from studio.world.builtin import TOY_SD15

    return (TOY_CLIP, DINO_NONE) if (base_model or "").strip() == TOY_SD15 else (CLIP_DEFAULT, DINO_DEFAULT)


def load_dino(name: str = DINO_DEFAULT) -> DinoBackbone:
    """The DINO backbone `name` (cached per process): `dino-vits16`, `tiny-random`, or a path to
    ViT-S/16 DINO weights (a file, or a folder holding model.safetensors / pytorch_model.bin)."""
    with _load_lock:
        if ("dino", name) not in _loaded:
            _loaded[("dino", name)] = _build_dino(name)
        return _loaded[("dino", name)]  # type: ignore[return-value]


# --- CLIP ------------------------------------------------------------------------------------

def loaded_backbones() -> list[str]:
    """The loaded backbones as "clip:NAME" / "dino:NAME"."""
    with _load_lock:
        return [f"{kind}:{name}" for kind, name in _loaded]


def unload_backbones() -> None:
    """Drop every loaded backbone (a training job wants the memory); the next load builds them again."""
    with _load_lock:
        if not _loaded:
            return
        _loaded.clear()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _build_clip(name: str) -> ClipBackbone:
    import open_clip
    import torch

    _register_tiny_clip()
    random_weights = name == TINY_RANDOM
    if random_weights:
        model_name, pretrained = TINY_CLIP_CONFIG, None
    elif name == TOY_CLIP:
        from studio.world.builtin import ToyWeightsMissing, toy_dir

        try:
            model_name, pretrained = f"local-dir:{toy_dir(TOY_CLIP)}", None
        except ToyWeightsMissing as err:
            raise BackboneError(str(err)) from err
    elif name.startswith(("local-dir:", "hf-hub:")):
        model_name, pretrained = name, None
    elif "/" in name:
        model_name, pretrained = name.split("/", 1)
    else:
        raise BackboneError(f"CLIP backbone {name!r}: give MODEL/TAG (e.g. {CLIP_DEFAULT}), MODEL/PATH to a weights "
                            f"file, local-dir:FOLDER or {TINY_RANDOM}")
    if model_name not in open_clip.list_models() and not model_name.startswith(("local-dir:", "hf-hub:")):
        raise BackboneError(f"CLIP backbone {name!r}: open_clip has no model {model_name!r} "
                            f"(the OpenAI weights go with the -quickgelu names, e.g. {CLIP_DEFAULT})")
    if pretrained and Path(pretrained).suffix in _WEIGHT_SUFFIXES and not Path(pretrained).is_file():
        raise BackboneError(f"CLIP backbone {name!r}: weights file {pretrained} does not exist")
    tag = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if tag.get("quick_gelu") and not open_clip.get_model_config(model_name).get("quick_gelu"):
        # open_clip would only warn, and the scores would come from a subtly different network
        raise BackboneError(f"CLIP backbone {name!r}: the {pretrained} weights were trained with QuickGELU; use "
                            f"{model_name}-quickgelu/{pretrained}")
    log.info("loading CLIP backbone %s", name)
    try:
        with torch.random.fork_rng(devices=[]), _open_clip_logs_at_debug():
            # seeded so that tiny-random's init is the same in every process (real weights replace it)
            torch.manual_seed(_TINY_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(model_name)
    except (OSError, RuntimeError, ValueError) as err:
        raise BackboneError(f"cannot load CLIP backbone {name!r} ({err}). {CLIP_OFFLINE_HELP}") from err
    device = detect_device().torch_device
    return ClipBackbone(name, random_weights, model.to(device).eval(), preprocess, tokenizer, device)


@contextlib.contextmanager
def _open_clip_logs_at_debug() -> Iterator[None]:
    """open_clip narrates each build on the root logger (and logs an ERROR before raising what we
    re-raise with advice): show that only when debug logging is on (the CLI's -v)."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return record.name != "root" or log.isEnabledFor(logging.DEBUG)

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _register_tiny_clip() -> None:
    """Register the tiny CLIP config with open_clip (once per process): real CLIP architecture at
    minimal width, with the full 49,408-token vocabulary so open_clip's bundled tokenizer fits."""
    import open_clip

    if TINY_CLIP_CONFIG in open_clip.list_models():
        return
    config = {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    path = write_json_atomic(cache_dir() / "open_clip" / f"{TINY_CLIP_CONFIG}.json", config)
    open_clip.add_model_config(path)


# --- DINO ------------------------------------------------------------------------------------

def _build_dino(name: str) -> DinoBackbone:
    import timm
    import torch

    random_weights = name == TINY_RANDOM
    kwargs: dict[str, Any] = {"num_classes": 0}
    if random_weights:
        kwargs |= {"pretrained": False, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32,
                   "patch_size": 8, "pretrained_cfg_overlay": {"input_size": (3, 32, 32)}}
    elif name == DINO_DEFAULT:
        kwargs["pretrained"] = True
    else:
        kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(_dino_weights_file(name))}}
    log.info("loading DINO backbone %s", name)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_TINY_SEED)
            model = timm.create_model(DINO_TIMM_MODEL, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        raise BackboneError(f"cannot load DINO backbone {name!r} (timm {DINO_TIMM_MODEL}: {err}). "
                            f"{DINO_OFFLINE_HELP}") from err
    config = timm.data.resolve_data_config({}, model=model)
    preprocess = timm.data.create_transform(**config)
    device = detect_device().torch_device
    return DinoBackbone(name, random_weights, model.to(device).eval(), preprocess, device)


def _dino_weights_file(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        found = [path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()]
        if not found:
            raise BackboneError(f"DINO backbone {name!r}: the folder holds no model.safetensors or pytorch_model.bin")
        return found[0]
    if path.is_file():
        return path
    raise BackboneError(f"DINO backbone {name!r}: not one of {', '.join(DINO_CHOICES)} and no such file or folder. "
                        f"{DINO_OFFLINE_HELP}")


# --- shared ----------------------------------------------------------------------------------

def _encode_images(images: list[Image.Image], preprocess: Callable[[Image.Image], torch.Tensor],
                   encode: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> torch.Tensor:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), _BATCH):
            batch = torch.stack([preprocess(im.convert("RGB")) for im in images[i:i + _BATCH]]).to(device)
            out.append(encode(batch))
        return _normalise(out)


def _normalise(chunks: list[torch.Tensor]) -> torch.Tensor:
    if not chunks:
        raise ValueError("nothing to encode: the list of images or texts is empty")
    import torch
    import torch.nn.functional as F

    # normalise in fp32 whatever the model ran in, so cosines do not inherit half-precision rounding
    return F.normalize(torch.cat(chunks).float(), dim=-1).cpu()


def _label(name: str, random_weights: bool) -> str:
    return f"{name} ({RANDOM_NOTE})" if random_weights else name
