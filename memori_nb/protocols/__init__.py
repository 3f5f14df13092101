"""Wire protocols, one module each: ``aa`` (Memori's Advanced Augmentation service) and
``chat`` (OpenAI-compatible chat completions). Each builds requests and parses answers for
its backend, and reads requests and writes answers for the loopback server in
:mod:`memori_nb.testing`, so both sides follow one definition."""

from __future__ import annotations

import json


def read_json_object(raw: bytes) -> tuple[dict | None, str | None]:
    """A request body as a JSON object: ``(body, None)``, or ``(None, what is wrong)``."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"Request body is not valid JSON: {exc}"
    if not isinstance(body, dict):
        return None, "Request body must be a JSON object"
    return body, None
