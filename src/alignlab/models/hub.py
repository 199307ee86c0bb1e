"""Hugging Face ids: fail fast, in one line, when an id can neither be found in the local cache nor fetched.

Without this, an unknown id on a machine without network access spends about a minute in the hub client's
retries and prints a screen of warnings before transformers gives up.
"""

from __future__ import annotations

import os
import re
import socket
from urllib.parse import urlparse

from alignlab.errors import AlignlabError

# owner/name or name: letters, digits, '-', '_', '.' (the hub's own rule, without its length limits)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id or cache layout counts as "not cached"
        return False
    return isinstance(hit, str)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds (a proxy counts as yes:
    the hub client goes through it and we cannot probe it cheaply)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def check_hub_id(spec: str) -> str:
    """Return ``spec`` when transformers can load it (cached locally, or the hub is reachable), else raise."""
    if not _REPO_ID.match(spec):
        raise AlignlabError(f"{spec!r} is not a local path, .gguf file, embedded name or Hugging Face id "
                            "(owner/name): check the spelling")
    if _cached(spec):
        return spec
    from alignlab.models.embedded import EMBEDDED

    where = os.environ.get("HF_HOME", "~/.cache/huggingface")
    if _offline() or not hub_reachable():
        why = "offline mode is on" if _offline() else "the hub cannot be reached"
        raise AlignlabError(f"{spec} is not in the Hugging Face cache ({where}) and {why}: pass a local model "
                            f"directory or .gguf file, an embedded name ({', '.join(EMBEDDED)}), or "
                            "set HF_HOME to a cache that holds it")
    return spec
