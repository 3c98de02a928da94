"""The uplink's documented wire schema: the JSON examples of docs/telemetry.md, for the tests that hold the code
and the doc together."""

from __future__ import annotations

import json
import re
from pathlib import Path


def doc_examples(repo_root: Path) -> list[tuple[str, dict]]:
    """Every ```json block of docs/telemetry.md, with the heading above it."""
    text = (repo_root / "docs" / "telemetry.md").read_text()
    found: list[tuple[str, dict]] = []
    heading = ""
    for block in re.split(r"(^#+ .*$)", text, flags=re.M):
        if block.startswith("#"):
            heading = block
            continue
        for body in re.findall(r"```json\n(.*?)```", block, flags=re.S):
            found.append((heading, json.loads(body)))
    return found
