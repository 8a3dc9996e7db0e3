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

from studio.engine.builtin import BUILTIN_MODELS
from studio.paths import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"


class ConfigError(ValueError):
    """A config a user wrote is wrong; the message names the key path and what is allowed.

    `problems` says the same in the form's words, one short sentence per problem ("Rank must be at
    least 1 (lora.rank)."); `line` is the first of them, for a one-line answer in the studio."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]

    @property
    def line(self) -> str:
        more = len(self.problems) - 1
        return self.problems[0] + (f" (and {more} more: see the details)" if more else "")


class Section(BaseModel):
    # allow_inf_nan=False: `nan` / `inf` are refused as "not a number" before any range check, which
    # would otherwise say "less than or equal to 1 (got 'nan')"
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True,
                              allow_inf_nan=False)


class ModelSection(Section):
    family: Literal["sd15", "sdxl"] = "sd15"
    """Model family: `sd15` (Stable Diffusion 1.x, 512 px) or `sdxl` (SDXL, 1024 px)."""

    base: str = "tiny-sd15"
    """Base model: a Hub id (`stable-diffusion-v1-5/stable-diffusion-v1-5`), a diffusers folder,
    a single-file `.safetensors` checkpoint (under `models/` or a path), or a built-in model:
    `toy-sd15` (pretrained on the toy world of coloured shapes: the offline demo) or `tiny-sd15` /
    `tiny-sdxl` (random weights, images are noise: for fast structural tests)."""

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

    augment_variants: int = Field(4, ge=1, le=32)
    """With color_jitter or rotation: augmented copies of each image, drawn once from train.seed and the
    image and cached like it (each step picks one). More copies give more variety and cost more encoding
    up front (images × copies, × 2 with flips) and cache space; 4–8 is plenty."""


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

    init_from: str | None = None
    """Start from existing LoRA weights instead of a fresh adapter: a run name (its latest
    checkpoint), `RUN@STEP` (that checkpoint), a checkpoint folder, or a webui/kohya or diffusers
    `.safetensors` LoRA file. The file's rank, alpha and layers are adopted (with a notice where
    they differ from lora.rank / lora.alpha / lora.targets); config.yaml keeps the absolute path."""


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
    """Steps of linear warm-up from 0 to the learning rate. A warm-up as long as the run or longer
    is clamped to a tenth of the run, with a notice."""

    plateau_patience: int = Field(200, ge=1)
    """`plateau` only: optimizer steps without improvement before the rate is lowered."""

    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    """`plateau` only: factor the rate is multiplied by."""

    max_grad_norm: float = Field(1.0, ge=0.0)
    """Gradient clipping norm; 0 disables clipping."""

    horizons: list[tuple[int, int]] = Field(default_factory=list)
    """Written by `resume --max-steps` (leave it empty): [[until_step, max_steps], …] — the steps
    before until_step took their cosine / linear rate from a run of that many steps, so an
    extended run's config.yaml still trains into the same weights from scratch."""


class TrainSection(Section):
    max_steps: int = Field(1000, ge=1)
    """Optimizer steps to train (each one sees batch_size × grad_accumulation images)."""

    max_epochs: int | None = Field(None, ge=1)
    """Train this many passes over the dataset instead: train.max_steps is then worked out from
    the dataset (epochs × steps per epoch) when the run starts and written to config.yaml. Give
    one of the two."""

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

    compile: bool = False
    """Compile the UNet's training step with `torch.compile`: the first step waits for the compiler (on a CPU,
    minutes even for a small UNet), later ones may run faster. Off by default: on a CPU the compile costs more
    than a run of usual length saves; worth a try for long runs on a CUDA GPU."""

    cache_latents: bool = True
    """Encode every image with the VAE once, then free the VAE (faster steps, less memory). Latents are
    kept on disk (the per-user cache, `python studio.py check` shows its size), so later runs, resumes
    and extensions on the same images and VAE encode nothing; flips and augmented copies are cached too."""

    cache_text_embeddings: bool = True
    """Encode every caption once when the text encoders are frozen (kept in the same disk cache)."""

    min_snr_gamma: float | None = Field(5.0, gt=0.0)
    """Min-SNR loss weighting γ (Hang et al. 2023, §3.4); 5 is the paper's value. Empty
    disables it."""

    noise_offset: float = Field(0.0, ge=0.0, le=1.0)
    """Noise offset (0.03–0.1) lets the model learn very dark or bright images."""

    log_every_steps: int = Field(1, ge=1)
    """Write a metrics row every this many optimizer steps."""

    stop_at_clip_i: float | None = Field(None, gt=-1.0, le=1.0)
    """Stop the run, with a checkpoint, once the validation CLIP-I (sample.score_backbone) reaches
    this on two consecutive sample steps, e.g. 0.8 (check what your backbone gives the training
    images first: a target they do not reach is never met). Empty: train to the end."""


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

    score_backbone: str | None = None
    """Score each sample step's images while training: CLIP-I (against the training images) and
    CLIP-T with this CLIP backbone, written to metrics.jsonl and drawn beside the loss. `toy-clip`
    for toy-sd15 runs, `ViT-B-32-quickgelu/openai` (a ~600 MB download on first use), or
    `tiny-random` (random weights, for trials). Empty: off. It loads once per run."""

    score_dino: str | None = None
    """With sample.score_backbone: also DINO with this backbone (`dino-vits16`, ~90 MB on first
    use, or a weights file). Empty: no DINO."""


class SaveSection(Section):
    every_steps: int = Field(0, ge=0)
    """Save a checkpoint every this many steps (0: only by epoch and at the end)."""

    every_epochs: int = Field(0, ge=0)
    """Save a checkpoint every this many epochs (0: off)."""

    keep_last: int = Field(5, ge=1)
    """The newest checkpoints kept; older ones are deleted once a newer one is complete, unless
    keep_every_steps / keep_every_epochs keeps them. Save-now checkpoints are never deleted."""

    keep_every_steps: int = Field(0, ge=0)
    """Also keep every checkpoint whose step is a multiple of this, for comparing across the run
    (0: off)."""

    keep_every_epochs: int = Field(0, ge=0)
    """Also keep every epoch-end checkpoint whose epoch is a multiple of this (0: off); with
    save.every_epochs 1 and 20 here, epochs 20, 40, 60 … stay beside the newest."""

    dtype: Literal["fp16", "bf16", "fp32"] = "fp16"
    """Precision of the exported LoRA file (fp16 is what other tools expect)."""


class LogSection(Section):
    tensorboard: bool = False
    """Also write TensorBoard event files (loss, smoothed loss, learning rate, samples) into
    `<run>/tensorboard/`; needs `pip install tensorboard`. Watch with `tensorboard --logdir outputs`."""

    epoch_loss: bool = False
    """Print one line per epoch in the terminal: `epoch 20/100: loss 0.1234, lr 1.0e-04`."""


class RunConfig(Section):
    """A complete, validated training run."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    save: SaveSection = Field(default_factory=SaveSection)
    log: LogSection = Field(default_factory=LogSection)

    @model_validator(mode="after")
    def _check_cross_field(self) -> RunConfig:
        problems: list[str] = []
        base = self.model.base.strip()
        builtin = BUILTIN_MODELS.get(base)
        if builtin is not None and builtin.family != self.model.family:
            problems.append(f"model.family is `{self.model.family}` but model.base is `{base}`: "
                            f"set model.family to `{builtin.family}`")
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
        if self.sample.score_dino and not self.sample.score_backbone:
            problems.append("sample.score_dino is set but sample.score_backbone is empty: DINO is scored beside "
                            "CLIP, so set sample.score_backbone too")
        if self.train.stop_at_clip_i is not None and not (self.sample.score_backbone and self.sample.every_steps):
            problems.append("train.stop_at_clip_i needs validation scores: set sample.score_backbone and "
                            "sample.every_steps (with sample.prompts)")
        epochs = self.train.max_epochs
        for key, every in (("save.every_epochs", self.save.every_epochs),
                           ("save.keep_every_epochs", self.save.keep_every_epochs)):
            if epochs and every > epochs:
                problems.append(f"{key} ({every}) is more than train.max_epochs ({epochs}): no epoch would match")
        if self.save.keep_every_epochs and not self.save.every_epochs:
            problems.append("save.keep_every_epochs keeps epoch-end checkpoints, but save.every_epochs is 0: "
                            "set save.every_epochs (or use save.keep_every_steps)")
        previous = 0
        for until, horizon in self.optim.horizons:
            if not previous < until <= horizon or until >= self.train.max_steps:
                problems.append(f"optim.horizons must be [[until_step, max_steps], …] with steps rising and below "
                                f"train.max_steps ({self.train.max_steps}), got {self.optim.horizons}")
                break
            previous = until
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


def field_bounds(key: str) -> tuple[float | None, float | None]:
    """(lowest, highest) the schema allows for a number key, None where it sets no bound; an
    exclusive bound (gt / lt) is given as is (callers that check say "between")."""
    import annotated_types

    section, name = _split_key(key)
    low = high = None
    for rule in SECTIONS[section].model_fields[name].metadata:
        if isinstance(rule, (annotated_types.Ge, annotated_types.Gt)):
            low = getattr(rule, "ge", getattr(rule, "gt", None))
        elif isinstance(rule, (annotated_types.Le, annotated_types.Lt)):
            high = getattr(rule, "le", getattr(rule, "lt", None))
    return low, high


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


def _example_value(path: str) -> str:
    """The key's default, as an example of a valid value (`1e-4` for optim.learning_rate)."""
    section, _, name = path.partition(".")
    info = SECTIONS[section].model_fields.get(name) if section in SECTIONS else None
    default = info.default if info is not None else None
    return f"{default:g}" if isinstance(default, float) else "1.0"


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
        elif kind == "finite_number":
            lines.append(f"`{path}` must be a finite number, e.g. {_example_value(path)} "
                         f"(got {e.get('input')!r}, which is not a usable number).")
        else:
            lines.append(f"`{path}`: {e['msg']} (got {e.get('input')!r}).")
    return "\n".join(lines)


FIELD_NAMES = {"data.dir": "Dataset folder", "model.base": "Base model", "model.vae": "VAE", "lora.rank": "Rank",
               "lora.alpha": "Alpha", "optim.learning_rate": "Learning rate",
               "optim.text_encoder_lr": "Text encoder learning rate", "sample.every_steps": "Sample every N steps",
               "save.every_steps": "Save every N steps", "save.keep_last": "Checkpoints to keep"}
"""The form's words for a key where its name alone reads poorly; other keys read as their name."""


def field_name(key: str) -> str:
    """A key in the form's words: `lora.rank` → "Rank", `train.max_steps` → "Max steps"."""
    return FIELD_NAMES.get(key) or key.rpartition(".")[2].replace("_", " ").capitalize()


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain_problem(e: dict[str, Any]) -> str:
    """One pydantic error in the form's words: what is wrong with which field, and what it takes."""
    path = ".".join(str(p) for p in e["loc"])
    kind, ctx = e["type"], e.get("ctx", {})
    if kind == "value_error" and not path:
        return str(e["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return _unknown_key_message(path)
    name = field_name(path) if path.count(".") == 1 else path
    if kind == "greater_than_equal":
        text = f"{name} must be at least {_number(ctx['ge'])}"
    elif kind == "greater_than":
        text = f"{name} must be more than {_number(ctx['gt'])}"
    elif kind == "less_than_equal":
        text = f"{name} must be at most {_number(ctx['le'])}"
    elif kind == "less_than":
        text = f"{name} must be less than {_number(ctx['lt'])}"
    elif kind in ("int_parsing", "int_from_float", "int_type"):
        text = f"{name} must be a whole number"
    elif kind in ("float_parsing", "float_type", "finite_number"):
        text = f"{name} must be a number, e.g. {_example_value(path)}"
    elif kind == "literal_error":
        text = f"{name} must be one of {ctx.get('expected', '')}"
    else:
        text = f"{name}: {e['msg']}"
    return f"{text} ({path})."


def build_config(data: dict[str, Any] | None = None) -> RunConfig:
    """Validate a plain dict into a RunConfig, raising ConfigError with readable messages."""
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as err:
        problems = [_plain_problem(e) for e in err.errors()]
        raise ConfigError(_format_validation_error(err), problems) from None


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
    """defaults ← preset ← overrides, validated once at the end.

    The run's length is train.max_steps or train.max_epochs: a layer (the preset, or the overrides)
    that gives one replaces the other from the layer below; one layer giving both is an error.
    """
    data = copy.deepcopy(load_preset_dict(preset, presets_dir)) if preset else {}
    _check_one_length(data.get("train") or {}, f"preset {preset}")
    pairs = list(overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or []))
    given = {key: value for key, value in pairs}
    _check_one_length({k.removeprefix("train."): v for k, v in given.items() if k.startswith("train.")},
                      "the overrides")
    train = data.setdefault("train", {})
    if given.get("train.max_epochs") is not None:
        train.pop("max_steps", None)
    elif "train.max_steps" in given:
        train.pop("max_epochs", None)
    for key, value in pairs:
        _set_dotted(data, key, value)
    return build_config(data)


def _check_one_length(train: dict[str, Any], where: str) -> None:
    if train.get("max_epochs") is not None and train.get("max_steps") is not None:
        raise ConfigError(f"{where} set both train.max_steps ({train['max_steps']}) and train.max_epochs "
                          f"({train['max_epochs']}): give one of them")


def clamp_warmup(config: RunConfig) -> tuple[RunConfig, str | None]:
    """A warm-up as long as the run or longer becomes a tenth of the run (never refused): a quick
    trial of a preset (`--set train.max_steps=100` on a 100-step warm-up) then still ramps up and
    trains. Returns the config and the notice to show, or (config, None) when nothing changed."""
    warmup, steps = config.optim.warmup_steps, config.train.max_steps
    if warmup < steps:
        return config, None
    clamped = steps // 10
    notice = (f"optim.warmup_steps {warmup} is not shorter than train.max_steps {steps}: "
              f"clamped to {clamped} (a tenth of the run)")
    return config.with_overrides({"optim.warmup_steps": clamped}), notice


def load_run_config(path: Path) -> RunConfig:
    """Reload a run folder's `config.yaml`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    return build_config(data)
