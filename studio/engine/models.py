"""Base models from any source: built-in tiny, local diffusers folder, single `.safetensors`, Hub id.

`resolve_base` says what `model.base` names (without loading anything), `load_pipeline` loads it as
a `StableDiffusionPipeline` (SD1.5, no safety checker) or `StableDiffusionXLPipeline`, and
`list_local_models` shows what is in the models folder. Pickle checkpoints (.ckpt / .bin / .pt)
are never loaded: they can run code when unpickled.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

from studio.core.hub import hub_offline, is_hub_id
from studio.engine.builtin import BUILTIN_MODELS, Family, builtin_model_dir

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

log = logging.getLogger(__name__)

SourceKind = Literal["builtin", "folder", "single_file", "hub"]
LocalKind = Literal["folder", "single_file", "lora"]

# model_index.json `_class_name` of the text-to-image pipelines we train on.
_PIPELINE_FAMILIES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
}
# Where diffusers takes a single file's pipeline configs from when none is given.
_HUB_CONFIGS: dict[Family, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
_CONFIG_PATTERNS = ["**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model"]
_PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}


class ModelLoadError(RuntimeError):
    """A base model could not be found or loaded; the message says what to change."""


@dataclass(frozen=True)
class ModelSource:
    """What `model.base` names: `location` is a name (built in), an absolute path, or a Hub id."""

    kind: SourceKind
    location: str
    family: Family | None


@dataclass(frozen=True)
class LocalModel:
    """One entry of the models folder; `problem` says why it can't be used as is (or None)."""

    name: str
    path: Path
    kind: LocalKind
    family: Family | None
    size_bytes: int
    problem: str | None = None


# ---------------------------------------------------------------- family detection


def _read_safetensors_header(path: Path) -> tuple[list[str], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), dict(f.metadata() or {})
    except SafetensorError as exc:
        raise ModelLoadError(f"{path} is not a readable .safetensors file ({exc})") from exc


def _is_lora(keys: list[str]) -> bool:
    return any(k.startswith("lora_") or "lora_A" in k or "lora_down" in k for k in keys)


def _family_from_metadata(metadata: dict[str, str]) -> Family | None:
    architecture = metadata.get("modelspec.architecture", "")
    version = metadata.get("ss_base_model_version", "")
    if architecture.startswith("stable-diffusion-xl-v1") or version.startswith("sdxl"):
        return "sdxl"
    if architecture.startswith("stable-diffusion-v1") or version.startswith("sd_v1"):
        return "sd15"
    return None


def _family_from_keys(keys: list[str]) -> Family | None:
    """SDXL carries OpenCLIP bigG as `conditioner.embedders.1`; SD1.5 carries CLIP-L as `cond_stage_model`."""
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd15"
    return None


def _folder_class_name(folder: Path) -> str:
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"{folder} is not a diffusers folder (no model_index.json)")
    try:
        return str(json.loads(index.read_text(encoding="utf-8")).get("_class_name"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{index} is not valid JSON ({exc})") from exc


def detect_family(path: Path) -> Family | None:
    """The family of a diffusers folder or single `.safetensors` checkpoint; None if neither SD1.5 nor SDXL.

    Folders: model_index.json `_class_name`. Files: the text-encoder key names, else the
    `modelspec.architecture` metadata. Reads headers only, never weights.
    """
    path = Path(path)
    if path.is_dir():
        return _PIPELINE_FAMILIES.get(_folder_class_name(path))
    if path.suffix != ".safetensors":
        raise ModelLoadError(f"{path} is neither a diffusers folder (no model_index.json) nor a .safetensors file")
    keys, metadata = _read_safetensors_header(path)
    return _family_from_keys(keys) or _family_from_metadata(metadata)


# ---------------------------------------------------------------- resolving model.base


def _refuse_pickle(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"{path} is a {path.suffix} checkpoint (Python pickle), which can run arbitrary code when loaded; "
        "LoRA Studio only loads .safetensors. Download the .safetensors version of this model "
        "(or convert it once in a trusted environment) and set model.base to that file."
    )


def _local_source(path: Path) -> ModelSource:
    path = path.resolve()
    if path.is_dir():
        family = detect_family(path)
        if family is None:
            raise ModelLoadError(
                f"{path} holds a {_folder_class_name(path)}, not an SD1.5 / SDXL text-to-image pipeline "
                f"(model_index.json _class_name must be one of {sorted(_PIPELINE_FAMILIES)})"
            )
        return ModelSource("folder", str(path), family)
    if path.suffix in _PICKLE_SUFFIXES:
        raise _refuse_pickle(path)
    if path.suffix != ".safetensors":
        raise ModelLoadError(f"{path} is neither a diffusers folder (no model_index.json) nor a .safetensors file")
    keys, metadata = _read_safetensors_header(path)
    if _is_lora(keys):
        raise ModelLoadError(f"{path} is a LoRA, not a base model: set model.base to the model it was trained on")
    family = _family_from_keys(keys) or _family_from_metadata(metadata)
    if family is None:
        raise ModelLoadError(
            f"{path} is not a recognisable SD1.5 or SDXL checkpoint: it has neither `cond_stage_model.transformer.` "
            "(SD1.5) nor `conditioner.embedders.1.` (SDXL) keys, nor modelspec.architecture metadata"
        )
    return ModelSource("single_file", str(path), family)


def _looks_like_hub_id(base: str) -> bool:
    suffix = Path(base).suffix
    return is_hub_id(base) and suffix not in _PICKLE_SUFFIXES | {".safetensors"}


def resolve_base(base: str, models_dir: Path | None = None) -> ModelSource:
    """Say what `model.base` names, in this order: a built-in model; an existing path
    (absolute, relative to the working directory, or relative to `models_dir`); a name under
    `models_dir` (`NAME` or `NAME.safetensors`); a Hub id (`owner/name`).
    """
    base = base.strip()
    if not base:
        raise ModelLoadError(f"model.base is empty: set it to one of {', '.join(BUILTIN_MODELS)}, a path or a Hub id")
    if base in BUILTIN_MODELS:
        return ModelSource("builtin", base, BUILTIN_MODELS[base].family)

    candidates = [Path(base).expanduser()]
    if models_dir is not None and not candidates[0].is_absolute():
        candidates += [models_dir / base, models_dir / f"{base}.safetensors"]
    for candidate in candidates:
        if candidate.exists():
            return _local_source(candidate)

    if _looks_like_hub_id(base):
        return ModelSource("hub", base, None)

    tried = ", ".join(str(c) for c in candidates)
    local = list_local_models(models_dir) if models_dir else []
    available = ", ".join(m.name for m in local if m.kind != "lora" and m.problem is None) or "none"
    raise ModelLoadError(
        f"model.base {base!r} was not found (tried {tried}; it is not a Hub id of the form owner/name). "
        f"Built-in models: {', '.join(BUILTIN_MODELS)}. Base models in {models_dir or 'the models folder'}: "
        f"{available}."
    )


# ---------------------------------------------------------------- loading


def _check_family(requested: str | None, detected: Family, where: str) -> Family:
    """The model's own family, after checking that `model.family` (if given) agrees with it."""
    if requested is not None and requested not in get_args(Family):
        raise ModelLoadError(f"model.family {requested!r} is not one of {list(get_args(Family))}")
    if requested is not None and requested != detected:
        raise ModelLoadError(
            f"model.family is {requested!r} but {where} is an {detected!r} model: "
            f"set model.family to {detected!r} or choose an {requested!r} base model"
        )
    return detected


def _pipeline_class(family: Family):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _family_kwargs(family: Family) -> dict:
    # No safety checker: it is a separate 1.2 GB model (often pickle-only) and plays no part in training.
    if family == "sd15":
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return {}


def _check_folder_weights(folder: Path, family: Family) -> None:
    components = ("unet", "vae", "text_encoder") + (("text_encoder_2",) if family == "sdxl" else ())
    for name in components:
        sub = folder / name
        if not sub.is_dir():
            raise ModelLoadError(f"{folder} has no {name}/ folder, which an {family} diffusers folder needs")
        if any(sub.glob("*.safetensors")):
            continue
        pickles = sorted(p.name for p in sub.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        detail = f" (only {', '.join(pickles)}: pickle files, which LoRA Studio never loads)" if pickles else ""
        raise ModelLoadError(
            f"{sub} has no .safetensors weights{detail}. Download the model with its .safetensors files "
            "(most Hub repositories have them) and point model.base at that folder."
        )


def _load_folder(folder: Path, family: Family, dtype: torch.dtype):
    _check_folder_weights(folder, family)
    try:
        return _pipeline_class(family).from_pretrained(
            folder, dtype=dtype, use_safetensors=True, local_files_only=True, **_family_kwargs(family)
        )
    except OSError as exc:
        raise ModelLoadError(f"could not load the diffusers folder {folder}: {exc}") from exc


def _why_not_downloaded(exc: Exception) -> str:
    # Offline, the library's own message ("does not appear to have a file named ...") only misleads.
    return "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else f"the download failed ({exc})"


def _hub_error(repo: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"can't load {repo!r} from the Hugging Face Hub: it is not in the local Hugging Face cache and "
        f"{_why_not_downloaded(exc)}. To use it without the Hub, download it into models/ as a diffusers folder "
        f"(`hf download {repo} --local-dir models/{repo.split('/')[-1]}`) or as a single .safetensors file, "
        "and set model.base to that folder or file."
    )


def _load_hub(repo: str, requested: str | None, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    offline = hub_offline()
    try:
        index = DiffusionPipeline.load_config(repo, local_files_only=offline)
    except OSError as exc:
        raise _hub_error(repo, exc) from exc
    class_name = index.get("_class_name")
    if class_name not in _PIPELINE_FAMILIES:
        raise ModelLoadError(f"{repo!r} is a {class_name}, not an SD1.5 / SDXL text-to-image pipeline")
    family = _check_family(requested, _PIPELINE_FAMILIES[class_name], repo)
    try:
        return _pipeline_class(family).from_pretrained(
            repo, dtype=dtype, use_safetensors=True, local_files_only=offline, **_family_kwargs(family)
        )
    except OSError as exc:
        raise _hub_error(repo, exc) from exc


def _single_file_config(path: Path, family: Family, config: str | None) -> str:
    """The diffusers folder that supplies the pipeline configs around a single-file checkpoint."""
    if config is not None:
        folder = Path(config).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model.single_file_config {config!r} is not a folder (a local diffusers model)")
        config_family = detect_family(folder)
        if config_family != family:
            raise ModelLoadError(
                f"model.single_file_config {folder} is a {config_family or 'non-SD1.5/SDXL'} model but {path} "
                f"is an {family} checkpoint: use a diffusers folder of the same architecture"
            )
        return str(folder)

    from huggingface_hub import snapshot_download

    repo = _HUB_CONFIGS[family]
    try:
        return snapshot_download(repo, allow_patterns=_CONFIG_PATTERNS, local_files_only=hub_offline())
    except OSError as exc:
        raise ModelLoadError(
            f"{path} is a single-file {family} checkpoint; to build a pipeline around it diffusers needs the "
            f"configs of {repo}, which are not in the local Hugging Face cache, and {_why_not_downloaded(exc)}. "
            f"Set model.single_file_config to a local diffusers folder of the same architecture (for example "
            f"`hf download {repo} --include '*.json' '*.txt' --local-dir models/{repo.split('/')[-1]}-config`)."
        ) from exc


def _load_single_file(path: Path, family: Family, dtype: torch.dtype, config: str | None):
    config_dir = _single_file_config(path, family, config)
    return _pipeline_class(family).from_single_file(
        str(path), config=config_dir, dtype=dtype, local_files_only=True, **_family_kwargs(family)
    )


def load_pipeline(
    base: str,
    *,
    family: str | None = None,
    dtype: torch.dtype | None = None,
    models_dir: Path | None = None,
    single_file_config: str | None = None,
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """Load `model.base` as a diffusers SD1.5 / SDXL pipeline (on the CPU, in `dtype`).

    `family` is `model.family`: checked against what the model is. `single_file_config` is a local
    diffusers folder whose configs (and tokenizers, scheduler) go with a single-file checkpoint.
    `dtype` defaults to fp32.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    start = time.perf_counter()
    source = resolve_base(base, models_dir)
    if source.kind == "hub":
        pipeline = _load_hub(source.location, family, dtype)
    else:
        checked = _check_family(family, source.family, source.location)
        if source.kind == "builtin":
            pipeline = _load_folder(builtin_model_dir(source.location), checked, dtype)
        elif source.kind == "folder":
            pipeline = _load_folder(Path(source.location), checked, dtype)
        else:
            pipeline = _load_single_file(Path(source.location), checked, dtype, single_file_config)
    log.info("loaded %s base model %s in %.1f s", source.kind, source.location, time.perf_counter() - start)
    return pipeline


# ---------------------------------------------------------------- the models folder


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _describe_file(path: Path) -> LocalModel:
    size = path.stat().st_size
    if path.suffix in _PICKLE_SUFFIXES:
        return LocalModel(path.name, path, "single_file", None, size, str(_refuse_pickle(path)))
    try:
        keys, metadata = _read_safetensors_header(path)
    except ModelLoadError as exc:
        return LocalModel(path.stem, path, "single_file", None, size, str(exc))
    if _is_lora(keys):
        family = _family_from_metadata(metadata) or ("sdxl" if any(k.startswith("lora_te2_") for k in keys) else None)
        return LocalModel(path.stem, path, "lora", family, size)
    family = _family_from_keys(keys) or _family_from_metadata(metadata)
    problem = None if family else "not a recognisable SD1.5 / SDXL checkpoint"
    return LocalModel(path.stem, path, "single_file", family, size, problem)


def list_local_models(models_dir: Path) -> list[LocalModel]:
    """Diffusers folders, single-file checkpoints and LoRAs directly under `models_dir`, by name."""
    if not models_dir.is_dir():
        return []
    found = []
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / "model_index.json").is_file():
            try:
                class_name = _folder_class_name(entry)
            except ModelLoadError as exc:
                found.append(LocalModel(entry.name, entry, "folder", None, _size(entry), str(exc)))
                continue
            family = _PIPELINE_FAMILIES.get(class_name)
            problem = None if family else f"holds a {class_name}, not an SD1.5 / SDXL pipeline"
            found.append(LocalModel(entry.name, entry, "folder", family, _size(entry), problem))
        elif entry.is_file() and (entry.suffix == ".safetensors" or entry.suffix in _PICKLE_SUFFIXES):
            found.append(_describe_file(entry))
    return found


def load_vae(vae: str, models_dir: Path | None = None):
    """A replacement VAE (`model.vae`): a diffusers AutoencoderKL folder (by path or name under
    `models/`) or a Hub id such as `madebyollin/sdxl-vae-fp16-fix`; safetensors only. Loaded in fp32."""
    import torch
    from diffusers import AutoencoderKL

    candidates = [Path(vae).expanduser()] + ([models_dir / vae] if models_dir else [])
    folder = next((p for p in candidates if p.is_dir()), None)
    if folder is not None:
        if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
            raise ModelLoadError(f"model.vae {vae!r}: {folder} needs a config.json and .safetensors weights "
                                 "(a diffusers AutoencoderKL folder)")
        return AutoencoderKL.from_pretrained(folder, dtype=torch.float32, use_safetensors=True, local_files_only=True)
    if not _looks_like_hub_id(vae):
        raise ModelLoadError(f"model.vae {vae!r} is neither a VAE folder nor a Hub id (owner/name)")
    try:
        return AutoencoderKL.from_pretrained(vae, dtype=torch.float32, use_safetensors=True,
                                             local_files_only=hub_offline())
    except OSError as exc:
        raise _hub_error(vae, exc) from exc


def quiet_progress_bars() -> None:
    """Library progress bars while loading would only clutter the CLI's bar and the server log."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
