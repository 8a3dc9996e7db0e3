"""The folder-name rule, written once: runs, datasets, grids and batches are folders named by users.

A name is 1–100 letters, digits, '.', '_' or '-' and starts with a letter or digit, so it can never
be a path (`..`, `/`), a hidden folder or an option (`-x`).
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RULE = "1–100 letters, digits, '.', '_' or '-' and start with a letter or digit"


def check_folder_name(name: str, what: str, error: type[ValueError] = ValueError) -> str:
    """`name` if it follows the rule, else `error("<what> name '…' must be …")`."""
    if not NAME_RE.match(name or ""):
        raise error(f"{what} name {name!r} must be {RULE}")
    return name


def slug(text: str, fallback: str = "run") -> str:
    """`text` made into a name: runs of other characters become '-', at most 80 characters."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:80].strip("-._")
    return value or fallback
