"""How a benchmark command of its own saves its table: ``<out>.json`` (every number, full precision) and
``<out>.md`` (the table), both atomically, and prints the table."""

from __future__ import annotations

import json
from pathlib import Path

from common.files import atomic_write_text


def save_result(out: Path, res: dict, md: str) -> None:
    atomic_write_text(out.with_suffix(".json"), json.dumps(res, indent=1, default=str))
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
