"""The worker's stdout (DESIGN.md contract): one JSON object per line, of four types.

    {"type": "progress", "done": n, "total": N, "stage": "...", "fps": f}
    {"type": "warning", "message": "..."}
    {"type": "error", "message": "...", "traceback": "..."}     (may add "cancelled": true)
    {"type": "done", "result": "PATH"}                          (may add "arkit_keys": {shape key: ARKit name})

The worker writes them with `encode_message`, the add-on reads them with `decode_message`.
"""

from __future__ import annotations

import json

REQUIRED = {"progress": ("done", "total", "stage", "fps"), "warning": ("message",),
            "error": ("message", "traceback"), "done": ("result",)}


class MessageError(ValueError):
    """A line that is not one of the protocol's messages."""


def encode_message(kind: str, **fields) -> str:
    """One message as its line (with the newline)."""
    missing = [name for name in REQUIRED[kind] if name not in fields]
    if missing:
        raise MessageError(f"a {kind} message needs {', '.join(missing)}")
    return json.dumps({"type": kind, **fields}) + "\n"


def decode_message(line: bytes | str) -> dict:
    """The message a line holds, its required fields checked; MessageError for anything else."""
    try:
        message = json.loads(line)
    except (ValueError, TypeError):
        raise MessageError("not a JSON line") from None
    if not isinstance(message, dict) or message.get("type") not in REQUIRED:
        raise MessageError("not a message of the protocol")
    missing = [name for name in REQUIRED[message["type"]] if name not in message]
    if missing:
        raise MessageError(f"a {message['type']} message without {', '.join(missing)}")
    return message
