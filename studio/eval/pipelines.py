"""One base pipeline kept loaded between comparison grids and batches; LoRAs switch as named adapters.

Loading a real base model takes seconds to minutes, a LoRA file a fraction of a second, and switching
between loaded adapters nothing. So `PipelineCache` holds one pipeline (the base model of the last
run it served), loads each LoRA file once as a peft adapter (keyed by path and modification time, so
a rewritten file is read again), and turns adapters on and off with `set_adapters` / `disable_lora`.
A disabled adapter leaves the base layers untouched: the prompt-only image is the base model's image.

Precision: fp16 on CUDA, fp32 on MPS (half precision gives black images there) and on the CPU.
In fp16 the SDXL pipeline decodes in fp32 whenever the VAE's config says it is not fp16-safe
(`force_upcast`, true for the stock SDXL VAE, false for fp16-fix VAEs chosen with model.vae).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from studio.core.device import detect_device
from studio.engine.models import load_pipeline, load_vae, quiet_progress_bars

if TYPE_CHECKING:
    from studio.config import RunConfig

log = logging.getLogger(__name__)

MAX_ADAPTERS = 8
"""LoRA files kept loaded at once; the least recently used one is unloaded beyond this. A grid
renders column by column, so even a grid with more LoRAs than this loads each file once."""


@contextlib.contextmanager
def _expected_lora_notices() -> Iterator[None]:
    """Hide two notices that describe what we do on purpose: several adapters in one model (peft), and a
    LoRA without text-encoder layers (diffusers' lora_base logger; lora.train_text_encoder is off by default)."""
    lora_base = logging.getLogger("diffusers.loaders.lora_base")
    level = lora_base.level
    lora_base.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            yield
    finally:
        lora_base.setLevel(level)


def inference_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (every CUDA GPU runs it fast); fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


class PipelineCache:
    """One base pipeline kept loaded between grids; LoRAs switch as named adapters, never reloads.

    Thread-safe; callers that generate images hold `ACCELERATOR` as well.
    """

    def __init__(self, models_dir: Path | None = None) -> None:
        self.models_dir = models_dir
        self._lock = threading.RLock()
        self._pipe = None
        self._key: tuple | None = None
        self._adapters: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._loaded = 0

    @property
    def device(self) -> torch.device:
        """Where the pipeline runs: the accelerator when there is one."""
        return detect_device().torch_device

    def pipeline(self, config: RunConfig):
        """The run's base model (model.base / family / vae / single_file_config), loaded once per
        (base, family, vae, single-file config, dtype, device) and reused; another base replaces it."""
        device = self.device
        dtype = inference_dtype(device)
        model = config.model
        key = (model.base.strip(), model.family, model.vae, model.single_file_config, str(dtype), device.type)
        with self._lock:
            if self._pipe is not None and self._key == key:
                return self._pipe
            self.clear()
            quiet_progress_bars()
            pipe = load_pipeline(model.base, family=model.family, dtype=dtype, models_dir=self.models_dir,
                                 single_file_config=model.single_file_config)
            if model.vae:
                pipe.vae = load_vae(model.vae, self.models_dir).to(dtype=dtype)
            pipe.to(device)
            pipe.set_progress_bar_config(disable=True)  # callers report progress per image
            self._pipe, self._key = pipe, key
            log.info("pipeline cache: %s on %s in %s", model.base, device.type, str(dtype).removeprefix("torch."))
            return pipe

    def use_lora(self, pipe, lora: Path | None, scale: float) -> None:
        """Prompt only when `lora` is None or `scale` is 0 (every adapter disabled); otherwise the file,
        loaded once as a named adapter, is the only active adapter, at `scale`."""
        with self._lock:
            if pipe is not self._pipe:
                raise ValueError("use_lora takes the pipeline this cache returned from pipeline()")
            if lora is None or scale == 0:
                pipe.disable_lora()
                return
            name = self._adapter(pipe, Path(lora))
            # enable first: disable_lora() turned every LoRA layer off, set_adapters only picks the active one.
            # An adapter without layers in some component (a UNet-only LoRA and the text encoder) leaves that
            # component's layers inactive, so nothing of an earlier LoRA leaks into this one.
            pipe.enable_lora()
            pipe.set_adapters([name], adapter_weights=[float(scale)])

    @property
    def loaded(self) -> bool:
        """Whether a base pipeline is held (in memory, on its device)."""
        return self._pipe is not None

    def clear(self) -> None:
        """Drop the pipeline and its adapters (frees memory); the next pipeline() loads again."""
        with self._lock:
            if self._pipe is None:
                return
            self._pipe, self._key = None, None
            self._adapters.clear()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _adapter(self, pipe, path: Path) -> str:
        """The adapter name of `path`, loading the file first if this version of it is not loaded."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"LoRA file {path} does not exist (was the checkpoint deleted?)") from None
        resolved = str(path.resolve())
        key = (resolved, stat.st_mtime_ns)
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return self._adapters[key]
        stale = [k for k in self._adapters if k[0] == resolved]
        while len(self._adapters) - len(stale) >= MAX_ADAPTERS:
            stale.append(next(k for k in self._adapters if k not in stale))
        if stale:
            pipe.delete_adapters([self._adapters.pop(k) for k in stale])
        self._loaded += 1
        # diffusers matches an adapter's keys by substring: "studio12_" is in no module path and in no other name
        name = f"studio{self._loaded}_"
        try:
            with _expected_lora_notices():
                pipe.load_lora_weights(str(path), adapter_name=name)
        except Exception as exc:  # a failed load can leave layers half-injected: drop the pipeline, then report
            self.clear()
            raise ValueError(f"could not load the LoRA {path} into the {type(pipe).__name__}: {exc}") from exc
        self._adapters[key] = name
        log.debug("pipeline cache: loaded LoRA %s as adapter %s", path.name, name)
        return name
