"""The run config: one typed schema, presets, and `--set key.path=value` overrides.

Layering is defaults ← preset ← overrides (CLI `--set`, or edits in the UI). Every field's
docstring is its help text in the CLI and the UI. Unknown keys and bad values are rejected with
the key path and the allowed values; rules that involve several fields are checked up front.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from studio.paths import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"


class ConfigError(ValueError):
    """A config a user wrote is wrong; the message names the key path and what is allowed."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ModelSection(Section):
    family: Literal["sd15", "sdxl"] = "sd15"
    """Model family: `sd15` (Stable Diffusion 1.x, 512 px) or `sdxl` (SDXL, 1024 px)."""

    base: str = "tiny-sd15"
    """Base model: a Hub id (`stable-diffusion-v1-5/stable-diffusion-v1-5`), a diffusers folder,
    a single-file `.safetensors` checkpoint (under `models/` or a path), or the built-in
    `tiny-sd15` / `tiny-sdxl` (random weights, for trying the studio offline)."""

    single_file_config: str | None = None
    """For a single-file checkpoint offline: a local diffusers folder of the same architecture
    whose configs describe the file (online, diffusers fetches them)."""

    vae: str | None = None
    """Optional replacement VAE (Hub id or diffusers folder), e.g. an fp16-safe SDXL VAE;
    empty keeps the base model's VAE."""


class DataSection(Section):
    dir: str = "builtin:demo"
    """Dataset folder: images with captions in `.txt` sidecars, `metadata.jsonl` or
    `captions.json`. `builtin:demo` is the built-in demo dataset."""

    resolution: int = Field(512, ge=64, le=4096)
    """Training resolution in pixels (the area of each aspect bucket). SD1.5: 512; SDXL: 1024."""

    trigger_word: str = ""
    """The rare token that names the concept in captions (e.g. `ohwx`); used in prompts and
    written into the LoRA's metadata so other tools show it."""

    class_phrase: str = ""
    """What the concept is, in plain words (`woman`, `leather handbag`); replaces the trigger
    word when scoring prompt adherence."""

    buckets: bool = True
    """Aspect-ratio buckets: keep each image's shape instead of centre-cropping to a square."""

    bucket_step: int = Field(64, ge=8)
    """Bucket sides are multiples of this many pixels."""

    repeats: int = Field(1, ge=1, le=1000)
    """How many times each image appears per epoch (kohya's `repeats`)."""

    caption_dropout: float = Field(0.0, ge=0.0, le=1.0)
    """Probability of training a step on an empty caption; 0.05–0.1 helps the LoRA work
    without its trigger word."""

    flip: bool = False
    """Random horizontal flips (don't use for asymmetric subjects: logos, text, faces with a
    parting)."""

    color_jitter: float = Field(0.0, ge=0.0, le=0.5)
    """Random brightness/contrast/saturation change, as a fraction (0.1 = ±10 %)."""

    rotation: float = Field(0.0, ge=0.0, le=45.0)
    """Random rotation up to ± this many degrees."""


class LoraSection(Section):
    rank: int = Field(8, ge=1, le=256)
    """LoRA rank (dimension): capacity of the adapter. 4–16 for a subject or style; higher ranks
    learn more and overfit sooner."""

    alpha: float = 8.0
    """LoRA alpha: the update is scaled by alpha / rank. alpha = rank is neutral; kohya users
    often take alpha = rank / 2."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA path; 0.05–0.1 reduces overfitting on small datasets."""

    targets: Literal["attention", "attention+ff", "attention+ff+conv"] = "attention"
    """UNet layers that get LoRA: attention projections (the classic LoRA), plus feed-forward,
    plus convolutions (more capacity, bigger file)."""

    train_text_encoder: bool = False
    """Also train LoRA on the text encoder(s). Stronger concept binding; disables text-embedding
    caching and costs memory."""


class OptimSection(Section):
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    """AdamW, or 8-bit AdamW from bitsandbytes (CUDA only; saves memory)."""

    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    """UNet LoRA learning rate. 1e-4 is the usual start for rank 8–16."""

    text_encoder_lr: float | None = Field(None, gt=0.0, le=1.0)
    """Text-encoder LoRA learning rate; empty uses half the UNet rate."""

    weight_decay: float = Field(1e-2, ge=0.0, le=1.0)
    """AdamW weight decay."""

    scheduler: Literal["constant", "cosine", "linear", "plateau"] = "constant"
    """Learning-rate schedule after warm-up. `plateau` lowers the rate when the smoothed loss
    stops improving."""

    warmup_steps: int = Field(0, ge=0)
    """Steps of linear warm-up from 0 to the learning rate."""

    plateau_patience: int = Field(200, ge=1)
    """`plateau` only: optimizer steps without improvement before the rate is lowered."""

    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    """`plateau` only: factor the rate is multiplied by."""

    max_grad_norm: float = Field(1.0, ge=0.0)
    """Gradient clipping norm; 0 disables clipping."""


class TrainSection(Section):
    max_steps: int = Field(1000, ge=1)
    """Optimizer steps to train (each one sees batch_size × grad_accumulation images)."""

    batch_size: int = Field(1, ge=1, le=256)
    """Images per forward pass."""

    grad_accumulation: int = Field(1, ge=1, le=1024)
    """Forward passes per optimizer step: a larger effective batch without more memory."""

    seed: int = 42
    """Random seed: same seed, data and settings give the same run on the same device."""

    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Compute precision. `auto`: bf16 on CUDA GPUs that have it, fp16 with loss scaling on
    others (T4), fp32 on Apple MPS and CPU. LoRA weights always stay fp32."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory, ~20–30 % slower."""

    cache_latents: bool = True
    """Encode every image with the VAE once, then free the VAE (faster steps, less memory).
    Random rotation/colour jitter need the VAE each step and turn this off; flips are cached."""

    cache_text_embeddings: bool = True
    """Encode every caption once when the text encoders are frozen."""

    min_snr_gamma: float | None = Field(5.0, gt=0.0)
    """Min-SNR loss weighting γ (Hang et al. 2023, §3.4); 5 is the paper's value. Empty
    disables it."""

    noise_offset: float = Field(0.0, ge=0.0, le=1.0)
    """Noise offset (0.03–0.1) lets the model learn very dark or bright images."""

    log_every_steps: int = Field(1, ge=1)
    """Write a metrics row every this many optimizer steps."""


class SampleSection(Section):
    prompts: list[str] = Field(default_factory=list)
    """Validation prompts rendered during training with the current LoRA. `{trigger}` is
    replaced by data.trigger_word."""

    seeds: list[int] = Field(default_factory=lambda: [0])
    """Seeds for the validation images (one image per prompt × seed)."""

    every_steps: int = Field(0, ge=0)
    """Render samples every this many steps and at the end; 0 disables samples."""

    inference_steps: int = Field(25, ge=1, le=200)
    """Denoising steps per validation image."""

    guidance_scale: float = Field(7.0, ge=0.0, le=30.0)
    """Classifier-free guidance scale for validation images."""

    negative_prompt: str = ""
    """Negative prompt for validation images."""


class SaveSection(Section):
    every_steps: int = Field(0, ge=0)
    """Save a checkpoint every this many steps (0: only by epoch and at the end)."""

    every_epochs: int = Field(0, ge=0)
    """Save a checkpoint every this many epochs (0: off)."""

    keep_last: int = Field(5, ge=1)
    """Checkpoints kept; older ones are deleted once a newer one is complete."""

    dtype: Literal["fp16", "bf16", "fp32"] = "fp16"
    """Precision of the exported LoRA file (fp16 is what other tools expect)."""


class RunConfig(Section):
    """A complete, validated training run."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    save: SaveSection = Field(default_factory=SaveSection)

    @model_validator(mode="after")
    def _check_cross_field(self) -> RunConfig:
        problems: list[str] = []
        base = self.model.base.strip()
        if base in {"tiny-sd15", "tiny-sdxl"} and base != f"tiny-{self.model.family}":
            problems.append(f"model.family is `{self.model.family}` but model.base is `{base}`: "
                            f"set model.family to `{base.removeprefix('tiny-')}`")
        if self.data.resolution % 8:
            problems.append(f"data.resolution must be a multiple of 8 (the VAE downscales 8×), got {self.data.resolution}")
        elif self.data.buckets and self.data.resolution % self.data.bucket_step:
            problems.append(f"data.resolution {self.data.resolution} must be a multiple of data.bucket_step "
                            f"({self.data.bucket_step}) when data.buckets is on")
        if self.data.bucket_step % 8:
            problems.append(f"data.bucket_step must be a multiple of 8, got {self.data.bucket_step}")
        if self.lora.alpha <= 0:
            problems.append(f"lora.alpha must be > 0, got {self.lora.alpha}")
        if self.sample.every_steps and not self.sample.prompts:
            problems.append("sample.every_steps is set but sample.prompts is empty: add prompts or set it to 0")
        if self.optim.warmup_steps >= self.train.max_steps:
            problems.append(f"optim.warmup_steps ({self.optim.warmup_steps}) must be below train.max_steps "
                            f"({self.train.max_steps})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """A new config with dotted-key overrides applied and everything re-validated."""
        data = self.model_dump()
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        return build_config(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --- keys, help and errors -------------------------------------------------------------------

SECTIONS: dict[str, type[Section]] = {
    name: info.annotation for name, info in RunConfig.model_fields.items()  # type: ignore[misc]
}


def all_keys() -> list[str]:
    """Every `section.key` path, in schema order."""
    return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in cls.model_fields]


def field_help(key: str) -> str:
    """The docstring of one `section.key`, with its allowed values if it is a closed choice."""
    section, name = _split_key(key)
    info = SECTIONS[section].model_fields[name]
    text = " ".join((info.description or "").split())
    choices = literal_choices(key)
    if choices:
        text += f" (one of: {', '.join(map(str, choices))})"
    return text


def literal_choices(key: str) -> tuple[Any, ...]:
    section, name = _split_key(key)
    annotation = SECTIONS[section].model_fields[name].annotation
    return get_args(annotation) if getattr(annotation, "__origin__", None) is Literal else ()


def _split_key(key: str) -> tuple[str, str]:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(_unknown_key_message(key))
    if parts[1] not in SECTIONS[parts[0]].model_fields:
        raise ConfigError(_unknown_key_message(key))
    return parts[0], parts[1]


def _unknown_key_message(key: str) -> str:
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        options = list(SECTIONS)
        where = "a section"
    else:
        options = list(SECTIONS[parts[0]].model_fields)
        where = f"a key of `{parts[0]}`"
    close = difflib.get_close_matches(parts[-1] if parts[0] in SECTIONS else parts[0], options, n=1)
    hint = f" Did you mean `{(parts[0] + '.') if parts[0] in SECTIONS else ''}{close[0]}`?" if close else ""
    return f"`{key}` is not {where}.{hint} Allowed: {', '.join(options)}."


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            lines.append(_unknown_key_message(path))
        elif kind == "literal_error":
            allowed = e.get("ctx", {}).get("expected", "")
            lines.append(f"`{path}`: {e['input']!r} is not allowed; expected {allowed}.")
        elif kind == "value_error" and not path:
            lines.append(str(e["msg"]).removeprefix("Value error, "))
        else:
            lines.append(f"`{path}`: {e['msg']} (got {e.get('input')!r}).")
    return "\n".join(lines)


def build_config(data: dict[str, Any] | None = None) -> RunConfig:
    """Validate a plain dict into a RunConfig, raising ConfigError with readable messages."""
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


# --- overrides -------------------------------------------------------------------------------

_KEY_RE = re.compile(r"^[a-z_]+\.[a-z_0-9]+$")


def parse_override(text: str) -> tuple[str, Any]:
    """`lora.rank=16` → ("lora.rank", 16).

    Text fields take the value verbatim (a trigger word `1990s` stays a string); other fields read
    it as YAML (numbers, booleans, lists such as `[1, 2]`), and pydantic converts what remains.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY_RE.match(key):
        raise ConfigError(f"--set expects key.path=value (e.g. lora.rank=16), got {text!r}")
    section, name = _split_key(key)
    annotation = SECTIONS[section].model_fields[name].annotation
    nullable = type(None) in get_args(annotation)
    if nullable and raw.strip().lower() in {"null", "none", "~", ""}:
        return key, None
    if annotation is str or (nullable and str in get_args(annotation)):
        return key, raw
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError:
        return key, raw


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    section, name = _split_key(key)
    data.setdefault(section, {})[name] = value


# --- presets ---------------------------------------------------------------------------------

def list_presets(presets_dir: Path = PRESETS_DIR) -> dict[str, str]:
    """Preset name → its one-line description (the first comment line of the YAML)."""
    out = {}
    for path in sorted(presets_dir.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        out[path.stem] = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
    return out


def preset_path(name_or_file: str, presets_dir: Path = PRESETS_DIR) -> Path:
    path = Path(name_or_file)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    candidate = presets_dir / f"{name_or_file}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"no preset `{name_or_file}`: built-in presets are {', '.join(list_presets(presets_dir))}, "
                      f"or give a path to a .yaml file")


def load_preset_dict(name_or_file: str, presets_dir: Path = PRESETS_DIR) -> dict[str, Any]:
    path = preset_path(name_or_file, presets_dir)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset is a mapping of sections (model:, data:, …), got {type(data).__name__}")
    return data


def load_config(preset: str | None = None, overrides: list[str] | dict[str, Any] | None = None,
                presets_dir: Path = PRESETS_DIR) -> RunConfig:
    """defaults ← preset ← overrides, validated once at the end."""
    data = copy.deepcopy(load_preset_dict(preset, presets_dir)) if preset else {}
    pairs = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in pairs:
        _set_dotted(data, key, value)
    return build_config(data)


def load_run_config(path: Path) -> RunConfig:
    """Reload a run folder's `config.yaml`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    return build_config(data)
