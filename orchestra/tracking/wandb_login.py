"""Whether this user can reach a wandb server, decided without importing wandb or touching the network.

A login is an API key in ``WANDB_API_KEY`` or a netrc entry for the wandb host (what ``wandb login`` writes).
Nothing here returns or prints the key itself.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_BASE_URL = "https://api.wandb.ai"
LOGIN_HINT = "run `wandb login` or set WANDB_API_KEY"


def wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).hostname or "api.wandb.ai"


def _netrc_path() -> Path:
    return Path(os.environ["NETRC"]) if os.environ.get("NETRC") else Path.home() / ".netrc"


def has_login() -> bool:
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    path = _netrc_path()
    try:
        entry = netrc.netrc(str(path)).authenticators(wandb_host())
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])
