"""Times as central's commands and input files give them: epoch seconds or ISO-8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_utc(text: str, where: str) -> int:
    """Epoch seconds, or ISO-8601 in UTC (``Z``, ``+00:00`` or no offset), as whole epoch seconds.

    ValueError naming ``where`` (a flag, a key, a file's line and column) and what is allowed."""
    text = text.strip()
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where} = {text!r:.40}: ISO-8601 UTC (2026-03-20T10:00:00Z) or epoch seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    elif dt.utcoffset() != UTC.utcoffset(None):
        raise ValueError(f"{where} = {text!r:.40}: a UTC time (Z or +00:00)")
    return int(dt.timestamp())
