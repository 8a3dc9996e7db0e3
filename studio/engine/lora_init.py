"""`lora.init_from`: a new run that starts from existing LoRA weights instead of a fresh adapter.

Sources, as `resolve_init_from` finds them (a name is looked up in the outputs folder first):
- a run name — its latest checkpoint; `RUN@STEP` — that checkpoint; a checkpoint folder;
- a webui / kohya `.safetensors` (`lora_unet_…`, `lora_te…`, `.lora_down/.lora_up/.alpha`);
- a diffusers / PEFT `.safetensors` (`unet.….lora_A.weight`, adapter metadata), or its folder.

A checkpoint gives its fp32 `adapter.safetensors` (exactly the weights that run trained); a file
gives what it stores (usually fp16). The file's shape wins over the config: its rank, alpha, UNet
layers (`lora.targets`) and whether it has text-encoder layers are adopted, with a notice for each
setting that changes, and written to the run's config.yaml, so a resume rebuilds the same adapter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from studio.config import RunConfig
from studio.core.resolve import resolve_path
from studio.engine.lora import TEXT_ENCODER, UNET_ATTENTION, UNET_CONV, UNET_FEEDFORWARD

ADAPTER_FILE = "adapter.safetensors"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PARTS = ("unet", "text_encoder", "text_encoder_2")
_WEBUI_PARTS = {"lora_unet_": "unet", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2",
                "lora_te_": "text_encoder"}
_RUN_AT_STEP = re.compile(r"^(?P<run>[^@/\\]+)@(?P<step>\d+)$")


class InitFromError(ValueError):
    """`lora.init_from` names nothing usable; the message says what was looked for."""


@dataclass
class InitWeights:
    """LoRA weights read from a source, by model part: module path → (down / A, up / B)."""

    source: Path
    kind: str
    """checkpoint · webui · diffusers"""
    rank: int
    alpha: float
    modules: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    webui_names: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """webui files only: `lora_unet_…` name → (down, up), mapped to modules once the model is known."""

    @property
    def has_text_encoder(self) -> bool:
        return any(p != "unet" for p in self.modules) or any(not n.startswith("lora_unet_") for n in self.webui_names)


# ---------------------------------------------------------------- finding the source


def resolve_init_from(text: str, outputs_dir: Path, models_dir: Path | None) -> str:
    """The absolute path `lora.init_from` names: a checkpoint folder or a LoRA file."""
    from studio.engine.runs import RunFolder

    value = text.strip()
    match = _RUN_AT_STEP.match(value)
    run_name, step = (match["run"], int(match["step"])) if match else (value, None)
    run = RunFolder(Path(outputs_dir) / run_name)
    if not run.exists() and Path(run_name).expanduser().is_dir():
        run = RunFolder(Path(run_name).expanduser().resolve())
    if run.exists():
        checkpoints = run.checkpoints()
        if not checkpoints:
            raise InitFromError(f"lora.init_from: run {run.name} has no complete checkpoint to start from")
        if step is None:
            return str(checkpoints[-1].path.resolve())
        chosen = [c for c in checkpoints if c.step == step]
        if not chosen:
            raise InitFromError(f"lora.init_from: run {run.name} has no checkpoint at step {step} "
                                f"(available: {', '.join(str(c.step) for c in checkpoints)})")
        return str(chosen[0].path.resolve())
    path = resolve_path(value, [p for p in (models_dir, outputs_dir) if p is not None])
    if path is not None and path.is_dir():
        if (path / ADAPTER_FILE).is_file() or (path / DIFFUSERS_FILE).is_file():
            return str(path)
    if path is not None and path.is_file():
        if path.suffix != ".safetensors":
            raise InitFromError(f"lora.init_from: {path} is not a .safetensors file (LoRA Studio never loads "
                                "pickle files such as .ckpt, .pt or .bin)")
        return str(path)
    raise InitFromError(f"lora.init_from {value!r} is neither a run in {outputs_dir}, a checkpoint folder nor a "
                        f"LoRA .safetensors file (looked for {path})")


# ---------------------------------------------------------------- reading it


def read_init_weights(source: str | Path) -> InitWeights:
    """Every LoRA pair in the source, with its rank and alpha (which must be the same everywhere)."""
    path = Path(source)
    if path.is_dir():
        if (path / ADAPTER_FILE).is_file():
            return _read_checkpoint(path)
        path = path / DIFFUSERS_FILE
    with safe_open(str(path), framework="pt") as f:
        keys, metadata = list(f.keys()), dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in keys}
    if any(k.startswith("lora_") for k in keys):
        return _read_webui(path, tensors)
    if any(".lora_A." in k for k in keys):
        return _read_peft(path, "diffusers", tensors, _diffusers_alpha(metadata))
    raise InitFromError(f"lora.init_from: {path} holds no LoRA weights (no lora_unet_… / lora_A keys)")


def _read_checkpoint(folder: Path) -> InitWeights:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / ADAPTER_FILE))
    webui = sorted(folder.glob("*.safetensors"))
    alpha = None
    for file in (f for f in webui if f.name != ADAPTER_FILE):
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        if "ss_network_alpha" in meta:
            alpha = float(meta["ss_network_alpha"])
    return _read_peft(folder, "checkpoint", tensors, alpha)


def _diffusers_alpha(metadata: dict[str, str]) -> float | None:
    try:
        adapter = json.loads(metadata.get("lora_adapter_metadata") or "{}")
    except json.JSONDecodeError:
        return None
    alphas = {float(v) for k, v in adapter.items() if k.split(".")[-1] == "lora_alpha"}
    return alphas.pop() if len(alphas) == 1 else None


def _read_peft(path: Path, kind: str, tensors: dict[str, torch.Tensor], alpha: float | None) -> InitWeights:
    modules: dict[str, dict[str, list]] = {}
    for key, value in tensors.items():
        part, _, rest = key.partition(".")
        for tag, slot in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
            if rest.endswith(tag) and part in PARTS:
                modules.setdefault(part, {}).setdefault(rest[: -len(tag)], [None, None])[slot] = value
    pairs = {part: {m: (ab[0], ab[1]) for m, ab in mods.items() if ab[0] is not None and ab[1] is not None}
             for part, mods in modules.items()}
    rank = _one_rank(path, [a for mods in pairs.values() for a, _ in mods.values()])
    return InitWeights(path, kind, rank, float(alpha if alpha is not None else rank), modules=pairs)


def _read_webui(path: Path, tensors: dict[str, torch.Tensor]) -> InitWeights:
    names: dict[str, list] = {}
    alphas = set()
    for key, value in tensors.items():
        name, _, tail = key.partition(".")
        if tail == "alpha":
            alphas.add(round(float(value), 6))
        elif tail in ("lora_down.weight", "lora_up.weight"):
            names.setdefault(name, [None, None])[tail == "lora_up.weight"] = value
    pairs = {n: (d, u) for n, (d, u) in names.items() if d is not None and u is not None}
    rank = _one_rank(path, [d for d, _ in pairs.values()])
    if len(alphas) > 1:
        raise InitFromError(f"lora.init_from: {path} has layers with different alphas ({sorted(alphas)}); "
                            "LoRA Studio trains one alpha for every layer")
    alpha = alphas.pop() if alphas else float(rank)
    return InitWeights(path, "webui", rank, alpha, webui_names=pairs)


def _one_rank(path: Path, downs: list[torch.Tensor]) -> int:
    ranks = {int(d.shape[0]) for d in downs}
    if not ranks:
        raise InitFromError(f"lora.init_from: {path} holds no complete LoRA pair (down/A and up/B)")
    if len(ranks) > 1:
        raise InitFromError(f"lora.init_from: {path} has layers of different ranks ({sorted(ranks)}); "
                            "LoRA Studio trains one rank for every layer")
    return ranks.pop()


# ---------------------------------------------------------------- matching it to the model


def _candidate_modules(model: torch.nn.Module, suffixes: list[str]) -> list[str]:
    """Module paths peft would give a LoRA for these target suffixes."""
    return [name for name, _ in model.named_modules()
            if any(name == s or name.endswith("." + s) for s in suffixes)]


def match_to_model(init: InitWeights, pipe, family: str) -> InitWeights:
    """Put every pair under the model's own module path; a pair for a layer the model lacks is an error
    (the LoRA was made for another base model)."""
    from studio.engine.export import webui_module_name
    from studio.engine.ldm_convert import unet_ldm_module_names

    models = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    if family == "sdxl":
        models["text_encoder_2"] = pipe.text_encoder_2
    known = {part: set(_candidate_modules(model, UNET_ATTENTION + UNET_FEEDFORWARD + UNET_CONV if part == "unet"
                                          else TEXT_ENCODER)) for part, model in models.items()}
    unknown: list[str] = []
    matched: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    if init.webui_names:
        ldm = unet_ldm_module_names(dict(pipe.unet.config)) if family == "sdxl" else None
        by_name = {webui_module_name(family, part, module, ldm if part == "unet" else None): (part, module)
                   for part, modules in known.items() for module in modules}
        for name, pair in init.webui_names.items():
            if name in by_name:
                part, module = by_name[name]
                matched.setdefault(part, {})[module] = pair
            else:
                unknown.append(name)
    for part, modules in init.modules.items():
        for module, pair in modules.items():
            own = module if module in known.get(part, ()) else module.removeprefix("text_model.")
            if own in known.get(part, ()):
                matched.setdefault(part, {})[own] = pair
            else:
                unknown.append(f"{part}.{module}")
    if unknown:
        raise InitFromError(
            f"lora.init_from: {init.source} has {len(unknown)} layers this {family} model does not have "
            f"(e.g. {', '.join(sorted(unknown)[:3])}): it was made for another base model or architecture")
    return InitWeights(init.source, init.kind, init.rank, init.alpha, modules=matched)


def targets_of(init: InitWeights) -> str:
    """The `lora.targets` value that covers every UNet layer of the (matched) weights."""
    modules = init.modules.get("unet", {})

    def uses(suffixes: list[str]) -> bool:
        return any(any(m == s or m.endswith("." + s) for s in suffixes) for m in modules)

    if uses(UNET_CONV):
        return "attention+ff+conv"
    return "attention+ff" if uses(UNET_FEEDFORWARD) else "attention"


def adopt(config: RunConfig, init: InitWeights) -> tuple[RunConfig, list[str]]:
    """The config with the source's rank, alpha, targets and text-encoder use; a notice per change."""
    lora = config.lora
    wanted: dict[str, Any] = {"lora.rank": init.rank, "lora.alpha": init.alpha, "lora.targets": targets_of(init),
                              "lora.train_text_encoder": init.has_text_encoder or lora.train_text_encoder}
    current = {"lora.rank": lora.rank, "lora.alpha": lora.alpha, "lora.targets": lora.targets,
               "lora.train_text_encoder": lora.train_text_encoder}
    notices = [f"lora.init_from: {key} is {wanted[key]} in {init.source.name} (the config said {current[key]}): "
               f"using {wanted[key]}" for key in wanted if wanted[key] != current[key]]
    if lora.train_text_encoder and not init.has_text_encoder:
        notices.append(f"lora.init_from: {init.source.name} has no text-encoder layers: the text-encoder LoRA "
                       "starts fresh")
    return (config.with_overrides(wanted) if notices else config), notices


def peft_state_dicts(init: InitWeights) -> dict[str, dict[str, torch.Tensor]]:
    """Per part, the peft state dict (`….lora_A.weight` / `….lora_B.weight`) in fp32."""
    return {part: {key: tensor.float().contiguous() for module, (down, up) in modules.items()
                   for key, tensor in ((f"{module}.lora_A.weight", down), (f"{module}.lora_B.weight", up))}
            for part, modules in init.modules.items()}


def load_into(pipe, family: str, init: InitWeights, text_encoders: bool) -> None:
    """Load the (matched) weights into the adapters the trainer just added; text-encoder layers only
    when the text-encoder LoRA is trained."""
    from peft.utils import set_peft_model_state_dict

    models = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    if family == "sdxl":
        models["text_encoder_2"] = pipe.text_encoder_2
    for part, state in peft_state_dicts(init).items():
        if part != "unet" and not text_encoders:
            continue
        result = set_peft_model_state_dict(models[part], state)
        unexpected = list(getattr(result, "unexpected_keys", []))
        if unexpected:
            raise InitFromError(f"lora.init_from: {init.source} does not fit the {part} LoRA: {unexpected[:3]}")
