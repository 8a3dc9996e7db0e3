"""Merged exports: the base model with a run's LoRA fused into its weights.

- `pipeline`: a diffusers folder that `StableDiffusionPipeline` / `StableDiffusionXLPipeline
  .from_pretrained` load (text-encoder weights under transformers-4 names, `vocab.json` /
  `merges.txt` beside `tokenizer.json`, so transformers 4 and 5 both read it);
- `checkpoint`: one original-layout (LDM) `.safetensors` file that `from_single_file`,
  AUTOMATIC1111, Forge and ComfyUI load (names from `ldm_convert`, the one home of that mapping).

Memory: the base model is loaded once, in the export dtype (`save.dtype`), the LoRA is fused into
it in place (diffusers' `fuse_lora`, the same conversion `load_lora_weights` applies to our webui
file), and the files are written one tensor at a time (`safetensors_stream`). An export holds one
copy of the model plus one tensor, so a 7 GB SDXL needs about 7 GB of RAM, not 14.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from studio.config import RunConfig
from studio.core.atomic import new_temp_dir, publish_dir
from studio.engine.checkpoints import load_checkpoint
from studio.engine.ldm_convert import save_single_file, text_model_path
from studio.engine.lora_metadata import ModelCard, checkpoint_metadata
from studio.engine.previews import place_preview, thumbnail_data_uri
from studio.engine.runs import Checkpoint, RunFolder
from studio.engine.safetensors_stream import tensor_bytes, write_safetensors

Progress = Callable[[str, int, int], None]
"""Called as `progress(what, done, total)`; `done` / `total` count bytes while writing."""

ADAPTER = "studio"
LOAD_BYTES_PER_S = 150e6
WRITE_BYTES_PER_S = 150e6
"""Rough throughputs for the time estimate: loading the base (read, convert, cast) and writing the
merged weights. `python studio.py bench --export` on a real-size SD1.5 (2.0 GB in fp16) took 27 s
(pipeline) and 36 s (checkpoint) of wall time on a busy 2-core machine, about what these give
(29 s); disks differ, so the estimate is shown as a range."""


def _no_progress(what: str, done: int, total: int) -> None:
    pass


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def load_merged_pipeline(run: RunFolder, ckpt: Checkpoint, *, scale: float, dtype: torch.dtype,
                         models_dir: Path | None = None, progress: Progress = _no_progress):
    """The run's base pipeline in `dtype` with checkpoint `ckpt`'s LoRA fused in at `scale`."""
    from studio.engine.export import UNET_CONFIG_FILE, to_webui_state_dict
    from studio.engine.models import load_pipeline, load_vae, quiet_progress_bars

    config = run.config()
    progress(f"loading {config.model.base}", 0, 0)
    quiet_progress_bars()
    pipe = load_pipeline(config.model.base, family=config.model.family, dtype=dtype, models_dir=models_dir,
                         single_file_config=config.model.single_file_config)
    if config.model.vae:  # the VAE the run trained with is the one the merged model ships
        pipe.vae = load_vae(config.model.vae, models_dir).to(dtype)
    pipe.set_progress_bar_config(disable=True)

    progress("merging the LoRA", 0, 0)
    weights, _, _ = load_checkpoint(ckpt)
    unet_config = json.loads((run.path / UNET_CONFIG_FILE).read_text(encoding="utf-8"))
    state = to_webui_state_dict(weights, config.model.family, config.lora.alpha, unet_config, torch.float32)
    with _quiet_diffusers():  # "no LoRA keys for CLIPTextModel" when only the UNet was trained: expected
        pipe.load_lora_weights(state, adapter_name=ADAPTER)
    pipe.fuse_lora(components=list(weights.parts), lora_scale=scale, adapter_names=[ADAPTER])
    pipe.unload_lora_weights()  # drops the LoRA layers; the fused weights stay
    return pipe


def _weight_components(pipe) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


def _is_transformers(module: torch.nn.Module) -> bool:
    return any(cls.__module__.startswith("transformers.") for cls in type(module).__mro__)


def write_pipeline(pipe, folder: Path, progress: Progress = _no_progress) -> Path:
    """Write `pipe` as a diffusers folder at `folder` (atomically: a temp folder, then renamed).

    Like `save_pretrained`, but every weight file is streamed, with progress, and the text encoders
    are stored under transformers-4 names (`text_model.…`), which transformers 5 reads as well.
    """
    folder = Path(folder)
    tmp = new_temp_dir(folder.parent, folder.name)
    try:
        modules = _weight_components(pipe)
        total = sum(tensor_bytes(m.state_dict()) for m in modules.values())
        done = 0
        for name, component in pipe.components.items():
            if component is None:
                continue
            out = tmp / name
            if name not in modules:  # tokenizers and the scheduler
                component.save_pretrained(out)
                backend = getattr(component, "backend_tokenizer", None)
                if backend is not None and type(backend.model).__name__ == "BPE":
                    backend.model.save(str(out))  # vocab.json + merges.txt, which transformers-4 loaders read
                continue
            state = component.state_dict()
            if _is_transformers(component):
                component.config.save_pretrained(out)
                state, weights_file = {text_model_path(k): v for k, v in state.items()}, "model.safetensors"
            else:
                component.save_config(out)
                weights_file = "diffusion_pytorch_model.safetensors"
            offset = done
            write_safetensors(out / weights_file, state, {"format": "pt"},
                              progress=lambda d, _t, name=name, offset=offset: progress(f"writing {name}", offset + d,
                                                                                        total))
            done += tensor_bytes(state)
        pipe.save_config(tmp)  # model_index.json
        publish_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_checkpoint(pipe, path: Path, family: str, metadata: dict[str, str],
                     progress: Progress = _no_progress) -> Path:
    """Write `pipe` as one original-layout (LDM) `.safetensors` checkpoint."""
    return save_single_file(pipe, path, family, metadata=metadata,
                            progress=lambda done, total: progress("writing the checkpoint", done, total))


def export_merged(run: RunFolder, ckpt: Checkpoint, fmt: str, path: Path, *, scale: float, preview: Path | None,
                  card: ModelCard | None = None, models_dir: Path | None = None,
                  progress: Progress | None = None) -> Path:
    """Write checkpoint `ckpt` of `run` fused into its base as a `pipeline` folder or a `checkpoint` file.

    Holds the machine-wide accelerator lock: the export loads a whole base model, which does not fit
    beside a training job on most machines.
    """
    from studio.core.lock import ACCELERATOR
    from studio.engine.export import DTYPES

    config = run.config()
    progress = progress or _no_progress
    base = base_path(config, models_dir)
    if base is not None and (path.resolve() == base or base.is_relative_to(path.resolve())):
        raise ValueError(f"--out {path} would replace the base model itself ({base}): choose another place")
    with ACCELERATOR.hold(f"merged {fmt} export", run.name):
        pipe = load_merged_pipeline(run, ckpt, scale=scale, dtype=DTYPES[config.save.dtype], models_dir=models_dir,
                                    progress=progress)
        if fmt == "pipeline":
            return write_pipeline(pipe, path, progress)
        metadata = checkpoint_metadata(config, run, title=path.stem, lora_name=f"{run.name} (step {ckpt.step})",
                                       scale=scale, thumbnail=thumbnail_data_uri(preview) if preview else None,
                                       card=card)
        write_checkpoint(pipe, path, config.model.family, metadata, progress)
        place_preview(preview, path)
        return path


# --- estimates for the UI ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MergeEstimate:
    size_bytes: int | None
    """Bytes of the merged weights at the export dtype (None: the base is not on this machine yet)."""
    seconds: float | None

    def describe(self) -> str:
        from studio.engine.environment import human_bytes

        if self.size_bytes is None or self.seconds is None:
            return "size unknown until the base model is downloaded"
        low, high = max(1, round(self.seconds / 2)), max(2, round(self.seconds * 2))
        return f"about {human_bytes(self.size_bytes)}, roughly {_duration(low)}–{_duration(high)} on this machine"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _header_sizes(path: Path, itemsize: int) -> tuple[int, int]:
    """(bytes on disk, bytes at `itemsize` per element) of the floating-point tensors of a file."""
    from safetensors import safe_open

    on_disk = converted = 0
    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            if key.startswith("model_ema."):  # EMA copies some LDM checkpoints carry; not loaded
                continue
            piece = f.get_slice(key)
            numel = 1
            for n in piece.get_shape():
                numel *= n
            dtype = piece.get_dtype()
            on_disk += numel * {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}.get(dtype, 1)
            converted += numel * (itemsize if dtype in ("F64", "F32", "F16", "BF16") else 1)
    return on_disk, converted


def base_path(config: RunConfig, models_dir: Path | None = None) -> Path | None:
    """The base model's file or folder on this machine (None for a Hub id)."""
    from studio.engine.models import resolve_base

    source = resolve_base(config.model.base, models_dir)
    if source.kind == "hub":
        return None
    if source.kind == "builtin":
        from studio.engine.builtin import builtin_model_dir

        return builtin_model_dir(source.location).resolve()
    return Path(source.location).resolve()


def base_weight_files(config: RunConfig, models_dir: Path | None = None) -> list[Path] | None:
    """The base model's weight files on this machine (one per component), or None if it is not local."""
    base = base_path(config, models_dir)
    if base is None or base.is_file():
        return [base] if base else None
    files = []
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        candidates = sorted((base / name).glob("*.safetensors"))
        plain = [p for p in candidates if p.name.count(".") == 1]  # not an `.fp16.` variant
        files += plain or candidates[:1]
    return files


def estimate_merged_export(config: RunConfig, dtype: torch.dtype, models_dir: Path | None = None) -> MergeEstimate:
    """Size of the merged weights and a time estimate, from the base model's file headers (nothing loaded)."""
    files = base_weight_files(config, models_dir)
    if not files:
        return MergeEstimate(None, None)
    read = written = 0
    for file in files:
        on_disk, converted = _header_sizes(file, dtype.itemsize)
        read, written = read + on_disk, written + converted
    return MergeEstimate(written, 2.0 + read / LOAD_BYTES_PER_S + written / WRITE_BYTES_PER_S)

