"""TorchServe's token file (``key_file.json``): the keys the proxy and the launcher send with their calls.

TorchServe writes it in its working directory at start and rewrites it when a key is renewed; readers
retry when they catch it half-written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path


def parse_expiry(text: str | None) -> float | None:
    """TorchServe's ``'2026-01-01T10:00:00.123456789Z'`` -> Unix time (Python takes at most microseconds)."""
    if not text:
        return None
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def read_key_file(key_file: Path) -> tuple[dict[str, str], dict[str, float | None]]:
    """TorchServe's key_file.json -> ({kind: key}, {kind: expiry as Unix time}) for 'management', 'inference', 'API'.

    Raises OSError or ValueError while TorchServe is (re)writing it; callers retry."""
    data = json.loads(Path(key_file).read_text())
    entries = {k: v for k, v in data.items() if isinstance(v, dict)}
    return {k: v.get("key") for k, v in entries.items()}, {
        k: parse_expiry(v.get("expiration time")) for k, v in entries.items()
    }


def read_keys(key_file: Path) -> dict[str, str]:
    """TorchServe's key_file.json -> {'management': ..., 'inference': ..., 'API': ...} (keys only)."""
    return read_key_file(key_file)[0]
