"""What a user types for a grid or a batch, read once for the CLI and the tabs.

`prompt_lines` is the one prompt parser: one prompt per line, blank lines and lines starting with
'#' left out. The CLI's `--prompts FILE|TEXT` also accepts a file (`parse_prompts`); the tabs never
read typed text as a file name. Seeds, scales and checkpoint picks are comma lists; an external
column is `LABEL=DIR`.
"""

from __future__ import annotations

import math
from pathlib import Path

FINAL = "final"
ALL = "all"
MAX_SEED = 2**63 - 1


def prompt_lines(text: str) -> list[str]:
    """Prompts, one per line; blank lines and lines starting with '#' are left out."""
    return [line.strip() for line in (text or "").splitlines() if line.strip() and not line.strip().startswith("#")]


def _is_file(value: str) -> bool:
    try:
        return Path(value).expanduser().is_file()
    except OSError:  # e.g. a prompt longer than a file name may be: it is a prompt
        return False


def parse_prompts(value: str, what: str = "prompt") -> list[str]:
    """An existing file → its prompt lines; else the text itself, one prompt per line (CLI only)."""
    if _is_file(value):
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} file {path} is not UTF-8 text: save it as plain text, "
                             "one prompt per line") from None
        where = f"{what} file {path}"
    else:
        text, where = value, f"the {what} text"
    prompts = prompt_lines(text)
    if not prompts:
        raise ValueError(f"{where} holds no prompt: give one prompt per line ({{trigger}} is the trigger word)")
    return prompts


def _numbers(text: str, kind: type, what: str, example: str) -> list:
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what} {text!r} must be numbers separated by commas, e.g. {example}") from None
    if not values:
        raise ValueError(f"{what} is empty: give at least one, e.g. {example}")
    return list(dict.fromkeys(values))


def check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} must be between 0 and {MAX_SEED}")
    return seed


def parse_seeds(text: str) -> list[int]:
    """"1,2" → [1, 2] (duplicates dropped); a clear ValueError otherwise."""
    return [check_seed(s) for s in _numbers(text, int, "seeds", "1,2")]


def parse_scales(text: str) -> list[float]:
    """"0,0.5,1" → [0.0, 0.5, 1.0] (duplicates dropped)."""
    scales = _numbers(text, float, "LoRA scales", "0,0.5,1")
    bad = [s for s in scales if not math.isfinite(s)]
    if bad:
        raise ValueError(f"LoRA scales must be finite numbers, got {bad}")
    return scales


def parse_steps(text: str | list) -> str | list[int | str]:
    """"final", "all", or checkpoint steps with or without "final" ("4,8", "4,final"), as
    `columns.plan_columns` takes them. A list (the Compare tab's picks) is read the same way."""
    parts = [str(p).strip().lower() for p in (text if isinstance(text, list) else str(text).split(","))]
    parts = [p for p in parts if p]
    if parts == [ALL]:
        return ALL
    if parts == [FINAL]:
        return FINAL
    steps: list[int | str] = []
    for part in parts:
        if part == FINAL:
            steps.append(FINAL)
            continue
        try:
            step = int(part)
        except ValueError:
            raise ValueError(f"checkpoints {text!r} must be {FINAL!r}, {ALL!r} or steps such as 500,1000 "
                             f"(with {FINAL!r} among them if you like)") from None
        if step < 0:
            raise ValueError(f"checkpoint steps must not be negative, got {text!r}")
        steps.append(step)
    if not steps:
        raise ValueError(f"checkpoints is empty: give {FINAL!r}, {ALL!r} or steps such as 500,1000")
    return list(dict.fromkeys(steps))


def parse_external(text: str) -> tuple[str, Path]:
    """`LABEL=DIR` (the CLI's --external) → (label, folder)."""
    label, sep, folder = text.partition("=")
    if not sep or not label.strip() or not folder.strip():
        raise ValueError(f"--external {text!r} must be LABEL=DIR, e.g. Freepik=downloads/freepik")
    return label.strip(), Path(folder.strip()).expanduser()


def match_baselines(prompts: list[str], baselines: list[str]) -> list[str]:
    """One baseline prompt per prompt: as many lines as prompts, or one line for every prompt."""
    if not baselines:
        return []
    if len(baselines) == 1:
        return baselines * len(prompts)
    if len(baselines) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(baselines)} baseline prompts: give one baseline prompt "
                         "per prompt, in the same order, or a single one for all of them")
    return list(baselines)
