"""Hugging Face Hub access: what a Hub id looks like, and whether downloads are switched off."""

from __future__ import annotations

import os
import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""`owner/name`, as the Hub spells repository ids."""
_TRUE = {"1", "true", "yes", "on"}


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text))


def hub_offline() -> bool:
    """True when Hub access is off (`HF_HUB_OFFLINE`), read now rather than at import time."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)
